//! Run configurations, loss specs and PLM state through serde: every loss
//! combination round-trips, mistakes name their key, and files written
//! before the loss grammar existed still load.

use ferrite::plm::{Divergence, Plm, PlmConfig, RhatInit};
use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
use ferrite::train::objective::Objective;
use ferrite::train::{BaseLoss, LossSpec, PlmLambda};
use serde_json::{json, Value};

fn config(loss: &str, kind: DatasetKind) -> TrainConfig {
    TrainConfig::new(DataConfig::new(kind), "resnet8", loss.parse().unwrap())
}

/// Every base × class-balanced × PLM combination the grammar allows.
fn every_loss() -> Vec<String> {
    let bases = [
        "bce",
        "focal",
        "focal(gamma=0.5,alpha=0.25)",
        "asl",
        "asl(gamma_pos=1,gamma_neg=3,clip=0)",
        "ce",
    ];
    let cbs = ["", "cb+", "cb(beta=0.9)+"];
    let plms = [
        "",
        "plm+",
        "plm(lambda=0.2,bins=4,init=balanced,divergence=gt-pred,standardize=false,rhat_min=0.001,rhat_max=1000)+",
        "reweight(rhat=2)+",
    ];
    let mut out = Vec::new();
    for base in bases {
        for cb in cbs {
            for plm in plms {
                if base == "ce" && !plm.is_empty() {
                    continue;
                }
                out.push(format!("{plm}{cb}{base}"));
            }
        }
    }
    out
}

#[test]
fn every_loss_combination_round_trips_through_text_and_json() {
    let losses = every_loss();
    assert_eq!(losses.len(), 5 * 3 * 4 + 3);
    for text in &losses {
        let spec: LossSpec = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        // Text: written with every parameter, read back equal.
        let written = spec.to_string();
        assert_eq!(
            written.parse::<LossSpec>().unwrap(),
            spec,
            "{text} -> {written}"
        );
        // Any order of the terms means the same.
        let reordered: Vec<&str> = text.rsplit('+').collect();
        let reordered = reordered.join("+");
        assert_eq!(reordered.parse::<LossSpec>().unwrap(), spec, "{reordered}");
        // JSON: the whole run configuration.
        let kind = if spec.base == BaseLoss::CrossEntropy {
            DatasetKind::Mnist
        } else {
            DatasetKind::MultiMnistLt
        };
        let mut c = config(text, kind);
        c.optim.clip_grad_norm = Some(2.5);
        c.optim.lr = 0.1 + 0.2; // not a short decimal: must come back exactly
        let text_json = serde_json::to_string(&c.to_json()).unwrap();
        let back = TrainConfig::from_json_str(&text_json).unwrap();
        assert_eq!(back, c, "{text}");
        assert_eq!(back.optim.lr.to_bits(), (0.1f64 + 0.2).to_bits());
    }
}

#[test]
fn defaults_are_written_out_and_the_old_spellings_are_refused_with_help() {
    let plm: LossSpec = "plm".parse().unwrap();
    assert_eq!(
        plm.to_string(),
        "plm(lambda=auto,bins=10,init=ratio,divergence=pred-gt,standardize=true)+bce"
    );
    assert_eq!(plm, LossSpec::plm());
    let focal: LossSpec = "focal".parse().unwrap();
    assert_eq!(focal.to_string(), "focal(gamma=2,alpha=none)");
    assert_eq!(
        "cb".parse::<LossSpec>().unwrap().to_string(),
        "cb(beta=0.999)+bce"
    );
    // A `+` inside a value is part of the number.
    let spec: LossSpec = "plm(lambda=1e+0)".parse().unwrap();
    assert_eq!(spec.plm.unwrap().lambda, PlmLambda::Fixed(1.0));
    for (bad, needle) in [
        ("plm/lambda=0", "plm(init=balanced,lambda=0)"),
        ("plm+", "empty loss"),
        ("hinge", "unknown loss `hinge`"),
        ("focal(beta=1)", "unknown setting `beta` for focal"),
        ("plm(lambda=x)", "lambda must be a number"),
        ("plm(bins=-1)", "bins must be a whole number"),
        ("plm(init=uniform)", "ratio, balanced"),
        ("plm(divergence=pred_vs_truth)+focal(gamma=-1)", "gamma"),
        ("focal(gamma=1", "missing `)`"),
        ("focal)gamma=1(", "unmatched `)`"),
        ("bce(x=1)", "bce takes no setting"),
        ("cb+cb", "twice"),
        ("plm+ce", "per-element"),
        ("bce+focal", "two base losses"),
    ] {
        let err = bad.parse::<LossSpec>().unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: `{needle}` not in: {err}");
    }
}

/// A change to a configuration's JSON form.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn unknown_keys_wrong_types_and_out_of_range_values_name_the_key() {
    let good = config("plm+focal", DatasetKind::MultiMnistLt).to_json();
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|v| v["optim"]["lrr"] = json!(0.1)), "optim.lrr"),
        (Box::new(|v| v["epoch"] = json!(3)), "epoch"),
        (
            Box::new(|v| v["data"]["kind"] = json!("imagenet")),
            "data.kind",
        ),
        (Box::new(|v| v["optim"]["lr"] = json!("fast")), "optim.lr"),
        (Box::new(|v| v["batch_size"] = json!(-1)), "batch_size"),
        (Box::new(|v| v["data"]["hflip"] = json!(1)), "data.hflip"),
        (Box::new(|v| v["loss"] = json!(3)), "loss"),
        (Box::new(|v| v["loss"] = json!("plm(lambda=-1)")), "loss"),
        (Box::new(|v| v["precision"] = json!("f16")), "precision"),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("seed");
            }),
            "seed",
        ),
        // Out of range: checked after reading, with the same key.
        (Box::new(|v| v["optim"]["lr"] = json!(-0.1)), "optim.lr"),
        (Box::new(|v| v["epochs"] = json!(0)), "epochs"),
        (
            Box::new(|v| v["data"]["imbalance_factor"] = json!(0.5)),
            "data.imbalance_factor",
        ),
        (
            Box::new(|v| v["optim"]["momentum"] = json!(1.5)),
            "optim.momentum",
        ),
    ];
    for (i, (edit, key)) in cases.iter().enumerate() {
        let mut v = good.clone();
        edit(&mut v);
        let err = TrainConfig::from_json(&v).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{key}")),
            "case {i}: `{key}` not named in: {err}"
        );
        assert!(err.len() < 400, "case {i}: a wall of text: {err}");
    }
}

#[test]
fn configurations_saved_before_the_loss_grammar_still_load() {
    // The loss section as ferrite 0.1 wrote it.
    let mut v = config("bce", DatasetKind::MultiMnistLt).to_json();
    let legacy = |kind: &str| {
        json!({
            "kind": kind, "focal_gamma": 1.5, "focal_alpha": null, "cb_beta": 0.99,
            "asl_gamma_pos": 0.0, "asl_gamma_neg": 4.0, "asl_clip": 0.05,
            "plm": {"lambda": 0.5, "n_bins": 12, "init": "balanced",
                    "divergence": "gt-pred", "standardize": false}
        })
    };
    for (kind, want) in [
        ("bce", "bce"),
        ("focal", "focal(gamma=1.5)"),
        ("cb", "cb(beta=0.99)"),
        ("asl", "asl"),
        ("plm", "plm(lambda=0.5,bins=12,init=balanced,divergence=gt-pred,standardize=false)"),
        (
            "plm+focal",
            "plm(lambda=0.5,bins=12,init=balanced,divergence=gt-pred,standardize=false)+focal(gamma=1.5)",
        ),
        (
            "plm+cb",
            "plm(lambda=0.5,bins=12,init=balanced,divergence=gt-pred,standardize=false)+cb(beta=0.99)",
        ),
    ] {
        v["loss"] = legacy(kind);
        let c = TrainConfig::from_json(&v).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(c.loss, want.parse::<LossSpec>().unwrap(), "{kind}");
        // Written back in today's form, which reads the same.
        assert!(c.to_json()["loss"].is_string());
    }
    // `precision` came later: missing means f32.
    v.as_object_mut().unwrap().remove("precision");
    assert_eq!(
        TrainConfig::from_json(&v).unwrap().precision,
        ferrite::Precision::F32
    );
    // A legacy section with a typo is named.
    let mut broken = legacy("plm");
    broken["focal_gama"] = json!(2);
    v["loss"] = broken;
    let err = TrainConfig::from_json(&v).unwrap_err().to_string();
    assert!(err.contains("focal_gama"), "{err}");
}

#[test]
fn plm_state_round_trips_exactly_and_old_states_still_load() {
    let cfg = PlmConfig {
        lambda: 0.1 + 0.2,
        n_bins: 4,
        init: RhatInit::Balanced,
        divergence: Divergence::TruthVsPred,
        ..PlmConfig::default()
    };
    let plm = Plm::new(cfg, &[3, 2, 1], 6).unwrap();
    let text = plm.state_json().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["config"]["bins"], json!(4));
    assert_eq!(v["config"]["divergence"], json!("gt-pred"));
    assert_eq!(v["config"]["lambda"], json!("0.30000000000000004"));
    let back = Plm::from_state_json(&text).unwrap();
    assert_eq!(back.config(), plm.config());
    assert_eq!(back.state_json().unwrap(), text);
    // As ferrite 0.1 wrote it: `n_bins` and `truth_vs_pred`.
    let old = text
        .replace("\"bins\"", "\"n_bins\"")
        .replace("\"gt-pred\"", "\"truth_vs_pred\"");
    assert_eq!(Plm::from_state_json(&old).unwrap().config(), plm.config());
    // Unknown keys and wrong types are named.
    let mut extra = v.clone();
    extra["config"]["speed"] = json!(1);
    let err = Plm::from_state_json(&extra.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config") && err.contains("speed"), "{err}");
    let mut wrong = v;
    wrong["histograms"]["discarded"] = json!("many");
    let err = Plm::from_state_json(&wrong.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("histograms.discarded"), "{err}");
}

#[test]
fn auto_lambda_is_one_over_the_epochs_and_an_explicit_one_is_kept() {
    let lambda_in = |spec: &str, epochs: usize| {
        let spec: LossSpec = spec.parse().unwrap();
        let objective = Objective::new(&spec, epochs, 0, &[5, 3, 1], 10).unwrap();
        objective.plm().unwrap().config().lambda
    };
    assert_eq!(
        "plm".parse::<LossSpec>().unwrap().plm.unwrap().lambda,
        PlmLambda::Auto
    );
    assert_eq!(lambda_in("plm", 4), 0.25);
    assert_eq!(lambda_in("plm(lambda=auto)+focal", 10), 0.1);
    assert_eq!(lambda_in("plm(lambda=0.01)", 4), 0.01);
    assert_eq!(lambda_in("plm(lambda=0)", 4), 0.0);
    // The configuration keeps `auto` (and its epochs), so a resumed run
    // resolves the same λ.
    let mut c = config("plm", DatasetKind::MultiMnistLt);
    c.epochs = 8;
    let back = TrainConfig::from_json(&c.to_json()).unwrap();
    assert_eq!(back.loss.plm.unwrap().lambda, PlmLambda::Auto);
    assert_eq!(back.loss.plm.unwrap().config(back.epochs, 0).lambda, 0.125);
}

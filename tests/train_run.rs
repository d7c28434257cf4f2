//! End-to-end training runs on tiny MultiMNIST-LT / MNIST sets: the files
//! a run leaves, exact resume (model, optimizer and PLM state), refusal to
//! overwrite a run, and the JSON form of configurations.

use ferrite::nn;
use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
use ferrite::train::run::{evaluate_checkpoint, Quiet, Run, CHECKPOINT_FILE, LOG_FILE};
use ferrite::Device;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny run of `loss` (PLM, if any, with λ = 0.5 from r̂ = 1, so r̂
/// visibly moves in two epochs).
fn tiny_config(loss: &str, epochs: usize) -> TrainConfig {
    let mut data = DataConfig::new(DatasetKind::MultiMnistLt);
    data.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    data.train_size = 256;
    data.test_size = 64;
    let mut config = TrainConfig::new(data, "resnet8", loss.parse().unwrap());
    config.stem = Some("imagenet".into());
    config.epochs = epochs;
    config.batch_size = 64;
    config.seed = 7;
    if let Some(plm) = &mut config.loss.plm {
        plm.lambda = ferrite::train::PlmLambda::Fixed(0.5);
        plm.init = ferrite::plm::RhatInit::Balanced;
    }
    config
}

fn params_of(trainer: &Run) -> Vec<Vec<f32>> {
    nn::state_dict(trainer.model())
        .into_iter()
        .map(|(_, t)| {
            t.to_dtype(ferrite::DType::F32)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_run_writes_its_report_log_and_checkpoint() {
    let dir = scratch("files");
    let mut trainer = Run::new(tiny_config("plm", 1), &dir).unwrap();
    let summary = trainer.run(&mut Quiet).unwrap();
    for f in [
        "config.json",
        LOG_FILE,
        CHECKPOINT_FILE,
        "report.md",
        "report.json",
        "per_class.svg",
        "learning_curve.svg",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let curve = std::fs::read_to_string(dir.join("learning_curve.svg")).unwrap();
    assert!(curve.contains("epoch 1: training loss"), "{curve}");
    let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    assert_eq!(log.lines().count(), 1);
    let record: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(record["epoch"], 1);
    assert_eq!(record["plm"]["rhat"].as_array().unwrap().len(), 10);
    // Prediction histograms of the epoch ([bins][classes]) count every
    // training label once.
    let counted: u64 = ["hist_pos_pred", "hist_neg_pred"]
        .iter()
        .map(|k| {
            let h = record["plm"][k].as_array().unwrap();
            assert_eq!(h.len(), 10 * 10);
            h.iter().map(|v| v.as_u64().unwrap()).sum::<u64>()
        })
        .sum();
    assert_eq!(counted, 256 * 10);
    assert!(record["test"]["macro_f1"].is_number());
    // Rows are ordered head → tail by training positives.
    let counts: Vec<usize> = summary.rows.iter().map(|r| r.train_positives).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    assert!(summary.markdown().contains("| class | train positives"));
    // A second run into the same folder is refused; the first is intact.
    let err = Run::new(tiny_config("bce", 1), &dir)
        .err()
        .expect("overwriting a run must fail")
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join(LOG_FILE)).unwrap(),
        log,
        "the refused run must not touch the log"
    );
    // Evaluating the checkpoint reproduces the report's metrics.
    let again = evaluate_checkpoint(dir.join(CHECKPOINT_FILE), None, Device::Cpu).unwrap();
    assert_eq!(again.summary, summary.summary);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_continues_bit_identically_with_plm_state() {
    let straight_dir = scratch("straight");
    let mut straight = Run::new(tiny_config("plm", 2), &straight_dir).unwrap();
    straight.run(&mut Quiet).unwrap();

    let split_dir = scratch("split");
    let mut first = Run::new(tiny_config("plm", 2), &split_dir).unwrap();
    first.train_epoch(&mut Quiet).unwrap();
    drop(first); // the process "dies" after epoch 1
    let mut resumed = Run::resume(&split_dir).unwrap();
    assert_eq!(resumed.epochs_done(), 1);
    resumed.run(&mut Quiet).unwrap();

    assert_eq!(params_of(&straight), params_of(&resumed));
    let (a, b) = (
        straight.objective().plm().unwrap(),
        resumed.objective().plm().unwrap(),
    );
    assert_eq!(a.rhat(), b.rhat());
    assert!(
        a.rhat().iter().any(|&x| (x - 1.0).abs() > 1e-3),
        "r̂ should have moved from 1: {:?}",
        a.rhat()
    );
    let log = |d: &Path| std::fs::read_to_string(d.join(LOG_FILE)).unwrap();
    let strip = |s: String| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("train_seconds");
                // When and where each epoch ran.
                assert!(o.remove("provenance").unwrap()["git_commit"].is_string());
                o.remove("images_per_sec");
                v
            })
            .collect()
    };
    assert_eq!(strip(log(&straight_dir)), strip(log(&split_dir)));
    let _ = std::fs::remove_dir_all(&straight_dir);
    let _ = std::fs::remove_dir_all(&split_dir);
}

#[test]
fn every_loss_trains_a_step_on_multilabel_and_single_label_data() {
    for (i, loss) in [
        "bce",
        "focal",
        "cb",
        "asl",
        "plm",
        "plm+focal",
        "plm+cb",
        "plm+asl(gamma_neg=2)",
        "plm+cb(beta=0.99)+focal(gamma=1,alpha=0.25)",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = scratch(&format!("loss-{i}"));
        let mut config = tiny_config(loss, 1);
        config.data.train_size = 64;
        config.data.test_size = 32;
        let record = Run::new(config, &dir)
            .unwrap()
            .train_epoch(&mut Quiet)
            .unwrap();
        assert!(record["train_loss"].as_f64().unwrap().is_finite());
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Softmax cross-entropy (also class-balanced) on single-label data;
    // refused on multi-label data.
    for loss in ["ce", "cb+ce"] {
        let mut config = tiny_config(loss, 1);
        config.data.kind = DatasetKind::Mnist;
        config.data.test_set = ferrite::train::TestSet::Imbalanced; // MNIST's own
        assert!(config.validate().is_ok());
    }
    let mut multi = tiny_config("ce", 1);
    multi.data.kind = DatasetKind::MultiMnistLt;
    let err = multi.validate().unwrap_err().to_string();
    assert!(err.contains("single-label"), "{err}");
}

#[test]
fn configurations_round_trip_through_json_and_bad_ones_are_named() {
    let mut config = tiny_config("plm+focal(alpha=0.25)", 3);
    config.optim.milestones = vec![2, 3];
    config.optim.clip_grad_norm = Some(5.0);
    let json = config.to_json();
    let back = TrainConfig::from_json(&json).unwrap();
    assert_eq!(back.to_json(), json);

    let mut broken = json.clone();
    broken["optim"]["lr"] = serde_json::json!("fast");
    let err = TrainConfig::from_json(&broken).unwrap_err().to_string();
    assert!(err.contains("lr"), "{err}");
    let mut broken = json;
    broken["loss"] = serde_json::json!("hinge");
    let err = TrainConfig::from_json(&broken).unwrap_err().to_string();
    assert!(err.contains("hinge") && err.contains("`loss`"), "{err}");

    let mut c = tiny_config("bce", 1);
    c.epochs = 0;
    assert!(c.validate().unwrap_err().to_string().contains("epochs"));
    let mut c = tiny_config("bce", 1);
    c.optim.lr = f64::NAN;
    assert!(c.validate().unwrap_err().to_string().contains("optim.lr"));
}

#[test]
fn a_missing_dataset_folder_is_named_in_the_error() {
    let mut config = tiny_config("bce", 1);
    config.data.dir = PathBuf::from("/nonexistent/mnist");
    let dir = scratch("missing");
    let err = Run::new(config, &dir).err().unwrap().to_string();
    assert!(err.contains("/nonexistent/mnist"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_writes_one_table_and_reuses_finished_runs() {
    use ferrite::train::compare::{compare, Variant};
    let dir = scratch("compare");
    let mut base = tiny_config("bce", 1);
    base.data.train_size = 64;
    base.data.test_size = 32;
    let variants: Vec<Variant> = ["bce", "plm(lambda=0,init=balanced)"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let mut runs = 0;
    let results = compare(&base, &variants, &[1, 2], &dir, Device::Cpu, &mut |_| {
        runs += 1;
        Box::new(Quiet)
    })
    .unwrap();
    assert_eq!(runs, 4);
    assert_eq!(results.len(), 2);
    let table = std::fs::read_to_string(dir.join("compare.md")).unwrap();
    assert!(table.contains("| bce |") && table.contains("| plm(lambda=0,init=balanced) |"));
    assert!(table.contains(" ± "), "{table}");
    // MultiMNIST-LT runs are scored on the balanced test set too.
    assert!(table.contains("On `test_balanced`:"), "{table}");
    let svg = std::fs::read_to_string(dir.join("compare.svg")).unwrap();
    assert!(svg.contains("plm(lambda=0,init=balanced)"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 2);
    let seeds = json["rows"][0]["metrics"]["macro_f1"]["values"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(seeds, 2);
    // Per class, head → tail: each variant's recall, precision and AP side
    // by side, each the mean of the seeds' reports.
    assert!(
        table.contains(
            "| class | train pos | test pos | R bce | R plm(lambda=0,init=balanced) | P bce |"
        ),
        "{table}"
    );
    let per_class = json["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    let report = |seed: u64| -> serde_json::Value {
        let path = dir.join(format!("bce/seed{seed}/report.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (r1, r2) = (report(1), report(2));
    for row in per_class {
        let class = row["class"].as_u64().unwrap();
        let recall_of = |r: &serde_json::Value| {
            r["per_class"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["class"].as_u64() == Some(class))
                .unwrap()["recall"]
                .as_f64()
                .unwrap()
        };
        let want = (recall_of(&r1) + recall_of(&r2)) / 2.0;
        let got = row["variants"]["bce"]["recall"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "class {class}: {got} vs {want}");
    }
    // Running again reuses every finished run.
    let mut reruns = 0;
    compare(&base, &variants, &[1, 2], &dir, Device::Cpu, &mut |_| {
        reruns += 1;
        Box::new(Quiet)
    })
    .unwrap();
    assert_eq!(reruns, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

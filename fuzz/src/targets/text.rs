//! Targets for the text readers: PLM state JSON, run config JSON, report
//! JSON, loss specs and comparison variants.

use super::{Target, Verdict};
use crate::input::Part;
use crate::mutate::Kind;

use ferrite::plm::Plm;
use ferrite::tensor::Tensor;
use ferrite::train::compare::{write_comparison, Variant};
use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
use ferrite::train::objective::Objective;
use ferrite::train::report::RunSummary;
use ferrite::train::LossSpec;
use std::time::Duration;

const FAST: Duration = Duration::from_secs(5);
/// Training-set positives of a small ten-class problem (100 samples).
const POSITIVES: [usize; 10] = [50, 20, 10, 5, 5, 3, 2, 2, 2, 1];

const JSON_TOKENS: &[&str] = &[
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "\"\"",
    "\"NaN\"",
    "\"inf\"",
    "\"-inf\"",
    "\"1e400\"",
    ",",
    ":",
    "\"",
];

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn json(input: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice(input)
}

/// PLM state JSON ([`Plm::from_state_json`]), then used for a batch and an epoch.
pub const PLM_STATE: Target = Target {
    name: "plm-state",
    about: "PLM state JSON (plm::Plm::from_state_json), used for one batch and one epoch",
    parts: &[Part {
        file: "plm.json",
        kind: Kind::Text,
    }],
    dictionary: &[
        "\"n_bins\"",
        "\"positives\"",
        "\"rhat\"",
        "\"batches\"",
        "\"epochs\"",
        "\"pos_pred\"",
        "\"neg_pred\"",
        "\"discarded\"",
        "\"num_samples\"",
        "\"balanced\"",
        "\"ratio\"",
    ],
    timeout: FAST,
    slow: false,
    run: |_, input| {
        Verdict::of(Plm::from_state_json(&text(&input[0])), |mut plm| {
            let state = match plm.state_json() {
                Ok(state) => state,
                Err(e) => return Verdict::Invalid("plm-state: cannot be written", e.to_string()),
            };
            match Plm::from_state_json(&state).and_then(|p| p.state_json()) {
                Ok(again) if again == state => {}
                Ok(_) => return Verdict::Invalid("plm-state: round trip differs", String::new()),
                Err(e) => {
                    return Verdict::Invalid("plm-state: written state rejected", e.to_string())
                }
            }
            let c = plm.num_classes();
            if c <= 1024 {
                // One batch of two samples and the end of an epoch, as in training.
                let mut use_it = || -> ferrite::Result<()> {
                    let targets = Tensor::from_vec(vec![1f32; 2 * c], &[2, c])?;
                    let loss = Tensor::from_vec(vec![0.5f32; 2 * c], &[2, c])?;
                    plm.masked_loss(&loss, &targets)?;
                    plm.observe(&loss, &targets)?;
                    plm.end_epoch()?;
                    Ok(())
                };
                let _ = use_it();
            }
            Verdict::Accepted
        })
    },
};

/// One batch of the objective of `loss`: whatever a reader accepted must
/// not fail only here, at the first batch of a run.
fn first_batch(loss: &LossSpec) -> ferrite::Result<()> {
    let mut objective = Objective::new(loss, 10, 0, &POSITIVES, 100)?;
    let logits = Tensor::from_vec(
        vec![0.3f32, -1.0, 2.0, 0.0, 0.1, -0.2, 1.5, 0.7, -3.0, 0.2],
        &[1, 10],
    )?;
    let targets = Tensor::from_vec(vec![1f32, 0., 0., 1., 0., 0., 0., 0., 0., 0.], &[1, 10])?;
    let labels = Tensor::from_vec(vec![0i64], &[1])?;
    let out = objective.loss(&logits, &targets, Some(&labels))?;
    let v = out.to_vec::<f32>()?;
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(ferrite::Error::InvalidArgument {
            op: "first batch",
            msg: format!("loss {v:?}"),
        })
    }
}

/// Run configurations ([`TrainConfig::from_json`]), round-tripped, then the
/// objective built and evaluated on a batch.
pub const CONFIG: Target = Target {
    name: "config",
    about: "run config JSON (train::config::TrainConfig::from_json), objective built",
    parts: &[Part {
        file: "config.json",
        kind: Kind::Text,
    }],
    dictionary: JSON_TOKENS,
    timeout: FAST,
    slow: false,
    run: |_, input| {
        let v = match json(&input[0]) {
            Ok(v) => v,
            Err(e) => return Verdict::Rejected(e.to_string()),
        };
        Verdict::of(TrainConfig::from_json(&v), |c| {
            let written = c.to_json();
            match TrainConfig::from_json(&written).map(|c| c.to_json()) {
                Ok(again) if again == written => {}
                Ok(_) => return Verdict::Invalid("config: round trip differs", String::new()),
                Err(e) => {
                    return Verdict::Invalid("config: written config rejected", e.to_string())
                }
            }
            if !(c.optim.gamma.is_finite() && c.optim.gamma > 0.0) {
                return Verdict::Invalid(
                    "config: learning-rate gamma <= 0 or non-finite accepted",
                    format!("gamma {}", c.optim.gamma),
                );
            }
            match first_batch(&c.loss) {
                Ok(()) => Verdict::Accepted,
                Err(e) => {
                    Verdict::Invalid("config: accepted, but the first batch fails", e.to_string())
                }
            }
        })
    },
};

/// Run reports ([`RunSummary::from_json`]), as `compare` reads them back,
/// round-tripped and rendered (Markdown, SVG, a comparison table).
pub const REPORT: Target = Target {
    name: "report",
    about: "report JSON (train::report::RunSummary::from_json), rendered and compared",
    parts: &[Part {
        file: "report.json",
        kind: Kind::Text,
    }],
    dictionary: JSON_TOKENS,
    timeout: FAST,
    slow: false,
    run: |s, input| {
        let v = match json(&input[0]) {
            Ok(v) => v,
            Err(e) => return Verdict::Rejected(e.to_string()),
        };
        Verdict::of(RunSummary::from_json(&v, "report.json"), |r| {
            let written = r.to_json();
            match RunSummary::from_json(&written, "again").map(|r| r.to_json()) {
                Ok(again) if again == written => {}
                Ok(_) => return Verdict::Invalid("report: round trip differs", String::new()),
                Err(e) => {
                    return Verdict::Invalid("report: written report rejected", e.to_string())
                }
            }
            let _ = r.markdown();
            let _ = r.svg();
            let base = TrainConfig::new(
                DataConfig::new(DatasetKind::MultiMnistLt),
                "resnet8",
                LossSpec::bce(),
            );
            let variant: Variant = "bce".parse().expect("a valid variant");
            let runs = vec![(variant, vec![r.clone(), r])];
            let out = s.dir().join("compare");
            let _ = std::fs::create_dir_all(&out);
            match write_comparison(&out, &base, &runs) {
                Ok(()) => Verdict::Accepted,
                Err(e) => Verdict::Rejected(e.to_string()),
            }
        })
    },
};

/// Loss specs ([`LossSpec`]'s `FromStr`), round-tripped through their
/// text, then the first batch of the objective they describe.
pub const LOSS_SPEC: Target = Target {
    name: "loss-spec",
    about: "loss specs such as plm(lambda=0.1)+focal(gamma=2) (train::LossSpec::from_str)",
    parts: &[Part {
        file: "spec.txt",
        kind: Kind::Text,
    }],
    dictionary: &[
        "bce",
        "focal",
        "asl",
        "ce",
        "cb",
        "plm",
        "gamma",
        "alpha",
        "none",
        "gamma_pos",
        "gamma_neg",
        "clip",
        "beta",
        "lambda",
        "bins",
        "init",
        "divergence",
        "standardize",
        "rhat_min",
        "rhat_max",
        "reweight",
        "rhat",
        "balanced",
        "pred-gt",
        "(",
        ")",
        "=",
        ",",
        "+",
    ],
    timeout: FAST,
    slow: false,
    run: |_, input| {
        Verdict::of(text(&input[0]).parse::<LossSpec>(), |l| {
            match l.to_string().parse::<LossSpec>() {
                Ok(again) if again == l => {}
                Ok(_) => return Verdict::Invalid("loss-spec: round trip differs", l.to_string()),
                Err(e) => {
                    return Verdict::Invalid("loss-spec: written spec rejected", e.to_string())
                }
            }
            match first_batch(&l) {
                Ok(()) => Verdict::Accepted,
                Err(e) => Verdict::Invalid(
                    "loss-spec: accepted, but the first batch fails",
                    e.to_string(),
                ),
            }
        })
    },
};

/// Comparison variants such as `plm(lambda=0)` ([`Variant`]'s `FromStr`),
/// then the first batch of the objective they configure.
pub const VARIANT: Target = Target {
    name: "variant",
    about: "compare variants such as focal(alpha=0.5) (train::compare::Variant::from_str)",
    parts: &[Part {
        file: "variant.txt",
        kind: Kind::Text,
    }],
    dictionary: &[
        "plm",
        "bce",
        "focal",
        "asl",
        "cb",
        "ce",
        "+",
        "(",
        ")",
        ",",
        "=",
        "lambda",
        "init",
        "divergence",
        "standardize",
        "bins",
        "gamma",
        "alpha",
        "beta",
        "balanced",
        "ratio",
        "pred-gt",
        "gt-pred",
        "true",
        "false",
    ],
    timeout: FAST,
    slow: false,
    run: |_, input| {
        Verdict::of(text(&input[0]).parse::<Variant>(), |v| {
            let mut config =
                TrainConfig::new(DataConfig::new(DatasetKind::Mnist), "resnet8", v.loss);
            if let Err(e) = v.apply(&mut config) {
                return Verdict::Invalid("variant: parsed, but applying it fails", e.to_string());
            }
            match first_batch(&config.loss) {
                Ok(()) => Verdict::Accepted,
                Err(e) => Verdict::Invalid(
                    "variant: accepted, but the first batch fails",
                    e.to_string(),
                ),
            }
        })
    },
};

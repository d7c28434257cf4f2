//! Whether `compare` may reuse a run folder: the settings a finished or
//! interrupted run was made with, against the ones asked for now.

use super::compare::read_summary;
use super::config::TrainConfig;
use super::report::REPORT_JSON;
use super::run::{Run, CHECKPOINT_FILE};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The settings in which two run configurations in JSON form differ, one
/// `key: stored there, wanted here` line per setting (dotted keys, e.g.
/// `optim.lr: 0.001 there, 0.1 here`), in key order. Where the data files
/// live (`data.dir`) is not a setting of the run: moving them, or naming
/// them by another path, changes nothing (as with `eval --data-dir`).
pub fn config_differences(stored: &Value, wanted: &Value) -> Vec<String> {
    fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", stored, &mut a);
    flatten("", wanted, &mut b);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let shown = |v: Option<&Value>| v.map_or("missing".to_string(), Value::to_string);
    keys.into_iter()
        .filter(|k| k.as_str() != "data.dir")
        .filter(|k| !same_setting(a.get(*k), b.get(*k)))
        .map(|k| format!("{k}: {} there, {} here", shown(a.get(k)), shown(b.get(k))))
        .collect()
}

/// Whether two settings are equal: whole numbers exactly, other numbers
/// to within a few units in the last place (JSON text does not always
/// read back to the very same `f64`), anything else as JSON.
fn same_setting(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        _ => a == b,
    }
}

/// Refuses a folder holding a finished or interrupted run made with other
/// settings than `config`: reusing it would label its results wrongly.
pub(super) fn check_existing_run(dir: &Path, config: &TrainConfig) -> Result<()> {
    let report = dir.join(REPORT_JSON);
    let checkpoint = dir.join(CHECKPOINT_FILE);
    let stored = if report.exists() {
        read_summary(&report)?.config
    } else if checkpoint.exists() {
        Run::config_of_checkpoint(&checkpoint)?.to_json()
    } else {
        return Ok(());
    };
    // A report written by an earlier version stores the loss in its old
    // form: compared in today's form, as it reads back.
    let stored = TrainConfig::from_json(&stored).map_or(stored, |c| c.to_json());
    let differences = config_differences(&stored, &config.to_json());
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        "compare",
        format!(
            "{} holds a run made with other settings ({}): delete that folder to run it \
             again with these settings, or choose another output folder",
            dir.display(),
            differences.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::loss_spec::LossSpec;
    use serde_json::json;

    #[test]
    fn config_differences_name_every_differing_key() {
        let data = super::super::config::DataConfig::new(super::super::config::DatasetKind::Mnist);
        let a = TrainConfig::new(data, "resnet8", LossSpec::bce());
        let mut b = a.clone();
        assert!(config_differences(&a.to_json(), &b.to_json()).is_empty());
        b.epochs = 3;
        b.optim.lr = 0.1;
        let d = config_differences(&a.to_json(), &b.to_json());
        assert_eq!(
            d,
            [
                "epochs: 10 there, 3 here",
                "optim.lr: 0.001 there, 0.1 here"
            ]
        );
        // Whole numbers compare exactly, others to within rounding.
        let d = config_differences(
            &json!({"seed": u64::MAX, "lr": 0.1}),
            &json!({"seed": u64::MAX - 1, "lr": 0.1 + 1e-17}),
        );
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("seed: "), "{d:?}");
        // The data folder's path is not a setting.
        let mut moved = a.clone();
        moved.data.dir = "elsewhere/mnist".into();
        assert!(config_differences(&a.to_json(), &moved.to_json()).is_empty());
        let d = config_differences(&json!({"x": 1}), &json!({"y": {"z": 2}}));
        assert_eq!(
            d,
            ["x: 1 there, missing here", "y.z: missing there, 2 here"]
        );
    }
}

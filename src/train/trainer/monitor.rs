//! Watching one value of the epoch records: the best checkpoint and early
//! stopping.

use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Whether a smaller or a larger value is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies, F1, mAP).
    Max,
}

/// A value of the epoch record to watch: a path into the record's JSON,
/// e.g. `"train_loss"`, `"val.loss"`, `"val.accuracy"` (with the default
/// validation name `val`), and which direction is better. An improvement
/// must beat the best value so far by more than `min_delta`.
#[derive(Clone, Debug, PartialEq)]
pub struct Monitor {
    /// Dot-separated path of the value in the epoch record.
    pub metric: String,
    /// Which direction is better.
    pub mode: Mode,
    /// The least change that counts as an improvement (non-negative).
    pub min_delta: f64,
}

impl Monitor {
    /// Watches `metric`, smaller being better.
    pub fn min(metric: impl Into<String>) -> Self {
        Monitor {
            metric: metric.into(),
            mode: Mode::Min,
            min_delta: 0.0,
        }
    }

    /// Watches `metric`, larger being better.
    pub fn max(metric: impl Into<String>) -> Self {
        Monitor {
            mode: Mode::Max,
            ..Self::min(metric)
        }
    }

    /// The same monitor requiring improvements larger than `min_delta`.
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta;
        self
    }

    pub(super) fn validate(&self, op: &'static str) -> Result<()> {
        if self.metric.is_empty() {
            return Err(Error::invalid(op, "the monitored metric has no name"));
        }
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "min_delta must be a non-negative number, got {}",
                    self.min_delta
                ),
            ));
        }
        Ok(())
    }

    /// The watched value in `record`; an error naming the numeric values
    /// available when it is missing, and when it is not finite.
    pub(super) fn value_in(&self, record: &Value) -> Result<f64> {
        let found = self
            .metric
            .split('.')
            .try_fold(record, |v, key| v.get(key))
            .and_then(Value::as_f64);
        match found {
            Some(v) if v.is_finite() => Ok(v),
            Some(v) => Err(Error::invalid(
                "Monitor",
                format!("the monitored metric `{}` is {v}", self.metric),
            )),
            None => {
                let mut names = Vec::new();
                numeric_paths(record, "", &mut names);
                Err(Error::invalid(
                    "Monitor",
                    format!(
                        "the epoch record has no number `{}` to monitor (it has: {})",
                        self.metric,
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    fn improves(&self, value: f64, best: Option<f64>) -> bool {
        match (best, self.mode) {
            (None, _) => true,
            (Some(b), Mode::Min) => value < b - self.min_delta,
            (Some(b), Mode::Max) => value > b + self.min_delta,
        }
    }
}

/// Dot paths of every number in `v` (arrays left out).
fn numeric_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let path = crate::nn::join(prefix, k);
            match child {
                Value::Number(_) => out.push(path),
                Value::Object(_) => numeric_paths(child, &path, out),
                _ => {}
            }
        }
    }
}

/// Stop training after `patience` epochs in a row without an improvement
/// of the monitored value (Keras' `EarlyStopping`).
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    /// The watched value.
    pub monitor: Monitor,
    /// Training stops once this many epochs in a row have not improved
    /// (0: at the first epoch that does not improve).
    pub patience: usize,
}

impl EarlyStopping {
    /// Stops after `patience` epochs without an improvement of `monitor`.
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        EarlyStopping { monitor, patience }
    }
}

/// The best value seen so far and the epochs since it, saved in
/// checkpoints so that a resumed run decides as an uninterrupted one.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Tracker {
    /// The best value and its (1-based) epoch.
    pub best: Option<(f64, usize)>,
    /// Epochs since the best.
    pub bad_epochs: usize,
}

impl Tracker {
    /// Takes the value of `epoch`; true when it improves on the best.
    pub fn observe(&mut self, monitor: &Monitor, value: f64, epoch: usize) -> bool {
        if monitor.improves(value, self.best.map(|b| b.0)) {
            self.best = Some((value, epoch));
            self.bad_epochs = 0;
            true
        } else {
            self.bad_epochs += 1;
            false
        }
    }

    /// The JSON kept in checkpoint metadata (the value as text, which
    /// parses back to the same bits).
    pub fn to_json(&self, monitor: &Monitor) -> String {
        json!({
            "metric": monitor.metric,
            "best": self.best.map(|b| b.0.to_string()),
            "best_epoch": self.best.map(|b| b.1),
            "bad_epochs": self.bad_epochs,
        })
        .to_string()
    }

    /// Reads [`to_json`](Self::to_json); an error for another metric or
    /// malformed text.
    pub fn from_json(text: &str, monitor: &Monitor) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if v["metric"].as_str() != Some(monitor.metric.as_str()) {
            return Err(format!(
                "it watched {}, this trainer watches `{}`",
                v["metric"], monitor.metric
            ));
        }
        let bad_epochs = v["bad_epochs"].as_u64().ok_or("no `bad_epochs` count")? as usize;
        let best = match (&v["best"], &v["best_epoch"]) {
            (Value::Null, _) => None,
            (Value::String(s), e) => {
                let value = s.parse::<f64>().map_err(|_| format!("best value {s:?}"))?;
                let epoch = e.as_u64().ok_or("no `best_epoch`")? as usize;
                Some((value, epoch))
            }
            (other, _) => return Err(format!("best value {other}")),
        };
        Ok(Tracker { best, bad_epochs })
    }
}

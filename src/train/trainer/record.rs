//! What an epoch of training leaves: its record (one line of the JSONL
//! log) and, over a call of `fit`, the history.

use crate::provenance::Provenance;
use serde_json::{json, Map, Value};

/// The record of one epoch, as written to the log.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// Epochs trained so far, this one included (1-based).
    pub epoch: usize,
    /// Learning rate of the optimizer's first group during the epoch.
    pub lr: f64,
    /// Mean training loss per image.
    pub train_loss: f64,
    /// Seconds the training batches took (validation excluded).
    pub train_seconds: f64,
    /// Training images per second.
    pub images_per_sec: f64,
    /// The values of each validation set, `(set name, values)`, in the
    /// order the sets were given (`loss` first, then the metrics'); one set
    /// named `val` (or [`Trainer::validation_name`](super::Trainer::validation_name))
    /// with [`Trainer::fit`](super::Trainer::fit), none without validation.
    pub validation: Vec<(String, Vec<(String, f64)>)>,
    /// Fields the criterion added at the end of the epoch.
    pub extra: Map<String, Value>,
    /// The best checkpoint's value improved in this epoch.
    pub improved: bool,
    /// Early stopping ended training after this epoch.
    pub stopped_early: bool,
    /// The build and machine that trained the epoch (a resumed run may
    /// continue on another).
    pub provenance: Provenance,
}

impl EpochRecord {
    /// The value `name` (e.g. `"loss"`, `"accuracy"`) of the first
    /// validation set.
    pub fn validation(&self, name: &str) -> Option<f64> {
        let (_, values) = self.validation.first()?;
        values.iter().find(|(k, _)| k == name).map(|&(_, v)| v)
    }

    /// The value `name` of the validation set called `set`.
    pub fn validation_of(&self, set: &str, name: &str) -> Option<f64> {
        let (_, values) = self.validation.iter().find(|(s, _)| s == set)?;
        values.iter().find(|(k, _)| k == name).map(|&(_, v)| v)
    }

    /// The log line: `epoch`, `lr`, `train_loss`, `train_seconds`,
    /// `images_per_sec`, each validation set's values under its name,
    /// the criterion's fields, then `provenance`.
    pub fn to_json(&self) -> Value {
        let mut record = json!({
            "epoch": self.epoch,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "train_seconds": self.train_seconds,
            "images_per_sec": self.images_per_sec,
        });
        if let Value::Object(map) = &mut record {
            for (set, values) in &self.validation {
                let values: Map<String, Value> =
                    values.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                map.insert(set.clone(), Value::Object(values));
            }
            for (k, v) in &self.extra {
                map.insert(k.clone(), v.clone());
            }
            map.insert("provenance".into(), self.provenance.to_json());
        }
        record
    }
}

/// What a call of [`Trainer::fit`](super::Trainer::fit) did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The records of the epochs trained by this call.
    pub records: Vec<EpochRecord>,
    /// Early stopping ended training (in this call or before a resume).
    pub stopped_early: bool,
    /// The best monitored value and its epoch, when a best checkpoint is kept.
    pub best: Option<(f64, usize)>,
}

//! Saving and restoring a [`Plm`] as JSON, for training checkpoints.
//!
//! The state holds the configuration, the label counts (from which the
//! ratios are recomputed), `rhat`, the epoch's histograms, and the mask
//! counter, so that a resumed run draws exactly the masks an uninterrupted
//! run would. Floats are written as decimal strings in Rust's shortest
//! round-trip form and parsed back with Rust's exact parser, so every value
//! comes back bit for bit.
//!
//! ```text
//! {"format": "ferrite.plm", "version": 1,
//!  "config": {"lambda": "0.01", "n_bins": 10, "init": "ratio",
//!             "divergence": "pred_vs_truth", "standardize": true,
//!             "rhat_min": "1e-6", "rhat_max": "1000000.0", "seed": 0},
//!  "num_samples": N, "positives": [..C],
//!  "rhat": ["..", ..C], "batches": t, "epochs": e,
//!  "histograms": {"pos_pred": [..n_bins*C], "neg_pred": [..n_bins*C],
//!                 "pos_labels": [..C], "neg_labels": [..C], "discarded": d}}
//! ```

use super::config::{PlmConfig, RhatInit};
use super::divergence::Divergence;
use super::histogram::Histograms;
use super::objective::{Plm, Progress};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};

const FORMAT: &str = "ferrite.plm";
const VERSION: u64 = 1;
const OP: &str = "Plm::from_state_json";

/// An f64 as its shortest round-trip decimal string.
fn float_string(x: f64) -> Value {
    Value::String(format!("{x:?}"))
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg)
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value> {
    obj.get(name)
        .ok_or_else(|| invalid(format!("missing field `{name}`")))
}

fn object<'a>(v: &'a Value, name: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(format!("field `{name}` must be an object")))
}

fn get_u64(obj: &Map<String, Value>, name: &str) -> Result<u64> {
    field(obj, name)?
        .as_u64()
        .ok_or_else(|| invalid(format!("field `{name}` must be a non-negative integer")))
}

fn get_usize(obj: &Map<String, Value>, name: &str) -> Result<usize> {
    usize::try_from(get_u64(obj, name)?)
        .map_err(|_| invalid(format!("field `{name}` does not fit in usize")))
}

fn get_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str> {
    field(obj, name)?
        .as_str()
        .ok_or_else(|| invalid(format!("field `{name}` must be a string")))
}

fn parse_float(s: &str, name: &str) -> Result<f64> {
    s.parse::<f64>()
        .map_err(|_| invalid(format!("field `{name}`: `{s}` is not a number")))
}

fn get_f64(obj: &Map<String, Value>, name: &str) -> Result<f64> {
    parse_float(get_str(obj, name)?, name)
}

fn array<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Vec<Value>> {
    field(obj, name)?
        .as_array()
        .ok_or_else(|| invalid(format!("field `{name}` must be an array")))
}

fn u64_array(obj: &Map<String, Value>, name: &str) -> Result<Vec<u64>> {
    array(obj, name)?
        .iter()
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| invalid(format!("field `{name}`: {v} is not a count")))
        })
        .collect()
}

fn f64_array(obj: &Map<String, Value>, name: &str) -> Result<Vec<f64>> {
    array(obj, name)?
        .iter()
        .map(|v| match v.as_str() {
            Some(s) => parse_float(s, name),
            None => Err(invalid(format!(
                "field `{name}`: {v} is not a number string"
            ))),
        })
        .collect()
}

impl Plm {
    /// The complete state as a JSON string (format in the module docs),
    /// histogram counts pending on a device included (downloaded, which is
    /// the only way this can fail).
    pub fn state_json(&self) -> Result<String> {
        let cfg = self.config();
        let h = self.all_histograms()?;
        Ok(json!({
            "format": FORMAT,
            "version": VERSION,
            "config": {
                "lambda": float_string(cfg.lambda),
                "n_bins": cfg.n_bins,
                "init": cfg.init.as_str(),
                "divergence": cfg.divergence.as_str(),
                "standardize": cfg.standardize,
                "rhat_min": float_string(cfg.rhat_min),
                "rhat_max": float_string(cfg.rhat_max),
                "seed": cfg.seed,
            },
            "num_samples": self.num_samples(),
            "positives": self.positives(),
            "rhat": self.rhat().iter().map(|&x| float_string(x)).collect::<Vec<_>>(),
            "batches": self.batches_drawn(),
            "epochs": self.epochs(),
            "histograms": {
                "pos_pred": h.pos_pred(),
                "neg_pred": h.neg_pred(),
                "pos_labels": h.pos_labels(),
                "neg_labels": h.neg_labels(),
                "discarded": h.discarded(),
            },
        })
        .to_string())
    }

    /// Restores a state written by [`Plm::state_json`], checking the format,
    /// every field's type and length, and the configuration.
    pub fn from_state_json(s: &str) -> Result<Plm> {
        let root: Value =
            serde_json::from_str(s).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let root = object(&root, "(root)")?;
        if get_str(root, "format")? != FORMAT {
            return Err(invalid(format!("field `format` must be \"{FORMAT}\"")));
        }
        let version = get_u64(root, "version")?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported version {version} (this build reads {VERSION})"
            )));
        }
        let cfg = object(field(root, "config")?, "config")?;
        let init = get_str(cfg, "init")?;
        let divergence = get_str(cfg, "divergence")?;
        let config = PlmConfig {
            lambda: get_f64(cfg, "lambda")?,
            n_bins: get_usize(cfg, "n_bins")?,
            init: RhatInit::from_name(init)
                .ok_or_else(|| invalid(format!("unknown init `{init}`")))?,
            divergence: Divergence::from_name(divergence)
                .ok_or_else(|| invalid(format!("unknown divergence `{divergence}`")))?,
            standardize: field(cfg, "standardize")?
                .as_bool()
                .ok_or_else(|| invalid("field `standardize` must be a boolean"))?,
            rhat_min: get_f64(cfg, "rhat_min")?,
            rhat_max: get_f64(cfg, "rhat_max")?,
            seed: get_u64(cfg, "seed")?,
        };
        config.validate(OP)?;
        let positives = u64_array(root, "positives")?
            .into_iter()
            .map(|n| usize::try_from(n).map_err(|_| invalid("a positive count exceeds usize")))
            .collect::<Result<Vec<usize>>>()?;
        if positives.is_empty() {
            return Err(invalid(
                "field `positives` is empty: need at least one class",
            ));
        }
        let hist = object(field(root, "histograms")?, "histograms")?;
        let histograms = Histograms::from_counts(
            config.n_bins,
            positives.len(),
            u64_array(hist, "pos_pred")?,
            u64_array(hist, "neg_pred")?,
            u64_array(hist, "pos_labels")?,
            u64_array(hist, "neg_labels")?,
            get_u64(hist, "discarded")?,
        )
        .map_err(|e| invalid(e.to_string()))?;
        let progress = Progress {
            rhat: f64_array(root, "rhat")?,
            histograms,
            batches: get_u64(root, "batches")?,
            epochs: get_u64(root, "epochs")?,
        };
        Plm::from_parts(
            config,
            &positives,
            get_usize(root, "num_samples")?,
            Some(progress),
        )
        .map_err(|e| invalid(e.to_string()))
    }
}

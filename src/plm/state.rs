//! Saving and restoring a [`Plm`] as JSON, for training checkpoints.
//!
//! The state holds the configuration, the label counts (from which the
//! ratios are recomputed), `rhat`, the epoch's histograms, and the mask
//! counter, so that a resumed run draws exactly the masks an uninterrupted
//! run would. Floats are written as decimal strings in Rust's shortest
//! round-trip form and parsed back with Rust's exact parser, so every value
//! comes back bit for bit. States written by ferrite 0.1 (`n_bins`,
//! `pred_vs_truth`) read the same.
//!
//! ```text
//! {"format": "ferrite.plm", "version": 1,
//!  "config": {"lambda": "0.01", "bins": 10, "init": "ratio",
//!             "divergence": "pred-gt", "standardize": true,
//!             "rhat_min": "1e-6", "rhat_max": "1000000.0", "seed": 0},
//!  "num_samples": N, "positives": [..C],
//!  "rhat": ["..", ..C], "batches": t, "epochs": e,
//!  "histograms": {"pos_pred": [..n_bins*C], "neg_pred": [..n_bins*C],
//!                 "pos_labels": [..C], "neg_labels": [..C], "discarded": d}}
//! ```

use super::config::PlmConfig;
use super::histogram::Histograms;
use super::objective::{Plm, Progress};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

const FORMAT: &str = "ferrite.plm";
const VERSION: u64 = 1;
const OP: &str = "Plm::from_state_json";

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg)
}

/// The saved state, field for field (format in the module docs).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    version: u64,
    config: PlmConfig,
    num_samples: usize,
    positives: Vec<usize>,
    #[serde(with = "crate::exact_f64::vec")]
    rhat: Vec<f64>,
    batches: u64,
    epochs: u64,
    histograms: HistogramCounts,
}

/// The epoch's histogram counts ([bin][class], flattened row-major).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramCounts {
    pos_pred: Vec<u64>,
    neg_pred: Vec<u64>,
    pos_labels: Vec<u64>,
    neg_labels: Vec<u64>,
    discarded: u64,
}

impl Plm {
    /// The complete state as a JSON string (format in the module docs),
    /// histogram counts pending on a device included (downloaded, which is
    /// the only way this can fail).
    pub fn state_json(&self) -> Result<String> {
        let h = self.all_histograms()?;
        let state = StateFile {
            format: FORMAT.to_string(),
            version: VERSION,
            config: *self.config(),
            num_samples: self.num_samples(),
            positives: self.positives().to_vec(),
            rhat: self.rhat().to_vec(),
            batches: self.batches_drawn(),
            epochs: self.epochs(),
            histograms: HistogramCounts {
                pos_pred: h.pos_pred().to_vec(),
                neg_pred: h.neg_pred().to_vec(),
                pos_labels: h.pos_labels().to_vec(),
                neg_labels: h.neg_labels().to_vec(),
                discarded: h.discarded(),
            },
        };
        serde_json::to_string(&state).map_err(|e| invalid(format!("cannot encode the state: {e}")))
    }

    /// Restores a state written by [`Plm::state_json`], checking the format,
    /// every field's type and length, and the configuration. Errors name
    /// the field (`config.lambda`, `histograms.pos_pred`).
    pub fn from_state_json(s: &str) -> Result<Plm> {
        let mut json = serde_json::Deserializer::from_str(s);
        let state: StateFile =
            serde_path_to_error::deserialize(&mut json).map_err(|e| {
                match e.path().to_string().as_str() {
                    "." => invalid(format!("not a PLM state: {}", e.inner())),
                    path => invalid(format!("field `{path}`: {}", e.inner())),
                }
            })?;
        json.end()
            .map_err(|e| invalid(format!("text after the state: {e}")))?;
        if state.format != FORMAT {
            return Err(invalid(format!("field `format` must be \"{FORMAT}\"")));
        }
        if state.version != VERSION {
            return Err(invalid(format!(
                "unsupported version {} (this build reads {VERSION})",
                state.version
            )));
        }
        let config = state.config;
        config.validate(OP)?;
        if state.positives.is_empty() {
            return Err(invalid(
                "field `positives` is empty: need at least one class",
            ));
        }
        let h = state.histograms;
        let histograms = Histograms::from_counts(
            config.n_bins,
            state.positives.len(),
            h.pos_pred,
            h.neg_pred,
            h.pos_labels,
            h.neg_labels,
            h.discarded,
        )
        .map_err(|e| invalid(e.to_string()))?;
        let progress = Progress {
            rhat: state.rhat,
            histograms,
            batches: state.batches,
            epochs: state.epochs,
        };
        Plm::from_parts(config, &state.positives, state.num_samples, Some(progress))
            .map_err(|e| invalid(e.to_string()))
    }
}

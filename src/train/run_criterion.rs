//! A run's [`Objective`] as the [`Criterion`] of the generic trainer: the
//! loss of a batch, PLM's update at the end of every epoch with the
//! diagnostics that show what PLM did (added to the log record), and PLM's
//! state in the checkpoint (`train.plm`, `train.plm_coverage`).

use super::objective::Objective;
use super::trainer::Criterion;
use crate::data::loader::Batch;
use crate::data::shard::Slice;
use crate::distributed::Communicator;
use crate::error::{Error, Result};
use crate::plm::Plm;
use crate::tensor::Tensor;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The checkpoint metadata key of PLM's state.
pub(super) const META_PLM: &str = "train.plm";
/// The checkpoint metadata key of PLM's coverage so far.
const META_COVERAGE: &str = "train.plm_coverage";

/// How often, in expectation, each positive and each negative of a class
/// has been kept by PLM's masks so far: Σ over epochs of the keep
/// probabilities (epochs × keep while r̂ stands still). A coverage well
/// below 1 means the loss has barely seen those elements.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Coverage {
    pos: Vec<f64>,
    neg: Vec<f64>,
}

/// A run's objective, trained by [`Trainer`](super::trainer::Trainer).
pub struct RunObjective {
    objective: Objective,
    /// PLM's coverage; `None` without PLM, or after resuming from a
    /// checkpoint that did not record it.
    coverage: Option<Coverage>,
}

impl RunObjective {
    /// Wraps `objective`.
    pub fn new(objective: Objective) -> Self {
        let coverage = objective.plm().map(|plm| Coverage {
            pos: vec![0.0; plm.num_classes()],
            neg: vec![0.0; plm.num_classes()],
        });
        RunObjective {
            objective,
            coverage,
        }
    }

    /// The objective (with PLM's state, if any).
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// PLM's coverage so far per class (positives, negatives); `None`
    /// without PLM or after resuming a checkpoint that did not record it.
    pub fn coverage(&self) -> Option<(&[f64], &[f64])> {
        self.coverage
            .as_ref()
            .map(|c| (c.pos.as_slice(), c.neg.as_slice()))
    }
}

impl Criterion for RunObjective {
    fn loss(&mut self, output: &Tensor, batch: &Batch) -> Result<Tensor> {
        self.objective
            .loss(output, &batch.targets, batch.labels.as_ref())
    }

    /// The slice's loss, PLM's mask drawn at the slice's first row.
    fn slice_loss(&mut self, output: &Tensor, batch: &Batch, slice: Slice) -> Result<Tensor> {
        self.objective
            .loss_at(output, &batch.targets, batch.labels.as_ref(), slice.offset)
    }

    /// PLM's mask counter moves on.
    fn skip_slice(&mut self, _slice: Slice) -> Result<()> {
        self.objective.skip_batch()
    }

    /// PLM's histograms of the epoch, summed over the ranks.
    fn all_reduce_epoch(&mut self, comm: &dyn Communicator) -> Result<()> {
        self.objective.all_reduce_epoch(comm)
    }

    /// None: PLM's loss draws masks and counts predictions, which must not
    /// happen on held-out data; a run scores its test set with metrics.
    fn validation_loss(&mut self, _output: &Tensor, _batch: &Batch) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// PLM's update of r̂ with what it acted on, as the record's `plm`
    /// field: the λ used; r̂ after the update and its geometric mean (over
    /// the classes that take part; constant under standardisation); the
    /// ratios r; Δ and the divergences; the keep probabilities of
    /// positives and negatives during the epoch and the coverage so far;
    /// the classes left out of the update; the epoch's prediction
    /// histograms (`[bin][class]`, flattened row-major).
    fn end_epoch(&mut self) -> Result<Map<String, Value>> {
        let mut fields = Map::new();
        // The keep probabilities of the epoch that ends (r̂ before its update).
        let keep = self.objective.plm().map(Plm::keep_probabilities);
        let Some((update, hist)) = self.objective.end_epoch()? else {
            return Ok(fields);
        };
        let (Some(plm), Some((keep_pos, keep_neg))) = (self.objective.plm(), keep) else {
            return Ok(fields);
        };
        if let Some(c) = &mut self.coverage {
            for (sum, k) in c.pos.iter_mut().zip(&keep_pos) {
                *sum += k;
            }
            for (sum, k) in c.neg.iter_mut().zip(&keep_neg) {
                *sum += k;
            }
        }
        let mut record = json!({
            "lambda": plm.config().lambda,
            "rhat": plm.rhat(),
            "rhat_geomean": geometric_mean(plm.rhat(), plm.eligible()),
            "ratio": plm.ratios(),
            "delta": update.delta,
            "d_pos": update.d_pos,
            "d_neg": update.d_neg,
            "keep_pos": keep_pos,
            "keep_neg": keep_neg,
            "skipped": update.skipped,
            "hist_pos_pred": hist.pos_pred(),
            "hist_neg_pred": hist.neg_pred(),
        });
        if let Some(c) = &self.coverage {
            record["coverage_pos"] = json!(c.pos);
            record["coverage_neg"] = json!(c.neg);
        }
        fields.insert("plm".into(), record);
        Ok(fields)
    }

    fn state(&self) -> Result<BTreeMap<String, String>> {
        let mut state = BTreeMap::new();
        if let Some(plm) = self.objective.plm() {
            state.insert(META_PLM.to_string(), plm.state_json()?);
        }
        if let Some(c) = &self.coverage {
            let text = serde_json::to_string(c).map_err(|e| {
                Error::invalid("RunObjective::state", format!("encoding the coverage: {e}"))
            })?;
            state.insert(META_COVERAGE.to_string(), text);
        }
        Ok(state)
    }

    fn load_state(&mut self, metadata: &BTreeMap<String, String>) -> Result<()> {
        match metadata.get(META_PLM) {
            Some(state) => {
                let plm = Plm::from_state_json(state).map_err(|e| {
                    Error::invalid("RunObjective::load_state", format!("`{META_PLM}`: {e}"))
                })?;
                let classes = plm.num_classes();
                self.objective.set_plm(plm)?;
                // Checkpoints written before coverage was recorded: unknown.
                self.coverage = match metadata.get(META_COVERAGE) {
                    None => None,
                    Some(text) => {
                        let c: Coverage = serde_json::from_str(text).map_err(|e| {
                            Error::invalid(
                                "RunObjective::load_state",
                                format!("`{META_COVERAGE}`: {e}"),
                            )
                        })?;
                        if c.pos.len() != classes || c.neg.len() != classes {
                            return Err(Error::invalid(
                                "RunObjective::load_state",
                                format!("`{META_COVERAGE}` does not have {classes} classes"),
                            ));
                        }
                        Some(c)
                    }
                };
                Ok(())
            }
            None if self.objective.plm().is_some() => Err(Error::invalid(
                "RunObjective::load_state",
                format!("the run uses PLM but the checkpoint has no `{META_PLM}` state"),
            )),
            None => Ok(()),
        }
    }
}

/// The geometric mean of `values` over the classes where `include` is true
/// (1 when there are none).
fn geometric_mean(values: &[f64], include: &[bool]) -> f64 {
    let logs: Vec<f64> = values
        .iter()
        .zip(include)
        .filter(|(_, &inc)| inc)
        .map(|(v, _)| v.ln())
        .collect();
    if logs.is_empty() {
        1.0
    } else {
        (logs.iter().sum::<f64>() / logs.len() as f64).exp()
    }
}

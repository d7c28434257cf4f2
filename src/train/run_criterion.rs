//! A run's [`Objective`] as the [`Criterion`] of the generic trainer: the
//! loss of a batch, PLM's update at the end of every epoch (added to the
//! log record) and PLM's state in the checkpoint (`train.plm`).

use super::objective::Objective;
use super::trainer::Criterion;
use crate::data::loader::Batch;
use crate::error::{Error, Result};
use crate::plm::Plm;
use crate::tensor::Tensor;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The checkpoint metadata key of PLM's state.
pub(super) const META_PLM: &str = "train.plm";

/// A run's objective, trained by [`Trainer`](super::trainer::Trainer).
pub struct RunObjective {
    objective: Objective,
}

impl RunObjective {
    /// Wraps `objective`.
    pub fn new(objective: Objective) -> Self {
        RunObjective { objective }
    }

    /// The objective (with PLM's state, if any).
    pub fn objective(&self) -> &Objective {
        &self.objective
    }
}

impl Criterion for RunObjective {
    fn loss(&mut self, output: &Tensor, batch: &Batch) -> Result<Tensor> {
        self.objective
            .loss(output, &batch.targets, batch.labels.as_ref())
    }

    /// None: PLM's loss draws masks and counts predictions, which must not
    /// happen on held-out data; a run scores its test set with metrics.
    fn validation_loss(&mut self, _output: &Tensor, _batch: &Batch) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// PLM's update of r̂, with the epoch's prediction histograms
    /// (`[bin][class]`, flattened row-major), as the record's `plm` field.
    fn end_epoch(&mut self) -> Result<Map<String, Value>> {
        let mut fields = Map::new();
        if let (Some((update, hist)), Some(plm)) =
            (self.objective.end_epoch()?, self.objective.plm())
        {
            fields.insert(
                "plm".into(),
                json!({
                    "rhat": plm.rhat(),
                    "ratio": plm.ratios(),
                    "delta": update.delta,
                    "d_pos": update.d_pos,
                    "d_neg": update.d_neg,
                    "hist_pos_pred": hist.pos_pred(),
                    "hist_neg_pred": hist.neg_pred(),
                }),
            );
        }
        Ok(fields)
    }

    fn state(&self) -> Result<BTreeMap<String, String>> {
        let mut state = BTreeMap::new();
        if let Some(plm) = self.objective.plm() {
            state.insert(META_PLM.to_string(), plm.state_json()?);
        }
        Ok(state)
    }

    fn load_state(&mut self, metadata: &BTreeMap<String, String>) -> Result<()> {
        match metadata.get(META_PLM) {
            Some(state) => {
                let plm = Plm::from_state_json(state).map_err(|e| {
                    Error::invalid("RunObjective::load_state", format!("`{META_PLM}`: {e}"))
                })?;
                self.objective.set_plm(plm)
            }
            None if self.objective.plm().is_some() => Err(Error::invalid(
                "RunObjective::load_state",
                format!("the run uses PLM but the checkpoint has no `{META_PLM}` state"),
            )),
            None => Ok(()),
        }
    }
}

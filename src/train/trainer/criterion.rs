//! What a [`Trainer`](super::Trainer) minimises: a loss closure, or a
//! [`Criterion`] with per-epoch state.

use crate::data::loader::Batch;
use crate::error::Result;
use crate::tensor::Tensor;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The objective of a [`Trainer`](super::Trainer): the loss of a batch from
/// the model's output, plus optional hooks for objectives with state (e.g.
/// Partial Label Masking, whose ratios move once per epoch and must be
/// saved with the checkpoint).
///
/// Every closure `FnMut(&Tensor, &Batch) -> Result<Tensor>` is a
/// criterion, so the simple case needs no type of its own. The batch's
/// tensors (`x`, `targets`, `labels`) are already on the model's device.
pub trait Criterion {
    /// The scalar training loss of `batch`, whose model output is `output`.
    fn loss(&mut self, output: &Tensor, batch: &Batch) -> Result<Tensor>;

    /// The loss of a validation batch (computed without a graph), or `None`
    /// when the objective has no validation loss (e.g. when computing it
    /// would change its state). By default [`loss`](Self::loss).
    fn validation_loss(&mut self, output: &Tensor, batch: &Batch) -> Result<Option<Tensor>> {
        self.loss(output, batch).map(Some)
    }

    /// Called after the last training batch of every epoch, before
    /// validation; the fields returned are added to the epoch's log record.
    fn end_epoch(&mut self) -> Result<Map<String, Value>> {
        Ok(Map::new())
    }

    /// State to store in the checkpoint's metadata (keys must not start
    /// with `ferrite.` and must not be the trainer's own `train.*` keys).
    fn state(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    /// Restores the state from a checkpoint's metadata (everything
    /// [`state`](Self::state) wrote, and other entries to ignore).
    fn load_state(&mut self, _metadata: &BTreeMap<String, String>) -> Result<()> {
        Ok(())
    }
}

impl<F> Criterion for F
where
    F: FnMut(&Tensor, &Batch) -> Result<Tensor>,
{
    fn loss(&mut self, output: &Tensor, batch: &Batch) -> Result<Tensor> {
        self(output, batch)
    }
}

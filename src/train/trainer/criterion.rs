//! What a [`Trainer`](super::Trainer) minimises: a loss closure, or a
//! [`Criterion`] with per-epoch state.

use crate::data::loader::Batch;
use crate::data::shard::Slice;
use crate::distributed::Communicator;
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

    /// The training loss of a data-parallel rank's `slice` of a global
    /// batch (`batch` and `output` hold the slice's rows only): the mean
    /// over the slice (the trainer's reducer weighs it by the slice's
    /// share of the global batch). By default [`loss`](Self::loss); an
    /// objective whose randomness depends on the row within the batch
    /// (PLM's masks) draws it at `slice.offset`, so that the ranks together
    /// compute what one process computes. Only data-parallel training
    /// calls it (one process calls [`loss`](Self::loss)).
    fn slice_loss(&mut self, output: &Tensor, batch: &Batch, slice: Slice) -> Result<Tensor> {
        let _ = slice;
        self.loss(output, batch)
    }

    /// Called instead of [`slice_loss`](Self::slice_loss) for a global
    /// batch of which this rank has no rows (a last batch smaller than the
    /// number of ranks): an objective that counts batches (PLM's mask
    /// counter) moves on as the other ranks' do. By default nothing.
    fn skip_slice(&mut self, slice: Slice) -> Result<()> {
        let _ = slice;
        Ok(())
    }

    /// In data-parallel training, called on every rank after the last
    /// training batch of every epoch, before [`end_epoch`](Self::end_epoch):
    /// replaces what this rank accumulated over its slices (PLM's
    /// prediction histograms) by the sum over the ranks, so that every
    /// rank's `end_epoch` sees the whole epoch. A collective: every rank
    /// must call the same collectives. By default nothing.
    fn all_reduce_epoch(&mut self, comm: &dyn Communicator) -> Result<()> {
        let _ = comm;
        Ok(())
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

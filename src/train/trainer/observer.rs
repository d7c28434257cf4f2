//! Progress callbacks of a training loop.

use serde_json::Value;

/// Receives progress while a [`Trainer`](super::Trainer) (or a
/// [`Run`](crate::train::run::Run)) trains; every method does nothing by
/// default, so an observer implements only what it shows (the CLI draws a
/// progress bar).
pub trait Observer {
    /// An epoch (1-based `epoch` of `epochs`) starts with `batches` batches.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A training batch of `images` images finished with loss `loss`. On a
    /// GPU the losses are read back in groups (see
    /// [`LOSS_READ_INTERVAL`](super::LOSS_READ_INTERVAL)), so calls arrive
    /// in bursts, in batch order.
    fn batch_finished(&mut self, _loss: f64, _images: usize) {}
    /// An epoch finished; `record` is the line written to the log.
    fn epoch_finished(&mut self, _record: &Value) {}
    /// Something the user should know that does not stop training (e.g. a
    /// resume with another thread count than the checkpoint's).
    fn warning(&mut self, _message: &str) {}
    /// A notable event: a new best checkpoint, early stopping.
    fn info(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}

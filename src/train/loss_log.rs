//! The training losses of an epoch, read back from the device in groups.

use super::trainer::Observer;
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// On a device, the training loop reads the losses back every this many
/// batches (all of them at once), so that the host queues work ahead of the
/// GPU instead of waiting for each step; on the CPU it reads each at once.
pub const LOSS_READ_INTERVAL: usize = 16;

/// The training losses of an epoch. On the CPU each loss is read at once;
/// on a device the (detached, 0-d) losses are kept there and read back
/// [`LOSS_READ_INTERVAL`] at a time, in one download, so the host runs
/// ahead of the GPU. Every value is still checked and reported to the
/// observer, in order, with the batch it belongs to.
pub(super) struct LossLog {
    device: Device,
    epoch: usize,
    lr: f64,
    /// Losses not read yet, with their batch sizes.
    pending: Vec<(Tensor, usize)>,
    /// Batches read so far.
    read: usize,
    sum: f64,
    images: usize,
}

impl LossLog {
    pub(super) fn new(device: Device, epoch: usize, lr: f64) -> Self {
        LossLog {
            device,
            epoch,
            lr,
            pending: Vec::new(),
            read: 0,
            sum: 0.0,
            images: 0,
        }
    }

    /// Adds the loss of a batch of `n` images; reads the pending ones when
    /// it is time.
    pub(super) fn push(
        &mut self,
        loss: Tensor,
        n: usize,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        self.pending.push((loss, n));
        if self.device == Device::Cpu || self.pending.len() >= LOSS_READ_INTERVAL {
            self.read_pending(observer)?;
        }
        Ok(())
    }

    /// Reads what is pending and returns the epoch's `(Σ loss·n, images)`.
    pub(super) fn finish(mut self, observer: &mut dyn Observer) -> Result<(f64, usize)> {
        self.read_pending(observer)?;
        Ok((self.sum, self.images))
    }

    fn read_pending(&mut self, observer: &mut dyn Observer) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let losses: Vec<Tensor> = self
            .pending
            .iter()
            .map(|(l, _)| l.to_dtype(DType::F32))
            .collect::<Result<_>>()?;
        let values = Tensor::stack(&losses, 0)?.to_vec::<f32>()?;
        for (&value, &(_, n)) in values.iter().zip(&self.pending) {
            let value = value as f64;
            self.read += 1;
            if !value.is_finite() {
                return Err(Error::invalid(
                    "Trainer::train_epoch",
                    format!(
                        "the loss became {value} at epoch {} batch {}: lower the learning rate (now {})",
                        self.epoch + 1,
                        self.read,
                        self.lr
                    ),
                ));
            }
            self.sum += value * n as f64;
            self.images += n;
            observer.batch_finished(value, n);
        }
        self.pending.clear();
        Ok(())
    }
}

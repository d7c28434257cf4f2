//! Data-parallel training of a [`Trainer`]: each rank trains on its slice
//! of every global batch, gradients are all-reduced during backward, and
//! everything the log and the decisions rest on (losses, validation
//! values, early stopping, the best checkpoint) is the same on every rank.

use super::fit::batch_on;
use super::{Criterion, Observer, Trainer};
use crate::data::loader::{Batch, DataLoader};
use crate::data::shard::{with_batch_position, BatchPosition, Slice};
use crate::distributed::{
    all_gather_rows, all_reduce_f64, BucketOptions, Buffer, Communicator, Reducer, SyncGroup,
};
use crate::error::{Error, Result};
use crate::nn::{convert_sync_batch_norm, Module, Role};
use crate::ops::autocast::Precision;
use crate::optim::clip_grad_norm_;
use crate::tensor::Tensor;
use crate::train::loss_log::LossLog;
use std::rc::Rc;
use std::time::Instant;

/// A trainer's part of a data-parallel job.
pub(super) struct Parallel {
    /// The gradient reducer, which shares the communicator.
    pub reducer: Reducer,
    /// The communicator, for the model's synchronised layers.
    pub shared: Rc<dyn Communicator>,
    /// The model has buffers (batch-norm statistics): rank 0's are
    /// broadcast after every step, so the ranks stay identical.
    pub has_buffers: bool,
    /// Batch norm normalises with the global batch's statistics.
    pub sync_batch_norm: bool,
}

impl Parallel {
    pub fn comm(&self) -> &dyn Communicator {
        self.reducer.comm()
    }
}

impl<M: Module, C: Criterion> Trainer<M, C> {
    /// Trains data-parallel as one rank of the job `comm` connects (every
    /// rank builds the same trainer and calls the same methods; see
    /// [`InProcess`](crate::distributed::InProcess) for ranks as threads):
    ///
    /// - the loaders' `batch_size` is the **global** batch: every global
    ///   batch of the single-process epoch (same shuffle, same
    ///   augmentation) is cut into contiguous, balanced per-rank slices
    ///   ([`shard_range`](crate::data::shard_range)); each rank's
    ///   gradients are weighted by its share, so uneven and empty slices
    ///   still give the gradient of the global batch's mean loss;
    /// - gradients are all-reduced during backward (a [`Reducer`] with
    ///   default buckets), and clipped after the all-reduce;
    /// - models with buffers (batch norm) normalise with each rank's own
    ///   slice statistics and take rank 0's buffers after every step
    ///   (DDP's default), unless batch norm is synchronised
    ///   ([`sync_batch_norm`](Self::sync_batch_norm));
    /// - validation is sharded (each rank runs its slice of every
    ///   validation batch) and the outputs are gathered, so the loss and
    ///   every metric are computed from the whole batch's outputs, the
    ///   same on every rank; the logged training loss is the global mean;
    /// - rank 0 alone writes the output folder (log, checkpoints); every
    ///   rank takes rank 0's early-stopping and best-checkpoint decisions;
    /// - a rank that fails aborts the job, so the others fail with an
    ///   error naming it instead of waiting;
    /// - the observer of each rank hears of its own slices' losses
    ///   ([`Observer::batch_finished`]) and of the job's epoch records.
    ///
    /// Rank 0's parameters and buffers are broadcast now. Call it before
    /// [`output`](Self::output) or [`resume`](Self::resume) (so that only
    /// rank 0 writes); resuming needs every rank to read the checkpoint
    /// (a shared folder) and the job's world size to be the checkpoint's.
    pub fn with_communicator(mut self, comm: Box<dyn Communicator>) -> Result<Self> {
        const OP: &str = "Trainer::with_communicator";
        if self.parallel.is_some() {
            return Err(Error::invalid(OP, "the trainer already has a communicator"));
        }
        if self.out_dir.is_some() {
            let msg = "call with_communicator before output or resume, so that only rank 0 writes";
            comm.abort(msg);
            return Err(Error::invalid(OP, msg));
        }
        let comm: Rc<dyn Communicator> = Rc::from(comm);
        let reducer = Reducer::for_module(
            Box::new(comm.clone()),
            &self.model,
            BucketOptions::default(),
        )?;
        reducer.broadcast_state(&self.model)?;
        let mut has_buffers = false;
        self.model.visit("", &mut |_, _, role| {
            has_buffers |= role == Role::Buffer;
        });
        self.parallel = Some(Parallel {
            reducer,
            shared: comm,
            has_buffers,
            sync_batch_norm: false,
        });
        Ok(self)
    }

    /// Makes the model's batch norm synchronised over the job's ranks
    /// (PyTorch's `SyncBatchNorm`, see [`convert_sync_batch_norm`]): in
    /// training, every layer normalises with the statistics of the whole
    /// global batch instead of this rank's slice, so the job trains as one
    /// process on the whole batch would (up to rounding), at the cost of one
    /// small all-gather per batch-norm layer in forward and one small
    /// all-reduce in backward. Call it after
    /// [`with_communicator`](Self::with_communicator), on every rank.
    /// Validation (evaluation mode) is unchanged.
    ///
    /// The model may be on the CPU or a CUDA device (f32): on a device the
    /// statistics and gradients are computed there, and only the small
    /// per-channel vectors of the collectives travel through the host.
    ///
    /// Errors: a trainer without a communicator. Every global batch must
    /// then give each rank at least one sample: a batch smaller than the
    /// world is an error on every rank when it comes (use a larger batch or
    /// drop the last one).
    pub fn sync_batch_norm(mut self) -> Result<Self> {
        const OP: &str = "Trainer::sync_batch_norm";
        let Some(par) = self.parallel.as_mut() else {
            return Err(Error::invalid(
                OP,
                "synchronised batch norm needs a data-parallel trainer: call with_communicator first",
            ));
        };
        convert_sync_batch_norm(&mut self.model, &SyncGroup::new(par.shared.clone()));
        par.sync_batch_norm = true;
        Ok(self)
    }

    /// Whether batch norm is synchronised over the ranks
    /// ([`sync_batch_norm`](Self::sync_batch_norm)).
    pub fn is_batch_norm_synchronised(&self) -> bool {
        self.parallel.as_ref().is_some_and(|p| p.sync_batch_norm)
    }

    /// The communicator of a data-parallel trainer.
    pub fn communicator(&self) -> Option<&dyn Communicator> {
        self.parallel.as_ref().map(Parallel::comm)
    }

    /// This trainer's rank (0 without a communicator).
    pub fn rank(&self) -> usize {
        self.communicator().map_or(0, |c| c.rank())
    }

    /// The number of ranks training together (1 without a communicator).
    pub fn world_size(&self) -> usize {
        self.communicator().map_or(1, |c| c.world_size())
    }

    /// Whether this trainer writes the output folder: rank 0 only.
    pub fn is_writer(&self) -> bool {
        self.rank() == 0
    }

    /// `result`, after aborting the job when it is an error of a
    /// data-parallel trainer (so the other ranks stop waiting for this one).
    pub(crate) fn abort_if_error<T>(&self, result: Result<T>) -> Result<T> {
        if let (Err(e), Some(comm)) = (&result, self.communicator()) {
            comm.abort(&e.to_string());
        }
        result
    }

    /// An error when the run is continued by a job of another world size
    /// than the one that wrote its checkpoint.
    pub(super) fn check_world_size(&self) -> Result<()> {
        let (Some(stored), world) = (self.stored_world, self.world_size()) else {
            return Ok(());
        };
        if stored == world || self.is_finished() {
            return Ok(());
        }
        Err(Error::invalid(
            "Trainer::resume",
            format!(
                "the checkpoint was written by a job of {stored} rank(s) and this job has {world}: \
                 resume it with {stored} rank(s) (per-rank batch-norm statistics and the order of \
                 the sums depend on the number of ranks)"
            ),
        ))
    }

    /// The training batches of epoch `epoch` on this rank's slices:
    /// `(Σ loss·n, images, seconds)` over the whole job.
    pub(super) fn train_batches_parallel(
        &mut self,
        train: &mut DataLoader<'_>,
        epoch: usize,
        lr: f64,
        observer: &mut dyn Observer,
    ) -> Result<(f64, usize, f64)> {
        const OP: &str = "Trainer::train_epoch";
        observer.epoch_started(epoch + 1, self.epochs, train.num_batches());
        self.model.set_training(true);
        let params = self.model.parameters();
        let start = Instant::now();
        let mut losses = LossLog::new(self.device, epoch, lr);
        let Some(par) = self.parallel.as_mut() else {
            return Err(Error::invalid(OP, "no communicator"));
        };
        let (rank, world) = (par.comm().rank(), par.comm().world_size());
        let first_step = (epoch * train.num_batches()) as u64;
        for (b, item) in train.shard_epoch(epoch, rank, world)?.enumerate() {
            let (slice, batch) = item?;
            let step = first_step + b as u64;
            if par.sync_batch_norm && slice.global_len < world {
                // Every rank sees the same global batch: they all stop here.
                return Err(Error::invalid(
                    OP,
                    format!(
                        "a global batch of {} sample(s) leaves a rank of the {world} without \
                         samples, which synchronised batch norm cannot train on; use a batch \
                         size whose last batch is at least the number of ranks, or drop_last",
                        slice.global_len
                    ),
                ));
            }
            let (loss, grads) = match batch {
                None => {
                    self.criterion.skip_slice(slice)?;
                    (None, par.reducer.backward_empty(slice.global_len)?)
                }
                Some(batch) => {
                    let batch = batch_on(batch, self.device)?;
                    let (model, criterion) = (&self.model, &mut self.criterion);
                    let reducer = &mut par.reducer;
                    crate::autocast(self.precision, || -> Result<_> {
                        // Dropout draws this slice's masks at its global place.
                        let position = BatchPosition { step, slice };
                        let output = with_batch_position(position, || model.forward(&batch.x))?;
                        let loss = criterion.slice_loss(&output, &batch, slice)?;
                        if loss.numel() != 1 {
                            return Err(Error::invalid(
                                OP,
                                format!("the loss must be a scalar, got shape {:?}", loss.shape()),
                            ));
                        }
                        let grads = reducer.backward(&loss, slice.len, slice.global_len)?;
                        Ok((Some(loss), grads))
                    })?
                }
            };
            let mut grads = grads;
            if let Some(max_norm) = self.clip_grad_norm {
                clip_grad_norm_(&mut grads, &params, max_norm)?;
            }
            self.optimizer.step(&grads)?;
            if par.has_buffers {
                par.reducer.broadcast_buffers(&self.model)?;
            }
            if let Some(loss) = loss {
                losses.push(loss.detach(), slice.len, observer)?;
            }
        }
        let (loss_sum, images) = losses.finish(observer)?;
        let mut totals = [loss_sum, images as f64];
        all_reduce_f64(par.comm(), &mut totals)?;
        let images = totals[1] as usize;
        if images == 0 {
            return Err(Error::invalid(
                OP,
                "the training loader gave no batch (an empty dataset, or drop_last with fewer images than a batch)",
            ));
        }
        Ok((totals[0], images, start.elapsed().as_secs_f64()))
    }

    /// Makes every rank take rank 0's decisions of the epoch (a new best
    /// checkpoint, early stopping); they agree already when every rank saw
    /// the same values, and this keeps the ranks in step even if they did
    /// not.
    pub(super) fn agree_on_decisions(&mut self, record: &mut super::EpochRecord) -> Result<()> {
        let Some(par) = self.parallel.as_ref() else {
            return Ok(());
        };
        let flags = [record.improved, record.stopped_early];
        let mut buf = Buffer::F64(flags.iter().map(|&f| f64::from(u8::from(f))).collect());
        par.comm().broadcast(&mut buf, 0)?;
        let Buffer::F64(rank0) = buf else {
            return Err(Error::Distributed {
                op: "broadcast",
                msg: "the broadcast changed the buffer's type".into(),
            });
        };
        record.improved = rank0.first().is_some_and(|&v| v != 0.0);
        record.stopped_early = rank0.get(1).is_some_and(|&v| v != 0.0);
        self.stopped_early = record.stopped_early;
        Ok(())
    }
}

/// The outputs of `model` on the whole `batch` in data-parallel
/// validation: this rank runs its slice, and the slices of every rank are
/// gathered in rank order, so every rank holds the same outputs.
pub(super) fn gathered_outputs<M: Module>(
    model: &M,
    comm: &dyn Communicator,
    batch: &Batch,
    precision: Precision,
) -> Result<Tensor> {
    let slice = Slice::of_rank(batch.len(), comm.rank(), comm.world_size());
    let local = match slice.len {
        0 => None,
        n if n == batch.len() => Some(crate::autocast(precision, || model.forward(&batch.x))?),
        n => {
            let x = batch.x.narrow(0, slice.offset, n)?;
            Some(crate::autocast(precision, || model.forward(&x))?)
        }
    };
    let output = all_gather_rows(comm, local.as_ref())?;
    let device = batch.x.device();
    if output.device() == device {
        Ok(output)
    } else {
        output.to_device(device)
    }
}

//! A general training loop: any [`Module`], any optimizer, a loss closure
//! or a [`Criterion`], with validation each epoch, metrics, a best
//! checkpoint, early stopping, exact resume, progress callbacks and a JSONL
//! log, in the shape of PyTorch Lightning's `Trainer.fit` or Keras' `fit`.
//!
//! - [`Trainer`]: built from the model, its optimizer and the loss, then
//!   configured (`epochs`, `schedule`, `clip_grad_norm`, `precision`,
//!   `metric`, `best_checkpoint`, `early_stopping`) and given an output
//!   folder ([`Trainer::output`]) or reopened from one ([`Trainer::resume`]);
//! - [`Criterion`]: the loss, with optional per-epoch state;
//! - [`Metric`] ([`Accuracy`], [`batch_mean`]): validation values;
//! - [`Monitor`], [`EarlyStopping`]: which value decides;
//! - [`Observer`]: progress callbacks;
//! - [`EpochRecord`], [`History`]: what training did.
//!
//! Coming from PyTorch Lightning or Keras:
//!
//! | there | here |
//! |---|---|
//! | `model.to(device)`, then `Adam(model.parameters())` | `model.to_device(device)?`, then `Adam::new(..)` over `model.parameters()` |
//! | `trainer.fit(model, train_dl, val_dl)` | `trainer.fit(&mut train, Some(&mut val), &mut observer)?` |
//! | several `val_dataloaders` | `trainer.fit_sets(&mut train, &mut [("val", &mut a), ("ood", &mut b)], &mut observer)?` |
//! | `ModelCheckpoint(monitor="val_acc", mode="max")` | `.best_checkpoint(Monitor::max("val.accuracy"))` |
//! | `EarlyStopping(monitor="val_loss", patience=3, min_delta=1e-3)` | `.early_stopping(EarlyStopping::new(Monitor::min("val.loss").min_delta(1e-3), 3))` |
//! | `fit(..., ckpt_path="last")` | `Trainer::new(..)?.resume(dir)?` |
//! | an epoch-wise LR scheduler | `.schedule(CosineAnnealing { .. })` |
//! | `gradient_clip_val=1.0` | `.clip_grad_norm(Some(1.0))` |
//! | `precision="bf16-mixed"` | `.precision(Precision::Bf16)` |
//! | `strategy="ddp"` | `.with_communicator(comm)?` on every rank |
//! | callbacks | an [`Observer`] |
//!
//! The trainer trains on the device of the model's parameters: move the
//! model ([`Module::to_device`]) before building its optimizer, and every
//! batch follows it there. An optimizer holding tensors that are not the
//! model's parameters (built before the move) is refused.
//!
//! An output folder holds `log.jsonl` (one record per epoch),
//! `checkpoint.safetensors` (after every epoch, atomically: model,
//! optimizer state, epoch, the criterion's state, the best value and
//! early-stopping counters) and, with a best checkpoint,
//! `best.safetensors`. A run resumed on the same device with the same
//! worker-thread count trains bit-identically to an uninterrupted one:
//! shuffles and augmentations are drawn from `(seed, epoch)`, and anything
//! else is a warning to the observer. (A [`Dropout`](crate::nn::Dropout)
//! layer's generator is not in the checkpoint: models with dropout resume
//! with fresh draws.)
//!
//! Data-parallel training ([`Trainer::with_communicator`], one trainer per
//! rank, ranks connected by a [`Communicator`](crate::distributed::Communicator)):
//! the batch size is the global batch, each rank trains on its slice of
//! every global batch with gradients all-reduced during backward,
//! validation is sharded and gathered, and rank 0 alone writes the output
//! folder; the values logged and the decisions taken are the same on every
//! rank.
//!
//! On a GPU the host never waits for a training step: the losses stay on
//! the device and are read back [`LOSS_READ_INTERVAL`] batches at a time
//! (each still checked for NaN and reported to the observer).

mod criterion;
mod files;
mod fit;
mod metric;
mod monitor;
mod observer;
mod parallel;
mod record;
mod state;

pub use super::loss_log::LOSS_READ_INTERVAL;
pub use criterion::Criterion;
pub use files::{refuse_existing_run, BEST_CHECKPOINT_FILE, CHECKPOINT_FILE, LOG_FILE};
pub use metric::{batch_mean, Accuracy, BatchMean, Metric};
pub use monitor::{EarlyStopping, Mode, Monitor};
pub use observer::{Observer, Quiet};
pub use record::{EpochRecord, History};

use crate::checkpoint::CheckpointOptimizer;
use crate::data::loader::Batch;
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::optim::{LrSchedule, Optimizer};
use crate::tensor::{Device, Tensor};
use crate::Precision;
use monitor::Tracker;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// An optimizer a [`Trainer`] can drive and checkpoint: every
/// [`Optimizer`] that is also a [`CheckpointOptimizer`] ([`Sgd`](crate::optim::Sgd),
/// [`Adam`](crate::optim::Adam), or your own).
pub trait TrainOptimizer: Optimizer + CheckpointOptimizer {}

impl<T: Optimizer + CheckpointOptimizer> TrainOptimizer for T {}

/// A boxed optimizer (e.g. one chosen at run time) trains like the optimizer.
impl Optimizer for Box<dyn TrainOptimizer> {
    fn step(&mut self, grads: &crate::GradStore) -> Result<()> {
        (**self).step(grads)
    }
    fn groups(&self) -> &[crate::optim::ParamGroup] {
        (**self).groups()
    }
    fn set_lr(&mut self, group: usize, lr: f64) {
        (**self).set_lr(group, lr)
    }
    fn lr(&self, group: usize) -> f64 {
        (**self).lr(group)
    }
    fn steps(&self) -> u64 {
        (**self).steps()
    }
}

/// A boxed optimizer checkpoints like the optimizer.
impl CheckpointOptimizer for Box<dyn TrainOptimizer> {
    fn checkpoint_state(&self) -> Result<crate::checkpoint::OptimizerState> {
        (**self).checkpoint_state()
    }
    fn restore_checkpoint_state(
        &mut self,
        state: &crate::checkpoint::OptimizerState,
    ) -> Result<()> {
        (**self).restore_checkpoint_state(state)
    }
}

/// Trains a model epoch by epoch (see the [module docs](self)).
///
/// ```
/// use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
/// use ferrite::data::{ImageDataset, Labels};
/// use ferrite::loss::{cross_entropy, CrossEntropyOptions};
/// use ferrite::nn::{Bias, Flatten, Linear, Module, Sequential};
/// use ferrite::optim::{ParamGroup, Sgd, SgdConfig};
/// use ferrite::rand::{rngs::StdRng, SeedableRng};
/// use ferrite::train::trainer::{Accuracy, EarlyStopping, Monitor, Quiet, Trainer};
/// use ferrite::{Error, Tensor};
///
/// // 64 grey 2×2 images of two classes, told apart by their first pixel.
/// let labels: Vec<u32> = (0..64).map(|i| i % 2).collect();
/// let images = labels.iter().flat_map(|&c| [200 * c as u8, 7, 7, 7]).collect();
/// let data = ImageDataset {
///     images, channels: 1, height: 2, width: 2, num_classes: 2,
///     labels: Labels::Single(labels), name: "toy".into(),
/// };
/// let mut rng = StdRng::seed_from_u64(0);
/// let model = Sequential::new().with(Flatten).with(Linear::new(4, 2, Bias::Yes, &mut rng)?);
/// let optimizer = Sgd::new(vec![ParamGroup::new(model.parameters(), 0.5, 0.0)], SgdConfig::default())?;
/// let loss = |logits: &Tensor, batch: &Batch| {
///     cross_entropy(logits, batch.class_labels()?, &CrossEntropyOptions::default())
/// };
/// let dir = std::env::temp_dir().join(format!("ferrite-trainer-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let mut trainer = Trainer::new(model, optimizer, loss)?
///     .epochs(5)
///     .metric(Accuracy::new())
///     .best_checkpoint(Monitor::max("val.accuracy"))
///     .early_stopping(EarlyStopping::new(Monitor::min("val.loss"), 2))
///     .output(&dir)?; // refuses a folder that already holds a run
///
/// let mut train = DataLoader::new(&data, LoaderConfig::training(16, 0))?;
/// let mut val = DataLoader::new(&data, LoaderConfig::evaluation(64))?;
/// let history = trainer.fit(&mut train, Some(&mut val), &mut Quiet)?;
/// let last = history.records.last().unwrap();
/// assert!(last.validation("accuracy").unwrap() > 0.9);
/// assert!(dir.join("best.safetensors").exists());
///
/// // Later (another process): the same model and optimizer, reopened.
/// # let mut rng = StdRng::seed_from_u64(0);
/// # let model = Sequential::new().with(Flatten).with(Linear::new(4, 2, Bias::Yes, &mut rng)?);
/// # let optimizer = Sgd::new(vec![ParamGroup::new(model.parameters(), 0.5, 0.0)], SgdConfig::default())?;
/// let trainer = Trainer::new(model, optimizer, loss)?.epochs(5).resume(&dir)?;
/// assert_eq!(trainer.epochs_done(), last.epoch);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), ferrite::Error>(())
/// ```
pub struct Trainer<M: Module, C: Criterion> {
    model: M,
    optimizer: Box<dyn TrainOptimizer>,
    criterion: C,
    metrics: Vec<Box<dyn Metric>>,
    schedule: Option<Box<dyn LrSchedule>>,
    clip_grad_norm: Option<f64>,
    precision: Precision,
    epochs: usize,
    validation_name: String,
    best: Option<(Monitor, Tracker)>,
    early: Option<(EarlyStopping, Tracker)>,
    stopped_early: bool,
    out_dir: Option<PathBuf>,
    metadata: BTreeMap<String, String>,
    device: Device,
    epochs_done: usize,
    seconds: f64,
    stored_threads: Option<usize>,
    stored_device: Option<String>,
    /// The world size of the job that wrote the checkpoint resumed from
    /// (1 for a single process); `None` for a new run.
    stored_world: Option<usize>,
    /// Data-parallel training: the reducer and its communicator.
    parallel: Option<parallel::Parallel>,
}

impl<M: Module, F> Trainer<M, F>
where
    F: FnMut(&Tensor, &Batch) -> Result<Tensor>,
{
    /// A trainer of `model` by `optimizer` (built over the model's
    /// parameters, after the model was moved to its device) minimising
    /// `loss(output, batch)`. One epoch, no validation metric other than
    /// the loss, no files until [`output`](Self::output) or
    /// [`resume`](Self::resume). An error when the optimizer has no
    /// parameter group, holds tensors that are not the model's parameters,
    /// or the parameters are not all on one usable device.
    pub fn new(model: M, optimizer: impl TrainOptimizer + 'static, loss: F) -> Result<Self> {
        Self::with_criterion(model, optimizer, loss)
    }
}

impl<M: Module, C: Criterion> Trainer<M, C> {
    /// [`Trainer::new`] with a [`Criterion`] (a loss with per-epoch state).
    pub fn with_criterion(
        model: M,
        optimizer: impl TrainOptimizer + 'static,
        criterion: C,
    ) -> Result<Self> {
        const OP: &str = "Trainer::new";
        if optimizer.groups().is_empty() {
            return Err(Error::invalid(OP, "the optimizer has no parameter group"));
        }
        let params = model.parameters();
        let device = params.first().map_or(Device::Cpu, Tensor::device);
        if let Some(p) = params.iter().find(|p| p.device() != device) {
            return Err(Error::invalid(
                OP,
                format!(
                    "the model's parameters are on {device} and {}: move the whole model with to_device",
                    p.device()
                ),
            ));
        }
        crate::backend::check_device(device)?;
        let ids: HashSet<_> = params.iter().map(Tensor::id).collect();
        let foreign = optimizer
            .groups()
            .iter()
            .flat_map(|g| &g.params)
            .filter(|p| !ids.contains(&p.id()))
            .count();
        if foreign > 0 {
            return Err(Error::invalid(
                OP,
                format!(
                    "the optimizer holds {foreign} tensor(s) that are not parameters of the model \
                     (was the model moved with to_device after the optimizer was built? \
                     build the optimizer over model.parameters() after the move)"
                ),
            ));
        }
        Ok(Trainer {
            model,
            optimizer: Box::new(optimizer),
            criterion,
            metrics: Vec::new(),
            schedule: None,
            clip_grad_norm: None,
            precision: Precision::default(),
            epochs: 1,
            validation_name: "val".into(),
            best: None,
            early: None,
            stopped_early: false,
            out_dir: None,
            metadata: BTreeMap::new(),
            device,
            epochs_done: 0,
            seconds: 0.0,
            stored_threads: None,
            stored_device: None,
            stored_world: None,
            parallel: None,
        })
    }

    /// Trains `epochs` epochs in all (resumed epochs count).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets each group's learning rate at the start of every epoch from
    /// `schedule` and the group's base rate.
    pub fn schedule(mut self, schedule: impl LrSchedule + 'static) -> Self {
        self.schedule = Some(Box::new(schedule));
        self
    }

    /// [`schedule`](Self::schedule) with a boxed schedule, or none.
    pub fn boxed_schedule(mut self, schedule: Option<Box<dyn LrSchedule>>) -> Self {
        self.schedule = schedule;
        self
    }

    /// Clips the gradients to a joint L2 norm of at most `max_norm` before
    /// every step (`None`: no clipping).
    pub fn clip_grad_norm(mut self, max_norm: Option<f64>) -> Self {
        self.clip_grad_norm = max_norm;
        self
    }

    /// Runs forward passes and losses under `precision` (autocast).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Adds a validation metric.
    pub fn metric(mut self, metric: impl Metric + 'static) -> Self {
        self.metrics.push(Box::new(metric));
        self
    }

    /// Names the validation section of the epoch records (default `val`).
    pub fn validation_name(mut self, name: impl Into<String>) -> Self {
        self.validation_name = name.into();
        self
    }

    /// Writes `best.safetensors` (a training checkpoint) after every epoch
    /// that improves the value watched by `monitor`. Needs an output folder.
    pub fn best_checkpoint(mut self, monitor: Monitor) -> Self {
        self.best = Some((monitor, Tracker::default()));
        self
    }

    /// Stops training after `early.patience` epochs without improvement.
    pub fn early_stopping(mut self, early: EarlyStopping) -> Self {
        self.early = Some((early, Tracker::default()));
        self
    }

    /// Adds `key = value` to the metadata of every checkpoint (e.g. the
    /// configuration a run was built from). Keys starting with `ferrite.`
    /// or naming the trainer's own entries are refused when saving.
    pub fn checkpoint_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Starts a new run writing into `dir` (created if needed): refuses a
    /// folder that already holds a run (nothing written before is
    /// overwritten: resume it instead), removes temporary files of killed
    /// writers, starts an empty `log.jsonl`. In data-parallel training
    /// every rank checks the folder and rank 0 alone writes it.
    pub fn output(mut self, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let started = if self.is_writer() {
            files::start_new_run("Trainer::output", &dir)
        } else {
            refuse_existing_run("Trainer::output", &dir)
        };
        self.abort_if_error(started)?;
        self.out_dir = Some(dir);
        Ok(self)
    }

    /// Reopens the run in `dir` from its `checkpoint.safetensors`: model,
    /// optimizer state, epoch counter, the criterion's state, the best value
    /// and early-stopping counters, so that training continues exactly
    /// where it stopped. The trainer must be built as the run was (same
    /// model, optimizer kind, monitors). Log lines of epochs after the
    /// checkpoint (from a process killed between the two writes) are
    /// dropped, and so are temporary files of killed writers.
    ///
    /// In data-parallel training every rank reads the checkpoint (the
    /// folder must be shared), rank 0 alone tidies the folder, and a job of
    /// another world size than the checkpoint's is refused.
    pub fn resume(mut self, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let resumed = self.resume_from(&dir);
        self.abort_if_error(resumed)?;
        self.out_dir = Some(dir);
        Ok(self)
    }

    fn resume_from(&mut self, dir: &Path) -> Result<()> {
        if self.is_writer() {
            crate::checkpoint::remove_stale_temp_files(dir)?;
        }
        let path = dir.join(CHECKPOINT_FILE);
        let ckpt = crate::checkpoint::read_training(&path)?;
        self.restore(&ckpt, &path)?;
        self.check_world_size()?;
        if self.is_writer() {
            files::truncate_log(dir, self.epochs_done)?;
        }
        Ok(())
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably (e.g. to switch modes; do not replace its
    /// tensors: the optimizer holds them).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The model mutably and the criterion, at once (e.g. to score a
    /// dataset with the criterion's activation).
    pub fn model_and_criterion(&mut self) -> (&mut M, &C) {
        (&mut self.model, &self.criterion)
    }

    /// The model mutably, the criterion and the communicator of a
    /// data-parallel trainer, at once (a run's sharded scoring).
    pub(crate) fn scoring_parts(
        &mut self,
    ) -> (&mut M, &C, Option<&dyn crate::distributed::Communicator>) {
        let comm = self.parallel.as_ref().map(|p| p.comm());
        (&mut self.model, &self.criterion, comm)
    }

    /// The model, giving up the trainer.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn TrainOptimizer {
        self.optimizer.as_ref()
    }

    /// The criterion.
    pub fn criterion(&self) -> &C {
        &self.criterion
    }

    /// The criterion, mutably.
    pub fn criterion_mut(&mut self) -> &mut C {
        &mut self.criterion
    }

    /// The number of epochs to train in all.
    pub fn total_epochs(&self) -> usize {
        self.epochs
    }

    /// Epochs trained so far (across resumes).
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Training seconds so far (across resumes).
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// The device the model trains on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The output folder, if any.
    pub fn out_dir(&self) -> Option<&Path> {
        self.out_dir.as_deref()
    }

    /// Early stopping has ended training.
    pub fn stopped_early(&self) -> bool {
        self.stopped_early
    }

    /// The best monitored value and its epoch (with a best checkpoint).
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.as_ref().and_then(|(_, t)| t.best)
    }

    /// Training is over: every epoch done, or stopped early.
    pub fn is_finished(&self) -> bool {
        self.stopped_early || self.epochs_done >= self.epochs
    }

    /// The worker-thread count stored in the checkpoint this trainer
    /// resumed from (`None` for a new run or an older checkpoint).
    pub fn checkpoint_threads(&self) -> Option<usize> {
        self.stored_threads
    }

    /// The warning for continuing with `threads` worker threads a run
    /// whose checkpoint was written with another count, if that is the case.
    pub fn thread_count_warning(&self, threads: usize) -> Option<String> {
        let stored = self.stored_threads?;
        (stored != threads && !self.is_finished()).then(|| {
            format!(
                "the checkpoint was written with {stored} worker thread(s) and training continues with {threads}: \
                 results will not be bit-identical to an uninterrupted run \
                 (train with {stored} worker thread(s) for that: --threads {stored} on the command line)"
            )
        })
    }

    /// The warning for continuing on another device than the one that
    /// wrote the checkpoint, if that is the case.
    pub fn device_warning(&self) -> Option<String> {
        let stored = self.stored_device.as_deref()?;
        let now = self.device.to_string();
        (stored != now && !self.is_finished()).then(|| {
            format!(
                "the checkpoint was written on {stored} and training continues on {now}: \
                 results will not be bit-identical to an uninterrupted run"
            )
        })
    }
}

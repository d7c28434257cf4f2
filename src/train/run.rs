//! A run of the `ferrite train` command in an output folder: the ResNet,
//! optimizer, objective and datasets its [`TrainConfig`] names, trained by
//! the generic [`Trainer`] (which writes the JSONL log and the atomic
//! checkpoints), the test set scored every epoch, and the final report.

use super::config::TrainConfig;
use super::datasets::{class_names, load_datasets, RunData};
use super::evaluation::Evaluation;
use super::model::build_model;
use super::objective::Objective;
use super::optimizer::{build_schedule, RunOptimizer};
use super::report::{write_report, RunSummary};
use super::run_criterion::RunObjective;
use super::run_metric::RunEvaluation;
use super::scoring::{evaluate_model, DIVERGED};
use super::trainer::{refuse_existing_run, Trainer};
pub use super::trainer::{Observer, Quiet, CHECKPOINT_FILE, LOG_FILE, LOSS_READ_INTERVAL};
use crate::checkpoint::{read_training, remove_stale_temp_files, TrainingCheckpoint};
use crate::data::loader::{DataLoader, LoaderConfig};
use crate::data::ImageDataset;
use crate::distributed::Communicator;
use crate::error::{Error, Result};
use crate::nn::resnet::ResNet;
use crate::nn::Module;
use crate::tensor::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The run's configuration.
pub const CONFIG_FILE: &str = "config.json";

const META_CONFIG: &str = "train.config";

/// The name of the test section of a run's log records.
const TEST_SECTION: &str = "test";
/// The log and report section of MultiMNIST-LT's balanced test set.
pub const BALANCED_SECTION: &str = "test_balanced";

/// A training run of a [`TrainConfig`] in an output folder.
pub struct Run {
    config: TrainConfig,
    out_dir: PathBuf,
    /// Shared so that loaders can borrow the datasets while `self` is borrowed mutably.
    data: Arc<RunData>,
    trainer: Trainer<ResNet, RunObjective>,
}

impl Run {
    /// Prepares a new run of `config` writing into `out_dir` (created if
    /// needed). Refuses a folder that already holds a run's checkpoint, so
    /// nothing written before is overwritten: resume it instead. Temporary
    /// files that killed writers left in the folder are removed.
    pub fn new(config: TrainConfig, out_dir: impl AsRef<Path>) -> Result<Self> {
        Self::new_on(config, out_dir, Device::Cpu)
    }

    /// [`Run::new`] training on `device` (the model, its optimizer state
    /// and every batch live there). A device that cannot be used is an
    /// [`Error::DeviceUnavailable`] before anything is written.
    pub fn new_on(config: TrainConfig, out_dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::new_with(config, out_dir, device, None)
    }

    /// [`Run::new_on`] as one rank of a data-parallel job when `comm` is
    /// given (every rank of the job calls it with the same configuration
    /// and output folder, then [`Run::run`]): `batch_size` is the global
    /// batch, each rank trains on its slice of every batch, evaluation is
    /// sharded and gathered, rank 0 alone writes the folder (see
    /// [`Trainer::with_communicator`]). PLM draws each rank's masks at its
    /// slice's place in the global batch and sums the histograms over the
    /// ranks, so masks and r̂ are those of one process.
    ///
    /// ```no_run
    /// use ferrite::distributed::InProcess;
    /// use ferrite::train::{config::*, run::{Run, Quiet}};
    /// use ferrite::Device;
    /// let config = TrainConfig::new(DataConfig::new(DatasetKind::MultiMnistLt), "resnet8", "plm".parse()?);
    /// let group = InProcess::group(2)?; // ranks as threads; MPI ranks alike
    /// std::thread::scope(|s| {
    ///     for comm in group {
    ///         let config = config.clone();
    ///         s.spawn(move || -> ferrite::Result<()> {
    ///             let mut run = Run::new_with(config, "runs/ddp", Device::Cpu, Some(Box::new(comm)))?;
    ///             run.run(&mut Quiet)?;
    ///             Ok(())
    ///         });
    ///     }
    /// });
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn new_with(
        config: TrainConfig,
        out_dir: impl AsRef<Path>,
        device: Device,
        comm: Option<Box<dyn Communicator>>,
    ) -> Result<Self> {
        let out_dir = out_dir.as_ref().to_path_buf();
        let checked = config
            .validate()
            .and_then(|()| crate::backend::check_device(device))
            .and_then(|()| refuse_existing_run("Run::new", &out_dir));
        if let Err(e) = checked {
            return Err(abort_job(&comm, e));
        }
        let mut run = Self::build(config, out_dir, device, comm)?;
        run.trainer = run.trainer.output(&run.out_dir)?;
        if run.trainer.is_writer() {
            let text = serde_json::to_string_pretty(&run.config.to_json()).unwrap_or_default();
            let written = super::write_text(&run.out_dir.join(CONFIG_FILE), &text);
            run.trainer.abort_if_error(written)?;
        }
        Ok(run)
    }

    /// Reopens the run in `out_dir` from its checkpoint: configuration,
    /// model, optimizer, PLM state and epoch count, so training continues
    /// exactly where it stopped. Log lines of epochs after the checkpoint
    /// (from a run killed between log and checkpoint) are dropped, and so
    /// are temporary files of writes that a killed process left behind.
    pub fn resume(out_dir: impl AsRef<Path>) -> Result<Self> {
        Self::resume_on(out_dir, Device::Cpu)
    }

    /// [`Run::resume`] continuing on `device` (the checkpoint is
    /// loaded there, whichever device wrote it).
    pub fn resume_on(out_dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::resume_with(out_dir, device, None)
    }

    /// [`Run::resume_on`] as one rank of a data-parallel job when `comm` is
    /// given (see [`Run::new_with`]): every rank reads the checkpoint (the
    /// folder must be shared), rank 0 alone tidies and writes the folder,
    /// and the job must have the world size of the job that wrote it.
    pub fn resume_with(
        out_dir: impl AsRef<Path>,
        device: Device,
        comm: Option<Box<dyn Communicator>>,
    ) -> Result<Self> {
        let out_dir = out_dir.as_ref().to_path_buf();
        let writer = comm.as_ref().is_none_or(|c| c.rank() == 0);
        let read = (|| -> Result<_> {
            crate::backend::check_device(device)?;
            if writer {
                remove_stale_temp_files(&out_dir)?;
            }
            let path = out_dir.join(CHECKPOINT_FILE);
            let ckpt = read_training(&path)?;
            Ok((path, ckpt))
        })();
        let (path, ckpt) = read.map_err(|e| abort_job(&comm, e))?;
        let mut run = Self::open(&ckpt, &path, out_dir, None, device, comm)?;
        run.trainer = run.trainer.resume(&run.out_dir)?;
        Ok(run)
    }

    /// Builds the run stored in checkpoint `ckpt` (read from `path`; writing,
    /// if it ever trains, into `out_dir`), reading the data from `data_dir`
    /// when given instead of the stored folder, and restores its state.
    fn open(
        ckpt: &TrainingCheckpoint,
        path: &Path,
        out_dir: PathBuf,
        data_dir: Option<PathBuf>,
        device: Device,
        comm: Option<Box<dyn Communicator>>,
    ) -> Result<Self> {
        let checked = Self::stored_and_checked(ckpt, path, data_dir);
        let config = checked.map_err(|e| abort_job(&comm, e))?;
        let mut run = Self::build(config, out_dir, device, comm)?;
        let restored = run.trainer.restore(ckpt, path);
        run.trainer.abort_if_error(restored)?;
        Ok(run)
    }

    /// The configuration stored in `ckpt` (with `data_dir` when given),
    /// checked against the checkpoint's epoch counter.
    fn stored_and_checked(
        ckpt: &TrainingCheckpoint,
        path: &Path,
        data_dir: Option<PathBuf>,
    ) -> Result<TrainConfig> {
        let mut config = stored_config(ckpt, path)?;
        if let Some(dir) = data_dir {
            config.data.dir = dir;
        }
        // Checked before `build`, which loads or generates the data.
        if !usize::try_from(ckpt.epoch).is_ok_and(|e| e <= config.epochs) {
            return Err(Error::CorruptFile {
                path: path.display().to_string(),
                msg: format!(
                    "the epoch counter ({}) exceeds the {} epochs of the run's configuration",
                    ckpt.epoch, config.epochs
                ),
            });
        }
        Ok(config)
    }

    /// Reads the configuration stored in a run's checkpoint.
    pub fn config_of_checkpoint(path: impl AsRef<Path>) -> Result<TrainConfig> {
        let path = path.as_ref();
        stored_config(&read_training(path)?, path)
    }

    /// The report of the run in checkpoint `path` on its test set (read
    /// from `data_dir` when given), computed on `device`: nothing is
    /// written.
    pub fn evaluate_checkpoint_at(
        path: &Path,
        data_dir: Option<PathBuf>,
        device: Device,
    ) -> Result<RunSummary> {
        crate::backend::check_device(device)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let ckpt = read_training(path)?;
        let mut run = Self::open(&ckpt, path, dir, data_dir, device, None)?;
        run.summary()
    }

    fn summary(&mut self) -> Result<RunSummary> {
        let evaluation = self.evaluate_test(self.epochs_done())?;
        let names = class_names(self.config.data.kind, self.data.train.num_classes);
        let (plm, seconds) = (self.objective().plm(), self.trainer.seconds());
        let mut summary = RunSummary::new(
            &self.config,
            &self.data,
            &evaluation,
            plm,
            seconds,
            names.clone(),
        );
        let ranks = self.trainer.world_size();
        summary.provenance = summary.provenance.map(|p| p.with_ranks(ranks));
        let data = Arc::clone(&self.data);
        if let Some(balanced) = &data.test_balanced {
            let evaluation = self
                .evaluate(balanced)
                .map_err(|e| self.diverged_hint(e, self.epochs_done()))?;
            let mut other = RunSummary::new(
                &self.config,
                &self.data,
                &evaluation,
                self.objective().plm(),
                seconds,
                names,
            );
            other.test_size = balanced.len();
            other.title = format!("{} — balanced test set", other.title);
            // Said once, in the main report.
            (other.provenance, other.plm_lambda) = (None, None);
            summary
                .other_sets
                .push((BALANCED_SECTION.to_string(), other));
        }
        if let Some((pos, neg)) = self.trainer.criterion().coverage() {
            summary.set_plm_coverage(pos, neg);
        }
        Ok(summary)
    }

    /// Builds the run's data, model, optimizer and trainer (data-parallel
    /// with `comm`); an error aborts `comm`'s job.
    fn build(
        config: TrainConfig,
        out_dir: PathBuf,
        device: Device,
        comm: Option<Box<dyn Communicator>>,
    ) -> Result<Self> {
        let mut run =
            Self::build_local(config, out_dir, device).map_err(|e| abort_job(&comm, e))?;
        if let Some(comm) = comm {
            run.trainer = run.trainer.with_communicator(comm)?;
            if run.config.sync_batch_norm {
                run.trainer = run.trainer.sync_batch_norm()?;
            }
        }
        Ok(run)
    }

    fn build_local(config: TrainConfig, out_dir: PathBuf, device: Device) -> Result<Self> {
        let data = load_datasets(&config.data)?;
        let mut rng = StdRng::seed_from_u64(config.seed);
        // Built on the host (the same initial weights on every device), then
        // moved before the optimizer takes its parameters.
        let mut model = build_model(
            &config.model,
            config.stem.as_deref(),
            data.train.channels,
            data.train.num_classes,
            &mut rng,
        )?;
        model.to_device(device)?;
        let optimizer = RunOptimizer::new(&config.optim, &model)?;
        let objective = || {
            Objective::new(
                &config.loss,
                config.epochs,
                config.seed,
                &data.train_positives,
                data.train.len(),
            )
        };
        let evaluation = RunEvaluation::new(
            objective()?,
            data.train.num_classes,
            data.train_positives.clone(),
            config.threshold,
        );
        let trainer = Trainer::with_criterion(model, optimizer, RunObjective::new(objective()?))?
            .epochs(config.epochs)
            .boxed_schedule(Some(build_schedule(&config.optim, config.epochs)))
            .clip_grad_norm(config.optim.clip_grad_norm)
            .precision(config.precision)
            .metric(evaluation)
            .validation_name(TEST_SECTION)
            .checkpoint_metadata(META_CONFIG, config.to_json().to_string());
        Ok(Run {
            config,
            out_dir,
            data: Arc::new(data),
            trainer,
        })
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The model being trained.
    pub fn model(&self) -> &ResNet {
        self.trainer.model()
    }

    /// The generic trainer underneath.
    pub fn trainer(&self) -> &Trainer<ResNet, RunObjective> {
        &self.trainer
    }

    /// The datasets of the run.
    pub fn data(&self) -> &RunData {
        &self.data
    }

    /// The objective (with PLM's state, if any).
    pub fn objective(&self) -> &Objective {
        self.trainer.criterion().objective()
    }

    /// Epochs trained so far.
    pub fn epochs_done(&self) -> usize {
        self.trainer.epochs_done()
    }

    /// The device the run trains on.
    pub fn device(&self) -> Device {
        self.trainer.device()
    }

    /// The warning for continuing on another device than the one that
    /// wrote the checkpoint, if that is the case.
    pub fn device_warning(&self) -> Option<String> {
        self.trainer.device_warning()
    }

    /// The worker-thread count stored in the checkpoint this run was
    /// reopened from (`None` for a new run or an older checkpoint).
    pub fn checkpoint_threads(&self) -> Option<usize> {
        self.trainer.checkpoint_threads()
    }

    /// The warning for continuing with `threads` worker threads a run
    /// whose checkpoint was written with another count, if that is the case.
    pub fn thread_count_warning(&self, threads: usize) -> Option<String> {
        self.trainer.thread_count_warning(threads)
    }

    /// Trains the remaining epochs, then evaluates, writes the report files
    /// (`report.md`, `report.json`, `per_class.svg`) and returns the summary.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<RunSummary> {
        if self.config.sync_batch_norm && self.trainer.communicator().is_none() {
            return Err(Error::invalid(
                "Run::run",
                "this run synchronises batch norm over the ranks of a data-parallel job \
                 (sync_batch_norm, `--sync-batch-norm`): train it as a data-parallel job \
                 (`--distributed`)",
            ));
        }
        let data = Arc::clone(&self.data);
        let mut train = DataLoader::new(&data.train, self.loader_config(true))?;
        let mut test = DataLoader::new(&data.test, self.loader_config(false))?;
        let mut balanced = self.balanced_loader(&data)?;
        let mut sets = test_sets(&mut test, balanced.as_mut());
        let fitted = self.trainer.fit_sets(&mut train, &mut sets, observer);
        fitted.map_err(|e| self.diverged_hint(e, self.epochs_done() + 1))?;
        let summary = self.summary();
        let summary = self.trainer.abort_if_error(summary)?;
        if self.trainer.is_writer() {
            let written = write_report(&self.out_dir, &summary);
            self.trainer.abort_if_error(written)?;
        }
        Ok(summary)
    }

    /// Trains one epoch, updates PLM, evaluates, appends the log line and
    /// writes the checkpoint. Returns the log record.
    pub fn train_epoch(&mut self, observer: &mut dyn Observer) -> Result<Value> {
        let data = Arc::clone(&self.data);
        let mut train = DataLoader::new(&data.train, self.loader_config(true))?;
        let mut test = DataLoader::new(&data.test, self.loader_config(false))?;
        let mut balanced = self.balanced_loader(&data)?;
        let mut sets = test_sets(&mut test, balanced.as_mut());
        let record = self
            .trainer
            .train_epoch_sets(&mut train, &mut sets, observer);
        let record = record.map_err(|e| self.diverged_hint(e, self.epochs_done() + 1))?;
        Ok(record.to_json())
    }

    /// The loader of the balanced test set, when the run has one.
    fn balanced_loader<'d>(&self, data: &'d RunData) -> Result<Option<DataLoader<'d>>> {
        data.test_balanced
            .as_ref()
            .map(|d| DataLoader::new(d, self.loader_config(false)))
            .transpose()
    }

    /// The loader of the training set (shuffled, augmented) or of an
    /// evaluation set (dataset order, batches of at least 256).
    fn loader_config(&self, training: bool) -> LoaderConfig {
        LoaderConfig {
            batch_size: if training {
                self.config.batch_size
            } else {
                self.config.batch_size.max(256)
            },
            shuffle: training,
            drop_last: false,
            seed: self.config.seed,
            crop_padding: if training {
                self.config.data.crop_padding
            } else {
                0
            },
            hflip: training && self.config.data.hflip,
            mean: self.data.mean.clone(),
            std: self.data.std.clone(),
        }
    }

    /// The metrics of the current model on `dataset` (evaluation mode, no
    /// augmentation, no graph). Scores that are not finite are a
    /// "training diverged" error. In a data-parallel run this is a
    /// collective: each rank scores its slice of every batch and the
    /// scores are gathered, so every rank returns the same metrics.
    pub fn evaluate(&mut self, dataset: &ImageDataset) -> Result<Evaluation> {
        let config = self.loader_config(false);
        let (device, precision) = (self.device(), self.config.precision);
        let (positives, threshold) = (self.data.train_positives.clone(), self.config.threshold);
        let (model, criterion, comm) = self.trainer.scoring_parts();
        evaluate_model(
            (device, precision, comm),
            model,
            criterion.objective(),
            dataset,
            config,
            &positives,
            threshold,
        )
    }

    /// [`Run::evaluate`] on the run's own test set after `epochs` epochs; a
    /// diverged model's error says what to change.
    fn evaluate_test(&mut self, epochs: usize) -> Result<Evaluation> {
        let data = Arc::clone(&self.data);
        self.evaluate(&data.test)
            .map_err(|e| self.diverged_hint(e, epochs))
    }

    /// A "training diverged" error after `epochs` epochs, with what to change.
    fn diverged_hint(&self, e: Error, epochs: usize) -> Error {
        match e {
            Error::InvalidArgument { op: DIVERGED, msg } => Error::InvalidArgument {
                op: DIVERGED,
                msg: format!(
                    "{msg} after {epochs} epoch(s): lower the learning rate (--lr, now {:e}), \
                     clip gradients (--clip-grad-norm) or warm up (--warmup-epochs)",
                    self.trainer.optimizer().lr(0)
                ),
            },
            e => e,
        }
    }
}

/// `e`, after aborting the job of `comm` (if any), so that the other
/// ranks stop waiting for this one.
fn abort_job(comm: &Option<Box<dyn Communicator>>, e: Error) -> Error {
    if let Some(c) = comm {
        c.abort(&e.to_string());
    }
    e
}

/// Evaluates the run stored in checkpoint `path` (see
/// [`Run::evaluate_checkpoint_at`]).
pub fn evaluate_checkpoint(
    path: impl AsRef<Path>,
    data_dir: Option<PathBuf>,
    device: Device,
) -> Result<RunSummary> {
    Run::evaluate_checkpoint_at(path.as_ref(), data_dir, device)
}

/// The run configuration in a checkpoint's metadata (`path` names the
/// file in errors).
fn stored_config(ckpt: &TrainingCheckpoint, path: &Path) -> Result<TrainConfig> {
    let corrupt = |msg: String| Error::CorruptFile {
        path: path.display().to_string(),
        msg,
    };
    let text = ckpt
        .metadata
        .get(META_CONFIG)
        .ok_or_else(|| corrupt(format!("no `{META_CONFIG}` entry: not a ferrite run")))?;
    let json: Value = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("`{META_CONFIG}` is not JSON: {e}")))?;
    TrainConfig::from_json(&json).map_err(|e| corrupt(format!("`{META_CONFIG}`: {e}")))
}

/// The run's validation sets: `test`, and `test_balanced` when there is one.
fn test_sets<'l, 'd>(
    test: &'l mut DataLoader<'d>,
    balanced: Option<&'l mut DataLoader<'d>>,
) -> Vec<(&'static str, &'l mut DataLoader<'d>)> {
    let mut sets = vec![(TEST_SECTION, test)];
    if let Some(b) = balanced {
        sets.push((BALANCED_SECTION, b));
    }
    sets
}

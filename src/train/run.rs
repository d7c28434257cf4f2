//! The training loop of a run: epochs of shuffled, augmented batches,
//! PLM's per-epoch update, evaluation, a JSONL log line and an atomic
//! checkpoint after every epoch, and the final report.

use super::config::TrainConfig;
use super::datasets::{class_names, load_datasets, RunData};
use super::evaluation::Evaluation;
use super::loss_log::LossLog;
pub use super::loss_log::LOSS_READ_INTERVAL;
use super::model::build_model;
use super::objective::Objective;
use super::optimizer::{build_schedule, RunOptimizer};
use super::report::{write_report, RunSummary};
use super::scoring::{evaluate_model, DIVERGED};
use crate::checkpoint::CheckpointOptimizer;
use crate::checkpoint::{
    read_training, remove_stale_temp_files, restore_training, save_training, TrainingCheckpoint,
};
use crate::data::loader::{DataLoader, LoaderConfig};
use crate::data::ImageDataset;
use crate::error::{Error, Result};
use crate::nn::resnet::ResNet;
use crate::nn::{Module, Visit};
use crate::optim::{clip_grad_norm_, LrSchedule, Optimizer};
use crate::plm::Plm;
use crate::tensor::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The checkpoint written after every epoch (the latest one).
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// One JSON object per finished epoch.
pub const LOG_FILE: &str = "log.jsonl";
/// The run's configuration.
pub const CONFIG_FILE: &str = "config.json";

const META_CONFIG: &str = "train.config";
const META_PLM: &str = "train.plm";
const META_SECONDS: &str = "train.seconds";
/// Worker threads of the process that wrote the checkpoint: reductions
/// split work by thread, so only the same count resumes bit-identically.
const META_THREADS: &str = "train.threads";
/// The device the run trained on (`cpu`, `cuda:0`): kernels round
/// differently on each, so only the same device resumes bit-identically.
const META_DEVICE: &str = "train.device";

/// Receives progress while a run trains (the CLI draws a progress bar).
pub trait Observer {
    /// An epoch (1-based `epoch` of `epochs`) starts with `batches` batches.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A training batch of `images` images finished with loss `loss`.
    fn batch_finished(&mut self, _loss: f64, _images: usize) {}
    /// An epoch finished; `record` is the line written to the log.
    fn epoch_finished(&mut self, _record: &Value) {}
    /// Something the user should know that does not stop the run (e.g. a
    /// resume with another thread count than the checkpoint's).
    fn warning(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}

/// A training run in an output folder.
pub struct Trainer {
    config: TrainConfig,
    out_dir: PathBuf,
    /// Shared so that the test set can be evaluated while `self` is borrowed mutably.
    data: Arc<RunData>,
    model: ResNet,
    optimizer: RunOptimizer,
    objective: Objective,
    schedule: Box<dyn LrSchedule>,
    /// Epochs already trained.
    epochs_done: usize,
    /// Training seconds so far (across resumes).
    seconds: f64,
    /// Worker threads of the checkpoint this run was reopened from.
    checkpoint_threads: Option<usize>,
    /// Where the model, its optimizer state and the batches live.
    device: Device,
    /// The device of the checkpoint this run was reopened from.
    checkpoint_device: Option<String>,
}

impl Trainer {
    /// Prepares a new run of `config` writing into `out_dir` (created if
    /// needed). Refuses a folder that already holds a run's checkpoint, so
    /// nothing written before is overwritten: resume it instead. Temporary
    /// files that killed writers left in the folder are removed.
    pub fn new(config: TrainConfig, out_dir: impl AsRef<Path>) -> Result<Self> {
        Self::new_on(config, out_dir, Device::Cpu)
    }

    /// [`Trainer::new`] training on `device` (the model, its optimizer state
    /// and every batch live there). A device that cannot be used is an
    /// [`Error::DeviceUnavailable`] before anything is written.
    pub fn new_on(config: TrainConfig, out_dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        config.validate()?;
        crate::backend::check_device(device)?;
        let out_dir = out_dir.as_ref().to_path_buf();
        let ckpt = out_dir.join(CHECKPOINT_FILE);
        if ckpt.exists() {
            return Err(Error::invalid(
                "Trainer::new",
                format!(
                    "{} already holds a run ({} exists): resume it, or choose another output folder",
                    out_dir.display(),
                    ckpt.display()
                ),
            ));
        }
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| Error::io(&out_dir, "creating the output folder", e))?;
        remove_stale_temp_files(&out_dir)?;
        let trainer = Self::build(config, out_dir, device)?;
        let text = serde_json::to_string_pretty(&trainer.config.to_json()).unwrap_or_default();
        super::write_text(&trainer.out_dir.join(CONFIG_FILE), &text)?;
        // A fresh run starts a fresh log.
        super::write_text(&trainer.out_dir.join(LOG_FILE), "")?;
        Ok(trainer)
    }

    /// Reopens the run in `out_dir` from its checkpoint: configuration,
    /// model, optimizer, PLM state and epoch count, so training continues
    /// exactly where it stopped. Log lines of epochs after the checkpoint
    /// (from a run killed between log and checkpoint) are dropped, and so
    /// are temporary files of writes that a killed process left behind.
    pub fn resume(out_dir: impl AsRef<Path>) -> Result<Self> {
        Self::resume_on(out_dir, Device::Cpu)
    }

    /// [`Trainer::resume`] continuing on `device` (the checkpoint is
    /// loaded there, whichever device wrote it).
    pub fn resume_on(out_dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        crate::backend::check_device(device)?;
        let out_dir = out_dir.as_ref().to_path_buf();
        remove_stale_temp_files(&out_dir)?;
        let trainer = Self::open(&out_dir.join(CHECKPOINT_FILE), out_dir, None, device)?;
        trainer.truncate_log()?;
        Ok(trainer)
    }

    /// Rebuilds the run stored in the checkpoint at `path` (writing, if it
    /// ever trains, into `out_dir`), reading the data from `data_dir` when
    /// given instead of the stored folder.
    fn open(
        path: &Path,
        out_dir: PathBuf,
        data_dir: Option<PathBuf>,
        device: Device,
    ) -> Result<Self> {
        let corrupt = |msg: String| Error::CorruptFile {
            path: path.display().to_string(),
            msg,
        };
        let ckpt = read_training(path)?;
        let mut config = stored_config(&ckpt, path)?;
        if let Some(dir) = data_dir {
            config.data.dir = dir;
        }
        // Checked before `build`, which loads or generates the data.
        let epochs_done = usize::try_from(ckpt.epoch)
            .ok()
            .filter(|&e| e <= config.epochs)
            .ok_or_else(|| {
                corrupt(format!(
                    "the epoch counter ({}) exceeds the {} epochs of the run's configuration",
                    ckpt.epoch, config.epochs
                ))
            })?;
        let mut trainer = Self::build(config, out_dir, device)?;
        restore_training(&ckpt, path, &trainer.model, &mut trainer.optimizer)?;
        if let Some(state) = ckpt.metadata.get(META_PLM) {
            let plm =
                Plm::from_state_json(state).map_err(|e| corrupt(format!("`{META_PLM}`: {e}")))?;
            trainer.objective.set_plm(plm)?;
        } else if trainer.objective.plm().is_some() {
            return Err(corrupt(format!(
                "the run uses PLM but the checkpoint has no `{META_PLM}` state"
            )));
        }
        trainer.epochs_done = epochs_done;
        trainer.checkpoint_threads = ckpt.metadata.get(META_THREADS).and_then(|s| s.parse().ok());
        trainer.checkpoint_device = ckpt.metadata.get(META_DEVICE).cloned();
        trainer.seconds = ckpt
            .metadata
            .get(META_SECONDS)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        Ok(trainer)
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
        let mut trainer = Self::open(path, dir, data_dir, device)?;
        trainer.summary()
    }

    fn summary(&mut self) -> Result<RunSummary> {
        let evaluation = self.evaluate_test(self.epochs_done)?;
        Ok(RunSummary::new(
            &self.config,
            &self.data,
            &evaluation,
            self.objective.plm(),
            self.seconds,
            class_names(self.config.data.kind, self.data.train.num_classes),
        ))
    }

    fn build(config: TrainConfig, out_dir: PathBuf, device: Device) -> Result<Self> {
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
        let objective = Objective::new(
            &config.loss,
            config.seed,
            &data.train_positives,
            data.train.len(),
        )?;
        let schedule = build_schedule(&config.optim, config.epochs);
        Ok(Trainer {
            config,
            out_dir,
            data: Arc::new(data),
            model,
            optimizer,
            objective,
            schedule,
            epochs_done: 0,
            seconds: 0.0,
            checkpoint_threads: None,
            device,
            checkpoint_device: None,
        })
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The model being trained.
    pub fn model(&self) -> &ResNet {
        &self.model
    }

    /// The datasets of the run.
    pub fn data(&self) -> &RunData {
        &self.data
    }

    /// The objective (with PLM's state, if any).
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// Epochs trained so far.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// The device the run trains on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The warning for continuing on another device than the one that
    /// wrote the checkpoint, if that is the case.
    pub fn device_warning(&self) -> Option<String> {
        let stored = self.checkpoint_device.as_deref()?;
        let now = self.device.to_string();
        (stored != now && self.epochs_done < self.config.epochs).then(|| {
            format!(
                "the checkpoint was written on {stored} and training continues on {now}: \
                 results will not be bit-identical to an uninterrupted run"
            )
        })
    }

    /// The worker-thread count stored in the checkpoint this run was
    /// reopened from (`None` for a new run or an older checkpoint).
    pub fn checkpoint_threads(&self) -> Option<usize> {
        self.checkpoint_threads
    }

    /// The warning for continuing with `threads` worker threads a run
    /// whose checkpoint was written with another count, if that is the case.
    pub fn thread_count_warning(&self, threads: usize) -> Option<String> {
        let stored = self.checkpoint_threads?;
        (stored != threads && self.epochs_done < self.config.epochs).then(|| {
            format!(
                "the checkpoint was written with {stored} worker thread(s) and training continues with {threads}: \
                 results will not be bit-identical to an uninterrupted run (use --threads {stored} for that)"
            )
        })
    }

    /// Trains the remaining epochs, then evaluates, writes the report files
    /// (`report.md`, `report.json`, `per_class.svg`) and returns the summary.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<RunSummary> {
        let warnings = [
            self.thread_count_warning(rayon::current_num_threads()),
            self.device_warning(),
        ];
        for msg in warnings.into_iter().flatten() {
            observer.warning(&msg);
        }
        while self.epochs_done < self.config.epochs {
            self.train_epoch(observer)?;
        }
        let summary = self.summary()?;
        write_report(&self.out_dir, &summary)?;
        Ok(summary)
    }

    /// Trains one epoch, updates PLM, evaluates, appends the log line and
    /// writes the checkpoint. Returns the log record.
    pub fn train_epoch(&mut self, observer: &mut dyn Observer) -> Result<Value> {
        let epoch = self.epochs_done;
        let lr_before = {
            self.optimizer.apply_schedule(self.schedule.as_ref(), epoch);
            self.optimizer.lr(0)
        };
        let mut loader = DataLoader::new(&self.data.train, self.loader_config(true))?;
        observer.epoch_started(epoch + 1, self.config.epochs, loader.num_batches());
        self.model.set_training(true);
        let params = crate::nn::parameters(&self.model);
        let start = Instant::now();
        let mut losses = LossLog::new(self.device, epoch, lr_before);
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            let n = batch.indices.len();
            // Uploads are queued on the device's stream behind the previous
            // step's kernels, so the host does not wait for them.
            let x = batch.x.to_device(self.device)?;
            let targets = batch.targets.to_device(self.device)?;
            let labels = match &batch.labels {
                Some(l) => Some(l.to_device(self.device)?),
                None => None,
            };
            let (loss, mut grads) = crate::autocast(self.config.precision, || -> Result<_> {
                let logits = self.model.forward(&x)?;
                let loss = self.objective.loss(&logits, &targets, labels.as_ref())?;
                let grads = loss.backward()?;
                Ok((loss, grads))
            })?;
            if let Some(max_norm) = self.config.optim.clip_grad_norm {
                clip_grad_norm_(&mut grads, &params, max_norm)?;
            }
            self.optimizer.step(&grads)?;
            losses.push(loss.detach(), n, observer)?;
        }
        let (loss_sum, images) = losses.finish(observer)?;
        let train_seconds = start.elapsed().as_secs_f64();
        let plm_update = self.objective.end_epoch()?;
        let evaluation = self.evaluate_test(epoch + 1)?;
        self.seconds += train_seconds;
        self.epochs_done += 1;

        let mut record = json!({
            "epoch": self.epochs_done,
            "lr": lr_before,
            "train_loss": loss_sum / images.max(1) as f64,
            "train_seconds": train_seconds,
            "images_per_sec": images as f64 / train_seconds.max(1e-9),
            "test": evaluation.summary_json(),
        });
        if let (Some((update, hist)), Some(plm)) = (&plm_update, self.objective.plm()) {
            // Histograms are [bin][class], flattened row-major.
            record["plm"] = json!({
                "rhat": plm.rhat(),
                "ratio": plm.ratios(),
                "delta": update.delta,
                "d_pos": update.d_pos,
                "d_neg": update.d_neg,
                "hist_pos_pred": hist.pos_pred(),
                "hist_neg_pred": hist.neg_pred(),
            });
        }
        self.append_log(&record)?;
        self.save_checkpoint()?;
        observer.epoch_finished(&record);
        Ok(record)
    }

    fn loader_config(&self, training: bool) -> LoaderConfig {
        LoaderConfig {
            batch_size: self.config.batch_size,
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
    /// "training diverged" error.
    pub fn evaluate(&mut self, dataset: &ImageDataset) -> Result<Evaluation> {
        let config = self.loader_config(false);
        evaluate_model(
            (self.device, self.config.precision),
            &mut self.model,
            &self.objective,
            dataset,
            config,
            &self.data.train_positives,
            self.config.threshold,
        )
    }

    /// [`Trainer::evaluate`] on the run's own test set after `epochs`
    /// epochs; a diverged model's error says what to change.
    fn evaluate_test(&mut self, epochs: usize) -> Result<Evaluation> {
        let data = Arc::clone(&self.data);
        self.evaluate(&data.test).map_err(|e| match e {
            Error::InvalidArgument { op: DIVERGED, msg } => Error::InvalidArgument {
                op: DIVERGED,
                msg: format!(
                    "{msg} after {epochs} epoch(s): lower the learning rate (--lr, now {:e}), \
                     clip gradients (--clip-grad-norm) or warm up (--warmup-epochs)",
                    self.optimizer.lr(0)
                ),
            },
            e => e,
        })
    }

    fn save_checkpoint(&self) -> Result<()> {
        let mut extra = BTreeMap::new();
        extra.insert(META_CONFIG.to_string(), self.config.to_json().to_string());
        extra.insert(META_SECONDS.to_string(), self.seconds.to_string());
        extra.insert(
            META_THREADS.to_string(),
            rayon::current_num_threads().to_string(),
        );
        extra.insert(META_DEVICE.to_string(), self.device.to_string());
        if let Some(plm) = self.objective.plm() {
            extra.insert(META_PLM.to_string(), plm.state_json()?);
        }
        save_training(
            self.out_dir.join(CHECKPOINT_FILE),
            &self.model,
            &self.optimizer.checkpoint_state()?,
            self.epochs_done as u64,
            &extra,
        )
    }

    fn append_log(&self, record: &Value) -> Result<()> {
        let path = self.out_dir.join(LOG_FILE);
        let io = |e: std::io::Error| Error::io(&path, "appending to the log", e);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        writeln!(f, "{record}").map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// Keeps the log lines of epochs up to the checkpoint's.
    fn truncate_log(&self) -> Result<()> {
        let path = self.out_dir.join(LOG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&path, "reading the log", e)),
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v["epoch"].as_u64())
                    .is_some_and(|e| e as usize <= self.epochs_done)
            })
            .collect();
        let mut text = String::new();
        for line in kept {
            text.push_str(line);
            text.push('\n');
        }
        super::write_text(&path, &text)
    }
}

/// Evaluates the run stored in checkpoint `path` (see
/// [`Trainer::evaluate_checkpoint_at`]).
pub fn evaluate_checkpoint(
    path: impl AsRef<Path>,
    data_dir: Option<PathBuf>,
    device: Device,
) -> Result<RunSummary> {
    Trainer::evaluate_checkpoint_at(path.as_ref(), data_dir, device)
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

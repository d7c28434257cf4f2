//! A trainer's checkpoints: writing the latest and the best, and restoring
//! everything a resumed run needs.

use super::monitor::Tracker;
use super::{Criterion, Trainer};
use crate::checkpoint::{restore_training, save_training, TrainingCheckpoint};
use crate::error::{Error, Result};
use crate::nn::Module;
use std::collections::BTreeMap;
use std::path::Path;

/// Training seconds so far (across resumes).
pub(super) const META_SECONDS: &str = "train.seconds";
/// Worker threads of the process that wrote the checkpoint: reductions
/// split work by thread, so only the same count resumes bit-identically.
pub(super) const META_THREADS: &str = "train.threads";
/// The device the run trained on (`cpu`, `cuda:0`): kernels round
/// differently on each, so only the same device resumes bit-identically.
pub(super) const META_DEVICE: &str = "train.device";
/// The number of ranks of the data-parallel job that wrote the checkpoint
/// (absent: one process); a run resumes with the same number.
pub(super) const META_WORLD: &str = "train.world_size";
/// The best-checkpoint tracker (JSON).
const META_BEST: &str = "train.best";
/// The early-stopping tracker (JSON, with `stopped`).
const META_EARLY: &str = "train.early_stopping";

const OWN_KEYS: [&str; 6] = [
    META_SECONDS,
    META_THREADS,
    META_DEVICE,
    META_WORLD,
    META_BEST,
    META_EARLY,
];

impl<M: Module, C: Criterion> Trainer<M, C> {
    /// The metadata of a checkpoint of the current state.
    fn checkpoint_entries(&self) -> Result<BTreeMap<String, String>> {
        let mut extra = self.metadata.clone();
        for (k, v) in self.criterion.state()? {
            extra.insert(k, v);
        }
        if let Some(k) = extra.keys().find(|k| OWN_KEYS.contains(&k.as_str())) {
            return Err(Error::invalid(
                "Trainer::save",
                format!("metadata key `{k}` is the trainer's own"),
            ));
        }
        extra.insert(META_SECONDS.into(), self.seconds.to_string());
        extra.insert(
            META_THREADS.into(),
            rayon::current_num_threads().to_string(),
        );
        extra.insert(META_DEVICE.into(), self.device.to_string());
        if self.parallel.is_some() {
            extra.insert(META_WORLD.into(), self.world_size().to_string());
        }
        if let Some((monitor, tracker)) = &self.best {
            extra.insert(META_BEST.into(), tracker.to_json(monitor));
        }
        if let Some((early, tracker)) = &self.early {
            let mut v: serde_json::Value =
                serde_json::from_str(&tracker.to_json(&early.monitor))
                    .map_err(|e| Error::invalid("Trainer::save", e.to_string()))?;
            v["stopped"] = self.stopped_early.into();
            extra.insert(META_EARLY.into(), v.to_string());
        }
        Ok(extra)
    }

    /// Writes the current state as the training checkpoint `file` of the
    /// output folder, atomically (rank 0 only in data-parallel training).
    pub(super) fn save(&self, file: &str) -> Result<()> {
        let Some(dir) = &self.out_dir else {
            return Ok(());
        };
        if !self.is_writer() {
            return Ok(());
        }
        save_training(
            dir.join(file),
            &self.model,
            &self.optimizer.checkpoint_state()?,
            self.epochs_done as u64,
            &self.checkpoint_entries()?,
        )
    }

    /// Restores a checkpoint read with
    /// [`read_training`](crate::checkpoint::read_training) (`path` names it
    /// in errors): model and optimizer state (checked before anything
    /// changes), epoch counter, the criterion's state, seconds, and the
    /// best-checkpoint and early-stopping counters (fresh when the
    /// checkpoint has none, e.g. a monitor added on resume).
    pub fn restore(&mut self, ckpt: &TrainingCheckpoint, path: &Path) -> Result<()> {
        let corrupt = |msg: String| Error::CorruptFile {
            path: path.display().to_string(),
            msg,
        };
        let epochs_done = usize::try_from(ckpt.epoch)
            .ok()
            .filter(|&e| e <= self.epochs)
            .ok_or_else(|| {
                corrupt(format!(
                    "the checkpoint is at epoch {}, past the {} epochs this trainer trains",
                    ckpt.epoch, self.epochs
                ))
            })?;
        let meta = &ckpt.metadata;
        let tracker = |key: &str, monitor: &super::Monitor| -> Result<Tracker> {
            match meta.get(key) {
                None => Ok(Tracker::default()),
                Some(text) => {
                    Tracker::from_json(text, monitor).map_err(|e| corrupt(format!("`{key}`: {e}")))
                }
            }
        };
        let best = match &self.best {
            Some((m, _)) => Some(tracker(META_BEST, m)?),
            None => None,
        };
        let early = match &self.early {
            Some((e, _)) => Some(tracker(META_EARLY, &e.monitor)?),
            None => None,
        };
        let stopped = meta
            .get(META_EARLY)
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v["stopped"].as_bool())
            .unwrap_or(false);
        let world = match meta.get(META_WORLD) {
            None => 1,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|&w| w >= 1)
                .ok_or_else(|| corrupt(format!("`{META_WORLD}` is not a rank count: {text}")))?,
        };
        restore_training(ckpt, path, &self.model, self.optimizer.as_mut())?;
        self.criterion
            .load_state(meta)
            .map_err(|e| corrupt(e.to_string()))?;
        if let (Some((_, t)), Some(new)) = (&mut self.best, best) {
            *t = new;
        }
        if let (Some((_, t)), Some(new)) = (&mut self.early, early) {
            *t = new;
            self.stopped_early = stopped;
        }
        self.epochs_done = epochs_done;
        self.seconds = meta
            .get(META_SECONDS)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        self.stored_threads = meta.get(META_THREADS).and_then(|s| s.parse().ok());
        self.stored_device = meta.get(META_DEVICE).cloned();
        self.stored_world = Some(world);
        Ok(())
    }
}

//! The loop itself: epochs of training batches, validation, the monitors,
//! the log line and the checkpoints.

use super::files::{append_log, BEST_CHECKPOINT_FILE, CHECKPOINT_FILE};
use super::parallel::gathered_outputs;
use super::{Criterion, EpochRecord, History, Observer, Trainer};
use crate::data::loader::{Batch, DataLoader};
use crate::data::shard::{with_batch_position, BatchPosition, Slice};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::optim::clip_grad_norm_;
use crate::tensor::{DType, Device, Tensor};
use crate::train::loss_log::LossLog;
use std::time::Instant;

/// `batch` with its tensors on `device` (uploads are queued on the
/// device's stream behind the previous step's kernels).
pub(super) fn batch_on(batch: Batch, device: Device) -> Result<Batch> {
    let to = |t: Tensor| -> Result<Tensor> {
        if t.device() == device {
            Ok(t)
        } else {
            t.to_device(device)
        }
    };
    Ok(Batch {
        x: to(batch.x)?,
        targets: to(batch.targets)?,
        labels: batch.labels.map(to).transpose()?,
        indices: batch.indices,
    })
}

impl<M: Module, C: Criterion> Trainer<M, C> {
    /// Trains the remaining epochs on `train` (shuffled by its seed and the
    /// epoch number), validating on `validation` after each, until all
    /// epochs are done or early stopping ends training. Warns the
    /// observer first when the run continues on another device or thread
    /// count than its checkpoint's.
    pub fn fit(
        &mut self,
        train: &mut DataLoader<'_>,
        validation: Option<&mut DataLoader<'_>>,
        observer: &mut dyn Observer,
    ) -> Result<History> {
        let name = self.validation_name.clone();
        let mut sets: Vec<(&str, &mut DataLoader<'_>)> =
            validation.map(|v| (name.as_str(), v)).into_iter().collect();
        self.fit_sets(train, &mut sets, observer)
    }

    /// [`Trainer::fit`] validating on several named sets after each epoch
    /// (e.g. `[("test", ..), ("test_balanced", ..)]`): every metric is
    /// computed on each, and the log record holds one section per set, so
    /// monitors can follow any of them (`"test_balanced.macro_f1"`).
    pub fn fit_sets(
        &mut self,
        train: &mut DataLoader<'_>,
        validation: &mut [(&str, &mut DataLoader<'_>)],
        observer: &mut dyn Observer,
    ) -> Result<History> {
        self.check_sets(validation)?;
        let warnings = [
            self.thread_count_warning(rayon::current_num_threads()),
            self.device_warning(),
        ];
        for msg in warnings.into_iter().flatten() {
            observer.warning(&msg);
        }
        let mut history = History::default();
        while !self.is_finished() {
            let record = self.train_epoch_sets(train, validation, observer)?;
            history.records.push(record);
        }
        history.stopped_early = self.stopped_early;
        history.best = self.best();
        Ok(history)
    }

    /// Refuses validation sets that cannot work: two with one name, or a
    /// name that is also a field of the log record.
    fn check_sets(&self, sets: &[(&str, &mut DataLoader<'_>)]) -> Result<()> {
        const RESERVED: &[&str] = &[
            "epoch",
            "lr",
            "train_loss",
            "train_seconds",
            "images_per_sec",
            "provenance",
        ];
        for (i, (name, _)) in sets.iter().enumerate() {
            if name.is_empty() || name.contains('.') || RESERVED.contains(name) {
                return Err(Error::invalid(
                    "Trainer::fit",
                    format!("`{name}` cannot name a validation set (empty, dotted, or a field of the log record)"),
                ));
            }
            if sets[..i].iter().any(|(other, _)| other == name) {
                return Err(Error::invalid(
                    "Trainer::fit",
                    format!("two validation sets are named `{name}`"),
                ));
            }
        }
        let names: Vec<&str> = sets.iter().map(|(n, _)| *n).collect();
        self.check_monitors(&names)
    }

    /// Refuses monitors that cannot work: a best checkpoint without an
    /// output folder, a validation value without that validation set.
    fn check_monitors(&self, sets: &[&str]) -> Result<()> {
        const OP: &str = "Trainer::fit";
        let monitors = self
            .best
            .iter()
            .map(|(m, _)| m)
            .chain(self.early.iter().map(|(e, _)| &e.monitor));
        for m in monitors {
            m.validate(OP)?;
            let section = m.metric.split('.').next().unwrap_or_default();
            if section == self.validation_name && !sets.contains(&section) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "`{}` is a validation value, and no validation loader was given",
                        m.metric
                    ),
                ));
            }
        }
        if self.best.is_some() && self.out_dir.is_none() {
            return Err(Error::invalid(
                OP,
                "a best checkpoint needs an output folder (Trainer::output)",
            ));
        }
        Ok(())
    }

    /// Trains one epoch, ends it for the criterion, validates, updates the
    /// best checkpoint and early stopping, appends the log line and writes
    /// the checkpoint (with an output folder). An error once training is
    /// over.
    pub fn train_epoch(
        &mut self,
        train: &mut DataLoader<'_>,
        validation: Option<&mut DataLoader<'_>>,
        observer: &mut dyn Observer,
    ) -> Result<EpochRecord> {
        let name = self.validation_name.clone();
        let mut sets: Vec<(&str, &mut DataLoader<'_>)> =
            validation.map(|v| (name.as_str(), v)).into_iter().collect();
        self.train_epoch_sets(train, &mut sets, observer)
    }

    /// [`Trainer::train_epoch`] validating on several named sets (see
    /// [`Trainer::fit_sets`]).
    pub fn train_epoch_sets(
        &mut self,
        train: &mut DataLoader<'_>,
        validation: &mut [(&str, &mut DataLoader<'_>)],
        observer: &mut dyn Observer,
    ) -> Result<EpochRecord> {
        let record = self.try_train_epoch_sets(train, validation, observer);
        self.abort_if_error(record)
    }

    fn try_train_epoch_sets(
        &mut self,
        train: &mut DataLoader<'_>,
        validation: &mut [(&str, &mut DataLoader<'_>)],
        observer: &mut dyn Observer,
    ) -> Result<EpochRecord> {
        if self.is_finished() {
            return Err(Error::invalid(
                "Trainer::train_epoch",
                format!(
                    "training is over ({} of {} epochs{})",
                    self.epochs_done,
                    self.epochs,
                    if self.stopped_early {
                        ", stopped early"
                    } else {
                        ""
                    }
                ),
            ));
        }
        self.check_sets(validation)?;
        self.check_world_size()?;
        let epoch = self.epochs_done;
        if let Some(schedule) = &self.schedule {
            self.optimizer.apply_schedule(schedule.as_ref(), epoch);
        }
        let lr = self.optimizer.lr(0);
        let (loss_sum, images, train_seconds) = if self.parallel.is_some() {
            self.train_batches_parallel(train, epoch, lr, observer)?
        } else {
            self.train_batches(train, epoch, lr, observer)?
        };
        if let Some(par) = &self.parallel {
            self.criterion.all_reduce_epoch(par.comm())?;
        }
        let extra = self.criterion.end_epoch()?;
        let validation = validation
            .iter_mut()
            .map(|(name, loader)| Ok((name.to_string(), self.validate(loader)?)))
            .collect::<Result<Vec<_>>>()?;
        self.seconds += train_seconds;
        self.epochs_done += 1;
        let mut record = EpochRecord {
            epoch: self.epochs_done,
            lr,
            train_loss: loss_sum / images as f64,
            train_seconds,
            images_per_sec: images as f64 / train_seconds.max(1e-9),
            validation,
            extra,
            improved: false,
            stopped_early: false,
            provenance: crate::provenance::Provenance::current().with_ranks(self.world_size()),
        };
        let notes = self.update_monitors(&mut record)?;
        self.agree_on_decisions(&mut record)?;
        let json = record.to_json();
        if let Some(dir) = self.out_dir.as_ref().filter(|_| self.is_writer()) {
            if record.improved {
                self.save(BEST_CHECKPOINT_FILE)?;
            }
            append_log(dir, &json)?;
            self.save(CHECKPOINT_FILE)?;
        }
        observer.epoch_finished(&json);
        for note in notes {
            observer.info(&note);
        }
        Ok(record)
    }

    /// The training batches of epoch `epoch`: `(Σ loss·n, images, seconds)`.
    fn train_batches(
        &mut self,
        train: &mut DataLoader<'_>,
        epoch: usize,
        lr: f64,
        observer: &mut dyn Observer,
    ) -> Result<(f64, usize, f64)> {
        observer.epoch_started(epoch + 1, self.epochs, train.num_batches());
        self.model.set_training(true);
        let params = self.model.parameters();
        let start = Instant::now();
        let mut losses = LossLog::new(self.device, epoch, lr);
        let first_step = (epoch * train.num_batches()) as u64;
        for (b, batch) in train.epoch(epoch).enumerate() {
            let batch = batch_on(batch?, self.device)?;
            let n = batch.len();
            let (model, criterion) = (&self.model, &mut self.criterion);
            let (loss, mut grads) = crate::autocast(self.precision, || -> Result<_> {
                // Dropout draws at a place fixed by the step (see shard).
                let position = BatchPosition {
                    step: first_step + b as u64,
                    slice: Slice::whole(n),
                };
                let output = with_batch_position(position, || model.forward(&batch.x))?;
                let loss = criterion.loss(&output, &batch)?;
                if loss.numel() != 1 {
                    return Err(Error::invalid(
                        "Trainer::train_epoch",
                        format!("the loss must be a scalar, got shape {:?}", loss.shape()),
                    ));
                }
                let grads = loss.backward()?;
                Ok((loss, grads))
            })?;
            if let Some(max_norm) = self.clip_grad_norm {
                clip_grad_norm_(&mut grads, &params, max_norm)?;
            }
            self.optimizer.step(&grads)?;
            losses.push(loss.detach(), n, observer)?;
        }
        let (loss_sum, images) = losses.finish(observer)?;
        if images == 0 {
            return Err(Error::invalid(
                "Trainer::train_epoch",
                "the training loader gave no batch (an empty dataset, or drop_last with fewer images than a batch)",
            ));
        }
        Ok((loss_sum, images, start.elapsed().as_secs_f64()))
    }

    /// Scores `loader`'s batches (dataset order, evaluation mode, no graph)
    /// and returns the validation values: `loss` (when the criterion has a
    /// validation loss), then every metric's. The loss is read back once,
    /// at the end; a loss that is not finite is an error.
    ///
    /// In data-parallel training this is a collective (every rank calls
    /// it): each rank runs its slice of every batch, and the values, from
    /// the gathered outputs, are the same on every rank.
    pub fn validate(&mut self, loader: &mut DataLoader<'_>) -> Result<Vec<(String, f64)>> {
        let values = self.validate_batches(loader);
        self.abort_if_error(values)
    }

    /// The validation loop of [`Trainer::validate`]: the outputs of each
    /// whole batch (from this process, or gathered from the ranks'
    /// slices), then the loss and every metric from them.
    fn validate_batches(&mut self, loader: &mut DataLoader<'_>) -> Result<Vec<(String, f64)>> {
        for m in &mut self.metrics {
            m.reset();
        }
        self.model.set_training(false);
        let mut losses: Vec<(Tensor, usize)> = Vec::new();
        let comm = self.parallel.as_ref().map(|p| p.comm());
        let (model, criterion, metrics) = (&self.model, &mut self.criterion, &mut self.metrics);
        let (device, precision) = (self.device, self.precision);
        let scored = crate::no_grad(|| -> Result<()> {
            for batch in loader.epoch(0) {
                let batch = batch_on(batch?, device)?;
                let output = match comm {
                    None => crate::autocast(precision, || model.forward(&batch.x))?,
                    Some(comm) => gathered_outputs(model, comm, &batch, precision)?,
                };
                crate::autocast(precision, || -> Result<()> {
                    if let Some(loss) = criterion.validation_loss(&output, &batch)? {
                        losses.push((loss.to_dtype(DType::F32)?.reshape(&[1])?, batch.len()));
                    }
                    Ok(())
                })?;
                for m in metrics.iter_mut() {
                    m.update(&output, &batch)?;
                }
            }
            Ok(())
        });
        self.model.set_training(true);
        scored?;
        self.validation_values(&losses)
    }

    /// The validation values from the losses of the batches (with their
    /// sizes) and the metrics' accumulators: `loss` first, when there are
    /// losses, then every metric's.
    pub(super) fn validation_values(
        &mut self,
        losses: &[(Tensor, usize)],
    ) -> Result<Vec<(String, f64)>> {
        let mut values = Vec::new();
        if !losses.is_empty() {
            let tensors: Vec<Tensor> = losses.iter().map(|(t, _)| t.clone()).collect();
            let read = Tensor::cat(&tensors, 0)?.to_vec::<f32>()?;
            let (mut sum, mut n) = (0.0, 0usize);
            for (&v, &(_, b)) in read.iter().zip(losses) {
                sum += v as f64 * b as f64;
                n += b;
            }
            let loss = sum / n.max(1) as f64;
            if !loss.is_finite() {
                return Err(Error::invalid(
                    "Trainer::validate",
                    format!("the validation loss is {loss}"),
                ));
            }
            values.push(("loss".to_string(), loss));
        }
        for m in &mut self.metrics {
            values.extend(m.compute()?);
        }
        Ok(values)
    }

    /// Feeds the record to the best-checkpoint and early-stopping trackers;
    /// returns the notes for the observer.
    fn update_monitors(&mut self, record: &mut EpochRecord) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let json = record.to_json();
        if let Some((monitor, tracker)) = &mut self.best {
            let value = monitor.value_in(&json)?;
            record.improved = tracker.observe(monitor, value, record.epoch);
            if record.improved && self.out_dir.is_some() {
                notes.push(format!(
                    "epoch {}: {} = {value}, the best so far: saved {BEST_CHECKPOINT_FILE}",
                    record.epoch, monitor.metric
                ));
            }
        }
        if let Some((early, tracker)) = &mut self.early {
            let value = early.monitor.value_in(&json)?;
            tracker.observe(&early.monitor, value, record.epoch);
            if tracker.bad_epochs >= early.patience && self.epochs_done < self.epochs {
                self.stopped_early = true;
                record.stopped_early = true;
                notes.push(format!(
                    "early stopping after epoch {}: {} has not improved for {} epoch(s)",
                    record.epoch, early.monitor.metric, tracker.bad_epochs
                ));
            }
        }
        Ok(notes)
    }
}

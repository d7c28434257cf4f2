//! [`Plm`]: the state of Partial Label Masking during training (ratios,
//! target ratios, histograms, mask counter) and its per-batch and per-epoch
//! operations.

use super::config::{PlmConfig, RhatInit};
use super::histogram::Histograms;
use super::mask::{apply_mask, check_loss, check_targets_shape, keep_probabilities};
use super::update::{epoch_update, PlmEpochUpdate};
use crate::error::{Error, Result};
use crate::ops::plm::{self as plm_op, HistogramCounts, TargetCheck, TargetChecks};
use crate::tensor::{Device, Tensor};
use std::borrow::Cow;

/// Partial Label Masking for a training set with `C` classes.
///
/// Per batch: [`Plm::masked_loss`] (or [`Plm::sample_mask`] and
/// [`apply_mask`]) and [`Plm::observe`]; per epoch: [`Plm::end_epoch`].
///
/// Masks are drawn, and predictions counted, on the device the batch lives
/// on (the `plm` op family): batches on a CUDA device are counted into
/// device counts, which are downloaded once, by [`Plm::sync_histograms`]
/// (called by [`Plm::end_epoch`] and [`Plm::state_json`]). There, nothing
/// makes a training step wait for the GPU: the keep probabilities are
/// uploaded once per r̂, and the device's check that every target is 0 or 1
/// is read with the histograms — targets that are not make
/// [`Plm::sync_histograms`] (so [`Plm::end_epoch`]) fail, naming the batch,
/// instead of [`Plm::sample_mask`] or [`Plm::observe`]. On the CPU every
/// check is immediate.
///
/// ```
/// use ferrite::loss::{bce_with_logits, Reduction};
/// use ferrite::plm::{Plm, PlmConfig};
/// use ferrite::Tensor;
/// // 4 training samples; class 0 has 1 positive, class 1 has 3.
/// let mut plm = Plm::new(PlmConfig::default(), &[1, 3], 4)?;
/// assert_eq!(plm.ratios(), [1.0 / 3.0, 3.0]);
/// let logits = Tensor::from_vec(vec![2.0f32, -1.0, 0.5, 1.5], &[2, 2])?.requires_grad_(true);
/// let y = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?;
/// // The per-element loss, masked: the gradient reaches the kept elements only.
/// let per_element = bce_with_logits(&logits, &y, None, Reduction::None)?;
/// let loss = plm.masked_loss(&per_element, &y)?;
/// assert!(loss.item::<f32>()? >= 0.0);
/// let grads = loss.backward()?;
/// assert_eq!(grads.get(&logits).unwrap().shape(), &[2, 2]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Plm {
    config: PlmConfig,
    positives: Vec<usize>,
    num_samples: usize,
    ratios: Vec<f64>,
    eligible: Vec<bool>,
    bounds: Vec<(f64, f64)>,
    rhat: Vec<f64>,
    histograms: Histograms,
    /// Counts of the batches observed on a device, not yet merged into
    /// `histograms`.
    pending: Option<HistogramCounts>,
    /// The device's target checks of those batches and masks, not read yet.
    checks: TargetChecks,
    /// The keep probabilities of the current r̂ as a `[2, C]` table on the
    /// device of the last batch (rebuilt when r̂ or the device changes).
    keep: Option<Tensor>,
    batches: u64,
    epochs: u64,
}

/// The saved pieces of a [`Plm`] beyond its configuration and label counts.
pub(crate) struct Progress {
    pub rhat: Vec<f64>,
    pub histograms: Histograms,
    pub batches: u64,
    pub epochs: u64,
}

impl Plm {
    /// PLM for a training set of `num_samples` samples whose class `c` has
    /// `positives[c]` positive labels (counted once, on the whole set).
    ///
    /// The ratio is `r_c = Npos_c / Nneg_c`. A class with no positives or
    /// no negatives has no ratio: it is never masked and never updated
    /// (its reported ratio is `max(Npos, 1) / max(Nneg, 1)`).
    pub fn new(config: PlmConfig, positives: &[usize], num_samples: usize) -> Result<Self> {
        Plm::from_parts(config, positives, num_samples, None)
    }

    /// Builds the state, starting afresh (`progress = None`) or from saved
    /// progress, which is checked against the configuration.
    pub(crate) fn from_parts(
        config: PlmConfig,
        positives: &[usize],
        num_samples: usize,
        progress: Option<Progress>,
    ) -> Result<Self> {
        let op = "Plm::new";
        config.validate(op)?;
        if positives.is_empty() {
            return Err(Error::invalid(op, "need at least one class"));
        }
        if num_samples == 0 {
            return Err(Error::invalid(
                op,
                "the training set is empty (num_samples = 0)",
            ));
        }
        if let Some((c, &n)) = positives.iter().enumerate().find(|(_, &n)| n > num_samples) {
            return Err(Error::invalid(
                op,
                format!("class {c} has {n} positives in a training set of {num_samples} samples"),
            ));
        }
        let eligible: Vec<bool> = positives
            .iter()
            .map(|&n| n > 0 && n < num_samples)
            .collect();
        let ratios: Vec<f64> = positives
            .iter()
            .map(|&n| n.max(1) as f64 / (num_samples - n).max(1) as f64)
            .collect();
        // The clamp interval widens to include r, so that rhat = r is
        // always a valid starting point.
        let bounds: Vec<(f64, f64)> = ratios
            .iter()
            .map(|&r| (config.rhat_min.min(r), config.rhat_max.max(r)))
            .collect();
        let c = positives.len();
        // Saved progress brings its own histograms: fresh ones are only
        // allocated for a fresh start.
        let (saved_rhat, histograms, batches, epochs) = match progress {
            None => (None, Histograms::new(config.n_bins, c)?, 0, 0),
            Some(p) => {
                if p.histograms.n_bins() != config.n_bins || p.histograms.num_classes() != c {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "histograms of {} bins x {} classes for a configuration of {} bins x {c} classes",
                            p.histograms.n_bins(),
                            p.histograms.num_classes(),
                            config.n_bins
                        ),
                    ));
                }
                (Some(p.rhat), p.histograms, p.batches, p.epochs)
            }
        };
        let mut plm = Plm {
            config,
            positives: positives.to_vec(),
            num_samples,
            rhat: Vec::new(),
            histograms,
            pending: None,
            checks: TargetChecks::default(),
            keep: None,
            batches,
            epochs,
            ratios,
            eligible,
            bounds,
        };
        match saved_rhat {
            None => {
                plm.rhat = (0..c)
                    .map(|k| match config.init {
                        RhatInit::Balanced if plm.eligible[k] => 1.0,
                        _ => plm.ratios[k],
                    })
                    .collect();
            }
            Some(rhat) => plm.set_rhat(&rhat)?,
        }
        Ok(plm)
    }

    /// The configuration.
    pub fn config(&self) -> &PlmConfig {
        &self.config
    }

    /// Number of classes `C`.
    pub fn num_classes(&self) -> usize {
        self.positives.len()
    }

    /// Positive labels per class in the training set.
    pub fn positives(&self) -> &[usize] {
        &self.positives
    }

    /// Size of the training set.
    pub fn num_samples(&self) -> usize {
        self.num_samples
    }

    /// The ground-truth ratios `r_c = Npos_c / Nneg_c`.
    pub fn ratios(&self) -> &[f64] {
        &self.ratios
    }

    /// Which classes take part in masking and updates (those with both
    /// positives and negatives in the training set).
    pub fn eligible(&self) -> &[bool] {
        &self.eligible
    }

    /// The current target ratios `rhat_c`.
    pub fn rhat(&self) -> &[f64] {
        &self.rhat
    }

    /// Sets the target ratios (e.g. for a fixed-`rhat` ablation with
    /// λ = 0). Each value must be finite and inside the clamp interval
    /// `[min(rhat_min, r_c), max(rhat_max, r_c)]`.
    pub fn set_rhat(&mut self, rhat: &[f64]) -> Result<()> {
        let op = "Plm::set_rhat";
        if rhat.len() != self.num_classes() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: vec![rhat.len()],
                rhs: vec![self.num_classes()],
            });
        }
        for (c, (&v, &(lo, hi))) in rhat.iter().zip(&self.bounds).enumerate() {
            if !(lo..=hi).contains(&v) {
                return Err(Error::invalid(
                    op,
                    format!("rhat[{c}] = {v} is outside [{lo}, {hi}]"),
                ));
            }
        }
        self.rhat = rhat.to_vec();
        self.keep = None;
        Ok(())
    }

    /// The per-class keep probabilities `(keep_pos, keep_neg)` under the
    /// current `rhat` (see [`keep_probabilities`]); 1 for classes that do
    /// not take part.
    pub fn keep_probabilities(&self) -> (Vec<f64>, Vec<f64>) {
        (0..self.num_classes())
            .map(|c| {
                if self.eligible[c] {
                    keep_probabilities(self.ratios[c], self.rhat[c])
                } else {
                    (1.0, 1.0)
                }
            })
            .unzip()
    }

    /// Number of masks drawn so far, which is also the counter of the next
    /// mask.
    pub fn batches_drawn(&self) -> u64 {
        self.batches
    }

    /// Number of completed epochs (calls of [`Plm::end_epoch`]).
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// The histograms accumulated since the last update on the host. Counts
    /// of batches observed on a device join them at
    /// [`Plm::sync_histograms`]; until then they are not included here.
    pub fn histograms(&self) -> &Histograms {
        &self.histograms
    }

    /// Merges the counts of batches observed on a device (downloaded once)
    /// into the host histograms, and returns them: every batch observed
    /// since the last update.
    pub fn sync_histograms(&mut self) -> Result<&Histograms> {
        self.checks.finish("Plm::sync_histograms")?;
        if let Some(pending) = &self.pending {
            self.histograms.merge(&pending.download()?)?;
            self.pending = None;
        }
        Ok(&self.histograms)
    }

    /// Every batch observed since the last update, without merging
    /// (a merged copy when counts are pending on a device).
    pub(crate) fn all_histograms(&self) -> Result<Cow<'_, Histograms>> {
        self.checks.verify("Plm::histograms")?;
        match &self.pending {
            None => Ok(Cow::Borrowed(&self.histograms)),
            Some(pending) => {
                let mut h = self.histograms.clone();
                h.merge(&pending.download()?)?;
                Ok(Cow::Owned(h))
            }
        }
    }

    /// A fresh 0/1 mask for the next batch, with the dtype and shape of
    /// `targets` (`[B, C]`, values 0 or 1): 1 keeps a label in the loss.
    /// Each call uses the next value of the mask counter.
    pub fn sample_mask(&mut self, targets: &Tensor) -> Result<Tensor> {
        self.sample_mask_at(targets, 0)
    }

    /// [`Plm::sample_mask`] for the rows `first_row..` of a larger batch
    /// (a data-parallel rank's slice of the global batch, `targets` holding
    /// only its rows): that part of the mask of the whole batch, bit for
    /// bit, so that the ranks together draw the single-process mask. Uses
    /// the next value of the mask counter, as every rank does once per
    /// global batch (see [`Plm::skip_mask`]).
    pub fn sample_mask_at(&mut self, targets: &Tensor, first_row: usize) -> Result<Tensor> {
        const OP: &str = "Plm::sample_mask";
        check_targets_shape(OP, targets, self.num_classes())?;
        let next = self.batches.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "Plm::sample_mask",
                "the mask counter is exhausted (u64::MAX masks drawn)",
            )
        })?;
        let device = targets.device();
        let keep = match &self.keep {
            Some(k) if k.device() == device => k.clone(),
            _ => {
                let (keep_pos, keep_neg) = self.keep_probabilities();
                self.keep
                    .insert(plm_op::keep_table(&keep_pos, &keep_neg, device)?)
                    .clone()
            }
        };
        let check = match device {
            Device::Cpu => TargetCheck::Now,
            Device::Cuda(_) => TargetCheck::Later(&mut self.checks),
        };
        let mask = plm_op::mask(
            OP,
            &targets.detach(),
            (self.config.seed, self.batches, first_row as u64),
            &keep,
            check,
        )?;
        self.batches = next;
        Ok(mask)
    }

    /// Advances the mask counter past one batch without drawing: what a
    /// data-parallel rank does for a global batch of which it has no rows,
    /// so that its next mask is the one the other ranks draw.
    pub fn skip_mask(&mut self) -> Result<()> {
        self.batches = self.batches.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "Plm::skip_mask",
                "the mask counter is exhausted (u64::MAX masks drawn)",
            )
        })?;
        Ok(())
    }

    /// [`Plm::masked_loss`] of the rows `first_row..` of a larger batch
    /// (see [`Plm::sample_mask_at`]): `Σ g ⊙ loss / (B_slice · C)`, the
    /// mean over the slice's own elements.
    pub fn masked_loss_at(
        &mut self,
        elementwise_loss: &Tensor,
        targets: &Tensor,
        first_row: usize,
    ) -> Result<Tensor> {
        check_loss("Plm::masked_loss", elementwise_loss, targets.shape())?;
        let mask = self.sample_mask_at(targets, first_row)?;
        apply_mask(elementwise_loss, &mask)
    }

    /// Replaces the histograms of the epoch so far by `histograms` (same
    /// bins and classes): e.g. the sum over the ranks of a data-parallel
    /// job, so that every rank's update of r̂ sees the whole epoch. Counts
    /// pending on a device are merged first and then replaced too.
    pub fn set_histograms(&mut self, histograms: Histograms) -> Result<()> {
        self.sync_histograms()?;
        let (bins, classes) = (histograms.n_bins(), histograms.num_classes());
        if bins != self.config.n_bins || classes != self.num_classes() {
            return Err(Error::invalid(
                "Plm::set_histograms",
                format!(
                    "histograms of {bins} bins x {classes} classes for PLM of {} bins x {} classes",
                    self.config.n_bins,
                    self.num_classes()
                ),
            ));
        }
        self.histograms = histograms;
        Ok(())
    }

    /// The PLM loss of one batch, `Σ g ⊙ loss / (B · C)`, with a fresh mask
    /// `g` drawn for `targets`. `elementwise_loss` is the differentiable
    /// per-element base loss (e.g. BCE with no reduction, possibly already
    /// multiplied by class weights), of the same `[B, C]` shape.
    pub fn masked_loss(&mut self, elementwise_loss: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.masked_loss_at(elementwise_loss, targets, 0)
    }

    /// Adds a training batch to the histograms: `probabilities` are the
    /// sigmoid outputs `[B, C]` of the training forward pass (all elements,
    /// masked or not), `targets` its labels. NaN values and values outside
    /// [0, 1] are counted as discarded. Validation data must not be
    /// observed.
    pub fn observe(&mut self, probabilities: &Tensor, targets: &Tensor) -> Result<()> {
        let op = "Plm::observe";
        if probabilities.shape() != targets.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: probabilities.shape().to_vec(),
                rhs: targets.shape().to_vec(),
            });
        }
        if !probabilities.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op,
                dtype: probabilities.dtype(),
            });
        }
        check_targets_shape(op, targets, self.num_classes())?;
        let (probabilities, targets) = (probabilities.detach(), targets.detach());
        let device = targets.device();
        if device == Device::Cpu {
            // Host batches join the histograms at once (nothing to defer).
            let mut batch = HistogramCounts::zeros(self.config.n_bins, self.num_classes(), device)?;
            batch.add(op, &probabilities, &targets, TargetCheck::Now)?;
            return self.histograms.merge(&batch.download()?);
        }
        if self.pending.as_ref().is_some_and(|p| p.device() != device) {
            self.sync_histograms()?;
        }
        let pending = match &mut self.pending {
            Some(p) => p,
            None => self.pending.insert(HistogramCounts::zeros(
                self.config.n_bins,
                self.num_classes(),
                device,
            )?),
        };
        pending.add(
            op,
            &probabilities,
            &targets,
            TargetCheck::Later(&mut self.checks),
        )
    }

    /// Ends an epoch: merges the counts pending on a device
    /// ([`Plm::sync_histograms`]), computes the divergences, `Δ` and the new `rhat`
    /// from the histograms (see [`epoch_update`]), applies the new `rhat`
    /// to the following masks, and resets the histograms.
    pub fn end_epoch(&mut self) -> Result<PlmEpochUpdate> {
        self.sync_histograms()?;
        let next = self.epochs.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "Plm::end_epoch",
                "the epoch counter is exhausted (u64::MAX epochs)",
            )
        })?;
        let update = epoch_update(
            &self.histograms,
            &self.rhat,
            &self.eligible,
            &self.bounds,
            &self.config,
            self.epochs,
        )?;
        self.rhat.clone_from(&update.rhat);
        self.keep = None;
        self.histograms.reset();
        self.epochs = next;
        Ok(update)
    }
}

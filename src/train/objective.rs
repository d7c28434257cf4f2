//! The training objective of a run: a base loss (BCE, focal, ASL, softmax
//! cross-entropy), optional class-balanced weights, and optional Partial
//! Label Masking — or its re-weighting control — on top.

use super::loss_spec::{BaseLoss, LossSpec};
use crate::error::{Error, Result};
use crate::loss::{
    class_balanced_weights, cross_entropy, CrossEntropyOptions, ElementLoss, Reduction,
};
use crate::plm::{Histograms, Plm, PlmEpochUpdate};
use crate::tensor::{DType, Tensor};

/// A loss function with its per-run state (PLM's ratios and histograms).
pub struct Objective {
    spec: LossSpec,
    class_weights: Option<Tensor>,
    /// The re-weighting control's keep probabilities, `[C]` each: the
    /// weight of an element with target `y` is `neg + y·(pos − neg)`.
    keep: Option<KeepWeights>,
    plm: Option<Plm>,
}

/// PLM's keep probabilities at a fixed r̂, as element weights.
struct KeepWeights {
    neg: Tensor,
    gap: Tensor,
}

impl Objective {
    /// The objective `spec` in a run of `epochs` epochs (PLM's λ = auto
    /// is 1/epochs) on a training set of `num_samples` samples with
    /// `positives[c]` positives of class `c`; `seed` drives PLM's masks.
    pub fn new(
        spec: &LossSpec,
        epochs: usize,
        seed: u64,
        positives: &[usize],
        num_samples: usize,
    ) -> Result<Self> {
        spec.validate()?;
        let class_weights = match spec.class_balanced {
            Some(beta) => {
                let w = class_balanced_weights(positives, beta)?;
                let w: Vec<f32> = w.into_iter().map(|x| x as f32).collect();
                Some(Tensor::from_vec(w, &[positives.len()])?)
            }
            None => None,
        };
        let keep = match spec.reweight {
            Some(rhat) => Some(keep_weights(rhat, positives, num_samples)?),
            None => None,
        };
        let plm = match &spec.plm {
            Some(settings) => {
                let config = settings.config(epochs, seed ^ 0x504c_4d5f_6d61_736b); // "PLM_mask"
                Some(Plm::new(config, positives, num_samples)?)
            }
            None => None,
        };
        Ok(Objective {
            spec: *spec,
            class_weights,
            keep,
            plm,
        })
    }

    /// The loss this objective computes.
    pub fn spec(&self) -> &LossSpec {
        &self.spec
    }

    /// PLM's state, when the objective masks.
    pub fn plm(&self) -> Option<&Plm> {
        self.plm.as_ref()
    }

    /// Replaces PLM's state (resuming from a checkpoint); an error if this
    /// objective does not use PLM or the class counts differ.
    pub fn set_plm(&mut self, plm: Plm) -> Result<()> {
        match &self.plm {
            Some(current) if current.rhat().len() == plm.rhat().len() => {
                self.plm = Some(plm);
                Ok(())
            }
            Some(current) => Err(Error::invalid(
                "Objective::set_plm",
                format!(
                    "PLM state has {} classes, the run has {}",
                    plm.rhat().len(),
                    current.rhat().len()
                ),
            )),
            None => Err(Error::invalid(
                "Objective::set_plm",
                format!("loss `{}` does not use PLM", self.spec),
            )),
        }
    }

    /// The scalar loss of a training batch: `logits` `[B, C]`, `targets`
    /// `[B, C]` multi-hot (or one-hot) f32, `labels` the class indices
    /// `[B]` (i64; needed by softmax cross-entropy only). With PLM a fresh
    /// mask is drawn and the prediction histograms are updated.
    pub fn loss(
        &mut self,
        logits: &Tensor,
        targets: &Tensor,
        labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.loss_at(logits, targets, labels, 0)
    }

    /// [`Objective::loss`] of a data-parallel rank's slice of a global
    /// batch, whose first row is row `first_row` of the global batch: the
    /// mean over the slice, with PLM's mask drawn as that part of the
    /// global batch's mask (see [`Plm::masked_loss_at`]).
    pub fn loss_at(
        &mut self,
        logits: &Tensor,
        targets: &Tensor,
        labels: Option<&Tensor>,
        first_row: usize,
    ) -> Result<Tensor> {
        // Constants move once, on the first batch on another device.
        let device = logits.device();
        let constants = self
            .class_weights
            .iter_mut()
            .chain(self.keep.iter_mut().flat_map(|k| [&mut k.neg, &mut k.gap]));
        for t in constants {
            if t.device() != device {
                *t = t.to_device(device)?;
            }
        }
        let element: ElementLoss = match self.spec.base {
            BaseLoss::Element(e) => e,
            BaseLoss::CrossEntropy => {
                let labels = labels.ok_or_else(|| {
                    Error::invalid(
                        "Objective::loss",
                        "softmax cross-entropy needs class labels",
                    )
                })?;
                let opts = CrossEntropyOptions {
                    weight: self.class_weights.clone(),
                    label_smoothing: 0.0,
                    ignore_index: None,
                    reduction: Reduction::Mean,
                };
                return cross_entropy(logits, labels, &opts);
            }
        };
        if let Some(keep) = &self.keep {
            // E[mask] element by element, times the class weights if any.
            let mut weight = targets.mul(&keep.gap)?.add(&keep.neg)?;
            if let Some(w) = &self.class_weights {
                weight = weight.mul(w)?;
            }
            return element.compute(logits, targets, Some(&weight), Reduction::Mean);
        }
        match &mut self.plm {
            None => element.compute(
                logits,
                targets,
                self.class_weights.as_ref(),
                Reduction::Mean,
            ),
            Some(plm) => {
                let per_element = element.compute(
                    logits,
                    targets,
                    self.class_weights.as_ref(),
                    Reduction::None,
                )?;
                let loss = plm.masked_loss_at(&per_element, targets, first_row)?;
                let probabilities = logits.detach().sigmoid()?;
                plm.observe(&probabilities, targets)?;
                Ok(loss)
            }
        }
    }

    /// A global batch of which this data-parallel rank has no rows: PLM's
    /// mask counter moves on as on the other ranks.
    pub fn skip_batch(&mut self) -> Result<()> {
        match &mut self.plm {
            Some(plm) => plm.skip_mask(),
            None => Ok(()),
        }
    }

    /// Sums PLM's prediction histograms of the epoch over the ranks of a
    /// data-parallel job (a collective; nothing to do without PLM, but
    /// every rank still calls it).
    pub fn all_reduce_epoch(&mut self, comm: &dyn crate::distributed::Communicator) -> Result<()> {
        match &mut self.plm {
            Some(plm) => plm.all_reduce_histograms(comm),
            None => Ok(()),
        }
    }

    /// Ends an epoch: PLM's adaptive update of r̂, with the epoch's
    /// prediction histograms it was computed from (None without PLM).
    pub fn end_epoch(&mut self) -> Result<Option<(PlmEpochUpdate, Histograms)>> {
        match &mut self.plm {
            None => Ok(None),
            Some(plm) => {
                let histograms = plm.sync_histograms()?.clone();
                Ok(Some((plm.end_epoch()?, histograms)))
            }
        }
    }

    /// Prediction scores in [0, 1] from logits: softmax probabilities for
    /// cross-entropy, per-class sigmoids otherwise.
    pub fn scores(&self, logits: &Tensor) -> Result<Tensor> {
        let logits = logits.to_dtype(DType::F32)?;
        if self.spec.is_cross_entropy() {
            logits.softmax(1)
        } else {
            logits.sigmoid()
        }
    }
}

/// The keep probabilities PLM would use at target ratio `rhat` for every
/// class (computed by PLM itself, so the control and PLM cannot disagree).
fn keep_weights(rhat: f64, positives: &[usize], num_samples: usize) -> Result<KeepWeights> {
    let mut plm = Plm::new(Default::default(), positives, num_samples)?;
    plm.set_rhat(&vec![rhat; positives.len()])?;
    let (pos, neg) = plm.keep_probabilities();
    let f32s = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
    let gap: Vec<f64> = pos.iter().zip(&neg).map(|(p, n)| p - n).collect();
    let c = positives.len();
    Ok(KeepWeights {
        neg: Tensor::from_vec(f32s(neg), &[c])?,
        gap: Tensor::from_vec(f32s(gap), &[c])?,
    })
}

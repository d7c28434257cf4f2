//! Partial Label Masking (PLM) for imbalanced multi-label classification:
//! K. Duarte, Y. S. Rawat, M. Shah, "PLM: Partial Label Masking for
//! Imbalanced Multi-label Classification", CVPR Workshops 2021.
//!
//! # The idea
//!
//! Each class `c` has one sigmoid output and a per-element loss
//! `l(y, p)` (e.g. binary cross-entropy). A class with ratio
//! `r_c = Npos_c / Nneg_c` (counted once on the whole training set) far from
//! 1 is dominated by one kind of label. PLM keeps a *target* ratio
//! `rhat_c` per class and, in every mini-batch, randomly leaves labels out of
//! the loss so that the kept labels have that ratio:
//!
//! - **Masking probabilities.** A class with too many positives
//!   (`r > rhat`) keeps each positive with probability `rhat / r` and every
//!   negative; a class with too few (`r < rhat`) keeps every positive and
//!   each negative with probability `r / rhat`. Kept positives per kept
//!   negative are then `rhat` in expectation. Masks are Bernoulli draws,
//!   fresh for every batch; they depend only on the labels, never on the
//!   predictions, and carry no gradient.
//! - **The loss.** `L = Σ g ⊙ l / (B · C)`, the mean over *all* label
//!   elements of the batch, masked ones included. The normaliser does not
//!   depend on the mask: dividing by the number of kept labels would change
//!   every class's weight from batch to batch and partly undo the
//!   rebalancing. With no masking this is exactly the mean-reduced loss, and
//!   in expectation PLM is per-class reweighting by the keep probabilities.
//! - **The adaptive update.** During an epoch, the predicted probabilities
//!   of the training batches are counted into per-class histograms, split
//!   by label. At the epoch's end each class gets a divergence between its
//!   positives' predictions and the ideal (all at 1), and likewise for its
//!   negatives (ideal: all at 0). Both are standardised across classes and
//!   `Δ_c = D̃pos_c − D̃neg_c`: positive when the class's positives are
//!   further from their ideal than its negatives, i.e. the class is
//!   under-predicted. Then `rhat_c ← rhat_c · exp(λ Δ_c)`: an
//!   under-predicted class gets a higher target, which masks more of its
//!   negatives (or fewer of its positives) and pushes its outputs up.
//!
//! # Defaults and options
//!
//! `rhat` starts at `r` (so the first epoch masks nothing) or at 1
//! ([`RhatInit`]); λ = 0.01; 10 bins; KL(predicted ‖ truth) with ε patching
//! the zeros of the point-mass truth, or KL(truth ‖ predicted)
//! ([`Divergence`]); standardisation on; `rhat` clamped to [1e-6, 1e6]. All
//! histogram, divergence and update arithmetic is in f64.
//!
//! # Reproducible masks
//!
//! The uniform deciding element `e` (row-major in `[B, C]`) of the `t`-th
//! mask is computed by the counter-based generator Philox4x32-10 from
//! `(seed, t, e)` alone ([`philox`]), so a GPU kernel can reproduce it and a
//! resumed run ([`Plm::state_json`]) draws exactly the same masks.
//!
//! # Data-parallel training
//!
//! Class counts come from the whole training set, as always. Each rank
//! draws its slice of the global batch's mask at the slice's first row
//! ([`Plm::masked_loss_at`]; a rank without rows calls
//! [`Plm::skip_mask`]), so the ranks together draw the single-process mask
//! bit for bit; before the epoch's update the histograms are summed over
//! the ranks ([`Plm::all_reduce_histograms`]), so r̂ is the same on every
//! rank and equals one process's.
//!
//! # Usage
//!
//! ```
//! use ferrite::loss::{bce_with_logits, Reduction};
//! use ferrite::plm::{Plm, PlmConfig};
//! use ferrite::Tensor;
//! # fn main() -> ferrite::Result<()> {
//! // 4 training samples, 2 classes with 1 and 2 positives.
//! let mut plm = Plm::new(PlmConfig::default(), &[1, 2], 4)?;
//! let logits = Tensor::from_vec(vec![0.3f32, -1.0, 2.0, 0.5], &[2, 2])?.requires_grad_(true);
//! let y = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?;
//! let bce = bce_with_logits(&logits, &y, None, Reduction::None)?; // [B, C], not reduced
//! let loss = plm.masked_loss(&bce, &y)?;
//! plm.observe(&logits.sigmoid()?, &y)?;
//! let _grads = loss.backward()?;
//! let update = plm.end_epoch()?; // once per epoch
//! assert_eq!(update.rhat.len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! Single-label data is used one-vs-rest: [`one_hot`] targets, one sigmoid
//! per class, prediction by argmax.

mod config;
pub mod divergence;
pub mod histogram;
pub mod mask;
mod objective;
mod state;
mod sync;
pub mod update;

pub use crate::ops::plm::philox;
pub use config::{PlmConfig, RhatInit, MAX_BINS};
pub use divergence::{kl_pred_vs_truth, kl_truth_vs_pred, normalize, Divergence, EPS};
pub use histogram::{bin_index, Histograms};
pub use mask::{apply_mask, draw_mask, keep_probabilities, one_hot};
pub use objective::Plm;
pub use philox::{mask_uniform, philox4x32_10, uniform_from_bits};
pub use update::{epoch_update, standardize, step_rhat, PlmEpochUpdate};

//! Arguments of the sigmoid losses and the PLM kernels (`kernels/loss.cu`).

use std::mem::size_of;

/// Arguments of the sigmoid losses of `kernels/loss.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SigmoidLossParams {
    /// Number of logits (and targets).
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C` (for `pos_weight`).
    pub classes: i64,
    /// Stride of the upstream gradient `dy`: 0 for one shared value, 1 for
    /// one value per element.
    pub dy_stride: i64,
    /// Focal loss focusing exponent γ.
    pub gamma: f32,
    /// Focal loss weight α of the positives; used only when `has_alpha` is 1.
    pub alpha: f32,
    /// ASL focusing exponent γ₊ of the positive term.
    pub gamma_pos: f32,
    /// ASL focusing exponent γ₋ of the negative term.
    pub gamma_neg: f32,
    /// ASL probability margin: negatives use `max(p − clip, 0)`.
    pub clip: f32,
    /// Focal loss: 1 to weight by α, 0 for `α_t = 1`.
    pub has_alpha: i32,
}
const _: () = assert!(size_of::<SigmoidLossParams>() == 48);

/// Arguments of `plm_mask_fwd_f32`: mask number `batch` under `seed`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlmMaskParams {
    /// Philox key: the same seed and batch always give the same mask.
    pub seed: u64,
    /// Mask number, part of the Philox counter.
    pub batch: u64,
    /// Mask elements, `B·C` (batch rows × classes).
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C`.
    pub classes: i64,
}
const _: () = assert!(size_of::<PlmMaskParams>() == 32);

/// Arguments of `plm_histogram_fwd_f32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlmHistogramParams {
    /// Number of probabilities (and targets) in the batch.
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C`.
    pub classes: i64,
    /// Histogram bins over `[0, 1]`.
    pub n_bins: i64,
}
const _: () = assert!(size_of::<PlmHistogramParams>() == 24);

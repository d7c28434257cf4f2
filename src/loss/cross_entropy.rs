//! Softmax cross-entropy over classes, with PyTorch's class weights, label
//! smoothing and ignored index, composed of `log_softmax`, `gather` and
//! elementwise ops (so it is stable for any logits and differentiable
//! through their backward rules).

use super::Reduction;
use crate::error::{Error, Result};
use crate::ops::KeepDim;
use crate::tensor::{DType, Device, Tensor};

const OP: &str = "cross_entropy";

/// Options of [`cross_entropy`]. `Default`: no class weights, no label
/// smoothing, no ignored index, [`Reduction::Mean`].
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyOptions {
    /// Per-class weights `[C]` in the logits' dtype (a constant).
    pub weight: Option<Tensor>,
    /// Label smoothing `ε` in [0, 1].
    pub label_smoothing: f64,
    /// Targets equal to this value contribute nothing (PyTorch's
    /// `ignore_index`, here optional instead of −100).
    pub ignore_index: Option<i64>,
    /// How per-sample losses are combined.
    pub reduction: Reduction,
}

/// Cross-entropy of `logits` `[B, C]` against class indices `targets`
/// (i64 `[B]`), as `torch.nn.functional.cross_entropy`.
///
/// With `log p = log_softmax(logits)`, class weights `w` (1 without) and
/// smoothing `ε`, sample `i` with target `t` costs
/// `(1 − ε)·w_t·(−log p_{i,t}) + (ε/C)·Σ_c w_c·(−log p_{i,c})`, and 0 when
/// `t` is the ignored index. `Reduction::None` returns these `[B]` values,
/// `Sum` their sum, `Mean` their sum divided by `Σ w_t` over the samples
/// that are not ignored (the weighted mean); when that divisor is 0 (every
/// target ignored, or an empty batch) the mean is NaN, as in PyTorch.
///
/// Errors: non-float logits or logits not of rank 2, targets not i64 or
/// not of shape `[B]`, a target outside `0..C` that is not ignored
/// (`IndexOutOfRange`), a weight not of shape `[C]` (`ShapeMismatch`), of
/// another dtype, or requiring a gradient, `label_smoothing` outside [0, 1].
///
/// ```
/// use ferrite::loss::{cross_entropy, CrossEntropyOptions};
/// use ferrite::Tensor;
/// let logits = Tensor::from_vec(vec![0.0f32, 0.0, 0.0, 0.0], &[2, 2])?;
/// let labels = Tensor::from_vec(vec![0i64, 1], &[2])?;
/// let loss = cross_entropy(&logits, &labels, &CrossEntropyOptions::default())?;
/// assert!((loss.item::<f32>()? - 2f32.ln()).abs() < 1e-6);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    let _profile = crate::profile::scope("cross_entropy");
    let (b, c) = check_shapes(logits, targets)?;
    let eps = opts.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::invalid(
            OP,
            format!("label_smoothing must be in [0, 1], got {eps}"),
        ));
    }
    let w = class_weights(logits, opts.weight.as_ref())?;

    // Per sample: a gatherable class index (0 for ignored samples), the
    // coefficient of −log p at the target, and whether it counts.
    let mut index = vec![0i64; b];
    let mut target_coef = vec![0.0; b];
    let mut kept = vec![1u8; b];
    let mut divisor = 0.0;
    for (i, &t) in targets.to_vec::<i64>()?.iter().enumerate() {
        if Some(t) == opts.ignore_index {
            kept[i] = 0;
            continue;
        }
        if t < 0 || t >= c as i64 {
            return Err(Error::IndexOutOfRange {
                op: OP,
                index: t,
                size: c,
            });
        }
        index[i] = t;
        target_coef[i] = (1.0 - eps) * w[t as usize];
        divisor += w[t as usize];
    }

    let (dtype, device) = (logits.dtype(), logits.device());
    let logp = logits.log_softmax(1)?;
    let at_target = logp
        .gather(1, &Tensor::from_vec(index, &[b, 1])?.to_device(device)?)?
        .reshape(&[b])?;
    let mut neg_loss = at_target.mul(&vector(&target_coef, dtype, device)?)?;
    if eps > 0.0 {
        let smooth = logp
            .mul(&vector(&w, dtype, device)?)?
            .sum(&[1], KeepDim::No)?
            .mul_scalar(eps / c as f64)?;
        neg_loss = neg_loss.add(&smooth)?;
    }
    let mut per_sample = neg_loss.neg()?;
    if kept.contains(&0) {
        // A select, not a product: an ignored row may hold −∞ log-probs.
        let zero = Tensor::zeros_on(&[], dtype, device)?;
        per_sample = Tensor::from_vec(kept, &[b])?
            .to_device(device)?
            .where_cond(&per_sample, &zero)?;
    }
    match opts.reduction {
        Reduction::None => Ok(per_sample),
        Reduction::Sum => per_sample.sum_all(),
        Reduction::Mean if divisor == 0.0 => per_sample.sum_all()?.mul_scalar(f64::NAN),
        Reduction::Mean => per_sample.sum_all()?.div_scalar(divisor),
    }
}

/// Checks logits `[B, C]` (float) and targets `[B]` (i64); returns `(B, C)`.
fn check_shapes(logits: &Tensor, targets: &Tensor) -> Result<(usize, usize)> {
    logits.check_float(OP)?;
    let &[b, c] = logits.shape() else {
        return Err(Error::bad_shape(
            OP,
            format!("expected logits of shape [B, C], got {:?}", logits.shape()),
        ));
    };
    if targets.dtype() != DType::I64 {
        return Err(Error::invalid(
            OP,
            format!(
                "targets must be i64 class indices, got {:?}",
                targets.dtype()
            ),
        ));
    }
    if targets.shape() != [b] {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: logits.shape().to_vec(),
            rhs: targets.shape().to_vec(),
        });
    }
    Ok((b, c))
}

/// The class weights as f64 (all 1 without a weight), after checking the
/// weight's shape `[C]`, dtype and that it is a constant.
fn class_weights(logits: &Tensor, weight: Option<&Tensor>) -> Result<Vec<f64>> {
    let c = logits.shape()[1];
    let Some(w) = weight else {
        return Ok(vec![1.0; c]);
    };
    logits.check_same(OP, w)?;
    if w.shape() != [c] {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: logits.shape().to_vec(),
            rhs: w.shape().to_vec(),
        });
    }
    if w.requires_grad() {
        return Err(Error::invalid(
            OP,
            "weight is a constant and must not require a gradient",
        ));
    }
    w.to_f64_vec()
}

/// A 1-D tensor of `dtype` on `device` holding `values` (rounded once from
/// f64).
fn vector(values: &[f64], dtype: DType, device: Device) -> Result<Tensor> {
    Tensor::from_slice(values, &[values.len()])?
        .to_dtype(dtype)?
        .to_device(device)
}

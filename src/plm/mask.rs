//! Keep probabilities, mask sampling and the masked loss.

use super::philox::uniform_block;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The probabilities `(keep_pos, keep_neg)` that a positive / negative label
/// of a class with ratio `r` and target ratio `rhat` takes part in the loss:
/// `keep_pos = min(1, rhat / r)`, `keep_neg = min(1, r / rhat)`.
///
/// A class with more positives than its target (`r > rhat`) drops positives,
/// one with fewer drops negatives; in every case the expected ratio of kept
/// positives to kept negatives, `r · keep_pos / keep_neg`, equals `rhat`.
pub fn keep_probabilities(r: f64, rhat: f64) -> (f64, f64) {
    if r > rhat {
        (rhat / r, 1.0)
    } else if r < rhat {
        (1.0, r / rhat)
    } else {
        (1.0, 1.0)
    }
}

/// The 0/1 mask of one batch: element `e` (row-major in `[B, C]`, class
/// `e mod C`) is kept when its uniform `u` (from
/// [`uniform_block`]`(seed, batch, e / 4)`) satisfies `u < keep`, where
/// `keep` is `keep_pos` or `keep_neg` of its class according to its label.
///
/// Every element of every mask is a function of `(seed, batch, e)` only.
pub fn draw_mask(
    seed: u64,
    batch: u64,
    labels: &[bool],
    keep_pos: &[f64],
    keep_neg: &[f64],
) -> Result<Vec<bool>> {
    let c = keep_pos.len();
    if c == 0 || keep_neg.len() != c || !labels.len().is_multiple_of(c) {
        return Err(Error::invalid(
            "draw_mask",
            format!(
                "{} labels with {} keep_pos and {} keep_neg values do not form [B, C] batches",
                labels.len(),
                keep_pos.len(),
                keep_neg.len()
            ),
        ));
    }
    let mut mask = Vec::with_capacity(labels.len());
    for (block, chunk) in labels.chunks(4).enumerate() {
        let u = uniform_block(seed, batch, block as u64);
        for (lane, &positive) in chunk.iter().enumerate() {
            let class = (block * 4 + lane) % c;
            let keep = if positive {
                keep_pos[class]
            } else {
                keep_neg[class]
            };
            mask.push(u[lane] < keep);
        }
    }
    Ok(mask)
}

/// The masked loss `Σ g ⊙ loss / (B · C)`: the mean over **all** elements,
/// masked ones included, so the normaliser does not depend on the mask and
/// an all-ones mask gives exactly the mean-reduced loss.
///
/// `elementwise_loss` is a float `[B, C]` tensor (differentiable); `mask`
/// has the same shape, any dtype, values 0/1, and is treated as a constant
/// (converted to the loss dtype, no gradient). Masked elements get a zero
/// gradient.
pub fn apply_mask(elementwise_loss: &Tensor, mask: &Tensor) -> Result<Tensor> {
    check_loss("plm::apply_mask", elementwise_loss, mask.shape())?;
    let g = mask.detach().to_dtype(elementwise_loss.dtype())?;
    elementwise_loss.mul(&g)?.mean_all()
}

/// Checks that `loss` is a non-empty float tensor of shape `shape`.
pub(crate) fn check_loss(op: &'static str, loss: &Tensor, shape: &[usize]) -> Result<()> {
    if !loss.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: loss.dtype(),
        });
    }
    if loss.shape() != shape {
        return Err(Error::ShapeMismatch {
            op,
            lhs: loss.shape().to_vec(),
            rhs: shape.to_vec(),
        });
    }
    if loss.numel() == 0 {
        return Err(Error::bad_shape(
            op,
            format!("empty loss of shape {:?} has no mean", loss.shape()),
        ));
    }
    Ok(())
}

/// One-hot targets for single-label data used one-vs-rest: an f32
/// `[N, num_classes]` tensor with a 1 at `(i, labels[i])` and 0 elsewhere.
pub fn one_hot(labels: &[usize], num_classes: usize) -> Result<Tensor> {
    if num_classes == 0 {
        return Err(Error::invalid("one_hot", "num_classes must be at least 1"));
    }
    let len = crate::tensor::checked_numel("one_hot", &[labels.len(), num_classes])?;
    let mut data = vec![0.0f32; 0];
    data.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            bytes: len.saturating_mul(4),
        })?;
    data.resize(len, 0.0);
    for (i, &label) in labels.iter().enumerate() {
        if label >= num_classes {
            return Err(Error::index_out_of_range("one_hot", label, num_classes));
        }
        data[i * num_classes + label] = 1.0;
    }
    Tensor::from_vec(data, &[labels.len(), num_classes])
}

/// The `[B, C]` labels of `targets` as booleans, checking the shape and
/// that every value is exactly 0 or 1.
pub(crate) fn labels_of(
    op: &'static str,
    targets: &Tensor,
    num_classes: usize,
) -> Result<Vec<bool>> {
    if targets.ndim() != 2 || targets.shape()[1] != num_classes {
        return Err(Error::bad_shape(
            op,
            format!(
                "expected targets of shape [B, {num_classes}], got {:?}",
                targets.shape()
            ),
        ));
    }
    let values = targets.detach().to_f64_vec()?;
    values
        .iter()
        .enumerate()
        .map(|(e, &v)| {
            if v == 0.0 || v == 1.0 {
                Ok(v == 1.0)
            } else {
                Err(Error::invalid(
                    op,
                    format!(
                        "targets must be 0 or 1, found {v} at [{}, {}]",
                        e / num_classes,
                        e % num_classes
                    ),
                ))
            }
        })
        .collect()
}

/// A tensor of `dtype` and `shape` holding the 0/1 values of `bits`.
pub(crate) fn mask_tensor(bits: &[bool], shape: &[usize], dtype: DType) -> Result<Tensor> {
    let data: Vec<f64> = bits.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec(data, shape)?.to_dtype(dtype)
}

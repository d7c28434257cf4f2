//! Keep probabilities, mask sampling and the masked loss.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

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

/// The 0/1 mask of one batch from its labels (the host kernel of the PLM
/// op family, `crate::ops::plm`, which draws masks on every device).
pub use crate::ops::plm::cpu::draw_mask;

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

/// Errors unless `targets` has shape `[B, num_classes]` (their values are
/// checked by the op that reads them).
pub(crate) fn check_targets_shape(
    op: &'static str,
    targets: &Tensor,
    num_classes: usize,
) -> Result<()> {
    if targets.ndim() != 2 || targets.shape()[1] != num_classes {
        return Err(Error::bad_shape(
            op,
            format!(
                "expected targets of shape [B, {num_classes}], got {:?}",
                targets.shape()
            ),
        ));
    }
    Ok(())
}

//! Top-1 accuracy straight from a batch's logits and class labels.

use crate::error::{Error, Result};
use crate::ops::KeepDim;
use crate::tensor::{DType, Tensor};

/// The fraction of rows of `logits` `[B, C]` whose largest logit is at the
/// class given by `labels` `[B]` (an integer tensor, e.g. the loader's
/// `i64` labels), on whichever device both live; the first maximum wins
/// ties, as `argmax` does. Only the count is read back.
///
/// ```
/// use ferrite::{metrics::accuracy, Tensor};
/// let logits = Tensor::from_vec(vec![2.0f32, 1.0, 0.0, 3.0], &[2, 2])?;
/// let labels = Tensor::from_vec(vec![0i64, 0], &[2])?;
/// assert_eq!(accuracy(&logits, &labels)?, 0.5);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    const OP: &str = "accuracy";
    let [b, _] = logits.shape() else {
        return Err(Error::bad_shape(
            OP,
            format!("logits must be [B, C], got {:?}", logits.shape()),
        ));
    };
    if labels.shape() != [*b] {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: vec![*b],
            rhs: labels.shape().to_vec(),
        });
    }
    if labels.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: labels.dtype(),
        });
    }
    if *b == 0 {
        return Err(Error::invalid(
            OP,
            "the accuracy of an empty batch is undefined",
        ));
    }
    let predicted = crate::no_grad(|| logits.argmax(1, KeepDim::No))?;
    let correct = predicted
        .eq(&labels.to_dtype(DType::I64)?)?
        .sum_all()?
        .to_scalar::<i64>()?;
    Ok(correct as f64 / *b as f64)
}

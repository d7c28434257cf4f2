//! [`mse_loss`]: the squared error between predictions and targets.

use super::Reduction;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Mean squared error `(pred − target)²`, element by element, reduced by
/// `reduction` (PyTorch's `mse_loss`). Both tensors must have the same
/// shape and float dtype; the target is a constant (no gradient flows to
/// it). Composed of `sub`, `square` and a reduction, so its gradient
/// `2·(pred − target)` (divided by the element count for the mean) comes
/// from those ops' backward passes.
///
/// ```
/// use ferrite::loss::{mse_loss, Reduction};
/// use ferrite::Tensor;
/// let pred = Tensor::from_vec(vec![1.0f32, 2.0, 4.0], &[3])?;
/// let target = Tensor::from_vec(vec![1.0f32, 0.0, 1.0], &[3])?;
/// let loss = mse_loss(&pred, &target, Reduction::Mean)?;
/// assert_eq!(loss.item::<f32>()?, (0.0 + 4.0 + 9.0) / 3.0);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn mse_loss(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    if pred.shape() != target.shape() {
        return Err(Error::ShapeMismatch {
            op: "mse_loss",
            lhs: pred.shape().to_vec(),
            rhs: target.shape().to_vec(),
        });
    }
    let squared = pred.sub(&target.detach())?.square()?;
    match reduction {
        Reduction::None => Ok(squared),
        Reduction::Mean => squared.mean_all(),
        Reduction::Sum => squared.sum_all(),
    }
}

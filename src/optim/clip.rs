//! Gradient clipping by global norm (`torch.nn.utils.clip_grad_norm_`).

use crate::autograd::{no_grad, GradStore};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Scales the gradients of `params` in `grads` so that their joint L2 norm
/// is at most `max_norm`; returns the norm before clipping. The scale is
/// `max_norm / (norm + 1e-6)`, applied only when it is below 1.
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Tensor], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::invalid(
            "clip_grad_norm",
            format!("max_norm must be positive, got {max_norm}"),
        ));
    }
    no_grad(|| {
        let mut total = 0.0;
        for p in params {
            if let Some(g) = grads.get(p) {
                let sq = g
                    .to_dtype(DType::F64)?
                    .square()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
                total += sq;
            }
        }
        let norm = total.sqrt();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for p in params {
                if let Some(g) = grads.remove(p) {
                    grads.insert(p, g.mul_scalar(coef)?);
                }
            }
        }
        Ok(norm)
    })
}

//! Gradient clipping by global norm (`torch.nn.utils.clip_grad_norm_`).

use crate::autograd::{no_grad, GradStore};
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// Scales the gradients of `params` in `grads` so that their joint L2 norm
/// is at most `max_norm`; returns the norm before clipping. The scale is
/// `max_norm / (norm + 1e-6)`, applied only when it is below 1.
///
/// This reads the norm back to the host; a training loop on a GPU that
/// does not need the value every step should call [`clip_grad_norm_`],
/// which never waits for the device.
///
/// ```
/// use ferrite::optim::clip_grad_norm;
/// use ferrite::Tensor;
/// let w = Tensor::from_vec(vec![0.0f32, 0.0], &[2])?.requires_grad_(true);
/// let target = Tensor::from_vec(vec![3.0f32, 4.0], &[2])?;
/// let mut grads = w.mul(&target)?.sum_all()?.backward()?; // gradient (3, 4), norm 5
/// let norm = clip_grad_norm(&mut grads, &[w.clone()], 1.0)?;
/// assert!((norm - 5.0).abs() < 1e-6);
/// let g = grads.get(&w).unwrap().to_vec::<f32>()?;
/// assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Tensor], max_norm: f64) -> Result<f64> {
    match clip_grad_norm_(grads, params, max_norm)? {
        Some(norm) => norm.to_f64_vec().map(|v| v[0]),
        None => Ok(0.0),
    }
}

/// [`clip_grad_norm`] computed where the gradients live: the norm is a 0-d
/// tensor on their device (`None` when no parameter has a gradient), and on
/// a CUDA device the gradients are multiplied by `min(1, coef)` there, so
/// the host never waits for the device. On the CPU the squares are summed
/// in f64 and the gradients are left untouched when no clipping is needed;
/// on a device each gradient's squares are summed in f32 by a reduction
/// that accumulates in f64.
pub fn clip_grad_norm_(
    grads: &mut GradStore,
    params: &[Tensor],
    max_norm: f64,
) -> Result<Option<Tensor>> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::invalid(
            "clip_grad_norm",
            format!("max_norm must be positive, got {max_norm}"),
        ));
    }
    no_grad(|| {
        let mut squares = Vec::new();
        let mut device = None;
        for p in params {
            if let Some(g) = grads.get(p) {
                let on = *device.get_or_insert(g.device());
                if g.device() != on {
                    return Err(Error::DeviceMismatch {
                        op: "clip_grad_norm",
                        lhs: on,
                        rhs: g.device(),
                    });
                }
                let g = if on == Device::Cpu {
                    g.to_dtype(DType::F64)?
                } else {
                    g.to_dtype(DType::F32)?
                };
                squares.push(g.square()?.sum_all()?);
            }
        }
        let Some(device) = device else {
            return Ok(None);
        };
        let norm = Tensor::stack(&squares, 0)?.sum_all()?.sqrt()?;
        if device == Device::Cpu {
            let coef = max_norm / (norm.to_scalar::<f64>()? + 1e-6);
            if coef < 1.0 {
                scale_all(grads, params, |g| g.mul_scalar(coef))?;
            }
        } else {
            let coef = norm.add_scalar(1e-6)?.powf(-1.0)?.mul_scalar(max_norm)?;
            let coef = coef.clamp(f64::NEG_INFINITY, 1.0)?;
            scale_all(grads, params, |g| g.mul(&coef.to_dtype(g.dtype())?))?;
        }
        Ok(Some(norm))
    })
}

/// Replaces each gradient of `params` in `grads` by `scale(gradient)`.
fn scale_all(
    grads: &mut GradStore,
    params: &[Tensor],
    scale: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<()> {
    for p in params {
        if let Some(g) = grads.remove(p) {
            grads.insert(p, scale(&g)?);
        }
    }
    Ok(())
}

//! Fused optimizer updates on raw slices: one pass over a parameter, its
//! gradient and its state, in the operation order PyTorch's single-tensor
//! implementations use (so trajectories match to rounding).

use super::{AdamStep, SgdStep};
use crate::tensor::Float;

/// SGD with optional weight decay, momentum (dampening, Nesterov):
/// `d = g + wd·p`; `buf = d` on the first step, else `buf = μ·buf + (1 − τ)·d`;
/// `d = d + μ·buf` (Nesterov) or `d = buf`; `p −= lr·d`.
pub fn sgd<T: Float>(p: &mut [T], g: &[T], buf: Option<&mut [T]>, h: &SgdStep) {
    let c = T::from_f64;
    let (lr, wd, mu, damp) = (
        c(h.lr),
        c(h.weight_decay),
        c(h.momentum),
        c(1.0 - h.dampening),
    );
    match buf {
        None => {
            for (p, &g) in p.iter_mut().zip(g) {
                let d = g + wd * *p;
                *p = *p - lr * d;
            }
        }
        Some(buf) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                let d = g + wd * *p;
                *b = if h.first_step { d } else { mu * *b + damp * d };
                let d = if h.nesterov { d + mu * *b } else { *b };
                *p = *p - lr * d;
            }
        }
    }
}

/// Adam / AdamW: optional decoupled decay `p *= 1 − lr·wd` (AdamW) or L2
/// `g += wd·p` (Adam); `m = m + (1 − β1)(g − m)`; `v = β2·v + (1 − β2)·g²`;
/// `p −= (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)`.
pub fn adam<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: &AdamStep) {
    let c = T::from_f64;
    let t = h.step as i32;
    let bc1 = 1.0 - h.beta1.powi(t);
    let bc2_sqrt = c((1.0 - h.beta2.powi(t)).sqrt());
    let step_size = c(h.lr / bc1);
    let (one_m_b1, b2, one_m_b2, eps) = (c(1.0 - h.beta1), c(h.beta2), c(1.0 - h.beta2), c(h.eps));
    let decay = c(1.0 - h.lr * h.weight_decay);
    let wd = c(h.weight_decay);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if h.decoupled {
            *p = *p * decay;
            g
        } else {
            g + wd * *p
        };
        *m = *m + one_m_b1 * (g - *m);
        *v = b2 * *v + one_m_b2 * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p = *p - step_size * (*m / denom);
    }
}

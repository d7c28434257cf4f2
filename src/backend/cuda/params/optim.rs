//! Arguments of the fused optimizer steps (`kernels/optim.cu`).

use crate::ops::optim::{AdamStep, SgdStep};
use std::mem::size_of;

/// Arguments of `sgd_step_f32`, the constants rounded to f32 as the CPU
/// kernel rounds them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    /// Number of parameter elements.
    pub n: i64,
    /// Learning rate.
    pub lr: f32,
    /// L2 weight decay, added to the gradient as `wd·p`.
    pub weight_decay: f32,
    /// Momentum factor μ.
    pub momentum: f32,
    /// `1 − dampening`, the weight of the new gradient in the momentum buffer.
    pub dampening_complement: f32,
    /// 1: Nesterov momentum.
    pub nesterov: i32,
    /// 1: the momentum buffer starts as the gradient (first step).
    pub first_step: i32,
    /// 1: a momentum buffer is used; 0: plain SGD, `buf` is unused.
    pub has_buf: i32,
    /// Padding to a multiple of 8 bytes; always 0.
    pub _unused: i32,
}
const _: () = assert!(size_of::<SgdParams>() == 40);

impl SgdParams {
    /// One step over `n` elements; `has_buf` when a momentum buffer is used.
    pub fn new(n: usize, h: &SgdStep, has_buf: bool) -> Self {
        SgdParams {
            n: n as i64,
            lr: h.lr as f32,
            weight_decay: h.weight_decay as f32,
            momentum: h.momentum as f32,
            dampening_complement: (1.0 - h.dampening) as f32,
            nesterov: i32::from(h.nesterov),
            first_step: i32::from(h.first_step),
            has_buf: i32::from(has_buf),
            _unused: 0,
        }
    }
}

/// Arguments of `adam_step_f32`, with the step-dependent constants folded
/// in f64 and rounded to f32 once (as `ops::optim::cpu::adam` does).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Number of parameter elements.
    pub n: i64,
    /// `lr / (1 − β1ᵗ)`: the learning rate with the first bias correction.
    pub step_size: f32,
    /// `1 − β1`.
    pub one_minus_beta1: f32,
    /// β2, the decay rate of the second-moment estimate.
    pub beta2: f32,
    /// `1 − β2`.
    pub one_minus_beta2: f32,
    /// Added to the denominator for numerical stability.
    pub eps: f32,
    /// `√(1 − β2ᵗ)`: the second bias correction.
    pub bc2_sqrt: f32,
    /// `1 − lr·wd`: the AdamW factor on the parameters.
    pub decay: f32,
    /// Weight decay `wd`, added to the gradient as `wd·p` in plain Adam.
    pub weight_decay: f32,
    /// 1: decoupled weight decay (AdamW); 0: L2 on the gradient (Adam).
    pub decoupled: i32,
    /// Padding to a multiple of 8 bytes; always 0.
    pub _unused: i32,
}
const _: () = assert!(size_of::<AdamParams>() == 48);

impl AdamParams {
    /// One step over `n` elements.
    pub fn new(n: usize, h: &AdamStep) -> Self {
        let t = h.step as i32;
        let bc1 = 1.0 - h.beta1.powi(t);
        AdamParams {
            n: n as i64,
            step_size: (h.lr / bc1) as f32,
            one_minus_beta1: (1.0 - h.beta1) as f32,
            beta2: h.beta2 as f32,
            one_minus_beta2: (1.0 - h.beta2) as f32,
            eps: h.eps as f32,
            bc2_sqrt: (1.0 - h.beta2.powi(t)).sqrt() as f32,
            decay: (1.0 - h.lr * h.weight_decay) as f32,
            weight_decay: h.weight_decay as f32,
            decoupled: i32::from(h.decoupled),
            _unused: 0,
        }
    }
}

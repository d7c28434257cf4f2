//! CUDA side of the fused optimizer updates (`kernels/optim.cu`): the
//! kernels' argument structs and their launchers. Parameters, gradients
//! and state buffers are f32 on one device; each update is one kernel
//! updating the parameter and its state in place.

use super::{AdamStep, SgdStep};
use crate::backend::cuda::driver::KernelArg;
use crate::backend::cuda::{launch, CudaDevice, DevicePtr};
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::ops::on_cuda::require_f32;
use crate::tensor::Tensor;
use std::mem::size_of;
use std::sync::Arc;

const FAMILY: &str = "optim";

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

// Safety: both structs are #[repr(C)], made of plain integers and floats
// with no padding (sizes asserted above and in kernels/optim.cu).
unsafe impl KernelArg for SgdParams {}
unsafe impl KernelArg for AdamParams {}

/// The device and the address of the first element of `t`'s view (its
/// layout offset applied), read from the storage guard `s`.
fn address(op: &'static str, t: &Tensor, s: &Storage) -> Result<(Arc<CudaDevice>, DevicePtr)> {
    match s {
        Storage::Cuda(c) => {
            let offset = (t.layout().offset() * 4) as DevicePtr;
            Ok((c.device().clone(), c.buffer().ptr() + offset))
        }
        Storage::Cpu(_) => Err(Error::invalid(
            op,
            "the CUDA kernel was given a CPU tensor (a bug in the op's device dispatch)",
        )),
    }
}

/// Runs `f` with the device and the addresses of the (distinct, contiguous)
/// `state` tensors, locked for writing (each update bumps their version),
/// and of `grad`, locked for reading.
fn with_addresses<R>(
    op: &'static str,
    state: &[&Tensor],
    grad: &Tensor,
    f: impl FnOnce(&CudaDevice, &[DevicePtr], DevicePtr) -> Result<R>,
) -> Result<R> {
    for t in state.iter().chain([&grad]) {
        require_f32(op, t.dtype())?;
    }
    let gguard = grad.storage();
    let (dev, g) = address(op, grad, &gguard)?;
    let guards: Vec<_> = state.iter().map(|t| t.storage_mut()).collect();
    let ptrs = state
        .iter()
        .zip(&guards)
        .map(|(t, s)| address(op, t, s).map(|(_, p)| p))
        .collect::<Result<Vec<_>>>()?;
    f(&dev, &ptrs, g)
}

/// One SGD step on the device: `p` (and `buf`, when given) updated in place
/// from the contiguous gradient `grad`.
pub(super) fn sgd(p: &Tensor, grad: &Tensor, buf: Option<&Tensor>, h: &SgdStep) -> Result<()> {
    const OP: &str = "sgd_update_";
    let n = p.numel();
    let params = SgdParams::new(n, h, buf.is_some());
    let state: Vec<&Tensor> = std::iter::once(p).chain(buf).collect();
    with_addresses(OP, &state, grad, |dev, ptrs, g| {
        // Plain SGD: the kernel never reads `buf`, a null address.
        let b: DevicePtr = ptrs.get(1).copied().unwrap_or(0);
        dev.launch(
            FAMILY,
            "sgd_step_f32",
            launch::elementwise(n),
            &[&params, &ptrs[0], &g, &b],
        )
    })
}

/// One Adam/AdamW step on the device: `p`, `m` and `v` updated in place
/// from the contiguous gradient `grad`.
pub(super) fn adam(p: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, h: &AdamStep) -> Result<()> {
    const OP: &str = "adam_update_";
    let n = p.numel();
    let params = AdamParams::new(n, h);
    with_addresses(OP, &[p, m, v], grad, |dev, ptrs, g| {
        dev.launch(
            FAMILY,
            "adam_step_f32",
            launch::elementwise(n),
            &[&params, &ptrs[0], &g, &ptrs[1], &ptrs[2]],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_constants_are_folded_like_the_cpu_kernel() {
        let h = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
            step: 3,
        };
        let p = AdamParams::new(10, &h);
        assert_eq!(p.step_size, (1e-3 / (1.0 - 0.9f64.powi(3))) as f32);
        assert_eq!(p.bc2_sqrt, (1.0 - 0.999f64.powi(3)).sqrt() as f32);
        assert_eq!(p.decay, (1.0 - 1e-3 * 0.01) as f32);
        assert_eq!((p.decoupled, p.n), (1, 10));
        let s = SgdParams::new(
            4,
            &SgdStep {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.25,
                nesterov: true,
                weight_decay: 0.0,
                first_step: false,
            },
            true,
        );
        assert_eq!(s.dampening_complement, 0.75);
        assert_eq!((s.nesterov, s.first_step, s.has_buf), (1, 0, 1));
    }
}

//! In-place optimizer updates as tensor methods, so that optimizers (in
//! `crate::optim`) stay above the tensor API.
//!
//! Each update runs one fused pass over the parameter, its gradient and its
//! state buffers, on the device the parameter lives on: `cpu.rs` on the
//! host (f32 and f64), `cuda.rs` (`kernels/optim.cu`, f32) on a CUDA device,
//! where the state buffers live too (optimizers create them with
//! `zeros_like`). Like the other in-place ops these
//! are not recorded and are refused while grad mode is on for a parameter
//! that requires a gradient: call them inside [`no_grad`](crate::no_grad).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::autograd::is_grad_enabled;
use crate::error::{Error, Result};
use crate::ops::dispatch::{cuda_arm, with_compute_type, ComputeFloat};
use crate::tensor::{Device, Tensor};

/// Hyper-parameters of one SGD update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor μ (0: no momentum).
    pub momentum: f64,
    /// Dampening τ in `[0, 1]`: the new gradient enters the buffer times `1 − τ`.
    pub dampening: f64,
    /// Nesterov momentum: step along `d + μ·buf` instead of `buf`.
    pub nesterov: bool,
    /// L2 weight decay, added to the gradient as `wd·p`.
    pub weight_decay: f64,
    /// True on the first step, when the momentum buffer is initialised to
    /// the gradient instead of being decayed.
    pub first_step: bool,
}

/// Hyper-parameters of one Adam/AdamW update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay rate β1 of the first-moment (mean) estimate.
    pub beta1: f64,
    /// Decay rate β2 of the second-moment (uncentred variance) estimate.
    pub beta2: f64,
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Weight decay: `p *= 1 − lr·wd` with `decoupled`, else `g += wd·p`.
    pub weight_decay: f64,
    /// AdamW's decoupled decay instead of Adam's L2 term.
    pub decoupled: bool,
    /// 1-based step count, for the bias corrections.
    pub step: u64,
}

impl Tensor {
    /// Checks that `self` can be updated in place from `others`: grad mode
    /// off (or no gradient required), contiguous float, same shape and dtype.
    fn check_update(&self, op: &'static str, others: &[&Tensor]) -> Result<()> {
        if is_grad_enabled() && self.requires_grad() {
            return Err(Error::Autograd(format!(
                "{op}: in-place update of a tensor that requires a gradient; run it inside no_grad"
            )));
        }
        self.check_float(op)?;
        for t in std::iter::once(&self).chain(others) {
            if t.shape() != self.shape() {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
            self.check_same(op, t)?;
        }
        Ok(())
    }

    /// Applies one SGD step to this parameter in place; `momentum_buf`
    /// (same shape, contiguous) is updated in place when given.
    pub fn sgd_update_(
        &self,
        grad: &Tensor,
        momentum_buf: Option<&Tensor>,
        h: &SgdStep,
    ) -> Result<()> {
        let _profile = crate::profile::update_scope("sgd_update");
        let mut others = vec![grad];
        others.extend(momentum_buf);
        self.check_update("sgd_update_", &others)?;
        let grad = grad.contiguous()?;
        let state: Vec<&Tensor> = std::iter::once(self).chain(momentum_buf).collect();
        check_state("sgd_update_", &state, &grad)?;
        match self.device() {
            Device::Cpu => with_compute_type!(self.dtype(), |T| {
                with_state_slices::<T>("sgd_update_", &state, &grad, |mut s, g| {
                    let p = s.remove(0);
                    cpu::sgd(p, g, s.pop(), h)
                })
            }),
            Device::Cuda(_) => cuda_arm!(cuda::sgd(self, &grad, momentum_buf, h)),
        }
    }

    /// Applies one Adam (or AdamW) step to this parameter in place,
    /// updating the moment buffers `m` and `v` in place.
    pub fn adam_update_(&self, grad: &Tensor, m: &Tensor, v: &Tensor, h: &AdamStep) -> Result<()> {
        let _profile = crate::profile::update_scope("adam_update");
        self.check_update("adam_update_", &[grad, m, v])?;
        if h.step == 0 {
            return Err(Error::invalid("adam_update_", "steps are counted from 1"));
        }
        let grad = grad.contiguous()?;
        check_state("adam_update_", &[self, m, v], &grad)?;
        match self.device() {
            Device::Cpu => with_compute_type!(self.dtype(), |T| {
                with_state_slices::<T>("adam_update_", &[self, m, v], &grad, |mut s, g| {
                    let (v, m) = (s.pop().expect("v"), s.pop().expect("m"));
                    cpu::adam(s.pop().expect("the parameter"), g, m, v, h)
                })
            }),
            Device::Cuda(_) => cuda_arm!(cuda::adam(self, &grad, m, v, h)),
        }
    }
}

/// Errors unless the state tensors (parameter first) are contiguous and
/// share no storage with each other or with the gradient: each is locked
/// for writing while the update runs.
fn check_state(op: &'static str, state: &[&Tensor], grad: &Tensor) -> Result<()> {
    for (i, t) in state.iter().enumerate() {
        if !t.is_contiguous() {
            return Err(Error::invalid(
                op,
                format!("state tensor {i} must be contiguous"),
            ));
        }
        if state[..i].iter().chain([&grad]).any(|o| o.same_storage(t)) {
            return Err(Error::invalid(
                op,
                format!("state tensor {i} shares storage with another operand"),
            ));
        }
    }
    Ok(())
}

/// Locks the (checked) state tensors for writing and the gradient for
/// reading, and hands `f` their element slices in compute type `T` (the
/// optimizers update f32 and f64 parameters on the host; other dtypes are
/// an [`Error::UnsupportedDType`]).
fn with_state_slices<T: ComputeFloat>(
    op: &'static str,
    state: &[&Tensor],
    grad: &Tensor,
    f: impl FnOnce(Vec<&mut [T]>, &[T]),
) -> Result<()> {
    let n = grad.numel();
    let gguard = grad.cpu_storage("optimizer step")?;
    let goff = grad.layout().offset();
    let g = T::slice(&gguard).ok_or(Error::UnsupportedDType {
        op,
        dtype: grad.dtype(),
    })?;
    let mut guards: Vec<_> = state
        .iter()
        .map(|t| t.cpu_storage_mut("optimizer step"))
        .collect::<Result<_>>()?;
    let slices = guards
        .iter_mut()
        .zip(state)
        .map(|(s, t)| {
            let o = t.layout().offset();
            &mut T::slice_mut(s).expect("dtypes checked")[o..o + n]
        })
        .collect();
    f(slices, &g[goff..goff + n]);
    Ok(())
}

//! The host side of batch norm's CPU path: each kernel of [`super::cpu`]
//! called on a tensor's contiguous data for one compute type (the
//! `dispatch!` macro of the parent module picks it).

use super::cpu::{self, NcsShape};
use crate::error::Result;
use crate::ops::dispatch::{compute_slice, ComputeFloat};
use crate::tensor::{CpuStorage, Tensor};

/// Per-channel `(mean, Σ(x − mean)²)` of contiguous data `x`.
pub(super) fn moments<T: ComputeFloat>(x: &Tensor, sh: NcsShape) -> Result<(Vec<f64>, Vec<f64>)> {
    let s = x.cpu_storage("batch_norm")?;
    Ok(cpu::channel_moments(compute_slice::<T>(&s, x), sh))
}

/// Channel `c`'s `(scale, shift)` from `(c, mean, Σ(x − mean)²)`.
pub(super) type ForwardCoef<'a> = &'a (dyn Fn(usize, f64, f64) -> (f64, f64) + Sync);

/// Training-mode forward on contiguous data `x`: the output and the
/// per-channel `(mean, Σ(x − mean)²)` (see
/// [`super::fused::channel_moments_normalize`]).
pub(super) fn moments_normalize<T: ComputeFloat>(
    x: &Tensor,
    sh: NcsShape,
    coef: ForwardCoef,
    relu: bool,
) -> Result<(CpuStorage, Vec<f64>, Vec<f64>)> {
    let s = x.cpu_storage("batch_norm")?;
    let x = compute_slice::<T>(&s, x);
    let (y, mean, var_sum) = super::fused::channel_moments_normalize(x, sh, coef, relu)?;
    Ok((T::into_storage(y), mean, var_sum))
}

/// `(x − mean)·scale + shift` per channel (then relu, when `relu`), on
/// contiguous data `x`.
pub(super) fn normalize<T: ComputeFloat>(
    x: &Tensor,
    sh: NcsShape,
    (mean, scale, shift): (&[f64], &[f64], &[f64]),
    relu: bool,
) -> Result<CpuStorage> {
    let s = x.cpu_storage("batch_norm")?;
    let x = compute_slice::<T>(&s, x);
    Ok(T::into_storage(cpu::channel_normalize(
        x, sh, mean, scale, shift, relu,
    )?))
}

/// Per-channel `(Σdy, Σdy·(x − mean))` on contiguous data of one dtype.
pub(super) fn grad_sums<T: ComputeFloat>(
    dy: &Tensor,
    x: &Tensor,
    sh: NcsShape,
    mean: &[f64],
) -> Result<(Vec<f64>, Vec<f64>)> {
    Tensor::read_cpu_storages("batch_norm backward", &[dy, x], |s| {
        cpu::channel_grad_sums(
            compute_slice::<T>(s[0], dy),
            compute_slice::<T>(s[1], x),
            sh,
            mean,
        )
    })
}

/// `dx = a·dy + p·(x − mean) + q` per channel, on contiguous data.
pub(super) fn grad_input<T: ComputeFloat>(
    dy: &Tensor,
    x: &Tensor,
    sh: NcsShape,
    mean: &[f64],
    coef: (&[f64], &[f64], &[f64]),
) -> Result<CpuStorage> {
    Tensor::read_cpu_storages("batch_norm backward", &[dy, x], |s| {
        Ok(T::into_storage(cpu::channel_grad_input(
            compute_slice::<T>(s[0], dy),
            compute_slice::<T>(s[1], x),
            sh,
            mean,
            coef,
        )?))
    })?
}

/// Channel `c`'s `(a, p, q)` from `(c, Σdy, Σdy·(x − mean))`.
pub(super) type BackwardCoef<'a> = &'a (dyn Fn(usize, f64, f64) -> (f64, f64, f64) + Sync);

/// `dx = a·dy + p·(x − mean) + q` per channel and the sums `(Σdy,
/// Σdy·(x − mean))` it needs, on contiguous data, with `dy` masked by a
/// fused relu's output `relu_output` where given (see
/// [`super::fused::channel_grad_sums_input`]).
pub(super) fn grad_sums_input<T: ComputeFloat>(
    dy: &Tensor,
    x: &Tensor,
    relu_output: Option<&Tensor>,
    sh: NcsShape,
    mean: &[f64],
    coef: BackwardCoef,
) -> Result<(CpuStorage, Vec<f64>, Vec<f64>)> {
    let mut operands = vec![dy, x];
    operands.extend(relu_output);
    Tensor::read_cpu_storages("batch_norm backward", &operands, |s| {
        let z = relu_output.map(|z| compute_slice::<T>(s[2], z));
        let (dx, sum_dy, sum_dy_xmu) = super::fused::channel_grad_sums_input(
            compute_slice::<T>(s[0], dy),
            compute_slice::<T>(s[1], x),
            z,
            sh,
            mean,
            coef,
        )?;
        Ok((T::into_storage(dx), sum_dy, sum_dy_xmu))
    })?
}

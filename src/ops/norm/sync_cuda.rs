//! Synchronised batch norm ([`Tensor::sync_batch_norm`]) on a CUDA device
//! (f32, the kernels of `kernels/norm.cu`).
//!
//! The input, its output and its gradients never leave the device: the
//! forward computes this rank's per-channel moments there
//! (`batch_norm_moments_fwd_f32`, sums in f64 as plain batch norm) and
//! downloads only those `2C` f64 values for the all-gather; the merged
//! mean and `invstd` are uploaded back (rounded to f32, `2C` values) for
//! `batch_norm_fwd_f32`, and the running statistics are updated in place
//! with device ops. The backward computes `Σdy` and `Σdy·(x − μ)` (and the
//! weight and bias gradients) with `batch_norm_reduce_bwd_f32`, downloads
//! the `2C` sums for the all-reduce and uploads the reduced ones for the
//! input gradient (`batch_norm_bwd_f32`).

use super::cuda::{optional, FAMILY};
use super::vector;
use crate::autograd::no_grad;
use crate::backend::cuda::launch;
use crate::error::Result;
use crate::ops::norm::params::BatchNormParams;
use crate::ops::on_cuda::{operand, output, require_f32, NULL};
use crate::tensor::{DType, Device, Tensor};

const OP: &str = "sync_batch_norm";

/// Errors unless `x`, on a device, has a dtype the device kernels support
/// (f32), before any collective.
pub(super) fn check_dtype(x: &Tensor) -> Result<()> {
    require_f32(OP, x.dtype())
}

/// Per-channel `(mean, Σ(x − mean)²)` of a non-empty device input, computed
/// on the device and downloaded (`2C` f64 values).
pub(super) fn moments(x: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    require_f32(OP, x.dtype())?;
    let xc = x.detach().contiguous()?;
    let a = operand(OP, &xc)?;
    let xp = a.at(&xc);
    let c = x.shape()[1];
    let p = BatchNormParams::new(x.shape(), 0.0, 0.0, false)?;
    let (both, ptr) = output(OP, &a.dev, DType::F64, &[2 * c])?;
    let m2p = ptr + (c * DType::F64.size_in_bytes()) as u64;
    a.dev.launch(
        FAMILY,
        "batch_norm_moments_fwd_f32",
        launch::rows(c, x.numel() / c.max(1)),
        &[&p, &xp, &ptr, &m2p],
    )?;
    let mut mean = both.to_device(Device::Cpu)?.to_vec::<f64>()?;
    let m2 = mean.split_off(c);
    Ok((mean, m2))
}

/// The per-channel statistics the device forward normalised with: the
/// global mean then `invstd`, f32, `2C` elements on the device.
pub(super) type Stats = Tensor;

/// `values` (f64, on the host) rounded to f32 on `device`.
fn upload(values: &[f64], device: Device) -> Result<Tensor> {
    vector(values, DType::F32)?.to_device(device)
}

/// `buf ← (1 − momentum)·buf + momentum·batch` for a running statistic on
/// the device, in place and outside the graph: `momentum·batch` is formed
/// on the host in f64 and uploaded, the rest runs on the device in f32.
pub(super) fn update_running(buf: &Tensor, batch: &[f64], momentum: f64) -> Result<()> {
    let scaled: Vec<f64> = batch.iter().map(|b| momentum * b).collect();
    let step = vector(&scaled, buf.dtype())?.to_device(buf.device())?;
    no_grad(|| {
        let new = buf.mul_scalar(1.0 - momentum)?.add(&step)?;
        buf.assign(&new)
    })
}

/// `(x − mean)·invstd·w + b` per channel on the device, with the global
/// statistics `mean` and `invstd` (validated, non-empty `x`): the output
/// and the statistics uploaded for the backward.
pub(super) fn normalize(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    mean: &[f64],
    invstd: &[f64],
) -> Result<(Tensor, Stats)> {
    require_f32(OP, x.dtype())?;
    let c = x.shape()[1];
    let stats = upload(&[mean, invstd].concat(), x.device())?;
    let xc = x.detach().contiguous()?;
    let a = operand(OP, &xc)?;
    let xp = a.at(&xc);
    let mp = operand(OP, &stats)?.at(&stats);
    let ip = mp + (c * DType::F32.size_in_bytes()) as u64;
    let (_w, wp) = optional(weight)?;
    let (_b, bp) = optional(bias)?;
    let (out, y) = output(OP, &a.dev, DType::F32, x.shape())?;
    let p = BatchNormParams::new(x.shape(), 0.0, 0.0, false)?;
    a.dev.launch(
        FAMILY,
        "batch_norm_fwd_f32",
        launch::elementwise(x.numel()),
        &[&p, &xp, &mp, &ip, &wp, &bp, &y],
    )?;
    Ok((out, stats))
}

/// What [`grad_sums`] gives: this rank's `Σdy` and `Σdy·(x − mean)` per
/// channel on the host, and the weight and bias gradients on the device.
pub(super) type LocalGrads = (Vec<f64>, Vec<f64>, [Option<Tensor>; 2]);

/// The local sums of the backward on the device (non-empty `input`, `g`
/// the output gradient): `(Σdy, Σdy·(x − mean))` per channel, downloaded
/// when `download` asks for them (else empty), and the weight and bias
/// gradients `need` asks for, `Σdy·(x − mean)·invstd` and `Σdy`, on the
/// device.
pub(super) fn grad_sums(
    input: &Tensor,
    g: &Tensor,
    stats: &Stats,
    download: bool,
    need: [bool; 2],
) -> Result<LocalGrads> {
    let (p, x, dy) = backward_operands(input, g)?;
    let c = input.shape()[1];
    let a = operand(OP, &x)?;
    let (xp, dyp) = (a.at(&x), operand(OP, &dy)?.at(&dy));
    let mp = operand(OP, stats)?.at(stats);
    let ip = mp + (c * DType::F32.size_in_bytes()) as u64;
    let (sums, sp) = output(OP, &a.dev, DType::F32, &[2 * c])?;
    let sxp = sp + (c * DType::F32.size_in_bytes()) as u64;
    let mut grads: [Option<Tensor>; 2] = [None, None];
    let mut ptrs = [NULL; 2];
    for ((grad, ptr), needed) in grads.iter_mut().zip(&mut ptrs).zip(need) {
        if needed {
            let (t, at) = output(OP, &a.dev, DType::F32, &[c])?;
            (*grad, *ptr) = (Some(t), at);
        }
    }
    let [dwp, dbp] = ptrs;
    a.dev.launch(
        FAMILY,
        "batch_norm_reduce_bwd_f32",
        launch::rows(c, input.numel() / c.max(1)),
        &[&p, &dyp, &xp, &mp, &ip, &sp, &sxp, &dwp, &dbp],
    )?;
    if !download {
        return Ok((Vec::new(), Vec::new(), grads));
    }
    let mut sum_dy = sums.to_f64_vec()?;
    let sum_dy_xmu = sum_dy.split_off(c);
    Ok((sum_dy, sum_dy_xmu, grads))
}

/// The input gradient on the device (non-empty `input`):
/// `dx = a·dy + q1·(x − mean) + q0` with `a = w·invstd`,
/// `q1 = −a·invstd²·s_xmu/n`, `q0 = −a·s_dy/n`, `n` this rank's values per
/// channel and `(s_dy, s_xmu)` = `sums` (`2C` values, uploaded).
pub(super) fn grad_input(
    input: &Tensor,
    g: &Tensor,
    weight: Option<&Tensor>,
    stats: &Stats,
    sums: &[f64],
) -> Result<Tensor> {
    let (p, x, dy) = backward_operands(input, g)?;
    let c = input.shape()[1];
    let sums = upload(sums, input.device())?;
    let a = operand(OP, &x)?;
    let (xp, dyp) = (a.at(&x), operand(OP, &dy)?.at(&dy));
    let mp = operand(OP, stats)?.at(stats);
    let ip = mp + (c * DType::F32.size_in_bytes()) as u64;
    let sp = operand(OP, &sums)?.at(&sums);
    let sxp = sp + (c * DType::F32.size_in_bytes()) as u64;
    let (_w, wp) = optional(weight)?;
    let (dx, dxp) = output(OP, &a.dev, DType::F32, input.shape())?;
    a.dev.launch(
        FAMILY,
        "batch_norm_bwd_f32",
        launch::elementwise(input.numel()),
        &[&p, &dyp, &xp, &mp, &ip, &wp, &sp, &sxp, &dxp],
    )?;
    Ok(dx)
}

/// The kernels' view of `input` and the contiguous, detached input and
/// output gradient (f32, on the input's device).
fn backward_operands(input: &Tensor, g: &Tensor) -> Result<(BatchNormParams, Tensor, Tensor)> {
    let p = BatchNormParams::new(input.shape(), 0.0, 0.0, false)?;
    let x = input.detach().contiguous()?;
    let dy = g.detach().contiguous()?;
    require_f32(OP, dy.dtype())?;
    input.check_same_device(OP, &dy)?;
    Ok((p, x, dy))
}

//! CUDA launchers of batch normalisation (`kernels/norm.cu`, f32).
//!
//! The per-channel statistics are computed on the device (sums in f64, as
//! on the CPU) and stay there: the forward returns them as device tensors
//! for the backward, and training mode updates the running statistics in
//! place on the device. The scalar hyper-parameters travel as f32, so
//! results agree with the CPU (which works in f64) to a few ulps.

use super::BatchNormOptions;
use crate::backend::cuda::launch;
use crate::error::Result;
use crate::ops::norm::params::BatchNormParams;
use crate::ops::on_cuda::{
    operand, operand_mut, output, require_f32, zeroed_output, Operand, NULL,
};
use crate::tensor::{DType, Tensor};

/// The kernel family (`kernels/norm.cu`).
pub(super) const FAMILY: &str = "norm";
const OP: &str = "batch_norm";

/// The per-channel statistics the forward normalised with, on the device:
/// `(mean, invstd)`, `C` elements each.
pub(super) type Stats = (Tensor, Tensor);

/// `t` as a contiguous device operand and its first element's address;
/// `None` gives the null pointer (an argument the kernel skips).
pub(super) fn optional(t: Option<&Tensor>) -> Result<(Option<Tensor>, u64)> {
    match t {
        None => Ok((None, NULL)),
        Some(t) => {
            let c = t.detach().contiguous()?;
            let ptr = operand(OP, &c)?.at(&c);
            Ok((Some(c), ptr))
        }
    }
}

/// The address of running statistic `t`, written in place (its version
/// bumps); validation guarantees it is contiguous.
fn running(t: &Tensor) -> Result<(Operand, u64)> {
    let o = operand_mut(OP, t)?;
    let ptr = o.at(t);
    Ok((o, ptr))
}

/// Forward of [`Tensor::batch_norm`] on the device (validated arguments,
/// non-empty `x`): the output and the statistics for the backward.
pub(super) fn batch_norm(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    opts: &BatchNormOptions,
) -> Result<(Tensor, Stats)> {
    require_f32(OP, x.dtype())?;
    let xc = x.detach().contiguous()?;
    let a = operand(OP, &xc)?;
    let xp = a.at(&xc);
    let shape = x.shape();
    let c = shape[1];
    let (_w, wp) = optional(weight)?;
    let (_b, bp) = optional(bias)?;
    let (mean, mp) = output(OP, &a.dev, DType::F32, &[c])?;
    let (invstd, ip) = output(OP, &a.dev, DType::F32, &[c])?;
    let (out, y) = output(OP, &a.dev, DType::F32, shape)?;
    let numel = x.numel();
    if opts.training {
        let update = running_mean.is_some() || running_var.is_some();
        let p = BatchNormParams::new(shape, opts.eps, opts.momentum, update)?;
        // A running statistic left out is updated in a scratch buffer.
        let scratch = |t: Option<&Tensor>| -> Result<(Option<Tensor>, u64)> {
            match t {
                Some(t) => Ok((None, running(t)?.1)),
                None if update => {
                    let (s, ptr) = zeroed_output(OP, &a.dev, DType::F32, &[c])?;
                    Ok((Some(s), ptr))
                }
                None => Ok((None, NULL)),
            }
        };
        let (_rm, rmp) = scratch(running_mean)?;
        let (_rv, rvp) = scratch(running_var)?;
        a.dev.launch(
            FAMILY,
            "batch_norm_stats_fwd_f32",
            launch::rows(c, numel / c),
            &[&p, &xp, &mp, &ip, &rmp, &rvp],
        )?;
        a.dev.launch(
            FAMILY,
            "batch_norm_fwd_f32",
            launch::elementwise(numel),
            &[&p, &xp, &mp, &ip, &wp, &bp, &y],
        )?;
    } else {
        let p = BatchNormParams::new(shape, opts.eps, opts.momentum, false)?;
        let (rm, rv) = (
            running_mean.expect("validated").detach().contiguous()?,
            running_var.expect("validated").detach().contiguous()?,
        );
        let (rmp, rvp) = (operand(OP, &rm)?.at(&rm), operand(OP, &rv)?.at(&rv));
        a.dev.launch(
            FAMILY,
            "batch_norm_eval_stats_fwd_f32",
            launch::elementwise(c),
            &[&p, &rmp, &rvp, &mp, &ip],
        )?;
        a.dev.launch(
            FAMILY,
            "batch_norm_eval_fwd_f32",
            launch::elementwise(numel),
            &[&p, &xp, &rmp, &rvp, &wp, &bp, &y],
        )?;
    }
    Ok((out, (mean, invstd)))
}

/// Backward of batch norm on the device: the gradients of the input,
/// weight and bias that `need` asks for, from the output gradient `g` and
/// the statistics saved by the forward.
pub(super) fn batch_norm_backward(
    input: &Tensor,
    weight: Option<&Tensor>,
    (mean, invstd): &Stats,
    training: bool,
    g: &Tensor,
    need: [bool; 3],
) -> Result<[Option<Tensor>; 3]> {
    let [need_dx, need_dw, need_db] = need;
    let shape = input.shape();
    let c = shape[1];
    let numel = input.numel();
    let p = BatchNormParams::new(shape, 0.0, 0.0, false)?;
    let x = input.detach().contiguous()?;
    let dy = g.detach().contiguous()?;
    require_f32(OP, dy.dtype())?;
    let a = operand(OP, &x)?;
    let (xp, dyp) = (a.at(&x), operand(OP, &dy)?.at(&dy));
    let (mp, ip) = (operand(OP, mean)?.at(mean), operand(OP, invstd)?.at(invstd));
    let (_w, wp) = optional(weight)?;
    let mut grads: [Option<Tensor>; 3] = [None, None, None];
    if (training && need_dx) || need_dw || need_db {
        let (_sum_dy, sp) = output(OP, &a.dev, DType::F32, &[c])?;
        let (_sum_dy_xmu, sxp) = output(OP, &a.dev, DType::F32, &[c])?;
        let param_grad = |needed: bool| -> Result<(Option<Tensor>, u64)> {
            if needed {
                let (t, ptr) = output(OP, &a.dev, DType::F32, &[c])?;
                Ok((Some(t), ptr))
            } else {
                Ok((None, NULL))
            }
        };
        let (dw, dwp) = param_grad(need_dw)?;
        let (db, dbp) = param_grad(need_db)?;
        a.dev.launch(
            FAMILY,
            "batch_norm_reduce_bwd_f32",
            launch::rows(c, numel / c),
            &[&p, &dyp, &xp, &mp, &ip, &sp, &sxp, &dwp, &dbp],
        )?;
        if need_dx && training {
            let (dx, dxp) = output(OP, &a.dev, DType::F32, shape)?;
            a.dev.launch(
                FAMILY,
                "batch_norm_bwd_f32",
                launch::elementwise(numel),
                &[&p, &dyp, &xp, &mp, &ip, &wp, &sp, &sxp, &dxp],
            )?;
            grads[0] = Some(dx);
        }
        grads[1] = dw;
        grads[2] = db;
    }
    if need_dx && !training {
        let (dx, dxp) = output(OP, &a.dev, DType::F32, shape)?;
        a.dev.launch(
            FAMILY,
            "batch_norm_eval_bwd_f32",
            launch::elementwise(numel),
            &[&p, &dyp, &ip, &wp, &dxp],
        )?;
        grads[0] = Some(dx);
    }
    Ok(grads)
}

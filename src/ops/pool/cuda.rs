//! CUDA launchers of 2-D pooling (`kernels/pool.cu`, f32): max pooling
//! with indices, average and adaptive average pooling, forward and
//! backward. The kernels read the same windows in the same order as the
//! CPU kernels, and the backwards gather (one thread per input element,
//! adding the outputs whose window holds it in increasing output order), so
//! ties, NaN and sums match the CPU bit for bit.

use super::PoolPlan;
use crate::backend::cuda::launch;
use crate::error::Result;
use crate::ops::on_cuda::{operand, operands, output, require_f32};
use crate::ops::pool::params::Pool2dKernelParams;
use crate::tensor::{DType, Tensor};

const FAMILY: &str = "pool";

/// The kernel arguments of `plan` (adaptive pooling: the window fields are
/// unused and left 0).
fn params(plan: &PoolPlan, count_include_pad: bool) -> Pool2dKernelParams {
    let g = &plan.geom;
    let w = plan.window.unwrap_or(super::Pool2dParams {
        kernel: (0, 0),
        stride: (0, 0),
        padding: (0, 0),
        ceil_mode: false,
    });
    Pool2dKernelParams {
        planes: g.planes as i64,
        h: g.h as i64,
        w: g.w as i64,
        oh: g.oh as i64,
        ow: g.ow as i64,
        kh: w.kernel.0 as i64,
        kw: w.kernel.1 as i64,
        stride_h: w.stride.0 as i64,
        stride_w: w.stride.1 as i64,
        pad_h: w.padding.0 as i64,
        pad_w: w.padding.1 as i64,
        count_include_pad: i32::from(count_include_pad),
        _unused: 0,
    }
}

/// Max pooling of `x` over the windows of `plan`: the values and the I64
/// flat index within its plane of each window's maximum.
pub(super) fn max_pool2d(x: &Tensor, plan: &PoolPlan) -> Result<(Tensor, Tensor)> {
    const OP: &str = "max_pool2d";
    require_f32(OP, x.dtype())?;
    let x = x.detach().contiguous()?;
    let a = operand(OP, &x)?;
    let shape = plan.out_shape();
    let (out, y) = output(OP, &a.dev, DType::F32, &shape)?;
    let (indices, idx) = output(OP, &a.dev, DType::I64, &shape)?;
    a.dev.launch(
        FAMILY,
        "max_pool2d_fwd_f32",
        launch::elementwise(out.numel()),
        &[&params(plan, false), &a.at(&x), &y, &idx],
    )?;
    Ok((out, indices))
}

/// Max pooling backward: each output gradient goes to the input its saved
/// index names (summed where windows overlap).
pub(super) fn max_pool2d_backward(g: &Tensor, indices: &Tensor, plan: &PoolPlan) -> Result<Tensor> {
    const OP: &str = "max_pool2d backward";
    require_f32(OP, g.dtype())?;
    let dy = g.detach().contiguous()?;
    let idx = indices.contiguous()?;
    let [gd, id] = operands(OP, [&dy, &idx])?;
    let (dx, out) = output(OP, &gd.dev, DType::F32, &plan.shape)?;
    gd.dev.launch(
        FAMILY,
        "max_pool2d_bwd_f32",
        launch::elementwise(dx.numel()),
        &[&params(plan, false), &gd.at(&dy), &id.at(&idx), &out],
    )?;
    Ok(dx)
}

/// The kernel of average pooling (`bwd` false) or its backward, adaptive
/// when the plan has no window.
fn avg_entry(plan: &PoolPlan, bwd: bool) -> &'static str {
    match (plan.window.is_some(), bwd) {
        (true, false) => "avg_pool2d_fwd_f32",
        (true, true) => "avg_pool2d_bwd_f32",
        (false, false) => "adaptive_avg_pool2d_fwd_f32",
        (false, true) => "adaptive_avg_pool2d_bwd_f32",
    }
}

/// Average (or adaptive average) pooling of `x` over the windows of
/// `plan`.
pub(super) fn avg_pool2d(x: &Tensor, plan: &PoolPlan, count_include_pad: bool) -> Result<Tensor> {
    const OP: &str = "avg_pool2d";
    require_f32(OP, x.dtype())?;
    let x = x.detach().contiguous()?;
    let a = operand(OP, &x)?;
    let (out, y) = output(OP, &a.dev, DType::F32, &plan.out_shape())?;
    a.dev.launch(
        FAMILY,
        avg_entry(plan, false),
        launch::elementwise(out.numel()),
        &[&params(plan, count_include_pad), &a.at(&x), &y],
    )?;
    Ok(out)
}

/// Average pooling backward: each output gradient, divided by its window's
/// divisor, spread over the window.
pub(super) fn avg_pool2d_backward(
    g: &Tensor,
    plan: &PoolPlan,
    count_include_pad: bool,
) -> Result<Tensor> {
    const OP: &str = "avg_pool2d backward";
    require_f32(OP, g.dtype())?;
    let dy = g.detach().contiguous()?;
    let gd = operand(OP, &dy)?;
    let (dx, out) = output(OP, &gd.dev, DType::F32, &plan.shape)?;
    gd.dev.launch(
        FAMILY,
        avg_entry(plan, true),
        launch::elementwise(dx.numel()),
        &[&params(plan, count_include_pad), &gd.at(&dy), &out],
    )?;
    Ok(dx)
}

//! 2-D convolution on a CUDA device: im2col over the whole batch
//! (`kernels/conv.cu`) and one GEMM per group with the batch folded into
//! its N dimension (`N·OH·OW` columns), for the forward pass and both
//! gradients:
//!
//! - forward: `Y[O, N·L] = W[O, CKK] · col[CKK, N·L]`, then `Y` is moved to
//!   `N × O × OH × OW`;
//! - input gradient: `dcol = Wᵀ · dY`, then col2im;
//! - weight gradient: `dW = dY · colᵀ` (col recomputed from the input).
//!
//! Here `L = OH·OW`, `CKK = C/groups·KH·KW`, and each group uses its own row
//! blocks of `W`, `col` and `Y`.
//!
//! In mixed precision (`mixed`, bf16 autocast of f32 tensors) every GEMM
//! reads bf16 operands on tensor cores and writes f32: im2col writes a bf16
//! `col` straight from the f32 input, `W` and `dY` are cast to bf16, and
//! `Y`, `dcol` (hence col2im's sums) and `dW` stay f32.

use super::ConvGeom;
use crate::backend::cuda::launch;
use crate::backend::cuda::CudaDevice;
use crate::error::Result;
use crate::ops::autocast::bf16_operand;
use crate::ops::conv::params::Im2colParams;
use crate::ops::matmul::cuda::{gemm, MatrixArg};
use crate::ops::on_cuda::{operand, operands, output, require_f32};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

const OP: &str = "conv2d";

/// The kernel arguments of `geom`.
fn im2col_params(g: &ConvGeom) -> Result<Im2colParams> {
    Im2colParams::new(
        g.n,
        (g.c_in, g.h, g.w),
        (g.kh, g.kw),
        (g.oh, g.ow),
        g.stride,
        g.padding,
        g.dilation,
    )
}

/// The element types of the GEMMs: (operands, output).
fn gemm_types(mixed: bool) -> (DType, DType) {
    if mixed {
        (DType::BF16, DType::F32)
    } else {
        (DType::F32, DType::F32)
    }
}

/// The contiguous GEMM operand made from the f32 tensor `t`: `t` itself, or
/// a bf16 copy when `mixed`.
fn gemm_operand(t: &Tensor, mixed: bool) -> Result<Tensor> {
    if mixed {
        bf16_operand(OP, t)
    } else {
        t.contiguous()
    }
}

/// The column buffer `[C·KH·KW, N·OH·OW]` of the contiguous f32 input `x`,
/// in bf16 when `mixed`, else in f32.
fn im2col(dev: &Arc<CudaDevice>, x: &Tensor, g: &ConvGeom, mixed: bool) -> Result<Tensor> {
    let p = im2col_params(g)?;
    let xd = operand(OP, x)?;
    let rows = g.c_in * g.kh * g.kw;
    let (dtype, entry) = if mixed {
        (DType::BF16, "im2col_fwd_f32_to_bf16")
    } else {
        (DType::F32, "im2col_fwd_f32")
    };
    let (col, c) = output(OP, dev, dtype, &[rows, g.n * g.oh * g.ow])?;
    let from = xd.at(x);
    dev.launch(
        "conv",
        entry,
        launch::elementwise(col.numel()),
        &[&p, &from, &c],
    )?;
    Ok(col)
}

/// Address of element `i` of the contiguous tensor `t`.
fn at(t: &Tensor, i: usize) -> Result<u64> {
    Ok(operand(OP, t)?.at(t) + (i * t.dtype().size_in_bytes()) as u64)
}

/// The forward convolution of `x` by `w` (both f32 on one device), without
/// bias, as a contiguous f32 `N × O × OH × OW` tensor; in bf16 on tensor
/// cores when `mixed`.
pub(super) fn forward(x: &Tensor, w: &Tensor, g: &ConvGeom, mixed: bool) -> Result<Tensor> {
    require_f32(OP, x.dtype())?;
    let [xd, _] = operands(OP, [x, w])?;
    let dev = xd.dev;
    let (x, w) = (x.contiguous()?, gemm_operand(w, mixed)?);
    let col = im2col(&dev, &x, g, mixed)?;
    let cols = g.n * g.oh * g.ow;
    let (ocg, ckk) = (g.c_out / g.groups, g.c_in / g.groups * g.kh * g.kw);
    let (y, _) = output(OP, &dev, DType::F32, &[g.c_out, g.n, g.oh, g.ow])?;
    for grp in 0..g.groups {
        gemm(
            &dev,
            gemm_types(mixed),
            (ocg, ckk, cols),
            MatrixArg {
                ptr: at(&w, grp * ocg * ckk)?,
                row: ckk,
                col: 1,
            },
            MatrixArg {
                ptr: at(&col, grp * ckk * cols)?,
                row: cols,
                col: 1,
            },
            at(&y, grp * ocg * cols)?,
        )?;
    }
    y.permute(&[1, 0, 2, 3])?.contiguous()
}

/// The input gradient of the convolution from the output gradient `dy`
/// (f32), with bf16 GEMM operands when `mixed`.
pub(super) fn backward_input(dy: &Tensor, w: &Tensor, g: &ConvGeom, mixed: bool) -> Result<Tensor> {
    require_f32(OP, dy.dtype())?;
    let [dyd, _] = operands(OP, [dy, w])?;
    let dev = dyd.dev;
    let w = gemm_operand(w, mixed)?;
    // dY as [O, N·L].
    let dy2 = gemm_operand(&dy.permute(&[1, 0, 2, 3])?, mixed)?;
    let cols = g.n * g.oh * g.ow;
    let (ocg, ckk) = (g.c_out / g.groups, g.c_in / g.groups * g.kh * g.kw);
    let (dcol, _) = output(OP, &dev, DType::F32, &[g.groups * ckk, cols])?;
    for grp in 0..g.groups {
        // Wᵀ of the group: [CKK, OCg] read through the strides of W.
        gemm(
            &dev,
            gemm_types(mixed),
            (ckk, ocg, cols),
            MatrixArg {
                ptr: at(&w, grp * ocg * ckk)?,
                row: 1,
                col: ckk,
            },
            MatrixArg {
                ptr: at(&dy2, grp * ocg * cols)?,
                row: cols,
                col: 1,
            },
            at(&dcol, grp * ckk * cols)?,
        )?;
    }
    let p = im2col_params(g)?;
    let (dx, x) = output(OP, &dev, DType::F32, &[g.n, g.c_in, g.h, g.w])?;
    let from = at(&dcol, 0)?;
    dev.launch(
        "conv",
        "im2col_bwd_f32",
        launch::elementwise(dx.numel()),
        &[&p, &from, &x],
    )?;
    Ok(dx)
}

/// The weight gradient of the convolution of `x` from the output gradient
/// (both f32), with bf16 GEMM operands when `mixed`.
pub(super) fn backward_weight(
    x: &Tensor,
    dy: &Tensor,
    g: &ConvGeom,
    mixed: bool,
) -> Result<Tensor> {
    require_f32(OP, dy.dtype())?;
    let [xd, _] = operands(OP, [x, dy])?;
    let dev = xd.dev;
    let x = x.contiguous()?;
    let col = im2col(&dev, &x, g, mixed)?;
    let dy2 = gemm_operand(&dy.permute(&[1, 0, 2, 3])?, mixed)?;
    let cols = g.n * g.oh * g.ow;
    let (ocg, ckk) = (g.c_out / g.groups, g.c_in / g.groups * g.kh * g.kw);
    let (dw, _) = output(
        OP,
        &dev,
        DType::F32,
        &[g.c_out, g.c_in / g.groups, g.kh, g.kw],
    )?;
    if cols == 0 {
        return Tensor::zeros_on(dw.shape(), DType::F32, dw.device());
    }
    for grp in 0..g.groups {
        // colᵀ of the group: [N·L, CKK] read through the strides of col.
        gemm(
            &dev,
            gemm_types(mixed),
            (ocg, cols, ckk),
            MatrixArg {
                ptr: at(&dy2, grp * ocg * cols)?,
                row: cols,
                col: 1,
            },
            MatrixArg {
                ptr: at(&col, grp * ckk * cols)?,
                row: 1,
                col: cols,
            },
            at(&dw, grp * ocg * ckk)?,
        )?;
    }
    Ok(dw)
}

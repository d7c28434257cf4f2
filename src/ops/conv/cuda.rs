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

use super::ConvGeom;
use crate::backend::cuda::launch;
use crate::backend::cuda::CudaDevice;
use crate::error::Result;
use crate::ops::conv::params::Im2colParams;
use crate::ops::matmul::cuda::{gemm_f32, MatrixArg};
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

/// The column buffer `[C·KH·KW, N·OH·OW]` of the contiguous input `x`.
fn im2col(dev: &Arc<CudaDevice>, x: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let p = im2col_params(g)?;
    let xd = operand(OP, x)?;
    let rows = g.c_in * g.kh * g.kw;
    let (col, c) = output(OP, dev, DType::F32, &[rows, g.n * g.oh * g.ow])?;
    let from = xd.at(x);
    dev.launch(
        "conv",
        "im2col_fwd_f32",
        launch::elementwise(col.numel()),
        &[&p, &from, &c],
    )?;
    Ok(col)
}

/// Address of element `i` of the contiguous f32 tensor `t`.
fn at(t: &Tensor, i: usize) -> Result<u64> {
    Ok(operand(OP, t)?.at(t) + (i * 4) as u64)
}

/// The forward convolution of `x` by `w` (both f32 on one device), without
/// bias, as a contiguous `N × O × OH × OW` tensor.
pub(super) fn forward(x: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    require_f32(OP, x.dtype())?;
    let [xd, _] = operands(OP, [x, w])?;
    let dev = xd.dev;
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let col = im2col(&dev, &x, g)?;
    let cols = g.n * g.oh * g.ow;
    let (ocg, ckk) = (g.c_out / g.groups, g.c_in / g.groups * g.kh * g.kw);
    let (y, _) = output(OP, &dev, DType::F32, &[g.c_out, g.n, g.oh, g.ow])?;
    for grp in 0..g.groups {
        gemm_f32(
            &dev,
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

/// The input gradient of the convolution from the output gradient `dy`.
pub(super) fn backward_input(dy: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let [dyd, _] = operands(OP, [dy, w])?;
    let dev = dyd.dev;
    let w = w.contiguous()?;
    // dY as [O, N·L].
    let dy2 = dy.permute(&[1, 0, 2, 3])?.contiguous()?;
    let cols = g.n * g.oh * g.ow;
    let (ocg, ckk) = (g.c_out / g.groups, g.c_in / g.groups * g.kh * g.kw);
    let (dcol, _) = output(OP, &dev, DType::F32, &[g.groups * ckk, cols])?;
    for grp in 0..g.groups {
        // Wᵀ of the group: [CKK, OCg] read through the strides of W.
        gemm_f32(
            &dev,
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

/// The weight gradient of the convolution of `x` from the output gradient.
pub(super) fn backward_weight(x: &Tensor, dy: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let [xd, _] = operands(OP, [x, dy])?;
    let dev = xd.dev;
    let x = x.contiguous()?;
    let col = im2col(&dev, &x, g)?;
    let dy2 = dy.permute(&[1, 0, 2, 3])?.contiguous()?;
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
        gemm_f32(
            &dev,
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

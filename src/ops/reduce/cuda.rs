//! CUDA launchers of the reduction family (`kernels/reduce.cu`).
//!
//! Reducing over a set of dims picks one of three plans:
//! - many outputs: the strided kernel, one thread per output element
//!   walking its reduced elements (no copy, any view);
//! - few outputs, reduced dims contiguous and last (after compacting the
//!   view with kept dims first): the row kernel, one block per output;
//! - one output over many elements (a full `sum()`/`mean()`): a two-stage
//!   grid reduction, row kernel over chunks of [`CHUNK`] elements into
//!   partials, then one row over the partials; never one thread.

use super::cpu::ReduceOp;
use crate::backend::cuda::launch;
use crate::error::Result;
use crate::ops::on_cuda::{operand, output, require_f32, Operand};
use crate::ops::reduce::params::{RowParams, StridedReduceParams};
use crate::tensor::{DType, Tensor};

const FAMILY: &str = "reduce";

/// Outputs from which one thread per output keeps the device busy.
const STRIDED_MIN_OUTPUTS: usize = 4096;

/// Elements per partial of the two-stage reduction.
pub const CHUNK: usize = 4096;

/// The kernel name stem of `op`.
fn stem(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Max => "max",
        // min(x) = −max(−x): no separate kernel.
        ReduceOp::Min => "max",
    }
}

/// `op` of `x` over `dims` (sorted, distinct), as a contiguous tensor of
/// shape `out_shape`.
pub(super) fn reduce(
    op: ReduceOp,
    x: &Tensor,
    dims: &[usize],
    out_shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "reduce";
    if matches!(x.dtype(), DType::BF16 | DType::F16) {
        // Half types compute in f32 and round once, as on the CPU.
        return reduce(op, &x.to_dtype(DType::F32)?, dims, out_shape)?.to_dtype(x.dtype());
    }
    require_f32(OP, x.dtype())?;
    if op == ReduceOp::Min {
        let y = reduce(ReduceOp::Max, &x.neg()?, dims, out_shape)?;
        return y.neg();
    }
    let a = operand(OP, x)?;
    let red: usize = dims.iter().map(|&d| x.shape()[d]).product();
    let outs = x.numel() / red.max(1);
    if red == 0 || outs >= STRIDED_MIN_OUTPUTS {
        let params = StridedReduceParams::new(x.layout(), dims)?;
        let (out, y) = output(OP, &a.dev, DType::F32, out_shape)?;
        let entry = format!("{}_strided_fwd_f32", stem(op));
        a.dev.launch(
            FAMILY,
            &entry,
            launch::elementwise(outs),
            &[&params, &a.ptr, &y],
        )?;
        return Ok(out);
    }
    // Kept dims first, reduced dims last, compacted: `outs` rows of `red`.
    let kept: Vec<usize> = (0..x.ndim()).filter(|d| !dims.contains(d)).collect();
    let order: Vec<isize> = kept.iter().chain(dims).map(|&d| d as isize).collect();
    let rows = x.permute(&order)?.contiguous()?;
    let r = operand(OP, &rows)?;
    let (out, y) = output(OP, &a.dev, DType::F32, out_shape)?;
    if outs == 1 && red > 2 * CHUNK {
        two_stage(op, &r, red, y)?;
    } else {
        let params = RowParams::contiguous(outs, red);
        let entry = format!("{}_fwd_f32", stem(op));
        r.dev.launch(
            FAMILY,
            &entry,
            launch::rows(outs, red),
            &[&params, &r.ptr, &y],
        )?;
    }
    Ok(out)
}

/// One `op` over `n` contiguous f32 at `x.ptr`, written to `y`: chunks of
/// [`CHUNK`] reduced by one block each into partials (the tail chunk by one
/// more launch), then the partials reduced by one block.
fn two_stage(op: ReduceOp, x: &Operand, n: usize, y: u64) -> Result<()> {
    let entry = format!("{}_fwd_f32", stem(op));
    let full = n / CHUNK;
    let tail = n - full * CHUNK;
    let parts = full + usize::from(tail > 0);
    let partial = x.dev.alloc(parts * 4)?;
    let p = partial.ptr();
    let params = RowParams::contiguous(full, CHUNK);
    x.dev.launch(
        FAMILY,
        &entry,
        launch::rows(full, CHUNK),
        &[&params, &x.ptr, &p],
    )?;
    if tail > 0 {
        let params = RowParams::contiguous(1, tail);
        let (from, to) = (x.ptr + (full * CHUNK * 4) as u64, p + (full * 4) as u64);
        x.dev.launch(
            FAMILY,
            &entry,
            launch::rows(1, tail),
            &[&params, &from, &to],
        )?;
    }
    let params = RowParams::contiguous(1, parts);
    x.dev
        .launch(FAMILY, &entry, launch::rows(1, parts), &[&params, &p, &y])?;
    Ok(())
}

/// Index (i64) of the largest (`max`) or smallest element of `x` along
/// `dim`, first on ties and first NaN, as a tensor of `out_shape`.
pub(super) fn arg_extreme(
    x: &Tensor,
    dim: usize,
    max: bool,
    out_shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "argmax";
    if matches!(x.dtype(), DType::BF16 | DType::F16) {
        // Converting to f32 is exact, so the order is unchanged.
        return arg_extreme(&x.to_dtype(DType::F32)?, dim, max, out_shape);
    }
    require_f32(OP, x.dtype())?;
    let src = if max { x.clone() } else { x.neg()? };
    // Kept dims in order, `dim` last, compacted into rows.
    let mut order: Vec<isize> = (0..x.ndim())
        .filter(|&d| d != dim)
        .map(|d| d as isize)
        .collect();
    order.push(dim as isize);
    let rows_t = src.permute(&order)?.contiguous()?;
    let cols = x.shape()[dim];
    let rows = x.numel() / cols;
    let r = operand(OP, &rows_t)?;
    let (out, y) = output(OP, &r.dev, DType::I64, out_shape)?;
    let params = RowParams::contiguous(rows, cols);
    r.dev.launch(
        FAMILY,
        "argmax_fwd_f32",
        launch::rows(rows, cols),
        &[&params, &r.ptr, &y],
    )?;
    Ok(out)
}

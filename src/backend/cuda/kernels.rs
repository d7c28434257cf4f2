//! Launchers on raw device buffers for a first set of kernels: each checks
//! its arguments (op names, buffer sizes, GPU capability), builds the
//! kernel's parameter struct and launch configuration, and queues the
//! kernel on the device's stream.
//!
//! What `tests/cuda_device.rs` checks against the CPU kernels. The op
//! families launch their kernels from their own `src/ops/<family>/cuda.rs`
//! (the sigmoid losses, PLM and the optimizers keep their launchers and
//! argument structs there). Buffers are contiguous, row-major, and hold at
//! least the elements the shapes say; outputs are new buffers from the
//! caching allocator.

use super::buffer::CudaBuffer;
use super::compile::names;
use super::device::CudaDevice;
use super::launch;
use super::params::{ElementwiseParams, GemmParams, RowParams};
use crate::error::{Error, Result};
use crate::ground::{broadcast_shapes, checked_numel, DType, Layout};

/// The name of a kernel built from an op table entry, or an error naming
/// the valid ops.
fn checked_op(op: &str, table: &[&str], what: &'static str) -> Result<()> {
    if table.contains(&op) {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("unknown op {op:?}; expected one of {table:?}"),
        ))
    }
}

/// `out = a ∘ b` for the binary op `op` (`"add"`, `"mul"`, ...; see
/// [`names::BINARY_OPS`]) on contiguous f32 operands of shapes `a_shape` and
/// `b_shape`, broadcast NumPy-style. Returns the output and its shape.
pub fn binary_f32(
    dev: &CudaDevice,
    op: &str,
    (a, a_shape): (&CudaBuffer, &[usize]),
    (b, b_shape): (&CudaBuffer, &[usize]),
) -> Result<(CudaBuffer, Vec<usize>)> {
    const OP: &str = "cuda binary_f32";
    checked_op(op, names::BINARY_OPS, OP)?;
    a.check_holds::<f32>(OP, "lhs", checked_numel(OP, a_shape)?)?;
    b.check_holds::<f32>(OP, "rhs", checked_numel(OP, b_shape)?)?;
    let shape = broadcast_shapes(OP, a_shape, b_shape)?;
    let la = Layout::contiguous(a_shape).broadcast_to(&shape);
    let lb = Layout::contiguous(b_shape).broadcast_to(&shape);
    let params = ElementwiseParams::new(&shape, &[&la, &lb])?;
    let numel = params.numel as usize;
    let out = dev.alloc(numel * 4)?;
    dev.launch(
        "elementwise",
        &format!("{op}_fwd_f32"),
        launch::elementwise(numel),
        &[&params, a.arg(), b.arg(), out.arg()],
    )?;
    Ok((out, shape))
}

/// `y = f(x)` for the unary op `op` (see [`names::UNARY_OPS`]) on `numel`
/// contiguous f32 values; `alpha` and `beta` are the op's scalar arguments
/// (exponent, bounds...), ignored by the others.
pub fn unary_f32(
    dev: &CudaDevice,
    op: &str,
    x: &CudaBuffer,
    numel: usize,
    (alpha, beta): (f32, f32),
) -> Result<CudaBuffer> {
    const OP: &str = "cuda unary_f32";
    checked_op(op, names::UNARY_OPS, OP)?;
    x.check_holds::<f32>(OP, "input", numel)?;
    let params = ElementwiseParams::flat(numel).with_scalars(alpha, beta);
    let out = dev.alloc(numel * 4)?;
    dev.launch(
        "elementwise",
        &format!("{op}_fwd_f32"),
        launch::elementwise(numel),
        &[&params, x.arg(), out.arg()],
    )?;
    Ok(out)
}

/// One value per row of the contiguous f32 matrix `x` (`rows × cols`):
/// `op` is `"sum"`, `"mean"`, `"max"` or `"logsumexp"`.
pub fn row_reduce_f32(
    dev: &CudaDevice,
    op: &str,
    x: &CudaBuffer,
    rows: usize,
    cols: usize,
) -> Result<CudaBuffer> {
    const OP: &str = "cuda row_reduce_f32";
    checked_op(op, &["sum", "mean", "max", "logsumexp"], OP)?;
    x.check_holds::<f32>(OP, "input", checked_numel(OP, &[rows, cols])?)?;
    let params = RowParams::contiguous(rows, cols);
    let out = dev.alloc(rows * 4)?;
    dev.launch(
        "reduce",
        &format!("{op}_fwd_f32"),
        launch::rows(rows, cols),
        &[&params, x.arg(), out.arg()],
    )?;
    Ok(out)
}

/// The index (i64) of the largest element of each row of `x`
/// (`rows × cols`, `cols ≥ 1`): the first on ties, the first NaN if any.
pub fn argmax_f32(
    dev: &CudaDevice,
    x: &CudaBuffer,
    rows: usize,
    cols: usize,
) -> Result<CudaBuffer> {
    const OP: &str = "cuda argmax_f32";
    if cols == 0 {
        return Err(Error::invalid(OP, "argmax of empty rows"));
    }
    x.check_holds::<f32>(OP, "input", checked_numel(OP, &[rows, cols])?)?;
    let params = RowParams::contiguous(rows, cols);
    let out = dev.alloc(rows * 8)?;
    dev.launch(
        "reduce",
        "argmax_fwd_f32",
        launch::rows(rows, cols),
        &[&params, x.arg(), out.arg()],
    )?;
    Ok(out)
}

/// Softmax (or log-softmax with `log`) over each row of `x` (`rows × cols`).
pub fn softmax_f32(
    dev: &CudaDevice,
    x: &CudaBuffer,
    rows: usize,
    cols: usize,
    log: bool,
) -> Result<CudaBuffer> {
    const OP: &str = "cuda softmax_f32";
    let numel = checked_numel(OP, &[rows, cols])?;
    x.check_holds::<f32>(OP, "input", numel)?;
    let params = RowParams::contiguous(rows, cols);
    let out = dev.alloc(numel * 4)?;
    let entry = if log {
        "log_softmax_fwd_f32"
    } else {
        "softmax_fwd_f32"
    };
    dev.launch(
        "reduce",
        entry,
        launch::rows(rows, cols),
        &[&params, x.arg(), out.arg()],
    )?;
    Ok(out)
}

/// `C[b] = A[b]·B[b]` for contiguous row-major `A: batch×m×k` and
/// `B: batch×k×n` of `dtype` F32 (tiled SGEMM) or BF16/F16 (tensor cores,
/// f32 accumulation, compute capability ≥ 8.0; buffers hold the raw 16-bit
/// values). Returns `C: batch×m×n` of the same dtype.
pub fn gemm(
    dev: &CudaDevice,
    dtype: DType,
    a: &CudaBuffer,
    b: &CudaBuffer,
    (batch, m, k, n): (usize, usize, usize, usize),
) -> Result<CudaBuffer> {
    const OP: &str = "cuda gemm";
    let (entry, cfg) = match dtype {
        DType::F32 => ("gemm_fwd_f32", launch::sgemm(m, n, batch)),
        DType::BF16 | DType::F16 => {
            if dev.compute_capability() < (8, 0) {
                let (major, minor) = dev.compute_capability();
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{dtype:?} GEMM uses tensor-core mma.sync, which needs compute \
                         capability 8.0 or later; this GPU is {major}.{minor}"
                    ),
                ));
            }
            let entry = if dtype == DType::BF16 {
                "gemm_fwd_bf16"
            } else {
                "gemm_fwd_f16"
            };
            (entry, launch::tensor_core_gemm(m, n, batch))
        }
        other => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: other,
            })
        }
    };
    let size = dtype.size_in_bytes();
    a.check_holds::<u8>(OP, "A", checked_numel(OP, &[batch, m, k, size])?)?;
    b.check_holds::<u8>(OP, "B", checked_numel(OP, &[batch, k, n, size])?)?;
    let params = GemmParams::row_major(batch, m, k, n);
    let c = dev.alloc(checked_numel(OP, &[batch, m, n, size])?)?;
    dev.launch("matmul", entry, cfg, &[&params, a.arg(), b.arg(), c.arg()])?;
    Ok(c)
}

//! CUDA launchers of the indexing family (`kernels/index.cu`):
//! `index_select`, `index_add`, `gather`, `scatter_add`.
//!
//! Indices are validated on the device before any data kernel runs: a
//! check kernel records the position of the first out-of-range index and
//! the host reads that one word back (a small synchronising download), so
//! an out-of-range index is the same [`Error::IndexOutOfRange`] as on the
//! CPU, with the same offending value, and nothing is read or written out
//! of bounds. The accumulating kernels are deterministic (no atomics) and
//! add in the CPU's order.

use crate::backend::cuda::launch;
use crate::error::{Error, Result};
use crate::ops::index::params::{GatherParams, IndexCheckParams, IndexSelectParams};
use crate::ops::on_cuda::{operand, operands, output, require_f32, suffix};
use crate::tensor::Tensor;

const FAMILY: &str = "index";

/// Errors as the CPU does when an element of `index` (contiguous, i64, on
/// the device) lies outside `0..size`: the first such element in
/// row-major order is reported.
fn check_indices(op: &'static str, index: &Tensor, size: usize) -> Result<()> {
    let n = index.numel();
    if n == 0 {
        return Ok(());
    }
    let i = operand(op, index)?;
    let first_bad = i.dev.upload(&[u64::MAX])?;
    let params = IndexCheckParams {
        count: n as i64,
        size: size as i64,
    };
    i.dev.launch(
        FAMILY,
        "index_check_fwd_i64",
        launch::elementwise(n),
        &[&params, &i.at(index), &first_bad.ptr()],
    )?;
    let first = i.dev.download::<u64>(&first_bad, 1)?[0];
    if first == u64::MAX {
        return Ok(());
    }
    // The error path only: read the offending value.
    let bad = index
        .reshape(&[n])?
        .narrow(0, first as usize, 1)?
        .to_vec::<i64>()?[0];
    Err(Error::IndexOutOfRange {
        op,
        index: bad,
        size,
    })
}

/// `out[o, j, i] = x[o, index[j], i]` along `d` (`index` 1-D i64).
pub(super) fn index_select(x: &Tensor, d: usize, index: &Tensor) -> Result<Tensor> {
    const OP: &str = "index_select";
    let sfx = suffix(OP, x.dtype())?;
    let idx = index.detach().contiguous()?;
    check_indices(OP, &idx, x.shape()[d])?;
    let src = x.detach().contiguous()?;
    let [s, i] = operands(OP, [&src, &idx])?;
    let mut shape = x.shape().to_vec();
    shape[d] = idx.numel();
    let (out, y) = output(OP, &s.dev, x.dtype(), &shape)?;
    let params = IndexSelectParams::new(x.shape(), d, idx.numel());
    s.dev.launch(
        FAMILY,
        &format!("index_select_fwd_{sfx}"),
        launch::elementwise(out.numel()),
        &[&params, &s.at(&src), &i.at(&idx), &y],
    )?;
    Ok(out)
}

/// `x` with `source[o, j, i]` added at `[o, index[j], i]` along `d`
/// (f32; repeated indices accumulate in index order).
pub(super) fn index_add(x: &Tensor, d: usize, index: &Tensor, source: &Tensor) -> Result<Tensor> {
    const OP: &str = "index_add";
    require_f32(OP, x.dtype())?;
    let idx = index.detach().contiguous()?;
    check_indices(OP, &idx, x.shape()[d])?;
    let out = x.detach().contiguous_copy()?;
    let src = source.detach().contiguous()?;
    let [o, s, i] = operands(OP, [&out, &src, &idx])?;
    if idx.numel() > 0 {
        let params = IndexSelectParams::new(x.shape(), d, idx.numel());
        o.dev.launch(
            FAMILY,
            "index_add_fwd_f32",
            launch::elementwise(out.numel()),
            &[&params, &s.at(&src), &i.at(&idx), &o.at(&out)],
        )?;
    }
    Ok(out)
}

/// `out[p] = x[p with coordinate d := index[p]]`, `x` read through its
/// strides; the output has the index's shape.
pub(super) fn gather(x: &Tensor, d: usize, index: &Tensor) -> Result<Tensor> {
    const OP: &str = "gather";
    let sfx = suffix(OP, x.dtype())?;
    let idx = index.detach().contiguous()?;
    check_indices(OP, &idx, x.shape()[d])?;
    let [a, i] = operands(OP, [x, &idx])?;
    let params = GatherParams::new(
        OP,
        (x.shape(), x.strides(), x.layout().offset()),
        idx.shape(),
        d,
        false,
    )?;
    let (out, y) = output(OP, &a.dev, x.dtype(), idx.shape())?;
    a.dev.launch(
        FAMILY,
        &format!("gather_fwd_{sfx}"),
        launch::elementwise(out.numel()),
        &[&params, &a.ptr, &i.at(&idx), &y],
    )?;
    Ok(out)
}

/// `x` with `source[p]` added at `p with coordinate d := index[p]` (f32;
/// `source` has the index's shape; contributions to one element add in
/// row-major order of `p`, as on the CPU).
pub(super) fn scatter_add(x: &Tensor, d: usize, index: &Tensor, source: &Tensor) -> Result<Tensor> {
    const OP: &str = "scatter_add";
    require_f32(OP, x.dtype())?;
    let idx = index.detach().contiguous()?;
    check_indices(OP, &idx, x.shape()[d])?;
    let out = x.detach().contiguous_copy()?;
    let src = source.detach().contiguous()?;
    let [o, s, i] = operands(OP, [&out, &src, &idx])?;
    let params = GatherParams::new(
        OP,
        (out.shape(), out.strides(), out.layout().offset()),
        idx.shape(),
        d,
        true,
    )?;
    if idx.numel() > 0 {
        o.dev.launch(
            FAMILY,
            "scatter_add_fwd_f32",
            launch::elementwise(params.numel as usize),
            &[&params, &s.at(&src), &i.at(&idx), &o.ptr],
        )?;
    }
    Ok(out)
}

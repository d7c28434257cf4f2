//! CPU kernels of the reduction family.
//!
//! Every reduction is done on rows: the kept dimensions are moved to the
//! front and the reduced ones to the back (a copy only when that view is not
//! already contiguous), so the input becomes `rows × len` and each output
//! element reduces one contiguous row. Rows go parallel when there are
//! enough of them; a few very long rows (a full sum) are split into blocks
//! reduced in parallel instead. Sums accumulate eight lanes at a time (so
//! the loop vectorises) and blocks are combined in f64.

use crate::backend::cpu::{fill_chunks_weighted, num_threads, PARALLEL_MIN_ELEMENTS};
use crate::error::{Error, Result};
use crate::ops::dispatch::float_dispatch;
use crate::ops::elementwise::cpu::map1;
use crate::tensor::{CpuStorage, Float, Layout};
use rayon::prelude::*;

/// What a row reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum of the row.
    Sum,
    /// Largest element of the row; NaN propagates.
    Max,
    /// Smallest element of the row; NaN propagates.
    Min,
}

/// The input as a contiguous `rows × len` slice: kept dims first, reduced
/// dims last. Borrows when possible, copies otherwise.
fn as_rows<'a, T: Copy + Sync + Send + Default + 'static>(
    v: &'a [T],
    l: &Layout,
    dims: &[usize],
) -> Result<(std::borrow::Cow<'a, [T]>, usize, usize)> {
    let kept: Vec<usize> = (0..l.ndim()).filter(|d| !dims.contains(d)).collect();
    let order: Vec<usize> = kept.iter().chain(dims).copied().collect();
    let p = l.permute(&order);
    let rows: usize = kept.iter().map(|&d| l.shape()[d]).product();
    let len: usize = dims.iter().map(|&d| l.shape()[d]).product();
    if p.is_contiguous() {
        let start = p.offset();
        Ok((
            std::borrow::Cow::Borrowed(&v[start..start + rows * len]),
            rows,
            len,
        ))
    } else {
        Ok((std::borrow::Cow::Owned(map1(v, &p, |x| x)?), rows, len))
    }
}

/// Sum of a slice: 8 independent lanes, combined in f64.
pub(crate) fn sum_block<T: Float>(xs: &[T]) -> f64 {
    let mut lanes = [T::ZERO; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        // A fixed-size array: no bounds checks, so the lanes vectorise.
        let c: &[T; 8] = c.try_into().expect("chunks_exact(8)");
        for i in 0..8 {
            lanes[i] += c[i];
        }
    }
    let mut total: f64 = lanes.iter().map(|x| x.to_f64()).sum();
    for &x in tail {
        total += x.to_f64();
    }
    total
}

fn sum_row<T: Float>(row: &[T], parallel: bool) -> T {
    const BLOCK: usize = 4096;
    let total: f64 = if parallel && row.len() >= PARALLEL_MIN_ELEMENTS {
        // Partial sums collected in block order and added serially, so the
        // result does not depend on how rayon happened to split the work.
        let partials: Vec<f64> = row.par_chunks(BLOCK).map(sum_block).collect();
        partials.iter().sum()
    } else {
        row.chunks(BLOCK).map(sum_block).sum()
    };
    T::from_f64(total)
}

/// Maximum of a slice over 8 independent lanes (NaN is ignored; -inf for
/// an empty slice). Used where NaN handling does not matter, e.g. to find
/// softmax's shift.
pub(crate) fn max_lanes<T: Float>(xs: &[T]) -> T {
    let mut lanes = [T::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let c: &[T; 8] = c.try_into().expect("chunks_exact(8)");
        for i in 0..8 {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    lanes
        .iter()
        .chain(tail)
        .fold(T::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Max (or min, with `max = false`) of a non-empty row; NaN propagates.
fn extreme_row<T: Float>(row: &[T], max: bool) -> T {
    let better = |x: T, m: T| if max { x > m } else { x < m };
    let mut m = row[0];
    for &x in &row[1..] {
        if better(x, m) || x.is_nan() {
            m = x;
            if x.is_nan() {
                break;
            }
        }
    }
    m
}

/// Index of the first max (or min) of a non-empty row; NaN wins.
fn arg_extreme_row<T: Float>(row: &[T], max: bool) -> i64 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate().skip(1) {
        let m = row[best];
        if m.is_nan() {
            break;
        }
        if x.is_nan() || (if max { x > m } else { x < m }) {
            best = i;
        }
    }
    best as i64
}

fn reduce_typed<T: Float>(op: ReduceOp, v: &[T], l: &Layout, dims: &[usize]) -> Result<Vec<T>> {
    let (data, rows, len) = as_rows(v, l, dims)?;
    let mut out = vec![T::ZERO; rows];
    if len == 0 {
        return Ok(out); // only reachable for Sum: callers reject empty max/min
    }
    let parallel_inside_rows = rows < num_threads();
    fill_chunks_weighted(&mut out, len, |start, chunk| {
        for (i, o) in chunk.iter_mut().enumerate() {
            let row = &data[(start + i) * len..(start + i + 1) * len];
            *o = match op {
                ReduceOp::Sum => sum_row(row, parallel_inside_rows),
                ReduceOp::Max => extreme_row(row, true),
                ReduceOp::Min => extreme_row(row, false),
            };
        }
    });
    Ok(out)
}

/// Reduces the sorted `dims` of a float view; output is contiguous with the
/// kept dims in order (callers reshape for keepdim).
pub fn reduce(op: ReduceOp, s: &CpuStorage, l: &Layout, dims: &[usize]) -> Result<CpuStorage> {
    let name = match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
    };
    float_dispatch!(name, s, l, |v, lay| reduce_typed(op, v, lay, dims))
}

/// Index of the max (or min) along one dimension, as i64.
pub fn arg_extreme(s: &CpuStorage, l: &Layout, dim: usize, max: bool) -> Result<Vec<i64>> {
    fn typed<T: Float>(v: &[T], l: &Layout, dim: usize, max: bool) -> Result<Vec<i64>> {
        let (data, rows, len) = as_rows(v, l, &[dim])?;
        let mut out = vec![0i64; rows];
        fill_chunks_weighted(&mut out, len, |start, chunk| {
            for (i, o) in chunk.iter_mut().enumerate() {
                *o = arg_extreme_row(&data[(start + i) * len..(start + i + 1) * len], max);
            }
        });
        Ok(out)
    }
    let op = if max { "argmax" } else { "argmin" };
    match s {
        CpuStorage::F32(v) => typed(v, l, dim, max),
        CpuStorage::F64(v) => typed(v, l, dim, max),
        CpuStorage::BF16(v) => typed(
            &map1(v, l, |x| x.to_f32())?,
            &Layout::contiguous(l.shape()),
            dim,
            max,
        ),
        CpuStorage::F16(v) => typed(
            &map1(v, l, |x| x.to_f32())?,
            &Layout::contiguous(l.shape()),
            dim,
            max,
        ),
        other => Err(Error::UnsupportedDType {
            op,
            dtype: other.dtype(),
        }),
    }
}

//! CPU kernels of 2-D pooling over contiguous `planes × H × W` buffers
//! (`planes = N·C`), forward and backward.
//!
//! Every pooling op here is described by two tables of [`Span`]s, one per
//! spatial axis: output row `oy` reads input rows `rows[oy].lo..rows[oy].hi`,
//! output column `ox` reads input columns `cols[ox].lo..cols[ox].hi`. The
//! tables are built once per call ([`pool_spans`] for max/avg pooling with
//! kernel, stride and padding; [`adaptive_spans`] for adaptive pooling), so
//! the inner loops never test for padding: padded positions are simply
//! outside the clamped span.
//!
//! Planes are independent: each one is handled by one task, and planes are
//! spread over rayon's threads when the whole job is large enough (see
//! [`PARALLEL_MIN_ELEMENTS`]). Within a plane the loops are serial, so the
//! backward scatters (overlapping windows adding into the same input
//! element) need no synchronisation.

use crate::backend::cpu::pool::take;
use crate::backend::cpu::{num_threads, PARALLEL_MIN_ELEMENTS};
use crate::error::Result;
use crate::tensor::Float;
use rayon::prelude::*;

/// The input range one output position reads along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First input index read (inclusive), clamped to the input.
    pub lo: usize,
    /// One past the last input index read, clamped to the input.
    pub hi: usize,
    /// Length of the window clamped to the *padded* extent `[-pad, in + pad)`
    /// instead of the input: the per-axis divisor of average pooling with
    /// `count_include_pad` (PyTorch's `pool_size`). Equals `hi - lo` when
    /// there is no padding.
    pub padded_len: usize,
}

impl Span {
    /// Number of input elements read (`hi - lo`).
    pub fn len(&self) -> usize {
        self.hi - self.lo
    }
    /// True when the span reads no input element.
    pub fn is_empty(&self) -> bool {
        self.hi <= self.lo
    }
}

/// Windows of max/avg pooling along one axis: output `o` covers the padded
/// coordinates `[o·stride − pad, o·stride − pad + kernel)`, clamped to the
/// input `[0, input)` (`lo`, `hi`) and to the padded extent
/// `[−pad, input + pad)` (`padded_len`), exactly as PyTorch's CPU kernels
/// compute `ih0`, `ih1` and `pool_size`.
pub fn pool_spans(out: usize, input: usize, kernel: usize, stride: usize, pad: usize) -> Vec<Span> {
    let (input, kernel, pad) = (input as i64, kernel as i64, pad as i64);
    (0..out as i64)
        .map(|o| {
            let start = o * stride as i64 - pad;
            let end_padded = (start + kernel).min(input + pad);
            Span {
                lo: start.max(0) as usize,
                hi: end_padded.min(input).max(start.max(0)) as usize,
                padded_len: (end_padded - start).max(0) as usize,
            }
        })
        .collect()
}

/// Windows of adaptive pooling along one axis: output `o` of `out` covers
/// input `[floor(o·input/out), ceil((o+1)·input/out))` (PyTorch's
/// `start_index` / `end_index`). Windows may overlap when `input` is not a
/// multiple of `out`, and repeat inputs when `out > input` (up-sampling).
pub fn adaptive_spans(out: usize, input: usize) -> Vec<Span> {
    (0..out)
        .map(|o| {
            let lo = o * input / out;
            let hi = ((o + 1) * input).div_ceil(out);
            Span {
                lo,
                hi,
                padded_len: hi - lo,
            }
        })
        .collect()
}

/// Sizes of one pooling call as the kernels see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlaneGeom {
    /// Number of independent planes (`N·C`).
    pub planes: usize,
    /// Input plane height.
    pub h: usize,
    /// Input plane width.
    pub w: usize,
    /// Output plane height.
    pub oh: usize,
    /// Output plane width.
    pub ow: usize,
}

impl PlaneGeom {
    /// Elements of one input plane.
    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }
    /// Elements of one output plane.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }
}

/// Elementary steps one plane costs: every window element visited once,
/// plus one step per input element (the zero-fill of the backward).
fn work_per_plane(g: &PlaneGeom, rows: &[Span], cols: &[Span]) -> usize {
    let r: usize = rows.iter().map(Span::len).sum();
    let c: usize = cols.iter().map(Span::len).sum();
    r.saturating_mul(c).saturating_add(g.in_plane())
}

/// Planes per parallel task, or `None` when the job should run serially:
/// it goes parallel only with several planes, several threads and at least
/// [`PARALLEL_MIN_ELEMENTS`] steps of work, and each task then carries a
/// quarter of that threshold at least (the policy of
/// [`fill_rows`](crate::backend::cpu::fill_rows), measured in work rather
/// than output elements because a pooling window reads many inputs).
fn planes_per_task(planes: usize, work_per_plane: usize) -> Option<usize> {
    let threads = num_threads();
    if planes < 2 || threads == 1 || planes.saturating_mul(work_per_plane) < PARALLEL_MIN_ELEMENTS {
        return None;
    }
    let min_planes = (PARALLEL_MIN_ELEMENTS / 4).div_ceil(work_per_plane.max(1));
    Some(planes.div_ceil(threads * 4).max(min_planes).max(1))
}

/// Calls `f(plane, out_plane)` for each `plane_len`-element plane of `out`,
/// serially or in parallel as [`planes_per_task`] decides.
fn for_each_plane<A: Send>(
    out: &mut [A],
    plane_len: usize,
    work_per_plane: usize,
    f: impl Fn(usize, &mut [A]) + Sync,
) {
    if plane_len == 0 || out.is_empty() {
        return;
    }
    match planes_per_task(out.len() / plane_len, work_per_plane) {
        None => out
            .chunks_mut(plane_len)
            .enumerate()
            .for_each(|(p, o)| f(p, o)),
        Some(per_task) => out
            .par_chunks_mut(per_task * plane_len)
            .enumerate()
            .for_each(|(t, block)| {
                for (i, o) in block.chunks_mut(plane_len).enumerate() {
                    f(t * per_task + i, o);
                }
            }),
    }
}

/// [`for_each_plane`] over two outputs with planes of the same length
/// (max pooling's values and indices).
fn for_each_plane2<A: Send, B: Send>(
    a: &mut [A],
    b: &mut [B],
    plane_len: usize,
    work_per_plane: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    debug_assert_eq!(a.len(), b.len());
    if plane_len == 0 || a.is_empty() {
        return;
    }
    match planes_per_task(a.len() / plane_len, work_per_plane) {
        None => a
            .chunks_mut(plane_len)
            .zip(b.chunks_mut(plane_len))
            .enumerate()
            .for_each(|(p, (oa, ob))| f(p, oa, ob)),
        Some(per_task) => a
            .par_chunks_mut(per_task * plane_len)
            .zip(b.par_chunks_mut(per_task * plane_len))
            .enumerate()
            .for_each(|(t, (ba, bb))| {
                for (i, (oa, ob)) in ba
                    .chunks_mut(plane_len)
                    .zip(bb.chunks_mut(plane_len))
                    .enumerate()
                {
                    f(t * per_task + i, oa, ob);
                }
            }),
    }
}

/// Max pooling forward: for each output position, the largest input in its
/// window and that input's flat index `iy·W + ix` within its plane.
///
/// Scans each window row by row, replacing the running maximum when a value
/// is strictly greater or NaN (PyTorch's CPU rule: ties keep the first
/// maximum in scan order, a NaN wins). The running maximum starts at −∞ with
/// the index of the window's first in-bounds element, so padding acts as
/// −∞ and a window of −∞ values reports its first element.
/// `x` is `planes × H × W`; returns the `planes × oh × ow` values and indices.
pub(crate) fn max_pool2d_forward<T: Float>(
    x: &[T],
    g: &PlaneGeom,
    rows: &[Span],
    cols: &[Span],
) -> Result<(Vec<T>, Vec<i64>)> {
    let n_out = g.planes * g.out_plane();
    let mut out = take::<T>(n_out)?;
    let mut idx = take::<i64>(n_out)?;
    let work = work_per_plane(g, rows, cols);
    for_each_plane2(&mut out, &mut idx, g.out_plane(), work, |p, out, idx| {
        let plane = &x[p * g.in_plane()..(p + 1) * g.in_plane()];
        for (oy, r) in rows.iter().enumerate() {
            for (ox, c) in cols.iter().enumerate() {
                let mut best = T::NEG_INFINITY;
                let mut at = r.lo * g.w + c.lo;
                for iy in r.lo..r.hi {
                    let row_start = iy * g.w + c.lo;
                    for (k, &v) in plane[row_start..iy * g.w + c.hi].iter().enumerate() {
                        // Written as selects rather than a branch: on real
                        // data the outcome is unpredictable, and conditional
                        // moves avoid the mispredictions.
                        let take = (v > best) | v.is_nan();
                        best = if take { v } else { best };
                        at = if take { row_start + k } else { at };
                    }
                }
                out[oy * g.ow + ox] = best;
                idx[oy * g.ow + ox] = at as i64;
            }
        }
    });
    Ok((out, idx))
}

/// Max pooling backward: `dx[plane][idx[o]] += dy[plane][o]` for every
/// output `o`, using the indices saved by the forward (inputs that were no
/// window's maximum get 0; one picked by several overlapping windows gets
/// the sum). `dy` and `idx` are `planes × oh × ow`; returns `planes × H × W`.
pub(crate) fn max_pool2d_backward<T: Float>(
    dy: &[T],
    idx: &[i64],
    g: &PlaneGeom,
) -> Result<Vec<T>> {
    let mut dx = take::<T>(g.planes * g.in_plane())?;
    let work = g.in_plane() + g.out_plane();
    for_each_plane(&mut dx, g.in_plane(), work, |p, dx| {
        dx.fill(T::ZERO);
        let span = p * g.out_plane()..(p + 1) * g.out_plane();
        for (&d, &i) in dy[span.clone()].iter().zip(&idx[span]) {
            dx[i as usize] += d;
        }
    });
    Ok(dx)
}

/// The divisor of output `(oy, ox)` in average pooling: the padded window
/// area with `count_include_pad`, otherwise the number of in-bounds inputs.
#[inline]
fn divisor(r: &Span, c: &Span, count_include_pad: bool) -> usize {
    if count_include_pad {
        r.padded_len * c.padded_len
    } else {
        r.len() * c.len()
    }
}

/// Average pooling forward (also adaptive average pooling, whose spans
/// carry no padding): each output is the sum of its window divided by
/// [`divisor`]. A window with no input element (impossible for the shapes
/// the `Tensor` methods accept) gives 0, as in PyTorch.
/// `x` is `planes × H × W`; returns `planes × oh × ow`.
pub(crate) fn avg_pool2d_forward<T: Float>(
    x: &[T],
    g: &PlaneGeom,
    rows: &[Span],
    cols: &[Span],
    count_include_pad: bool,
) -> Result<Vec<T>> {
    let mut out = take::<T>(g.planes * g.out_plane())?;
    let work = work_per_plane(g, rows, cols);
    for_each_plane(&mut out, g.out_plane(), work, |p, out| {
        let plane = &x[p * g.in_plane()..(p + 1) * g.in_plane()];
        for (oy, r) in rows.iter().enumerate() {
            for (ox, c) in cols.iter().enumerate() {
                let o = &mut out[oy * g.ow + ox];
                if r.is_empty() || c.is_empty() {
                    *o = T::ZERO;
                    continue;
                }
                let mut sum = T::ZERO;
                for iy in r.lo..r.hi {
                    for &v in &plane[iy * g.w + c.lo..iy * g.w + c.hi] {
                        sum += v;
                    }
                }
                *o = sum / T::from_f64(divisor(r, c, count_include_pad) as f64);
            }
        }
    });
    Ok(out)
}

/// Average pooling backward: each output gradient, divided by its window's
/// [`divisor`], is added to every input of the window (the transpose of the
/// forward). `dy` is `planes × oh × ow`; returns `planes × H × W`.
pub(crate) fn avg_pool2d_backward<T: Float>(
    dy: &[T],
    g: &PlaneGeom,
    rows: &[Span],
    cols: &[Span],
    count_include_pad: bool,
) -> Result<Vec<T>> {
    let mut dx = take::<T>(g.planes * g.in_plane())?;
    let work = work_per_plane(g, rows, cols);
    for_each_plane(&mut dx, g.in_plane(), work, |p, dx| {
        dx.fill(T::ZERO);
        let grad = &dy[p * g.out_plane()..(p + 1) * g.out_plane()];
        for (oy, r) in rows.iter().enumerate() {
            for (ox, c) in cols.iter().enumerate() {
                if r.is_empty() || c.is_empty() {
                    continue;
                }
                let d = grad[oy * g.ow + ox] / T::from_f64(divisor(r, c, count_include_pad) as f64);
                for iy in r.lo..r.hi {
                    for v in &mut dx[iy * g.w + c.lo..iy * g.w + c.hi] {
                        *v += d;
                    }
                }
            }
        }
    });
    Ok(dx)
}

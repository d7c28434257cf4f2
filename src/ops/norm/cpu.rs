//! CPU kernels of batch normalisation, on contiguous `N×C×S` buffers.
//!
//! The caller views its input `N×C×*` as `N×C×S` (`S` = the product of the
//! spatial dims, 1 for a rank-2 input), so channel `c` owns the `N` runs
//! `x[n, c, 0..S]`, each `S` elements long and contiguous. Two kinds of
//! kernels, both without autodiff:
//!
//! - **per-channel sums** ([`channel_moments`], [`channel_grad_sums`]): two
//!   f64 sums per channel in one pass. The work is cut into fixed units of
//!   about 64K elements (a block of whole channels, or a range of batch items
//!   of one channel when a channel alone is larger) that run in parallel
//!   (rayon) above [`PARALLEL_MIN_ELEMENTS`]; the unit partial sums are then
//!   added in unit order. The cut depends only on the shape, never on the
//!   thread count, so results are bitwise the same serial or parallel.
//! - **per-channel elementwise maps** ([`channel_normalize`],
//!   [`channel_grad_input`]): one pass writing the output (not zero-filled
//!   first, see [`build`]), with per-channel coefficients computed by the
//!   caller in f64 and rounded to the element type once. The output is split into chunks across rayon above the same
//!   threshold; each chunk walks its runs with a channel counter (no
//!   division per run).
//!
//! A rank-2 input (`S = 1`) has one-element runs, so both kinds of kernel
//! work on rows instead: a row holds one element of each of `C` adjacent
//! channels, and the loops zip it with the per-channel accumulators or
//! coefficients.

use super::runs::RunSums;
use crate::backend::cpu::output::{build, OutChunk};
use crate::backend::cpu::pool::take;
use crate::backend::cpu::{fill_rows, num_threads, PARALLEL_MIN_ELEMENTS};
use crate::error::Result;
use crate::ops::elementwise::cpu::relu_value;
use crate::tensor::Float;
use rayon::prelude::*;
use std::ops::Range;

/// A batch-norm operand seen as `n × c × s` (batch, channels, spatial size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NcsShape {
    /// Batch size (dim 0).
    pub n: usize,
    /// Channels (dim 1).
    pub c: usize,
    /// Product of the remaining (spatial) dims; 1 for a rank-2 input.
    pub s: usize,
}

impl NcsShape {
    /// The `N×C×S` view of a shape of rank ≥ 2.
    pub fn of(shape: &[usize]) -> NcsShape {
        NcsShape {
            n: shape[0],
            c: shape[1],
            s: shape[2..].iter().product(),
        }
    }

    /// Total number of elements.
    pub fn numel(&self) -> usize {
        self.n * self.c * self.s
    }

    /// Elements per channel, `M = N·S` (the count each statistic averages).
    pub fn per_channel(&self) -> usize {
        self.n * self.s
    }
}

/// Elements in one unit of reduction work (see the module docs).
pub(super) const UNIT_ELEMENTS: usize = 1 << 16;

/// One unit of reduction work: channels `c0..c1` of batch items `n0..n1`.
#[derive(Clone, Copy, Debug)]
struct Unit {
    c0: usize,
    c1: usize,
    n0: usize,
    n1: usize,
}

/// Cuts the reduction over `sh` into units of about [`UNIT_ELEMENTS`]:
/// blocks of whole channels when a channel is smaller than a unit, else
/// one channel split into ranges of batch items; for `S = 1`, blocks of
/// rows × blocks of adjacent channels.
fn plan_units(sh: NcsShape) -> Vec<Unit> {
    let mut units = Vec::new();
    let per_channel = sh.per_channel();
    if sh.s == 1 {
        // Rank-2 input: a channel is a strided column, so a unit takes a
        // block of rows × a block of (up to 1024) adjacent channels and
        // reads contiguous row segments.
        let cb = sh.c.clamp(1, 1024);
        let nb = (UNIT_ELEMENTS / cb).clamp(1, sh.n.max(1));
        for c0 in (0..sh.c).step_by(cb) {
            for n0 in (0..sh.n).step_by(nb) {
                units.push(Unit {
                    c0,
                    c1: (c0 + cb).min(sh.c),
                    n0,
                    n1: (n0 + nb).min(sh.n),
                });
            }
        }
    } else if per_channel >= UNIT_ELEMENTS {
        let nb = (UNIT_ELEMENTS / sh.s.max(1)).clamp(1, sh.n);
        for c in 0..sh.c {
            for n0 in (0..sh.n).step_by(nb) {
                units.push(Unit {
                    c0: c,
                    c1: c + 1,
                    n0,
                    n1: (n0 + nb).min(sh.n),
                });
            }
        }
    } else {
        let cb = (UNIT_ELEMENTS / per_channel.max(1)).clamp(1, sh.c.max(1));
        for c0 in (0..sh.c).step_by(cb) {
            units.push(Unit {
                c0,
                c1: (c0 + cb).min(sh.c),
                n0: 0,
                n1: sh.n,
            });
        }
    }
    units
}

/// Per-channel pairs of sums `(Σ a, Σ b)` in f64, where `run(c, range)`
/// returns the two sums over one run (`range` indexes the flat buffer and
/// always lies inside channel `c`) and, for `S = 1`, `elem(c, i)` the two
/// terms of the single element `i` of channel `c` (so a row segment is one
/// tight loop over adjacent channels). Units run in parallel for large
/// inputs; partial sums are combined in a fixed order.
fn reduce_channels(
    sh: NcsShape,
    run: impl Fn(usize, Range<usize>) -> (f64, f64) + Sync,
    elem: impl Fn(usize, usize) -> (f64, f64) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let units = plan_units(sh);
    let do_unit = |u: &Unit| -> (Vec<f64>, Vec<f64>) {
        let width = u.c1 - u.c0;
        let (mut a, mut b) = (vec![0.0; width], vec![0.0; width]);
        for n in u.n0..u.n1 {
            if sh.s == 1 {
                let base = n * sh.c + u.c0;
                for (j, (pa, pb)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
                    let (ea, eb) = elem(u.c0 + j, base + j);
                    *pa += ea;
                    *pb += eb;
                }
                continue;
            }
            for c in u.c0..u.c1 {
                let start = (n * sh.c + c) * sh.s;
                let (ra, rb) = run(c, start..start + sh.s);
                a[c - u.c0] += ra;
                b[c - u.c0] += rb;
            }
        }
        (a, b)
    };
    let parallel = sh.numel() >= PARALLEL_MIN_ELEMENTS && num_threads() > 1 && units.len() > 1;
    let parts: Vec<(Vec<f64>, Vec<f64>)> = if parallel {
        units.par_iter().map(do_unit).collect()
    } else {
        units.iter().map(do_unit).collect()
    };
    let (mut sa, mut sb) = (vec![0.0; sh.c], vec![0.0; sh.c]);
    for (u, (a, b)) in units.iter().zip(parts) {
        for (j, c) in (u.c0..u.c1).enumerate() {
            sa[c] += a[j];
            sb[c] += b[j];
        }
    }
    (sa, sb)
}

/// Per-channel mean and biased variance of `x` (`N×C×S`, contiguous), with
/// the sums `Σ(x − k)` and `Σ(x − k)²` accumulated in f64 in one pass.
///
/// The shift `k` is the channel's first element: the shifted sums give
/// `var = (Σd² − (Σd)²/M) / M` without the cancellation the raw `Σx²` form
/// suffers when the mean is large compared with the spread. Returns
/// `(mean, var_sum)` with `var_sum = Σ(x − mean)²` (divide by `M` for the
/// biased variance, by `M − 1` for the unbiased one); NaN propagates.
pub fn channel_moments<T: Float>(x: &[T], sh: NcsShape) -> (Vec<f64>, Vec<f64>) {
    debug_assert_eq!(x.len(), sh.numel());
    let shift: Vec<f64> = (0..sh.c)
        .map(|c| {
            if sh.per_channel() > 0 {
                x[c * sh.s].to_f64()
            } else {
                0.0
            }
        })
        .collect();
    let sums = RunSums::detect();
    let (s1, s2) = reduce_channels(
        sh,
        |c, r| sums.moments(&x[r], shift[c]),
        |c, i| {
            let d = x[i].to_f64() - shift[c];
            (d, d * d)
        },
    );
    let m = sh.per_channel() as f64;
    (0..sh.c)
        .map(|c| finish_moments(shift[c], s1[c], s2[c], m))
        .unzip()
}

/// `(mean, Σ(x − mean)²)` of a channel of `m` elements from its shifted
/// sums `s1 = Σ(x − k)` and `s2 = Σ(x − k)²`.
#[inline]
pub(super) fn finish_moments(k: f64, s1: f64, s2: f64, m: f64) -> (f64, f64) {
    let v = s2 - s1 * s1 / m;
    // Rounding can leave a tiny negative value; `max` would also turn NaN into 0.
    (k + s1 / m, if v < 0.0 { 0.0 } else { v })
}

/// Per-channel `(Σ dy, Σ dy·(x − mean_c))` in f64 in one pass over `dy`
/// and `x` (both `N×C×S`, contiguous): the two sums of batch-norm backward.
pub fn channel_grad_sums<T: Float>(
    dy: &[T],
    x: &[T],
    sh: NcsShape,
    mean: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    debug_assert_eq!(dy.len(), sh.numel());
    debug_assert_eq!(x.len(), sh.numel());
    let sums = RunSums::detect();
    reduce_channels(
        sh,
        |c, r| sums.grad(&dy[r.clone()], &x[r], None, mean[c]),
        |c, i| {
            let g = dy[i].to_f64();
            (g, g * (x[i].to_f64() - mean[c]))
        },
    )
}

/// Builds an `N×C×S` output by calling `f(c, range, out)` on each maximal
/// run `range` of elements of one channel `c`, in order; `f` appends the
/// run's `range.len()` values to `out`. Large outputs are built in
/// parallel chunks.
fn build_channel_runs<T>(
    sh: NcsShape,
    f: impl Fn(usize, Range<usize>, &mut OutChunk<T>) + Sync,
) -> Result<Vec<T>>
where
    T: Copy + Default + Send + 'static,
{
    build(sh.numel(), |start, out| {
        let end = start + out.len();
        let mut plane = start / sh.s;
        let mut c = plane % sh.c;
        let mut i = start;
        while i < end {
            let run_end = ((plane + 1) * sh.s).min(end);
            f(c, i..run_end, out);
            i = run_end;
            plane += 1;
            c += 1;
            if c == sh.c {
                c = 0;
            }
        }
    })
}

/// Batch-norm output `y = (x − mean_c)·scale_c + shift_c` for `x` of shape
/// `N×C×S` (contiguous), where the caller folds the weight into
/// `scale = w·invstd` and passes the bias as `shift`; with `relu`, the
/// output is `relu(y)` (a batch norm fused with the relu after it). The
/// per-channel coefficients are rounded to `T` once; the map runs in `T`.
pub fn channel_normalize<T: Float>(
    x: &[T],
    sh: NcsShape,
    mean: &[f64],
    scale: &[f64],
    shift: &[f64],
    relu: bool,
) -> Result<Vec<T>> {
    debug_assert_eq!(x.len(), sh.numel());
    let cast = |v: &[f64]| -> Vec<T> { v.iter().map(|&v| T::from_f64(v)).collect() };
    let (m, a, b) = (cast(mean), cast(scale), cast(shift));
    if sh.s == 1 {
        // Rank 2: one row of C channels at a time, zipped with the
        // coefficient vectors (vectorises).
        let mut out = take::<T>(sh.numel())?;
        fill_rows(&mut out, sh.c, |n, row| {
            let xr = &x[n * sh.c..(n + 1) * sh.c];
            for ((((o, &v), &m), &a), &b) in row.iter_mut().zip(xr).zip(&m).zip(&a).zip(&b) {
                let y = (v - m) * a + b;
                *o = if relu { relu_value(y) } else { y };
            }
        });
        return Ok(out);
    }
    build_channel_runs(sh, |c, r, out| {
        normalize_run(&x[r], (m[c], a[c], b[c]), relu, out)
    })
}

/// Appends `(v − m)·a + b` for each `v` of `xs` to `out`, through
/// [`relu_value`] when `relu` (one loop per case, so each vectorises).
#[inline]
pub(super) fn normalize_run<T: Float>(
    xs: &[T],
    (m, a, b): (T, T, T),
    relu: bool,
    out: &mut OutChunk<T>,
) {
    if relu {
        out.extend(xs.iter().map(|&v| relu_value((v - m) * a + b)));
    } else {
        out.extend(xs.iter().map(|&v| (v - m) * a + b));
    }
}

/// Input gradient of batch norm, `dx = a_c·dy + p_c·(x − mean_c) + q_c`,
/// for `dy` and `x` of shape `N×C×S` (contiguous).
///
/// With `a = w·invstd`, the training-mode closed form
/// `dx = w·invstd/M · (M·dy − Σdy − x̂·Σ(dy·x̂))` is
/// `p = −a·invstd²·Σ(dy·(x − mean))/M` and `q = −a·Σdy/M`; eval mode is
/// `p = q = 0`. Coefficients are rounded to `T` once; the map runs in `T`.
pub fn channel_grad_input<T: Float>(
    dy: &[T],
    x: &[T],
    sh: NcsShape,
    mean: &[f64],
    (a, p, q): (&[f64], &[f64], &[f64]),
) -> Result<Vec<T>> {
    debug_assert_eq!(dy.len(), sh.numel());
    debug_assert_eq!(x.len(), sh.numel());
    let cast = |v: &[f64]| -> Vec<T> { v.iter().map(|&v| T::from_f64(v)).collect() };
    let (m, a, p, q) = (cast(mean), cast(a), cast(p), cast(q));
    if sh.s == 1 {
        // Rank 2: one row of C channels at a time (see channel_normalize).
        let mut out = take::<T>(sh.numel())?;
        fill_rows(&mut out, sh.c, |n, row| {
            let r = n * sh.c..(n + 1) * sh.c;
            let (gr, xr) = (&dy[r.clone()], &x[r]);
            let coefs = m.iter().zip(&a).zip(&p).zip(&q);
            for (((o, &g), &v), (((&m, &a), &p), &q)) in row.iter_mut().zip(gr).zip(xr).zip(coefs) {
                *o = a * g + p * (v - m) + q;
            }
        });
        return Ok(out);
    }
    build_channel_runs(sh, |c, r, out| {
        let (m, a, p, q) = (m[c], a[c], p[c], q[c]);
        let (gs, xs) = (&dy[r.clone()], &x[r]);
        out.extend(gs.iter().zip(xs).map(|(&g, &v)| a * g + p * (v - m) + q));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_cover_every_element_once() {
        for &(n, c, s) in &[
            (1, 1, 1),
            (3, 5, 7),
            (2, 3, 40_000),
            (100_000, 2, 1),
            (7, 70_000, 1),
            (70_000, 300, 1),
            (0, 3, 1),
            (4, 0, 5),
            (16, 64, 1024),
        ] {
            let sh = NcsShape { n, c, s };
            let mut seen = vec![0u8; n * c];
            for u in plan_units(sh) {
                for nn in u.n0..u.n1 {
                    for cc in u.c0..u.c1 {
                        seen[nn * c + cc] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&k| k == 1), "{sh:?}");
        }
    }

    #[test]
    fn runs_are_split_at_channel_boundaries() {
        let sh = NcsShape { n: 2, c: 3, s: 2 };
        let out = build_channel_runs(sh, |c, r, out| out.extend(r.map(|_| c))).unwrap();
        assert_eq!(out, vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
    }
}

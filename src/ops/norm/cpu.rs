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
const UNIT_ELEMENTS: usize = 1 << 16;

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
fn finish_moments(k: f64, s1: f64, s2: f64, m: f64) -> (f64, f64) {
    let v = s2 - s1 * s1 / m;
    // Rounding can leave a tiny negative value; `max` would also turn NaN into 0.
    (k + s1 / m, if v < 0.0 { 0.0 } else { v })
}

/// Elements in one block of the fused kernels (1 MiB of f32): a block's
/// input stays in one core's L2 between its sums and its map, and each of
/// its runs spans several pages (the hardware prefetchers stop at page
/// bounds, so blocks of one or two 4 KiB channel planes read from memory
/// at a fraction of its bandwidth).
const FUSED_BLOCK_ELEMENTS: usize = 1 << 18;

/// The channel blocks the fused kernels work on: whole channels, about
/// [`FUSED_BLOCK_ELEMENTS`] per block and at least four blocks when there
/// are four channels (so two threads stay busy); `None` when one channel
/// is larger than a reduction unit ([`UNIT_ELEMENTS`], where
/// [`channel_moments`] splits a channel) or the input has rank 2. Each
/// channel's sums run over the batch in order whatever the blocks, so they
/// match the unfused kernels' bits.
fn channel_blocks(sh: NcsShape) -> Option<Vec<Range<usize>>> {
    let per_channel = sh.per_channel();
    if sh.s == 1 || per_channel >= UNIT_ELEMENTS || sh.c == 0 {
        return None;
    }
    let width = (FUSED_BLOCK_ELEMENTS / per_channel.max(1))
        .min(sh.c.div_ceil(4))
        .max(1);
    Some(
        (0..sh.c)
            .step_by(width)
            .map(|c0| c0..(c0 + width).min(sh.c))
            .collect(),
    )
}

/// Training-mode batch-norm forward in one sweep over the input: the
/// per-channel `(mean, Σ(x − mean)²)` of [`channel_moments`] and the output
/// `y = (x − mean_c)·scale_c + shift_c` (passed through relu when `relu`),
/// where `coef(c, mean, var_sum)` gives `(scale_c, shift_c)` (in f64,
/// rounded to `T` once). Returns `(y, mean, var_sum)`.
///
/// Blocks of whole channels run one at a time per core: the block's sums,
/// then its output, while its input is still in cache, so the input is
/// read from memory once instead of twice. Same bits as
/// [`channel_moments`] followed by [`channel_normalize`] (tested); shapes
/// without such blocks ([`channel_blocks`]) run those two passes.
pub fn channel_moments_normalize<T: Float>(
    x: &[T],
    sh: NcsShape,
    coef: impl Fn(usize, f64, f64) -> (f64, f64) + Sync,
    relu: bool,
) -> Result<(Vec<T>, Vec<f64>, Vec<f64>)> {
    debug_assert_eq!(x.len(), sh.numel());
    let Some(blocks) = channel_blocks(sh) else {
        let (mean, var_sum) = channel_moments(x, sh);
        let (scale, shift): (Vec<f64>, Vec<f64>) =
            (0..sh.c).map(|c| coef(c, mean[c], var_sum[c])).unzip();
        let y = channel_normalize(x, sh, &mean, &scale, &shift, relu)?;
        return Ok((y, mean, var_sum));
    };
    let m = sh.per_channel() as f64;
    let sums = RunSums::detect();
    let columns: Vec<Range<usize>> = blocks
        .iter()
        .map(|b| b.start * sh.s..b.end * sh.s)
        .collect();
    let (y, stats) = crate::backend::cpu::output::build_column_blocks(
        sh.n,
        sh.c * sh.s,
        &columns,
        |b, rows| {
            let channels = blocks[b].clone();
            let run = |n: usize, c: usize| {
                let start = (n * sh.c + c) * sh.s;
                &x[start..start + sh.s]
            };
            let shift: Vec<f64> = channels.clone().map(|c| run(0, c)[0].to_f64()).collect();
            let (mut s1, mut s2) = (vec![0.0; channels.len()], vec![0.0; channels.len()]);
            for n in 0..sh.n {
                for (j, c) in channels.clone().enumerate() {
                    let (a, b) = sums.moments(run(n, c), shift[j]);
                    s1[j] += a;
                    s2[j] += b;
                }
            }
            let stats: Vec<(f64, f64)> = (0..channels.len())
                .map(|j| finish_moments(shift[j], s1[j], s2[j], m))
                .collect();
            let coefs: Vec<(T, T, T)> = channels
                .clone()
                .zip(&stats)
                .map(|(c, &(mean, var_sum))| {
                    let (a, b) = coef(c, mean, var_sum);
                    (T::from_f64(mean), T::from_f64(a), T::from_f64(b))
                })
                .collect();
            for (n, out) in rows.iter_mut().enumerate() {
                for (c, &(m, a, b)) in channels.clone().zip(&coefs) {
                    normalize_run(run(n, c), (m, a, b), relu, out);
                }
            }
            stats
        },
    )?;
    let (mean, var_sum) = stats.into_iter().flatten().unzip();
    Ok((y, mean, var_sum))
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
        |c, r| sums.grad(&dy[r.clone()], &x[r], mean[c]),
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
fn normalize_run<T: Float>(xs: &[T], (m, a, b): (T, T, T), relu: bool, out: &mut OutChunk<T>) {
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

/// Batch-norm backward in one sweep over `dy` and `x` (`N×C×S`,
/// contiguous): the per-channel sums `(Σdy, Σdy·(x − mean_c))` of
/// [`channel_grad_sums`] and the input gradient
/// `dx = a_c·dy + p_c·(x − mean_c) + q_c` of [`channel_grad_input`], where
/// `coef(c, Σdy, Σdy·(x − mean))` gives `(a_c, p_c, q_c)` (in f64, rounded
/// to `T` once). Returns `(dx, Σdy, Σdy·(x − mean))`.
///
/// As [`channel_moments_normalize`]: blocks of whole channels, each summed
/// and then mapped while its operands are in cache; same bits as the two
/// kernels one after the other (tested), which other shapes run.
pub fn channel_grad_sums_input<T: Float>(
    dy: &[T],
    x: &[T],
    sh: NcsShape,
    mean: &[f64],
    coef: impl Fn(usize, f64, f64) -> (f64, f64, f64) + Sync,
) -> Result<(Vec<T>, Vec<f64>, Vec<f64>)> {
    debug_assert_eq!(dy.len(), sh.numel());
    debug_assert_eq!(x.len(), sh.numel());
    let Some(blocks) = channel_blocks(sh) else {
        let (sum_dy, sum_dy_xmu) = channel_grad_sums(dy, x, sh, mean);
        let mut a = Vec::with_capacity(sh.c);
        let (mut p, mut q) = (a.clone(), a.clone());
        for c in 0..sh.c {
            let (ac, pc, qc) = coef(c, sum_dy[c], sum_dy_xmu[c]);
            a.push(ac);
            p.push(pc);
            q.push(qc);
        }
        let dx = channel_grad_input(dy, x, sh, mean, (&a, &p, &q))?;
        return Ok((dx, sum_dy, sum_dy_xmu));
    };
    let sums = RunSums::detect();
    let columns: Vec<Range<usize>> = blocks
        .iter()
        .map(|b| b.start * sh.s..b.end * sh.s)
        .collect();
    let (dx, sums) = crate::backend::cpu::output::build_column_blocks(
        sh.n,
        sh.c * sh.s,
        &columns,
        |b, rows| {
            let channels = blocks[b].clone();
            let run = |n: usize, c: usize| {
                let start = (n * sh.c + c) * sh.s;
                start..start + sh.s
            };
            let (mut s1, mut s2) = (vec![0.0; channels.len()], vec![0.0; channels.len()]);
            for n in 0..sh.n {
                for (j, c) in channels.clone().enumerate() {
                    let r = run(n, c);
                    let (a, b) = sums.grad(&dy[r.clone()], &x[r], mean[c]);
                    s1[j] += a;
                    s2[j] += b;
                }
            }
            let coefs: Vec<[T; 4]> = channels
                .clone()
                .enumerate()
                .map(|(j, c)| {
                    let (a, p, q) = coef(c, s1[j], s2[j]);
                    [mean[c], a, p, q].map(T::from_f64)
                })
                .collect();
            for (n, out) in rows.iter_mut().enumerate() {
                for (c, &[m, a, p, q]) in channels.clone().zip(&coefs) {
                    let r = run(n, c);
                    let (gs, xs) = (&dy[r.clone()], &x[r]);
                    out.extend(gs.iter().zip(xs).map(|(&g, &v)| a * g + p * (v - m) + q));
                }
            }
            s1.into_iter().zip(s2).collect::<Vec<_>>()
        },
    )?;
    let (sum_dy, sum_dy_xmu) = sums.into_iter().flatten().unzip();
    Ok((dx, sum_dy, sum_dy_xmu))
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

    /// Deterministic values with a per-channel offset (so the shifted sums
    /// matter) and no two alike.
    fn sample(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0 + (i % 7) as f32
            })
            .collect()
    }

    /// Shapes with whole-channel blocks (one or many, serial or parallel)
    /// and without (rank 2; a channel larger than a unit).
    const FUSED_SHAPES: [(usize, usize, usize); 6] = [
        (2, 3, 5),
        (4, 7, 9),
        (32, 64, 1024),
        (8, 40, 16),
        (16, 5, 1),
        (3, 2, 40_000),
    ];

    #[test]
    fn fused_forward_gives_the_two_passes_bits() {
        for (n, c, s) in FUSED_SHAPES {
            let sh = NcsShape { n, c, s };
            let x = sample(sh.numel(), (n * c * s) as u64);
            let coef = |c: usize, mean: f64, var_sum: f64| {
                (
                    1.0 / (var_sum / 7.0 + 1e-5).sqrt() + c as f64,
                    mean * 0.5 - c as f64,
                )
            };
            let (y, mean, var_sum) = channel_moments_normalize(&x, sh, coef, false).unwrap();
            let (mean2, var_sum2) = channel_moments(&x, sh);
            let (scale, shift): (Vec<f64>, Vec<f64>) =
                (0..c).map(|ch| coef(ch, mean2[ch], var_sum2[ch])).unzip();
            let y2 = channel_normalize(&x, sh, &mean2, &scale, &shift, false).unwrap();
            assert_eq!(mean, mean2, "{sh:?}");
            assert_eq!(var_sum, var_sum2, "{sh:?}");
            assert!(
                y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{sh:?}"
            );
            assert_eq!(y.len(), y2.len());
        }
    }

    #[test]
    fn fused_backward_gives_the_two_passes_bits() {
        for (n, c, s) in FUSED_SHAPES {
            let sh = NcsShape { n, c, s };
            let x = sample(sh.numel(), 1 + (n * c) as u64);
            let dy = sample(sh.numel(), 2 + s as u64);
            let mean: Vec<f64> = (0..c).map(|ch| ch as f64 * 0.25 - 1.0).collect();
            let coef = |c: usize, s1: f64, s2: f64| (0.5 + c as f64, -s2 / 100.0, -s1 / 100.0);
            let (dx, s1, s2) = channel_grad_sums_input(&dy, &x, sh, &mean, coef).unwrap();
            let (t1, t2) = channel_grad_sums(&dy, &x, sh, &mean);
            let (mut a, mut p, mut q) = (vec![], vec![], vec![]);
            for ch in 0..c {
                let (ac, pc, qc) = coef(ch, t1[ch], t2[ch]);
                a.push(ac);
                p.push(pc);
                q.push(qc);
            }
            let dx2 = channel_grad_input(&dy, &x, sh, &mean, (&a, &p, &q)).unwrap();
            assert_eq!((s1, s2), (t1, t2), "{sh:?}");
            assert!(
                dx.iter().zip(&dx2).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{sh:?}"
            );
            assert_eq!(dx.len(), dx2.len());
        }
    }

    #[test]
    fn runs_are_split_at_channel_boundaries() {
        let sh = NcsShape { n: 2, c: 3, s: 2 };
        let out = build_channel_runs(sh, |c, r, out| out.extend(r.map(|_| c))).unwrap();
        assert_eq!(out, vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
    }
}

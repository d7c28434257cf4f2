//! Batch norm's one-sweep kernels: blocks of whole channels, each summed
//! and then mapped while its input is still in a core's cache, so an
//! activation that comes from memory is read from memory once. Same bits
//! as the two-pass kernels of [`super::cpu`] (tested), which shapes
//! without such blocks run.

use super::cpu::{
    channel_grad_input, channel_grad_sums, channel_moments, channel_normalize, finish_moments,
    normalize_run, NcsShape, UNIT_ELEMENTS,
};
use super::runs::RunSums;
use crate::backend::cpu::output::build_column_blocks;
use crate::error::Result;
use crate::ops::elementwise::cpu::relu_grad_value;
use crate::tensor::Float;
use std::ops::Range;

/// Elements in one block of the fused kernels (1 MiB of f32), so a
/// block's input stays in one core's L2 between its sums and its map.
/// (Blocks of the reduction units' 64 K elements timed the same.)
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
    let (y, stats) = build_column_blocks(sh.n, sh.c * sh.s, &columns, |b, rows| {
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
    })?;
    let (mean, var_sum) = stats.into_iter().flatten().unzip();
    Ok((y, mean, var_sum))
}

/// Batch-norm backward in one sweep over `dy` and `x` (`N×C×S`,
/// contiguous), for a batch norm whose output went through a fused relu
/// when `relu_output` is that output (`dy` then counts only where it is
/// positive, as relu's backward masks it): the per-channel sums
/// `(Σdy, Σdy·(x − mean_c))` of
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
    relu_output: Option<&[T]>,
    sh: NcsShape,
    mean: &[f64],
    coef: impl Fn(usize, f64, f64) -> (f64, f64, f64) + Sync,
) -> Result<(Vec<T>, Vec<f64>, Vec<f64>)> {
    debug_assert_eq!(dy.len(), sh.numel());
    debug_assert_eq!(x.len(), sh.numel());
    debug_assert!(relu_output.is_none_or(|z| z.len() == sh.numel()));
    let Some(blocks) = channel_blocks(sh) else {
        let masked: Vec<T>;
        let dy = match relu_output {
            Some(z) => {
                masked = dy
                    .iter()
                    .zip(z)
                    .map(|(&g, &z)| relu_grad_value(g, z))
                    .collect();
                &masked[..]
            }
            None => dy,
        };
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
    let (dx, sums) = build_column_blocks(sh.n, sh.c * sh.s, &columns, |b, rows| {
        let channels = blocks[b].clone();
        let run = |n: usize, c: usize| {
            let start = (n * sh.c + c) * sh.s;
            start..start + sh.s
        };
        let (mut s1, mut s2) = (vec![0.0; channels.len()], vec![0.0; channels.len()]);
        for n in 0..sh.n {
            for (j, c) in channels.clone().enumerate() {
                let r = run(n, c);
                let z = relu_output.map(|z| &z[r.clone()]);
                let (a, b) = sums.grad(&dy[r.clone()], &x[r], z, mean[c]);
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
                let (gs, xs) = (&dy[r.clone()], &x[r.clone()]);
                match relu_output {
                    Some(z) => out.extend(
                        gs.iter()
                            .zip(xs)
                            .zip(&z[r])
                            .map(|((&g, &v), &z)| a * relu_grad_value(g, z) + p * (v - m) + q),
                    ),
                    None => out.extend(gs.iter().zip(xs).map(|(&g, &v)| a * g + p * (v - m) + q)),
                }
            }
        }
        s1.into_iter().zip(s2).collect::<Vec<_>>()
    })?;
    let (sum_dy, sum_dy_xmu) = sums.into_iter().flatten().unzip();
    Ok((dx, sum_dy, sum_dy_xmu))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let (dx, s1, s2) = channel_grad_sums_input(&dy, &x, None, sh, &mean, coef).unwrap();
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
    fn masked_backward_is_the_backward_of_the_masked_gradient() {
        for (n, c, s) in FUSED_SHAPES {
            let sh = NcsShape { n, c, s };
            let x = sample(sh.numel(), 3 + n as u64);
            let dy = sample(sh.numel(), 4 + c as u64);
            // A relu output: zero about half the time, positive elsewhere.
            let z: Vec<f32> = sample(sh.numel(), 5)
                .iter()
                .map(|&v| (v - 1.5).max(0.0))
                .collect();
            let mean: Vec<f64> = (0..c).map(|ch| ch as f64 * 0.5 - 0.25).collect();
            let coef = |c: usize, s1: f64, s2: f64| (1.5 - c as f64 * 0.1, -s2 / 64.0, -s1 / 64.0);
            let masked: Vec<f32> = dy
                .iter()
                .zip(&z)
                .map(|(&g, &z)| relu_grad_value(g, z))
                .collect();
            let want = channel_grad_sums_input(&masked, &x, None, sh, &mean, coef).unwrap();
            let got = channel_grad_sums_input(&dy, &x, Some(&z), sh, &mean, coef).unwrap();
            assert_eq!((&got.1, &got.2), (&want.1, &want.2), "{sh:?}");
            assert!(
                got.0
                    .iter()
                    .zip(&want.0)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{sh:?}"
            );
            assert!(z.contains(&0.0) && z.iter().any(|&v| v > 0.0));
        }
    }
}

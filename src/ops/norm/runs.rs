//! The inner loops of batch norm's per-channel sums: two f64 sums over one
//! contiguous run of a channel.
//!
//! Each sum keeps [`LANES`] independent f64 accumulators, added at the end
//! in a fixed tree, so the loop is not bound by the adds' latency and its
//! bits do not depend on how it is vectorised. The crate is built for
//! baseline x86-64, and there the compiler converts and subtracts one
//! element at a time and pairs each lane's two sums in one register (it
//! does the same when the loop is recompiled for AVX2 or AVX-512): about
//! one element per cycle, two thirds of a batch-norm forward on a
//! 64-channel 32×32 batch. For f32, the AVX-512 and AVX2 kernels below
//! hold the same lanes in vector registers and convert 8 or 4 elements per
//! instruction; they do the same IEEE operations per lane in the same
//! order, so every path gives the same bits (tested). The gradient sums
//! also come masked by a fused relu's output (`g` where the output is
//! positive, else `0·g`, as relu's backward computes it).

use crate::backend::cpu::simd::{self, VectorIsa};
use crate::ops::elementwise::cpu::relu_grad_value;
use crate::tensor::Float;

/// Independent f64 accumulators per sum.
const LANES: usize = 16;

/// The run loops for the instruction set [`RunSums::detect`] found. The
/// field is private, so a `RunSums` only ever names an instruction set
/// this CPU runs.
#[derive(Clone, Copy, Debug)]
pub(super) struct RunSums {
    isa: VectorIsa,
}

impl RunSums {
    /// The loops for the widest instruction set this CPU runs.
    pub(super) fn detect() -> RunSums {
        RunSums {
            isa: simd::detect(),
        }
    }

    /// `(Σ (x − k), Σ (x − k)²)` over one run, in f64.
    #[inline]
    pub(super) fn moments<T: Float>(self, xs: &[T], k: f64) -> (f64, f64) {
        let body = xs.len() / LANES * LANES;
        let (s1, s2) = match (self.isa, as_f32(&xs[..body])) {
            // SAFETY: `isa` came from `simd::detect`, which only names
            // instruction sets this CPU runs (see the struct docs).
            #[cfg(target_arch = "x86_64")]
            (VectorIsa::Avx512, Some(x)) => unsafe { x86::moments_avx512(x, k) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (VectorIsa::Avx2, Some(x)) => unsafe { x86::moments_avx2(x, k) },
            _ => moments_lanes(&xs[..body], k),
        };
        let (mut a, mut b) = (add_lanes(s1), add_lanes(s2));
        for &x in &xs[body..] {
            let d = x.to_f64() - k;
            a += d;
            b += d * d;
        }
        (a, b)
    }

    /// `(Σ g, Σ g·(x − m))` over one pair of runs of equal length, in f64,
    /// where `g` is `dy`, or (given a fused relu's output `z`) `dy` masked
    /// by `z > 0` as relu's backward masks it.
    #[inline]
    pub(super) fn grad<T: Float>(self, dy: &[T], xs: &[T], z: Option<&[T]>, m: f64) -> (f64, f64) {
        debug_assert_eq!(dy.len(), xs.len());
        let len = dy.len().min(xs.len()).min(z.map_or(usize::MAX, <[T]>::len));
        let body = len / LANES * LANES;
        let z_body = z.map(|z| &z[..body]);
        // `z` has the element type of `dy`: f32 exactly when `dy` is.
        let z32 = || z_body.map(|z| as_f32(z).expect("z has dy's element type"));
        let (s1, s2) = match (self.isa, as_f32(&dy[..body]), as_f32(&xs[..body])) {
            // SAFETY (both): as in `moments`.
            #[cfg(target_arch = "x86_64")]
            (VectorIsa::Avx512, Some(d), Some(x)) => unsafe { x86::grad_avx512(d, x, z32(), m) },
            #[cfg(target_arch = "x86_64")]
            (VectorIsa::Avx2, Some(d), Some(x)) => unsafe { x86::grad_avx2(d, x, z32(), m) },
            _ => grad_lanes(&dy[..body], &xs[..body], z_body, m),
        };
        let (mut a, mut b) = (add_lanes(s1), add_lanes(s2));
        for i in body..len {
            let g = match z {
                Some(z) => relu_grad_value(dy[i], z[i]),
                None => dy[i],
            }
            .to_f64();
            a += g;
            b += g * (xs[i].to_f64() - m);
        }
        (a, b)
    }
}

/// `s` as f32 when `T` is f32.
fn as_f32<T: 'static>(s: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// Adds the lanes pairwise in a fixed tree.
#[inline]
fn add_lanes(mut v: [f64; LANES]) -> f64 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            v[i] += v[i + width];
        }
    }
    v[0]
}

/// The lanes of `(Σ (x − k), Σ (x − k)²)` over `xs`, whose length is a
/// multiple of [`LANES`]: lane `i` sums elements `i, i + LANES, …`.
fn moments_lanes<T: Float>(xs: &[T], k: f64) -> ([f64; LANES], [f64; LANES]) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    for ch in xs.chunks_exact(LANES) {
        for i in 0..LANES {
            let d = ch[i].to_f64() - k;
            s1[i] += d;
            s2[i] += d * d;
        }
    }
    (s1, s2)
}

/// The lanes of `(Σ g, Σ g·(x − m))`, as [`moments_lanes`], with `g` as
/// in [`RunSums::grad`].
fn grad_lanes<T: Float>(
    dy: &[T],
    xs: &[T],
    z: Option<&[T]>,
    m: f64,
) -> ([f64; LANES], [f64; LANES]) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let lanes = dy.chunks_exact(LANES).zip(xs.chunks_exact(LANES));
    match z {
        None => {
            for (dl, xl) in lanes {
                for i in 0..LANES {
                    let g = dl[i].to_f64();
                    s1[i] += g;
                    s2[i] += g * (xl[i].to_f64() - m);
                }
            }
        }
        Some(z) => {
            for ((dl, xl), zl) in lanes.zip(z.chunks_exact(LANES)) {
                for i in 0..LANES {
                    let g = relu_grad_value(dl[i], zl[i]).to_f64();
                    s1[i] += g;
                    s2[i] += g * (xl[i].to_f64() - m);
                }
            }
        }
    }
    (s1, s2)
}

/// The f32 lane loops in vector registers: lanes `0..8` and `8..16` in two
/// zmm registers per sum (AVX-512), or four ymm registers of 4 lanes
/// (AVX2). Inputs' lengths are multiples of [`LANES`].
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use std::arch::x86_64::*;

    type Lanes = ([f64; LANES], [f64; LANES]);

    #[target_feature(enable = "avx512f")]
    pub(super) fn moments_avx512(xs: &[f32], k: f64) -> Lanes {
        let kv = _mm512_set1_pd(k);
        let [mut a0, mut a1, mut b0, mut b1] = [_mm512_setzero_pd(); 4];
        for ch in xs.chunks_exact(LANES) {
            // SAFETY: `ch` holds 16 f32, two unaligned loads of 8.
            let (lo, hi) = unsafe {
                (
                    _mm256_loadu_ps(ch.as_ptr()),
                    _mm256_loadu_ps(ch[8..].as_ptr()),
                )
            };
            let d0 = _mm512_sub_pd(_mm512_cvtps_pd(lo), kv);
            let d1 = _mm512_sub_pd(_mm512_cvtps_pd(hi), kv);
            a0 = _mm512_add_pd(a0, d0);
            a1 = _mm512_add_pd(a1, d1);
            b0 = _mm512_add_pd(b0, _mm512_mul_pd(d0, d0));
            b1 = _mm512_add_pd(b1, _mm512_mul_pd(d1, d1));
        }
        (store512(a0, a1), store512(b0, b1))
    }

    /// The lanes of `(Σ g, Σ g·(x − m))` with `g` = `dy`, or `dy` masked by
    /// `z > 0` given a fused relu's output `zs` (`dy` where `z > 0`, else
    /// `0·dy`, in f32 as the portable loop computes it).
    #[target_feature(enable = "avx512f")]
    pub(super) fn grad_avx512(dy: &[f32], xs: &[f32], zs: Option<&[f32]>, m: f64) -> Lanes {
        let (mv, zero) = (_mm512_set1_pd(m), _mm512_setzero_ps());
        let [mut a0, mut a1, mut b0, mut b1] = [_mm512_setzero_pd(); 4];
        let lanes = dy.chunks_exact(LANES).zip(xs.chunks_exact(LANES));
        for (k, (dl, xl)) in lanes.enumerate() {
            // SAFETY: `dl` and `xl` hold 16 f32 each.
            let (mut d, x0, x1) = unsafe {
                (
                    _mm512_loadu_ps(dl.as_ptr()),
                    _mm512_cvtps_pd(_mm256_loadu_ps(xl.as_ptr())),
                    _mm512_cvtps_pd(_mm256_loadu_ps(xl[8..].as_ptr())),
                )
            };
            if let Some(zs) = zs {
                // SAFETY: `zs` is as long as `dy`, so it holds these 16 f32.
                let z = unsafe { _mm512_loadu_ps(zs[k * LANES..][..LANES].as_ptr()) };
                let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(z, zero);
                d = _mm512_mask_blend_ps(keep, _mm512_mul_ps(d, zero), d);
            }
            let g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
            let g1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(d),
            )));
            a0 = _mm512_add_pd(a0, g0);
            a1 = _mm512_add_pd(a1, g1);
            b0 = _mm512_add_pd(b0, _mm512_mul_pd(g0, _mm512_sub_pd(x0, mv)));
            b1 = _mm512_add_pd(b1, _mm512_mul_pd(g1, _mm512_sub_pd(x1, mv)));
        }
        (store512(a0, a1), store512(b0, b1))
    }

    #[target_feature(enable = "avx512f")]
    fn store512(lo: __m512d, hi: __m512d) -> [f64; LANES] {
        let mut v = [0.0; LANES];
        // SAFETY: `v` holds 16 f64, two unaligned stores of 8.
        unsafe {
            _mm512_storeu_pd(v.as_mut_ptr(), lo);
            _mm512_storeu_pd(v[8..].as_mut_ptr(), hi);
        }
        v
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn moments_avx2(xs: &[f32], k: f64) -> Lanes {
        let kv = _mm256_set1_pd(k);
        let (mut a, mut b) = ([_mm256_setzero_pd(); 4], [_mm256_setzero_pd(); 4]);
        for ch in xs.chunks_exact(LANES) {
            for j in 0..4 {
                // SAFETY: `ch` holds 16 f32; this loads 4 of them.
                let v = unsafe { _mm_loadu_ps(ch[4 * j..].as_ptr()) };
                let d = _mm256_sub_pd(_mm256_cvtps_pd(v), kv);
                a[j] = _mm256_add_pd(a[j], d);
                b[j] = _mm256_add_pd(b[j], _mm256_mul_pd(d, d));
            }
        }
        (store256(a), store256(b))
    }

    /// [`grad_avx512`] on AVX2: four ymm registers of 4 lanes per sum.
    #[target_feature(enable = "avx2")]
    pub(super) fn grad_avx2(dy: &[f32], xs: &[f32], zs: Option<&[f32]>, m: f64) -> Lanes {
        let (mv, zero) = (_mm256_set1_pd(m), _mm_setzero_ps());
        let (mut a, mut b) = ([_mm256_setzero_pd(); 4], [_mm256_setzero_pd(); 4]);
        let lanes = dy.chunks_exact(LANES).zip(xs.chunks_exact(LANES));
        for (k, (dl, xl)) in lanes.enumerate() {
            for j in 0..4 {
                // SAFETY: `dl` and `xl` hold 16 f32; this loads 4 of each.
                let (mut d, x) = unsafe {
                    (
                        _mm_loadu_ps(dl[4 * j..].as_ptr()),
                        _mm256_cvtps_pd(_mm_loadu_ps(xl[4 * j..].as_ptr())),
                    )
                };
                if let Some(zs) = zs {
                    // SAFETY: `zs` is as long as `dy`, so it holds these 4 f32.
                    let z = unsafe { _mm_loadu_ps(zs[k * LANES + 4 * j..][..4].as_ptr()) };
                    d = _mm_blendv_ps(_mm_mul_ps(d, zero), d, _mm_cmpgt_ps(z, zero));
                }
                let g = _mm256_cvtps_pd(d);
                a[j] = _mm256_add_pd(a[j], g);
                b[j] = _mm256_add_pd(b[j], _mm256_mul_pd(g, _mm256_sub_pd(x, mv)));
            }
        }
        (store256(a), store256(b))
    }

    #[target_feature(enable = "avx2")]
    fn store256(parts: [__m256d; 4]) -> [f64; LANES] {
        let mut v = [0.0; LANES];
        for (j, p) in parts.into_iter().enumerate() {
            // SAFETY: `v` holds 16 f64; this stores 4 of them.
            unsafe { _mm256_storeu_pd(v[4 * j..].as_mut_ptr(), p) };
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable sums of one run (the baseline path).
    fn portable_moments<T: Float>(xs: &[T], k: f64) -> (f64, f64) {
        RunSums {
            isa: VectorIsa::Baseline,
        }
        .moments(xs, k)
    }

    fn portable_grad<T: Float>(dy: &[T], xs: &[T], m: f64) -> (f64, f64) {
        RunSums {
            isa: VectorIsa::Baseline,
        }
        .grad(dy, xs, None, m)
    }

    /// Every instruction set this CPU runs gives the baseline loops' bits,
    /// on runs whose lengths leave tails, with values of mixed magnitude.
    #[test]
    fn every_instruction_set_gives_the_baseline_bits() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0)
            .collect();
        let dy: Vec<f32> = (0..1000)
            .map(|i| ((i * 104_729) % 997) as f32 * 1e-3 - 0.4)
            .collect();
        let x64: Vec<f64> = xs.iter().map(|&v| v as f64 * 1.000_000_1).collect();
        // A relu output: zero, positive, and a NaN (masked out: NaN > 0 is false).
        let mut zs: Vec<f32> = xs.iter().map(|&v| v.max(0.0)).collect();
        zs[5] = f32::NAN;
        for isa in [VectorIsa::Avx512, VectorIsa::Avx2, VectorIsa::Baseline] {
            if !isa.is_available() {
                continue;
            }
            let sums = RunSums { isa };
            for len in [0, 1, 15, 16, 17, 100, 1000] {
                let (x, d) = (&xs[..len], &dy[..len]);
                assert_eq!(
                    sums.moments(x, 3.25),
                    portable_moments(x, 3.25),
                    "{isa:?} {len}"
                );
                assert_eq!(
                    sums.grad(d, x, None, -1.5),
                    portable_grad(d, x, -1.5),
                    "{isa:?} {len}"
                );
                let z = &zs[..len];
                let masked = RunSums {
                    isa: VectorIsa::Baseline,
                }
                .grad(d, x, Some(z), -1.5);
                assert_eq!(
                    sums.grad(d, x, Some(z), -1.5),
                    masked,
                    "{isa:?} {len} masked"
                );
                let x64 = &x64[..len];
                assert_eq!(sums.moments(x64, 0.5), portable_moments(x64, 0.5));
            }
        }
    }

    /// Lane `i` of the vector kernels is lane `i` of the portable loop: a
    /// run with one non-zero element per lane position gives that lane's
    /// value in the right slot.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_lanes_are_the_portable_lanes() {
        let xs: Vec<f32> = (0..2 * LANES).map(|i| (i * i) as f32 + 0.5).collect();
        let dy: Vec<f32> = (0..2 * LANES).map(|i| 1.0 - i as f32).collect();
        let zs: Vec<f32> = (0..2 * LANES).map(|i| (i % 3) as f32 - 0.5).collect();
        let want = (
            moments_lanes(&xs, 2.0),
            grad_lanes(&dy, &xs, None, 1.0),
            grad_lanes(&dy, &xs, Some(&zs), 1.0),
        );
        if VectorIsa::Avx512.is_available() {
            // SAFETY: checked just above.
            let got = unsafe {
                (
                    x86::moments_avx512(&xs, 2.0),
                    x86::grad_avx512(&dy, &xs, None, 1.0),
                    x86::grad_avx512(&dy, &xs, Some(&zs), 1.0),
                )
            };
            assert_eq!(got, want);
        }
        if VectorIsa::Avx2.is_available() {
            // SAFETY: checked just above.
            let got = unsafe {
                (
                    x86::moments_avx2(&xs, 2.0),
                    x86::grad_avx2(&dy, &xs, None, 1.0),
                    x86::grad_avx2(&dy, &xs, Some(&zs), 1.0),
                )
            };
            assert_eq!(got, want);
        }
    }

    #[test]
    fn sums_are_the_definition() {
        let xs: Vec<f64> = (0..37).map(|i| i as f64 * 0.5 - 3.0).collect();
        let dy: Vec<f64> = (0..37).map(|i| 1.0 - i as f64 * 0.25).collect();
        let (a, b) = portable_moments(&xs, 1.0);
        assert_eq!(a, xs.iter().map(|x| x - 1.0).sum::<f64>());
        assert_eq!(b, xs.iter().map(|x| (x - 1.0) * (x - 1.0)).sum::<f64>());
        let (g, h) = portable_grad(&dy, &xs, 2.0);
        assert_eq!(g, dy.iter().sum::<f64>());
        assert_eq!(
            h,
            dy.iter().zip(&xs).map(|(d, x)| d * (x - 2.0)).sum::<f64>()
        );
    }
}

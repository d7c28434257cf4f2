//! Column-split copies of input planes, read by the gathers of the
//! per-image weight gradients of stride-2 layers on AVX-512
//! ([`Source::SplitColumns`]).
//!
//! At a horizontal stride of 2 a kernel tap reads every other input
//! column of a row: from the planes as they lie, a masked pair of vectors
//! and a permute that keeps its even lanes per 16 pixels. With each row
//! copied as its values at even columns followed by those at odd columns,
//! the columns a tap reads are consecutive (all even or all odd), so the
//! gather is one masked load per part, as at stride 1. The copy is one
//! pass over an image's planes (two loads, two permutes and two stores per
//! 32 values of a row, or a load, a permute and a store per 16 values for
//! rows of 2, 4, 8 or 16) into a buffer that stays in cache for the
//! image's gathers, which read each value about `kh·kw / 4` times.
//!
//! Measured (one thread, AMD EPYC, batch 32): the weight gradients of
//! 64→128 at 32² and 56² and of 128→128 at 56² 3–5 % faster, the others
//! level. Not taken for the forward, where the copy pays the cache misses
//! on the input that the gathers paid before and the gathers saved less
//! (CIFAR's stride-2 forwards 1–3 % slower), nor for the transposed
//! weight gradient (the 16→32 layer 4 % slower), nor with AVX2 (6 %
//! slower).

use super::super::geom::ConvGeom;
use crate::ops::matmul::sgemm::Kernel;
use std::arch::x86_64::*;

/// How the input that a plan's loads read is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The NCHW planes as they are.
    Planes,
    /// Each row's even columns, then its odd ones ([`split_columns`]),
    /// for a horizontal stride of 2: a tap's columns are then
    /// consecutive, and each part is one masked load, as at stride 1.
    SplitColumns,
}

/// Whether the gathers of `g` through `gather::Plans::per_image` read a
/// column-split copy of the input: at a horizontal stride of 2 with more
/// than one kernel column, whose gathers read each input value more than
/// once (a 1×1 stride-2 layer reads half of each row it reads, once), on
/// the AVX-512 kernel (see the module doc).
pub(super) fn reads_split_columns(g: &ConvGeom) -> bool {
    g.stride.1 == 2 && g.kw > 1 && Kernel::current() == Kernel::Avx512
}

/// The lanes `l < lanes` with `0 ≤ ix0 + 2l < w`, as a bit mask.
pub(super) fn inside_every_other(ix0: isize, lanes: usize, w: usize) -> u32 {
    // ix0 + 2l ≥ 0 from l = ⌈-ix0 / 2⌉ on; ix0 + 2l < w below ⌈(w - ix0) / 2⌉.
    let lo = (1 - ix0).div_euclid(2).clamp(0, lanes as isize);
    let hi = (w as isize - ix0 + 1)
        .div_euclid(2)
        .clamp(0, lanes as isize);
    if hi <= lo {
        0
    } else {
        ((1u64 << hi) - (1u64 << lo)) as u32
    }
}

/// Where input column `ix` (possibly outside the row, `-w ≤ ix < 2w`) of
/// a row of `w` values lies in its column-split copy, from the row's
/// start: `ix / 2` among the even columns, or after the `⌈w/2⌉` even ones
/// for an odd column. Consecutive even (or odd) columns lie one apart.
pub(super) fn split_position(ix: isize, w: usize) -> isize {
    ix.div_euclid(2) + ix.rem_euclid(2) * w.div_ceil(2) as isize
}

/// Copies `x`, rows of `w` values, into `out` with each row's values at
/// even columns first (positions `0 .. ⌈w/2⌉`), then those at odd ones,
/// with AVX-512 ([`reads_split_columns`]).
///
/// # Panics
/// When `out` and `x` differ in length, the length is not a multiple of
/// `w`, or the CPU does not run AVX-512.
pub(super) fn split_columns(x: &[f32], w: usize, out: &mut [f32]) {
    assert!(w > 0 && x.len().is_multiple_of(w) && out.len() == x.len());
    assert!(Kernel::Avx512.cpu_has());
    let (src, dst, rows) = (x.as_ptr(), out.as_mut_ptr(), x.len() / w);
    // Safety: the CPU runs AVX-512; the copies read and write `rows` rows
    // of `w` values, the lengths checked above.
    unsafe {
        if 16 % w == 0 && w.is_multiple_of(2) {
            short_rows_avx512(src, w, x.len(), dst)
        } else {
            rows_avx512(src, w, rows, dst)
        }
    }
}

/// [`split_columns`] for rows of 2, 4, 8 or 16 values: 16 values (whole
/// rows) at a time, one permute each.
///
/// # Safety
/// `src` and `dst` hold `len` values; `w` is 2, 4, 8 or 16 and divides
/// `len`; the CPU runs AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn short_rows_avx512(src: *const f32, w: usize, len: usize, dst: *mut f32) {
    // Lane j takes, in its row of w lanes, the even column 2p when p < w/2
    // and the odd column 2(p - w/2) + 1 after.
    let half = w / 2;
    let index: [i32; 16] = std::array::from_fn(|j| {
        let (row, p) = (j / w * w, j % w);
        (row + if p < half { 2 * p } else { 2 * (p - half) + 1 }) as i32
    });
    let index = unsafe { _mm512_loadu_si512(index.as_ptr().cast()) };
    let mut at = 0;
    while at < len {
        // A partial last vector holds whole rows (16 and len are multiples
        // of w), so its lanes take values from their own rows only.
        let lanes = ((1u32 << (len - at).min(16)) - 1) as __mmask16;
        unsafe {
            let v = _mm512_maskz_loadu_ps(lanes, src.add(at));
            _mm512_mask_storeu_ps(dst.add(at), lanes, _mm512_permutexvar_ps(index, v));
        }
        at += 16;
    }
}

/// [`split_columns`] row by row in AVX-512: 32 values of a row at a time
/// (a masked pair of loads), their even and odd lanes permuted out and
/// stored, masked, at their halves of the row.
///
/// # Safety
/// `src` and `dst` hold `rows·w` values; the CPU runs AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(src: *const f32, w: usize, rows: usize, dst: *mut f32) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    let half = w.div_ceil(2);
    for r in 0..rows {
        let (from, to) = unsafe { (src.add(r * w), dst.add(r * w)) };
        for c0 in (0..w).step_by(32) {
            let n = w - c0;
            // Safety: lanes below n lie in the row (masked; a load without
            // lanes reads nothing, its address wrapping); c0 is even,
            // so the chunk's even values go to c0/2 on, its odd ones to
            // half + c0/2 on, n.div_ceil(2) and n/2 of them, in the row.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(mask(n), from.add(c0));
                let hi =
                    _mm512_maskz_loadu_ps(mask(n.saturating_sub(16)), from.wrapping_add(c0 + 16));
                let evens = _mm512_permutex2var_ps(lo, even, hi);
                let odds = _mm512_permutex2var_ps(lo, odd, hi);
                _mm512_mask_storeu_ps(to.add(c0 / 2), mask(n.div_ceil(2)), evens);
                _mm512_mask_storeu_ps(to.add(half + c0 / 2), mask(n / 2), odds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every width from 1 to 70 (odd ones, the short-row widths, several
    /// chunks per row), against the definition.
    #[test]
    fn rows_are_split_into_even_then_odd_columns() {
        if !Kernel::Avx512.cpu_has() {
            eprintln!("skipped: the CPU does not run AVX-512");
            return;
        }
        for w in 1..=70 {
            for rows in [1, 3, 8] {
                let x: Vec<f32> = (0..rows * w).map(|i| i as f32).collect();
                let mut out = vec![f32::NAN; x.len()];
                split_columns(&x, w, &mut out);
                for r in 0..rows {
                    for ix in 0..w {
                        let at = r * w + split_position(ix as isize, w) as usize;
                        assert_eq!(out[at], x[r * w + ix], "w {w}, row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn positions_of_columns_outside_the_row_continue_their_parity() {
        // Column -1 lies just before column 1, column w just after w - 2.
        assert_eq!(split_position(-1, 8), 3);
        assert_eq!(split_position(1, 8), 4);
        assert_eq!(split_position(-1, 7), 3);
        assert_eq!(split_position(8, 8), 4);
        assert_eq!(split_position(6, 8), 3);
    }
}

//! The row mix of the stride-2 input transform in AVX-512: seven tiles
//! at a time, whose 29 columns two vector loads cover, split into the
//! five columns of each tile by permutes.

use std::arch::x86_64::*;

/// Tiles mixed per step: tile `t` of a group reads columns `4t … 4t + 4`,
/// so seven tiles read 29 columns, within the 32 lanes of two vectors.
const GROUP: usize = 7;

/// Whether the CPU runs (and the ISA limit allows) this module.
pub(super) fn available() -> bool {
    crate::backend::cpu::simd::VectorIsa::Avx512.is_available()
}

/// The first `n` lanes.
fn first_lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// The lanes of a 16-column load starting at column `x0` that lie inside
/// a row of `width` columns.
fn inside(x0: isize, width: usize) -> __mmask16 {
    let lo = (-x0).clamp(0, 16) as usize;
    let hi = (width as isize - x0).clamp(0, 16) as usize;
    first_lanes(hi) & !first_lanes(lo)
}

/// As `transforms::mix_row` for f32 (same values, same order of the one
/// subtraction each output takes): tile `tx` reads columns `4·tx − pw …`
/// of `line` as `d0…d4` (0 outside it) and writes `d0 − d2, d2, d4 − d2,
/// d1, d3` at `dst[offsets[j] + tx]`.
///
/// # Safety
/// The CPU must run AVX-512F ([`available`]).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn mix_row(
    line: &[f32],
    pw: usize,
    tw: usize,
    dst: &mut [f32],
    offsets: [usize; 5],
) {
    assert!(
        offsets.iter().all(|&o| o + tw <= dst.len()),
        "mix_row: outputs outside dst"
    );
    // Lane t of pick q takes column 4t + q of the 32 loaded (lanes past
    // the group's seven are not stored).
    let picks: [__m512i; 5] = std::array::from_fn(|q| {
        let lanes: [i32; 16] = std::array::from_fn(|t| (4 * t + q).min(31) as i32);
        // SAFETY: 16 i32 read from a 16-element array.
        unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
    });
    let (w, at) = (line.len(), line.as_ptr());
    for t0 in (0..tw).step_by(GROUP) {
        let x0 = (4 * t0) as isize - pw as isize;
        // SAFETY: masked loads touch only the lanes whose columns lie
        // inside `line` (`inside`); the others read as 0 and do not fault.
        let (lo, hi) = unsafe {
            (
                _mm512_maskz_loadu_ps(inside(x0, w), at.wrapping_offset(x0)),
                _mm512_maskz_loadu_ps(inside(x0 + 16, w), at.wrapping_offset(x0 + 16)),
            )
        };
        let d: [__m512; 5] = std::array::from_fn(|q| _mm512_permutex2var_ps(lo, picks[q], hi));
        let out = [
            _mm512_sub_ps(d[0], d[2]),
            d[2],
            _mm512_sub_ps(d[4], d[2]),
            d[1],
            d[3],
        ];
        let keep = first_lanes(GROUP.min(tw - t0));
        for (o, v) in offsets.iter().zip(out) {
            // SAFETY: lanes t0 .. t0 + keep of output o are inside `dst`
            // (asserted above: o + tw ≤ dst.len()).
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(o + t0), keep, v) };
        }
    }
}

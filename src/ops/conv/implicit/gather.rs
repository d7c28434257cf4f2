//! The gathers of the implicit-GEMM convolution: one row of the unrolled
//! matrix (one kernel tap of one input channel) over a run of output
//! pixels, read straight from the NCHW input with AVX-512 masked loads.
//!
//! A run of output pixels is cut into [`Segment`]s, each inside one output
//! row of one image and at most 16 pixels long, so that for a given tap a
//! segment reads one input row: contiguous for stride 1, every other value
//! for stride 2 (two loads and one permute that keeps the even lanes).
//! Masks zero the lanes that fall in the padding; a segment whose input
//! row is outside the plane is all zeros.

use super::super::geom::ConvGeom;
use std::arch::x86_64::*;

/// Pixels of one segment at most: one vector.
const LANES: usize = 16;

/// A run of at most [`LANES`] output pixels inside one output row of one
/// image, written to positions `dst .. dst + len` of a gathered run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    dst: usize,
    len: usize,
    /// Offset in `x` of the image's first channel of the group.
    base: usize,
    /// Input row of kernel row 0: `oy·sh − ph`.
    y0: isize,
    /// Input column of kernel column 0 at the first pixel: `ox·sw − pw`.
    x0: isize,
}

/// Cuts output pixels `q0 .. q0 + len` into segments, `out` replaced.
/// Pixels are numbered across images, `q = i·oh·ow + oy·ow + ox`; image
/// `i` starts at `base0 + i·image_len` in `x`. Segment `dst`s count from 0
/// (pixel `q0`).
pub(super) fn segments(g: &ConvGeom, base0: usize, q0: usize, len: usize, out: &mut Vec<Segment>) {
    out.clear();
    let cols = g.col_cols();
    let (mut q, end) = (q0, q0 + len);
    while q < end {
        let (i, p) = (q / cols, q % cols);
        let (oy, ox) = (p / g.ow, p % g.ow);
        let run = (g.ow - ox).min(end - q).min(LANES);
        out.push(Segment {
            dst: q - q0,
            len: run,
            base: base0 + i * g.image_len(),
            y0: (oy * g.stride.0) as isize - g.padding.0 as isize,
            x0: (ox * g.stride.1) as isize - g.padding.1 as isize,
        });
        q += run;
    }
}

/// One row of the unrolled matrix: input channel `c` (of the group) and
/// kernel tap `(ki, kj)`, stepped through the rows in order by [`Tap::next`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Tap {
    /// `c·h·w`: the channel's plane in an image.
    plane: usize,
    ki: usize,
    kj: usize,
}

impl Tap {
    /// The tap of unrolled row `k = (c·kh + ki)·kw + kj`.
    pub(super) fn at(g: &ConvGeom, k: usize) -> Tap {
        let taps = g.kh * g.kw;
        Tap {
            plane: k / taps * g.h * g.w,
            ki: k % taps / g.kw,
            kj: k % g.kw,
        }
    }

    /// The tap of the next row.
    pub(super) fn next(&mut self, g: &ConvGeom) {
        self.kj += 1;
        if self.kj == g.kw {
            self.kj = 0;
            self.ki += 1;
            if self.ki == g.kh {
                self.ki = 0;
                self.plane += g.h * g.w;
            }
        }
    }
}

/// Whether [`gather`] handles the horizontal stride `sw`.
pub(super) fn stride_supported(sw: usize) -> bool {
    matches!(sw, 1 | 2)
}

/// Writes the values of `tap` at the pixels of `segs` into `dst`:
/// `dst[s.dst + l] = x[s.base + plane + iy·w + ix]` with `iy = s.y0 +
/// ki·dh`, `ix = s.x0 + l·sw + kj·dw`, and 0 where `(iy, ix)` is outside
/// the plane. Positions of `dst` that no segment covers are left as they
/// are.
///
/// # Panics
/// When a segment reaches past `dst`, or a segment's image plane past
/// `x` (segments built by [`segments`] for images of the geometry whose
/// `x` passed its operand checks never do), or the stride is not
/// [`stride_supported`]. Segments exist only as [`segments`] builds
/// them, in pixel order, so the last one bounds them all.
pub(super) fn gather(x: &[f32], g: &ConvGeom, tap: Tap, segs: &[Segment], dst: &mut [f32]) {
    let Some(last) = segs.last() else { return };
    let plane = g.h * g.w;
    assert!(
        last.dst + last.len <= dst.len(),
        "segment past the gathered run"
    );
    debug_assert!(segs
        .windows(2)
        .all(|p| p[0].base <= p[1].base && p[0].dst < p[1].dst));
    // Segments come in pixel order, so the last has the largest base.
    assert!(
        last.base + tap.plane + plane <= x.len(),
        "segment past the input"
    );
    assert!(stride_supported(g.stride.1) && super::available());
    // Safety: AVX-512F is available; every segment writes inside `dst`
    // and reads (see `gather_avx512`) inside its channel's plane, which
    // lies inside `x` (checked above).
    unsafe { gather_avx512(x.as_ptr(), g, tap, segs, dst.as_mut_ptr()) }
}

/// The lanes `l < lanes` with `0 ≤ ix0 + l < w`, as a bit mask.
fn inside(ix0: isize, lanes: usize, w: usize) -> u32 {
    let lo = (-ix0).clamp(0, lanes as isize);
    let hi = (w as isize - ix0).clamp(0, lanes as isize);
    if hi <= lo {
        0
    } else {
        ((1u64 << hi) - (1u64 << lo)) as u32
    }
}

/// [`gather`] in AVX-512.
///
/// # Safety
/// AVX-512F; each segment's `dst .. dst + len` is writable, and its
/// channel plane `base + plane .. + h·w` readable; stride 1 or 2.
#[target_feature(enable = "avx512f")]
unsafe fn gather_avx512(x: *const f32, g: &ConvGeom, tap: Tap, segs: &[Segment], dst: *mut f32) {
    // Lane l of the permute takes lane 2l of the 32 lanes (lo, hi).
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let (dy, dx) = (
        (tap.ki * g.dilation.0) as isize,
        (tap.kj * g.dilation.1) as isize,
    );
    for s in segs {
        let keep = ((1u32 << s.len) - 1) as __mmask16;
        // Safety: `dst + s.dst .. + s.len` is writable (the caller's contract).
        let out = unsafe { dst.add(s.dst) };
        let iy = s.y0 + dy;
        if iy < 0 || iy >= g.h as isize {
            unsafe { _mm512_mask_storeu_ps(out, keep, _mm512_setzero_ps()) };
            continue;
        }
        // The input row, and the position of the segment's first value in
        // it (negative in the left padding). Only lanes whose position
        // lies inside the row are loaded, so the addresses of the others,
        // formed with wrapping arithmetic, are never read.
        let row = unsafe { x.add(s.base + tap.plane + iy as usize * g.w) };
        let ix0 = s.x0 + dx;
        let v = if g.stride.1 == 1 {
            let m = inside(ix0, s.len, g.w) as __mmask16;
            unsafe { _mm512_maskz_loadu_ps(m, row.wrapping_offset(ix0)) }
        } else {
            let m = inside(ix0, 2 * s.len, g.w);
            let lo = unsafe { _mm512_maskz_loadu_ps(m as __mmask16, row.wrapping_offset(ix0)) };
            let hi = unsafe {
                _mm512_maskz_loadu_ps((m >> 16) as __mmask16, row.wrapping_offset(ix0 + 16))
            };
            _mm512_permutex2var_ps(lo, even, hi)
        };
        unsafe { _mm512_mask_storeu_ps(out, keep, v) };
    }
}

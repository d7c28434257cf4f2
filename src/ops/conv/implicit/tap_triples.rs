//! The packed left operand of the transposed weight gradient
//! (`dWᵀ = X · dYᵀ`), built straight from an image's planes for 3-wide
//! kernels on AVX-512, with no unrolled copy of `X` in between.
//!
//! The GEMM multiplies micro-panels of [`MR`] = 12 rows of `X` (unrolled
//! rows: input channel, kernel row, kernel column) packed pixel by pixel:
//! 12 values per output pixel. Gathering `X`'s rows first and packing
//! them after (a transpose of 12 rows) took 29 % of ResNet-8/20's 16→32
//! stride-2 weight gradient. With a 3-wide kernel a panel's 12 rows are 4
//! triples of taps (one channel and kernel row, kernel columns 0, 1, 2),
//! and a triple's values at 4 consecutive output pixels of a row lie in
//! one window of `3·sw + 3` consecutive input values (at most 9): one
//! masked load (lanes outside the plane are zeros). A chunk of 4 pixels
//! is 48 packed values, three vectors, each two two-source permutes with
//! fixed indices (triples 0 and 1 in one, 2 and 3 in the other) and a
//! blend.
//!
//! Measured (batch 32, AMD EPYC, alternating runs): that weight gradient
//! 7–8 % faster on one and two threads (0.95 → 0.88 ms on one). The
//! packing is still a fifth of its time, most of it waiting on the
//! windows' loads (`perf`); prefetching the next panel's windows or the
//! next image measured slower. AVX2 keeps the gather and the transposing
//! pack: its permutes take one 8-lane source, and a packer of masked
//! 4-lane loads per pixel and triple measured 1.64× slower.
//!
//! The panels hold the values the gathers and the packer wrote, in the
//! same places, so the product sums the same terms in the same order:
//! the same bits (tested).

use super::super::geom::ConvGeom;
use super::gather::inside;
use crate::ops::matmul::sgemm::{ABlock, Kernel, MR};
use std::arch::x86_64::*;

/// Kernel columns of the layers this module packs.
const KW: usize = 3;

/// Output pixels per chunk: `CHUNK · MR` = 48 packed values, three
/// vectors; a triple's window at stride 2 is 9 values, one vector.
const CHUNK: usize = 4;

/// Packed vectors of a full chunk: `CHUNK · MR / 16`.
const VECTORS: usize = CHUNK * MR / 16;

/// Whether the transposed weight gradient of `g` packs `X` here: a kernel
/// 3 wide without horizontal dilation, a horizontal stride of 1 or 2, and
/// the AVX-512 kernel.
pub(super) fn applies(g: &ConvGeom) -> bool {
    g.kw == KW
        && g.dilation.1 == 1
        && matches!(g.stride.1, 1 | 2)
        && Kernel::current() == Kernel::Avx512
}

/// Writes the block's micro-panels (`blk.mc` unrolled rows from
/// `blk.ic`, `blk.kc` pixels from `blk.pc`) of one image's group `x`
/// (its `cg` planes from the start) to `out`, as the sgemm packs them;
/// rows past the unrolled matrix's are zeros.
///
/// # Panics
/// Unless [`applies`], the block starts at a multiple of 3 rows and lies
/// inside the unrolled matrix, `x` holds the group's planes and `out` the
/// block.
pub(super) fn pack_block(x: &[f32], g: &ConvGeom, blk: &ABlock, out: &mut [f32]) {
    assert!(applies(g) && MR.is_multiple_of(KW) && blk.ic.is_multiple_of(KW));
    assert!(blk.ic + blk.mc <= g.col_rows() && blk.pc + blk.kc <= g.col_cols());
    assert!(x.len() >= g.cg() * g.h * g.w && out.len() >= blk.mc.next_multiple_of(MR) * blk.kc);
    // Safety: AVX-512 (`applies`); the reads are masked to the planes of
    // `x`, and the writes stay inside the block's panels in `out`.
    unsafe { pack_avx512(x.as_ptr(), g, blk, out.as_mut_ptr()) }
}

/// The fixed permutes of a chunk. Triples 0 and 1 share a two-source
/// permute (window 0 in the low vector, window 1 in the high one), as do
/// triples 2 and 3: for output vector `v`, `indices[v]` names each lane's
/// window lane in its pair, and bit `l` of `upper[v]` says lane `l` comes
/// from the second pair.
struct Permutes {
    indices: [__m512i; VECTORS],
    upper: [u16; VECTORS],
}

impl Permutes {
    /// The permutes at horizontal stride `sw`: packed value `e` of a
    /// chunk is pixel `e / 12`'s row `e % 12`, triple `t = e % 12 / 3`'s
    /// kernel column `e % 3`: lane `sw·(e / 12) + e % 3` of window `t`.
    #[target_feature(enable = "avx512f")]
    fn new(sw: usize) -> Self {
        let mut indices = [_mm512_setzero_si512(); VECTORS];
        let mut upper = [0u16; VECTORS];
        for v in 0..VECTORS {
            let mut index = [0i32; 16];
            for (l, index) in index.iter_mut().enumerate() {
                let e = 16 * v + l;
                let (pixel, row) = (e / MR, e % MR);
                let triple = row / KW;
                *index = (sw * pixel + row % KW + 16 * (triple % 2)) as i32;
                upper[v] |= u16::from(triple >= 2) << l;
            }
            // Safety: 16 i32 read from the array.
            indices[v] = unsafe { _mm512_loadu_si512(index.as_ptr().cast()) };
        }
        Permutes { indices, upper }
    }
}

/// [`pack_block`] in AVX-512, panel by panel.
///
/// # Safety
/// As checked by [`pack_block`].
#[target_feature(enable = "avx512f")]
unsafe fn pack_avx512(x: *const f32, g: &ConvGeom, blk: &ABlock, out: *mut f32) {
    let permutes = Permutes::new(g.stride.1);
    for ir in (0..blk.mc).step_by(MR) {
        let panel = out.wrapping_add(ir * blk.kc);
        let first = (blk.ic + ir) / KW;
        // Safety: the caller's contract, for the panel's triples.
        unsafe {
            match (blk.mc - ir).min(MR) / KW {
                4 => pack_panel::<4>(x, g, blk, first, &permutes, panel),
                3 => pack_panel::<3>(x, g, blk, first, &permutes, panel),
                2 => pack_panel::<2>(x, g, blk, first, &permutes, panel),
                _ => pack_panel::<1>(x, g, blk, first, &permutes, panel),
            }
        }
    }
}

/// One micro-panel of [`pack_avx512`]: `T` triples of unrolled rows from
/// triple `first` (rows past them zeros), over the block's pixels.
///
/// # Safety
/// As checked by [`pack_block`], for the panel at `panel`.
#[target_feature(enable = "avx512f")]
unsafe fn pack_panel<const T: usize>(
    x: *const f32,
    g: &ConvGeom,
    blk: &ABlock,
    first: usize,
    permutes: &Permutes,
    panel: *mut f32,
) {
    let (sw, plane) = (g.stride.1, g.h * g.w);
    // Each triple's channel plane and kernel row.
    let source = |q: usize| ((q / g.kh * plane) as isize, q % g.kh);
    let sources: [(isize, usize); T] = std::array::from_fn(|t| source(first + t));
    let (mut oy, mut ox) = (blk.pc / g.ow, blk.pc % g.ow);
    let mut done = 0;
    while done < blk.kc {
        let pixels = CHUNK.min(g.ow - ox).min(blk.kc - done);
        let ix0 = (ox * sw) as isize - g.padding.1 as isize;
        // Window lanes read: (pixels - 1)·sw + 3, those inside the row.
        let inside = inside(ix0, (pixels - 1) * sw + KW, g.w);
        let iy0 = (oy * g.stride.0) as isize - g.padding.0 as isize;
        // The triples' windows, zeros past the panel's T.
        let windows: [__m512; 4] = std::array::from_fn(|t| {
            if t >= T {
                return _mm512_setzero_ps();
            }
            let (channel, ki) = sources[t];
            let iy = iy0 + (ki * g.dilation.0) as isize;
            if !(0..g.h as isize).contains(&iy) {
                return _mm512_setzero_ps();
            }
            let at = x.wrapping_offset(channel + iy * g.w as isize + ix0);
            // Safety: only lanes inside the row are read (masked).
            unsafe { _mm512_maskz_loadu_ps(inside as u16, at) }
        });
        let dst = panel.wrapping_add(done * MR);
        let values = pixels * MR;
        for v in 0..VECTORS {
            let index = permutes.indices[v];
            let low = _mm512_permutex2var_ps(windows[0], index, windows[1]);
            let upper = permutes.upper[v];
            let packed = if T > 2 {
                let high = _mm512_permutex2var_ps(windows[2], index, windows[3]);
                _mm512_mask_blend_ps(upper, low, high)
            } else {
                // The rows of triples 2 and 3 are past the matrix: zeros.
                _mm512_maskz_mov_ps(!upper, low)
            };
            // Safety: values 16v .. of the chunk, inside the panel.
            unsafe {
                if values >= 16 * (v + 1) {
                    _mm512_storeu_ps(dst.add(16 * v), packed);
                } else if values > 16 * v {
                    let keep = ((1u32 << (values - 16 * v)) - 1) as u16;
                    _mm512_mask_storeu_ps(dst.add(16 * v), keep, packed);
                }
            }
        }
        done += pixels;
        ox += pixels;
        if ox == g.ow {
            (oy, ox) = (oy + 1, 0);
        }
    }
}

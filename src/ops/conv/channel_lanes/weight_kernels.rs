//! The register-blocked kernels of the channel-lane weight gradient
//! (AVX-512 and AVX2, one body written once): for one input channel, the
//! taps of kernel rows `R0..R0 + KR` (all nine, or on AVX2 rows 0–1 and
//! row 2 in two passes) × `V` vectors of output channels, summed over
//! every output pixel of a group of images in registers and added to the
//! sums in memory.

use super::weight_grad::GRAD_BLOCK;
use super::TAPS;
use std::arch::x86_64::*;

/// One tile of the weight gradient: an input channel's planes of a group
/// of images, their transposed output gradients, and where the sums go.
pub(super) struct WeightTile {
    /// Images in the group.
    pub(super) images: usize,
    /// The input channel's plane (`h × w` values) in the group's first
    /// image; the next image's lies `x_image` values on.
    pub(super) x: *const f32,
    pub(super) x_image: usize,
    /// Input rows and columns.
    pub(super) h: usize,
    pub(super) w: usize,
    /// Output rows and columns.
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Vertical stride.
    pub(super) sh: usize,
    /// Whether the right kernel column of a row's last pixel lies on
    /// padding.
    pub(super) right: bool,
    /// The transposed output gradient of the group's first image at
    /// pixel 0, the tile's first output channel: pixel `p`'s channels at
    /// `dy + p·GRAD_BLOCK`; the next image's lie `dy_image` values on.
    pub(super) dy: *const f32,
    pub(super) dy_image: usize,
    /// The sums the tile adds to: tap `k`'s channels at `sums + k·tap`.
    pub(super) sums: *mut f32,
    /// Values from one tap's sums to the next.
    pub(super) tap: usize,
}

/// Generates one instruction set's kernels (see [`tile_avx512`]): the
/// tile, one output row of it, and a run of pixels of a row.
macro_rules! weight_kernels {
    ($(#[$doc:meta])* $tile:ident, $row:ident, $pixels:ident, $feature:literal, $vec:ty,
     $lanes:literal, $zero:ident, $load:ident, $set1:ident, $fmadd:ident, $add:ident,
     $store:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn $tile<
            const V: usize,
            const S: usize,
            const R0: usize,
            const KR: usize,
        >(
            t: &WeightTile,
        ) {
            let mut acc = [[$zero(); V]; TAPS];
            for m in 0..t.images {
                for oy in 0..t.oh {
                    // Input row under kernel row 1 (inside: padding 1 and
                    // a 3-high kernel put the last one at sh·(oh − 1) < h).
                    let mid = oy * t.sh;
                    let x = t.x.wrapping_add(m * t.x_image + mid * t.w).wrapping_sub(t.w + 1);
                    // Safety (this block): the contract.
                    unsafe {
                        let dy = t.dy.add(m * t.dy_image + oy * t.ow * GRAD_BLOCK);
                        match (mid >= 1, mid + 1 < t.h) {
                            (true, true) => $row::<V, S, R0, KR, true, true>(&mut acc, x, dy, t),
                            (true, false) => $row::<V, S, R0, KR, true, false>(&mut acc, x, dy, t),
                            (false, true) => $row::<V, S, R0, KR, false, true>(&mut acc, x, dy, t),
                            (false, false) => $row::<V, S, R0, KR, false, false>(&mut acc, x, dy, t),
                        }
                    }
                }
            }
            // The pass's taps only (the others' accumulators stay zero
            // and are compiled away).
            for (k, a) in acc.iter().enumerate().skip(3 * R0).take(3 * KR) {
                for (v, s) in a.iter().enumerate() {
                    // Safety: the tile's sums (the contract).
                    unsafe {
                        let at = t.sums.add(k * t.tap + $lanes * v);
                        $store(at, $add($load(at), *s));
                    }
                }
            }
        }

        /// One output row of the tile: `x` the input value under tap
        /// (0, 0) of its first pixel (a wrapping pointer), `dy` its first
        /// pixel's gradient; `UP` / `DOWN` whether kernel rows 0 / 2 lie
        /// inside the input. The first pixel leaves out its left kernel
        /// column, the last its right one where `t.right`.
        ///
        /// # Safety
        /// As the tile's.
        #[target_feature(enable = $feature)]
        unsafe fn $row<
            const V: usize,
            const S: usize,
            const R0: usize,
            const KR: usize,
            const UP: bool,
            const DOWN: bool,
        >(
            acc: &mut [[$vec; V]; TAPS],
            x: *const f32,
            dy: *const f32,
            t: &WeightTile,
        ) {
            let last = t.ow - 1;
            // Safety (this block): the contract.
            unsafe {
                match (last, t.right) {
                    (0, true) => $pixels::<V, S, R0, KR, UP, DOWN, true, true>(acc, x, dy, t.w, 0..1),
                    (0, false) => $pixels::<V, S, R0, KR, UP, DOWN, true, false>(acc, x, dy, t.w, 0..1),
                    _ => {
                        $pixels::<V, S, R0, KR, UP, DOWN, true, false>(acc, x, dy, t.w, 0..1);
                        if t.right {
                            $pixels::<V, S, R0, KR, UP, DOWN, false, false>(acc, x, dy, t.w, 1..last);
                            $pixels::<V, S, R0, KR, UP, DOWN, false, true>(acc, x, dy, t.w, last..t.ow);
                        } else {
                            $pixels::<V, S, R0, KR, UP, DOWN, false, false>(acc, x, dy, t.w, 1..t.ow);
                        }
                    }
                }
            }
        }

        /// Pixels `pixels` of one output row: per pixel, `V` vectors of
        /// its output gradient are loaded and the input value under each
        /// tap inside is broadcast into `V` fused multiply-adds (kernel
        /// rows 0 / 2 only when `UP` / `DOWN`, columns 0 / 2 only unless
        /// `LEFT` / `RIGHT`).
        ///
        /// # Safety
        /// As the tile's.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn $pixels<
            const V: usize,
            const S: usize,
            const R0: usize,
            const KR: usize,
            const UP: bool,
            const DOWN: bool,
            const LEFT: bool,
            const RIGHT: bool,
        >(
            acc: &mut [[$vec; V]; TAPS],
            x: *const f32,
            dy: *const f32,
            row: usize,
            pixels: std::ops::Range<usize>,
        ) {
            let mut a = *acc;
            for p in pixels {
                // Safety: pixel p's gradient (the contract).
                let d: [$vec; V] = std::array::from_fn(|v| unsafe {
                    $load(dy.add(p * GRAD_BLOCK + $lanes * v))
                });
                for i in R0..R0 + KR {
                    if (i == 0 && !UP) || (i == 2 && !DOWN) {
                        continue;
                    }
                    for j in 0..3 {
                        if (j == 0 && LEFT) || (j == 2 && RIGHT) {
                            continue;
                        }
                        // Safety: an input value inside the plane (the
                        // taps on padding are left out above).
                        let b = $set1(unsafe { *x.wrapping_add(i * row + S * p + j) });
                        for (s, &dv) in a[i * 3 + j].iter_mut().zip(&d) {
                            *s = $fmadd(dv, b, *s);
                        }
                    }
                }
            }
            *acc = a;
        }
    };
}

weight_kernels!(
    /// The weight gradient of one input channel of a group of images for
    /// `16·V` output channels and the taps of kernel rows `R0..R0 + KR`
    /// (`R0 + KR ≤ 3`): for every output pixel of each image (rows `t.sh`
    /// apart, columns `S`), `V` vectors of its gradient (16 output
    /// channels each) are multiplied by the input value under each of
    /// those taps (broadcast from the plane; taps on padding are left
    /// out) and summed in `3·KR·V` zmm registers, which are then added to
    /// those taps' runs of `t.sums`.
    ///
    /// # Safety
    /// AVX-512F; for each image `m < images`, `x + m·x_image` holds
    /// `h × w` readable values, with `oh`, `ow`, `sh`, `S` and `right`
    /// those of a 3×3 kernel with padding 1 over them, and
    /// `dy + m·dy_image` `oh · ow` pixels `GRAD_BLOCK` apart, of which
    /// `16·V` values each are read; `sums` holds nine writable runs of
    /// `16·V` values, `tap` apart.
    tile_avx512, row_avx512, pixels_avx512, "avx512f", __m512, 16,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
    _mm512_storeu_ps
);

weight_kernels!(
    /// [`tile_avx512`] in 8-lane vectors: `8·V` output channels in
    /// `3·KR·V` ymm registers.
    ///
    /// # Safety
    /// AVX2 and FMA, and as [`tile_avx512`] with `8·V` channels.
    tile_avx2, row_avx2, pixels_avx2, "avx2,fma", __m256, 8,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
    _mm256_storeu_ps
);

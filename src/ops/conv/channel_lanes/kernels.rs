//! The register-blocked kernels of the channel-lane forward (AVX-512 and
//! AVX2, one body written once): `P` output pixels of one row × `V`
//! vectors of output channels, summed over every input channel and kernel
//! tap in `P·V` registers; and the stores of the sums as output planes.

use super::{BLOCK, TAPS};
use std::arch::x86_64::*;

/// Bit of `Tile::edges`: the tile's first pixel is the row's first, whose
/// left kernel column reads padding.
pub(super) const LEFT: u8 = 1;
/// Bit of `Tile::edges`: the tile's last pixel is the row's last, whose
/// right kernel column reads padding.
pub(super) const RIGHT: u8 = 2;

/// One tile of the forward: where it reads, and where its sums go.
pub(super) struct Tile {
    /// The input value under tap `(first row, 0)` of the tile's first
    /// pixel, in channel 0 (a wrapping pointer: with [`LEFT`] it lies one
    /// before its row and is not read there).
    pub(super) x: *const f32,
    /// Values per input plane.
    pub(super) plane: usize,
    /// Values per input row.
    pub(super) row: usize,
    /// Input channels.
    pub(super) channels: usize,
    /// Kernel rows that lie inside the input for this output row (1–3).
    pub(super) rows: usize,
    /// The block's packed weights at channel 0, first kernel row inside
    /// (`[channel][tap][BLOCK]`).
    pub(super) w: *const f32,
    /// Where the tile's sums go: `P` pixels × [`BLOCK`] channels.
    pub(super) sums: *mut f32,
}

/// Generates one instruction set's tile kernel (see [`tile_avx512`]).
macro_rules! tile_kernel {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $vec:ty, $lanes:literal,
     $zero:ident, $load:ident, $set1:ident, $fmadd:ident, $store:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn $name<const P: usize, const V: usize, const S: usize, const EDGES: u8>(
            t: &Tile,
        ) {
            let (left, right) = (EDGES & LEFT != 0, EDGES & RIGHT != 0);
            let mut acc = [[$zero(); V]; P];
            for c in 0..t.channels {
                let xc = t.x.wrapping_add(c * t.plane);
                // Safety (this block): inside the packed weights (the
                // contract).
                let wc = unsafe { t.w.add(c * TAPS * BLOCK) };
                for r in 0..t.rows {
                    let xr = xc.wrapping_add(r * t.row);
                    let wr = unsafe { wc.add(r * 3 * BLOCK) };
                    for j in 0..3 {
                        let wv: [$vec; V] = std::array::from_fn(|v| unsafe {
                            $load(wr.add(j * BLOCK + $lanes * v))
                        });
                        for (p, acc) in acc.iter_mut().enumerate() {
                            if (left && p == 0 && j == 0) || (right && p == P - 1 && j == 2) {
                                continue;
                            }
                            // Safety: an input value inside the planes
                            // (the contract: the padding's are left out
                            // above).
                            let b = $set1(unsafe { *xr.wrapping_add(S * p + j) });
                            for (a, &w) in acc.iter_mut().zip(&wv) {
                                *a = $fmadd(w, b, *a);
                            }
                        }
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                for (v, a) in acc.iter().enumerate() {
                    // Safety: the tile's sums (the contract).
                    unsafe { $store(t.sums.add(p * BLOCK + $lanes * v), *a) };
                }
            }
        }
    };
}

tile_kernel!(
    /// The tile `t` of `P` pixels (`S` input columns apart) × `16·V`
    /// output channels: for each input channel, kernel row inside and
    /// kernel column, `V` vectors of weights (16 output channels each)
    /// are loaded and every pixel's input value is broadcast into `V`
    /// fused multiply-adds (the products of a padding column, `EDGES`,
    /// are left out), summed in `P·V` zmm registers and stored to
    /// `t.sums` pixel by pixel.
    ///
    /// # Safety
    /// AVX-512F. Every value the tile reads lies inside live buffers:
    /// input channels `0..channels` at `x + c·plane + r·row + S·p + j`
    /// for `r < rows`, `p < P`, `j < 3`, but `j = 0` of pixel 0 with
    /// [`LEFT`] and `j = 2` of pixel `P − 1` with [`RIGHT`];
    /// `channels · 9 · BLOCK` weights from `w` (less the rows above), of
    /// which the first `16·V` of each step are read; and `P · BLOCK`
    /// writable sums, of which the first `16·V` of each pixel are written.
    tile_avx512, "avx512f", __m512, 16,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps
);

tile_kernel!(
    /// [`tile_avx512`] in 8-lane vectors: `P` pixels × `8·V` output
    /// channels in `P·V` ymm registers (the caller runs a block's 64
    /// channels as four tiles of 16, `t.w` and `t.sums` moved on by 16
    /// each).
    ///
    /// # Safety
    /// AVX2 and FMA, and as [`tile_avx512`] with `8·V` channels.
    tile_avx2, "avx2,fma", __m256, 8,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
);

/// Output channels `0..channels` of `pixels` output pixels from their
/// sums (`sums[p·row + ch]`) plus `bias`: blocks of 16 pixels × 16
/// channels transposed in registers and stored as runs of each channel's
/// plane (`y + ch·out_plane`). (The weight gradient stores its sums, taps
/// × output channels, as rows of `dW` the same way.)
///
/// # Safety
/// AVX-512F; `sums` holds `pixels` runs of `channels` values (rounded up
/// to 16) `row` apart, `bias` as many values, and `y` `channels` planes
/// of `pixels` writable values `out_plane` apart.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_block_avx512(
    sums: *const f32,
    row: usize,
    bias: *const f32,
    pixels: usize,
    channels: usize,
    y: *mut f32,
    out_plane: usize,
) {
    for q0 in (0..pixels).step_by(16) {
        let count = 16.min(pixels - q0);
        let mask = ((1u32 << count) - 1) as __mmask16;
        for c0 in (0..channels).step_by(16) {
            // Safety (this block): inside the buffers (the contract).
            let b = unsafe { _mm512_loadu_ps(bias.add(c0)) };
            let rows: [__m512; 16] = std::array::from_fn(|i| {
                if i < count {
                    _mm512_add_ps(unsafe { _mm512_loadu_ps(sums.add((q0 + i) * row + c0)) }, b)
                } else {
                    _mm512_setzero_ps()
                }
            });
            let columns = crate::ops::matmul::sgemm::transpose16(rows);
            for (l, column) in columns.iter().enumerate().take(channels - c0) {
                unsafe { _mm512_mask_storeu_ps(y.add((c0 + l) * out_plane + q0), mask, *column) };
            }
        }
    }
}

/// [`store_block_avx512`] in blocks of 8 pixels × 8 channels, stored
/// whole where 8 pixels remain and value by value otherwise (AMD's cores
/// run AVX2's masked stores as slow microcode).
///
/// # Safety
/// AVX2, and as [`store_block_avx512`] (channels rounded up to 8).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_block_avx2(
    sums: *const f32,
    row: usize,
    bias: *const f32,
    pixels: usize,
    channels: usize,
    y: *mut f32,
    out_plane: usize,
) {
    for q0 in (0..pixels).step_by(8) {
        let count = 8.min(pixels - q0);
        for c0 in (0..channels).step_by(8) {
            // Safety (this block): inside the buffers (the contract).
            let b = unsafe { _mm256_loadu_ps(bias.add(c0)) };
            let rows: [__m256; 8] = std::array::from_fn(|i| {
                if i < count {
                    _mm256_add_ps(unsafe { _mm256_loadu_ps(sums.add((q0 + i) * row + c0)) }, b)
                } else {
                    _mm256_setzero_ps()
                }
            });
            let columns = crate::ops::matmul::sgemm::transpose8(rows);
            for (l, column) in columns.iter().enumerate().take(channels - c0) {
                let at = unsafe { y.add((c0 + l) * out_plane + q0) };
                if count == 8 {
                    unsafe { _mm256_storeu_ps(at, *column) };
                } else {
                    let mut values = [0.0f32; 8];
                    unsafe { _mm256_storeu_ps(values.as_mut_ptr(), *column) };
                    for (i, &v) in values[..count].iter().enumerate() {
                        unsafe { *at.add(i) = v };
                    }
                }
            }
        }
    }
}

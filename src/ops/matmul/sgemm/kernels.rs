//! The micro-kernels of the sgemm: `tile (+)= a_panel · b_panel` for one
//! [`MR`] × [`NR`] tile of `c`, from micro-panels packed `[k][MR]` and
//! `[k][NR]`. One per instruction set, both summing each element over `k`
//! in order with one fused multiply-add per term, so they give the same
//! bits.

use super::{MR, NR};
use std::arch::x86_64::*;

/// Where a micro-kernel call writes: the top-left element of its tile of
/// `c`, the row stride, how many of the `MR × NR` rows and columns are
/// inside `c`, and whether to add to `c` rather than overwrite it.
pub(super) struct Tile {
    pub(super) c: *mut f32,
    pub(super) ldc: isize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) accumulate: bool,
}

/// Starts fetching a full tile that the kernel will add to, so that
/// products with a deep `k` (many KC blocks, `c` beyond L2) do not wait
/// for it at the end of every call.
#[inline]
fn prefetch_tile(t: &Tile) {
    if t.accumulate && t.cols == NR {
        prefetch_rows(t.c, t.ldc, t.rows);
    }
}

/// Starts fetching the first two cache lines of each of `rows` rows of
/// `c`, `ldc` apart: a tile's 32 columns. [`prefetch_tile`] fetches the
/// tile a call adds to; the macro-kernel fetches the next strip's tile
/// before each call, a strip ahead of its stores, so its lines are on
/// their way into the caches by then. Without that, every tile's stores
/// waited on their lines when `c` lay beyond L2 with more rows than the
/// hardware prefetchers follow (64 rows of ResNet-50's 1×1 layers at 56²).
#[inline]
pub(super) fn prefetch_rows(c: *mut f32, ldc: isize, rows: usize) {
    for i in 0..rows {
        let ci = c.wrapping_offset(i as isize * ldc).cast::<i8>();
        // Safety: prefetches do not fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(ci);
            _mm_prefetch::<_MM_HINT_T0>(ci.wrapping_add(64));
        }
    }
}

/// The AVX-512 micro-kernel: `tile (+)= a_panel · b_panel` over `kc` steps,
/// for the first `R` rows of the `MR × NR` tile (`R` = [`MR`] but for a
/// block's last panel of rows) and its first `16·H` columns (`H` = 2 but
/// for a last panel of at most 16 columns, whose right half is skipped),
/// the `R × 16H` products accumulated in `H·R` zmm registers. Columns
/// beyond the tile's are computed and not written.
///
/// # Safety
/// AVX-512F; `a` holds `kc × MR` and `b` (64-byte aligned) `kc × NR`
/// packed values; `t.rows ≤ R`, `t.cols ≤ 16·H ≤ NR`, and the tile's
/// `rows × cols` elements are writable.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn kernel_avx512<const R: usize, const H: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    t: Tile,
) {
    debug_assert!(t.rows <= R && R <= MR && t.cols <= 16 * H && 16 * H <= NR);
    let mut acc = [[_mm512_setzero_ps(); H]; R];
    prefetch_tile(&t);
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // Safety: the packed panels hold kc steps of MR and NR values.
        unsafe {
            let mut bh = [_mm512_setzero_ps(); H];
            for (h, v) in bh.iter_mut().enumerate() {
                *v = _mm512_load_ps(b.add(16 * h));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for (acc, bv) in row.iter_mut().zip(bh) {
                    *acc = _mm512_fmadd_ps(ai, bv, *acc);
                }
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    // Safety: the caller's contract.
    unsafe { store_tile(&acc, &t) };
}

/// [`kernel_avx512`] for a full `MR × NR` tile whose depth runs channel
/// by channel, 9 steps (taps) each, leaving out the taps whose bits
/// `SKIP` sets: a convolution's taps that read padding for every column
/// of the panel (`drive::Skip`). The other steps run in order, so each
/// sum is the full kernel's minus zero terms.
///
/// # Safety
/// As [`kernel_avx512`], with `kc` a multiple of 9.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn kernel_avx512_skipping<const SKIP: u32>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    t: Tile,
) {
    const TAPS: usize = 9;
    debug_assert!(kc.is_multiple_of(TAPS) && t.rows <= MR && t.cols <= NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    prefetch_tile(&t);
    let (mut a, mut b) = (a, b);
    for _ in 0..kc / TAPS {
        for tap in 0..TAPS {
            if SKIP >> tap & 1 == 1 {
                continue;
            }
            // Safety: the packed panels hold kc steps of MR and NR values.
            unsafe {
                let (at, bt) = (a.add(tap * MR), b.add(tap * NR));
                let bh = [_mm512_load_ps(bt), _mm512_load_ps(bt.add(16))];
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*at.add(i));
                    for (acc, bv) in row.iter_mut().zip(bh) {
                        *acc = _mm512_fmadd_ps(ai, bv, *acc);
                    }
                }
            }
        }
        // Safety: still inside the panels (kc steps).
        unsafe {
            a = a.add(TAPS * MR);
            b = b.add(TAPS * NR);
        }
    }
    // Safety: the caller's contract.
    unsafe { store_tile(&acc, &t) };
}

/// Writes (or adds, `t.accumulate`) the accumulators of a micro-kernel
/// call to its tile of `c`: row `i`, half `h` holds columns `16h ..
/// 16h + 16`, of which those inside the tile are written.
///
/// # Safety
/// AVX-512F; the tile's `rows × cols` elements are writable, `t.rows ≤ R`
/// and `t.cols ≤ 16·H`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_tile<const R: usize, const H: usize>(acc: &[[__m512; H]; R], t: &Tile) {
    // Masks of the tile's columns in each half (all ones in a full tile).
    let lanes = |from: usize| -> __mmask16 {
        let n = t.cols.saturating_sub(from).min(16);
        ((1u32 << n) - 1) as __mmask16
    };
    for (i, row) in acc.iter().enumerate().take(t.rows) {
        for (h, &v) in row.iter().enumerate() {
            // Safety: row i < t.rows of the tile lies inside c, and the
            // mask touches only its first t.cols elements.
            unsafe {
                let ci = t.c.offset(i as isize * t.ldc).wrapping_add(16 * h);
                let m = lanes(16 * h);
                let mut v = v;
                if t.accumulate {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, ci));
                }
                _mm512_mask_storeu_ps(ci, m, v);
            }
        }
    }
}

/// Rows of the AVX2 kernel's sub-tiles: 6 × 16 takes 12 of the 16 ymm
/// registers as accumulators, leaving two for `b` and one for a broadcast.
const AVX2_ROWS: usize = 6;

/// The AVX2 micro-kernel: the same product as [`kernel_avx512`] on the
/// same packed panels, for CPUs with 16 ymm registers. The tile is
/// computed in sub-tiles of at most 6 rows × 16 columns (per step of `k`:
/// two loads of `b`, six broadcasts of `a`, twelve fused multiply-adds, as
/// in BLIS's Haswell kernel), each over all `kc` steps; only the tile's
/// own rows are computed, and a right half the tile does not reach is
/// skipped.
///
/// # Safety
/// AVX2 and FMA; `a` holds `kc × MR` and `b` (32-byte aligned) `kc × NR`
/// packed values; `t.rows ≤ MR`, `t.cols ≤ NR`, and the tile's
/// `rows × cols` elements are writable.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn kernel_avx2(kc: usize, a: *const f32, b: *const f32, t: Tile) {
    debug_assert!(t.rows <= MR && t.cols <= NR);
    prefetch_tile(&t);
    for c0 in (0..t.cols).step_by(16) {
        for r0 in (0..t.rows).step_by(AVX2_ROWS) {
            let sub = Tile {
                c: t.c.wrapping_offset(r0 as isize * t.ldc).wrapping_add(c0),
                ldc: t.ldc,
                rows: (t.rows - r0).min(AVX2_ROWS),
                cols: (t.cols - c0).min(16),
                accumulate: t.accumulate,
            };
            // Safety: rows r0.. and columns c0.. of the panels and the tile.
            unsafe {
                let (a, b) = (a.add(r0), b.add(c0));
                match sub.rows {
                    6 => sub_tile_avx2::<6>(kc, a, b, sub),
                    5 => sub_tile_avx2::<5>(kc, a, b, sub),
                    4 => sub_tile_avx2::<4>(kc, a, b, sub),
                    3 => sub_tile_avx2::<3>(kc, a, b, sub),
                    2 => sub_tile_avx2::<2>(kc, a, b, sub),
                    _ => sub_tile_avx2::<1>(kc, a, b, sub),
                }
            }
        }
    }
}

/// One sub-tile of [`kernel_avx2`]: `R` rows × 16 columns accumulated in
/// `2R` ymm registers over `kc` steps, `a` and `b` pointing at the
/// sub-tile's first row and column of steps [`MR`] and [`NR`] values
/// long; `t` is the sub-tile (`t.rows == R`, `t.cols ≤ 16`).
///
/// # Safety
/// As [`kernel_avx2`], for the sub-tile.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn sub_tile_avx2<const R: usize>(kc: usize, a: *const f32, b: *const f32, t: Tile) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // Safety: the packed panels hold kc steps of MR and NR values;
        // b + c0 stays 32-byte aligned (c0 is 0 or 16).
        unsafe {
            let b0 = _mm256_load_ps(b);
            let b1 = _mm256_load_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    // Lane masks of the sub-tile's columns in each half (all set when full).
    let lanes = |from: usize| {
        let n = t.cols.saturating_sub(from).min(8) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    };
    let (m0, m1) = (lanes(0), lanes(8));
    for (i, row) in acc.iter().enumerate() {
        // Safety: row i < R = t.rows lies inside c, and the masks touch
        // only its first t.cols elements (masked-off lanes never fault).
        unsafe {
            let ci = t.c.offset(i as isize * t.ldc);
            let (mut v0, mut v1) = (row[0], row[1]);
            if t.cols == 16 {
                if t.accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ci));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ci.add(8)));
                }
                _mm256_storeu_ps(ci, v0);
                _mm256_storeu_ps(ci.add(8), v1);
            } else {
                if t.accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_maskload_ps(ci, m0));
                    v1 = _mm256_add_ps(v1, _mm256_maskload_ps(ci.wrapping_add(8), m1));
                }
                _mm256_maskstore_ps(ci, m0, v0);
                _mm256_maskstore_ps(ci.wrapping_add(8), m1, v1);
            }
        }
    }
}

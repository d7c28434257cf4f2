//! The three per-tile transforms of Winograd F(2×2, 3×3) in AVX-512, for
//! f32: the input transform `Bᵀ d B`, the output transform `Aᵀ M A`, and
//! the output-gradient transform `A dY Aᵀ`, with the same operations in
//! the same order as the portable versions in [`super`], so both give the
//! same bits (tested).
//!
//! The portable transforms work on arrays one tile row long; on the small
//! planes of a ResNet (2–16 tiles per row) their loops barely run and the
//! transforms took 40–50 % of a Winograd convolution. Here one zmm
//! register holds one value of up to 16 neighbouring tiles of a tile row
//! (lane `l` = tile `tx0 + l`), so each step of a transform is one
//! instruction for all of them:
//!
//! - input: tile `tx` reads columns `2tx − pw … 2tx − pw + 3` of four input
//!   rows. Two loads of 16 columns and a permute give the even and the odd
//!   columns (`2tx`, `2tx + 1`) of 16 tiles; the same at 2 columns further
//!   gives `2tx + 2`, `2tx + 3`. Loads are masked to the columns inside the
//!   image, so the padding reads as 0 and nothing outside the row is read.
//! - output: the two output columns of each tile are interleaved back into
//!   a row by two permutes, stored masked to the output's width.
//! - output gradient: the reverse of the output's interleave.
//!
//! Lanes past the last tile compute values that are never stored. Planes
//! of at most 8 tiles per row go to [`avx512_pairs`], which puts two tile
//! rows in each vector.

use super::tile_math::x512::{input_tile, output_grad_tile, output_tile};
use super::{avx512_pairs, matrix_stride, SharedMut, Tiles};
use crate::ops::conv::geom::ConvGeom;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Tiles per vector.
const LANES: usize = 16;

/// Whether this CPU and build run these kernels (AVX-512F and the crate's
/// `avx512` feature).
pub(super) fn available() -> bool {
    crate::backend::cpu::simd::VectorIsa::Avx512.is_available()
}

/// Lanes `0..n` (n ≤ 16) set.
pub(super) fn first_lanes(n: usize) -> __mmask16 {
    if n >= LANES {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Lanes `l` whose column `x0 + l` lies in `0..width`.
pub(super) fn inside(x0: isize, width: usize) -> __mmask16 {
    let lo = (-x0).clamp(0, LANES as isize) as usize; // first lane at column ≥ 0
    let hi = (width as isize - x0).clamp(0, LANES as isize) as usize; // first lane at column ≥ width
    first_lanes(hi) & !first_lanes(lo)
}

/// Index vectors of the permutes: the even lanes of a 32-lane pair, the
/// odd lanes, and the two halves of an interleave.
#[target_feature(enable = "avx512f")]
fn permute_indices() -> [__m512i; 4] {
    let even: [i32; 16] = std::array::from_fn(|l| 2 * l as i32);
    let odd: [i32; 16] = std::array::from_fn(|l| 2 * l as i32 + 1);
    let low: [i32; 16] = std::array::from_fn(|l| (l / 2 + 16 * (l % 2)) as i32);
    let high: [i32; 16] = std::array::from_fn(|l| (8 + l / 2 + 16 * (l % 2)) as i32);
    // Safety: each array holds 16 i32, one zmm.
    [even, odd, low, high].map(|a| unsafe { _mm512_loadu_si512(a.as_ptr().cast()) })
}

/// The 16 columns `x0 .. x0 + 16` of `row` (`width` long), 0 outside it.
///
/// # Safety
/// AVX-512F; `row` points at a row of `width` readable f32.
#[target_feature(enable = "avx512f")]
unsafe fn load_columns(row: *const f32, x0: isize, width: usize) -> __m512 {
    // Masked-off lanes are not read, so the address of a lane left of the
    // row (`x0 < 0`) is formed but never dereferenced.
    unsafe { _mm512_maskz_loadu_ps(inside(x0, width), row.wrapping_offset(x0)) }
}

/// `V = Bᵀ d B` for the tiles of tile rows `rows`, every input channel,
/// into `v[e·stride + c·tb + t]` ([`matrix_stride`]) as [`super::transforms::transform_input_portable`] lays it out.
///
/// # Safety
/// [`available`]; `x` holds the N×C×H×W input and `v` the chunk's
/// [`super::matrices_len`]`(C, tb)` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_input(
    x: &[f32],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    v: &mut [f32],
) {
    if avx512_pairs::fits(tiles.tw) {
        // Safety: the same contract.
        return unsafe { avx512_pairs::transform_input(x, g, tiles, rows, v) };
    }
    let (c_n, tw) = (g.c_in, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(c_n, tb);
    let (ph, pw) = (g.padding.0 as isize, g.padding.1 as isize);
    let [even, odd, _, _] = permute_indices();
    let vp = v.as_mut_ptr();
    for c in 0..c_n {
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let plane = &x[(n * c_n + c) * g.h * g.w..][..g.h * g.w];
            for tx0 in (0..tw).step_by(LANES) {
                let store = first_lanes(tw - tx0);
                let x0 = 2 * tx0 as isize - pw;
                // d[k][j]: column 2tx + j of input row 2ty − ph + k.
                let mut d = [[_mm512_setzero_ps(); 4]; 4];
                for (k, dk) in d.iter_mut().enumerate() {
                    let iy = 2 * ty as isize + k as isize - ph;
                    if iy < 0 || iy >= g.h as isize {
                        continue; // padding rows: zeros
                    }
                    let row = plane[iy as usize * g.w..].as_ptr();
                    // Safety: `row` starts a row of g.w values of `plane`.
                    unsafe {
                        let (a0, a1) =
                            (load_columns(row, x0, g.w), load_columns(row, x0 + 16, g.w));
                        let (b0, b1) = (
                            load_columns(row, x0 + 2, g.w),
                            load_columns(row, x0 + 18, g.w),
                        );
                        dk[0] = _mm512_permutex2var_ps(a0, even, a1);
                        dk[1] = _mm512_permutex2var_ps(a0, odd, a1);
                        dk[2] = _mm512_permutex2var_ps(b0, even, b1);
                        dk[3] = _mm512_permutex2var_ps(b0, odd, b1);
                    }
                }
                for (e, val) in input_tile(d).into_iter().enumerate() {
                    let at = e * stride + c * tb + ri * tw + tx0;
                    // Safety: lanes 0..tw − tx0 of this tile row lie inside
                    // the chunk's block of matrix e.
                    unsafe { _mm512_mask_storeu_ps(vp.add(at), store, val) };
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` (+ bias) for the tiles of tile rows `rows`, every output
/// channel, from `m[e·stride + o·tb + t]`, into the N×O×oh×ow output behind
/// `out`, as [`super::transforms::transform_output_portable`] does.
///
/// # Safety
/// [`available`]; `m` holds the chunk's [`super::matrices_len`]`(O, tb)` products; `out`
/// points at the N×O×oh×ow output, and no other thread writes the rows of
/// these tile rows.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_output(
    m: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<f32>>,
) {
    if avx512_pairs::fits(tiles.tw) {
        // Safety: the same contract.
        return unsafe { avx512_pairs::transform_output(m, bias, g, tiles, rows, out) };
    }
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(o_n, tb);
    let [_, _, low, high] = permute_indices();
    let mp = m.as_ptr();
    for o in 0..o_n {
        let bias_o = _mm512_set1_ps(bias.map_or(0.0, |b| b[o]));
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let out_rows = if 2 * ty + 1 < g.oh { 2 } else { 1 };
            for tx0 in (0..tw).step_by(LANES) {
                let lanes = first_lanes(tw - tx0);
                // Safety: lanes 0..tw − tx0 of each matrix's row lie inside m.
                let m_e: [__m512; 16] = std::array::from_fn(|e| unsafe {
                    _mm512_maskz_loadu_ps(lanes, mp.add(e * stride + o * tb + ri * tw + tx0))
                });
                let rows_y = output_tile(&m_e, bias_o);
                for (a, &[y0, y1]) in rows_y.iter().enumerate().take(out_rows) {
                    let row = ((n * o_n + o) * g.oh + 2 * ty + a) * g.ow;
                    let x0 = 2 * tx0 as isize;
                    // Safety: the stores are masked to columns 0..ow of
                    // output row 2ty + a of image n, channel o.
                    unsafe {
                        let dst = out.0.add(row).cast::<f32>();
                        let first = _mm512_permutex2var_ps(y0, low, y1);
                        let second = _mm512_permutex2var_ps(y0, high, y1);
                        _mm512_mask_storeu_ps(dst.offset(x0), inside(x0, g.ow), first);
                        let x1 = x0 + 16;
                        let m1 = inside(x1, g.ow);
                        if m1 != 0 {
                            _mm512_mask_storeu_ps(dst.offset(x1), m1, second);
                        }
                    }
                }
            }
        }
    }
}

/// `dM = A dY Aᵀ` for the tiles of tile rows `rows`, every output channel,
/// into `dm[e·stride + o·tb + t]`, as [`super::transforms::transform_output_grad_portable`] does
/// (`dY` is 0 outside the output).
///
/// # Safety
/// [`available`]; `dy` holds the N×O×oh×ow gradient and `dm` the chunk's
/// [`super::matrices_len`]`(O, tb)` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_output_grad(
    dy: &[f32],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    dm: &mut [f32],
) {
    if avx512_pairs::fits(tiles.tw) {
        // Safety: the same contract.
        return unsafe { avx512_pairs::transform_output_grad(dy, g, tiles, rows, dm) };
    }
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(o_n, tb);
    let plane_len = g.oh * g.ow;
    let [even, odd, _, _] = permute_indices();
    let dp = dm.as_mut_ptr();
    for o in 0..o_n {
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let plane = &dy[(n * o_n + o) * plane_len..][..plane_len];
            for tx0 in (0..tw).step_by(LANES) {
                let store = first_lanes(tw - tx0);
                let x0 = 2 * tx0 as isize;
                // (p, q): the even and odd columns of dY rows 2ty and 2ty + 1.
                let mut y = [[_mm512_setzero_ps(); 2]; 2];
                for (k, yk) in y.iter_mut().enumerate() {
                    let oy = 2 * ty + k;
                    if oy >= g.oh {
                        continue; // below an odd-sized output
                    }
                    let row = plane[oy * g.ow..].as_ptr();
                    // Safety: `row` starts a row of g.ow values of `plane`.
                    unsafe {
                        let (a0, a1) = (
                            load_columns(row, x0, g.ow),
                            load_columns(row, x0 + 16, g.ow),
                        );
                        yk[0] = _mm512_permutex2var_ps(a0, even, a1);
                        yk[1] = _mm512_permutex2var_ps(a0, odd, a1);
                    }
                }
                for (e, val) in output_grad_tile(y).into_iter().enumerate() {
                    let at = e * stride + o * tb + ri * tw + tx0;
                    // Safety: lanes 0..tw − tx0 of this tile row lie inside
                    // the chunk's block of matrix e.
                    unsafe { _mm512_mask_storeu_ps(dp.add(at), store, val) };
                }
            }
        }
    }
}

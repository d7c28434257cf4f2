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

use super::{avx512_pairs, SharedMut, Tiles};
use crate::ops::conv::geom::ConvGeom;
use crate::ops::matmul::sgemm::{PackedA, Panel, MR};
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

/// `Bᵀ d B` for the vectors of one set of tiles: `d[k][j]` holds column
/// `j` of patch row `k` of each tile; the result is the 16 transformed
/// values, matrix `4i + j` at index `4i + j`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn input_tile(d: [[__m512; 4]; 4]) -> [__m512; 16] {
    // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
    let t: [[__m512; 4]; 4] = [
        std::array::from_fn(|j| _mm512_sub_ps(d[0][j], d[2][j])),
        std::array::from_fn(|j| _mm512_add_ps(d[1][j], d[2][j])),
        std::array::from_fn(|j| _mm512_sub_ps(d[2][j], d[1][j])),
        std::array::from_fn(|j| _mm512_sub_ps(d[1][j], d[3][j])),
    ];
    // (Bᵀ d) B: each row's columns (a, b, c, d) become (a − c, b + c, c − b, b − d).
    std::array::from_fn(|e| {
        let [a, b, c, d] = t[e / 4];
        match e % 4 {
            0 => _mm512_sub_ps(a, c),
            1 => _mm512_add_ps(b, c),
            2 => _mm512_sub_ps(c, b),
            _ => _mm512_sub_ps(b, d),
        }
    })
}

/// `Aᵀ M A` + bias for the vectors of one set of tiles: from the 16
/// products `m[e]`, the two output rows `a` of each tile as (even column,
/// odd column) pairs.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn output_tile(m: &[__m512; 16], bias: __m512) -> [(__m512, __m512); 2] {
    // Aᵀ M: rows (m0 + m1 + m2, m1 − m2 − m3), column by column.
    let s: [[__m512; 4]; 2] = [
        std::array::from_fn(|j| _mm512_add_ps(_mm512_add_ps(m[j], m[4 + j]), m[8 + j])),
        std::array::from_fn(|j| _mm512_sub_ps(_mm512_sub_ps(m[4 + j], m[8 + j]), m[12 + j])),
    ];
    // (Aᵀ M) A: columns (s0 + s1 + s2, s1 − s2 − s3), + bias.
    s.map(|r| {
        (
            _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]), bias),
            _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]), bias),
        )
    })
}

/// `A dY Aᵀ` for the vectors of one set of tiles: `y[k]` holds the (even,
/// odd) columns of output-gradient row `k` of each tile; the result is
/// the 16 values, matrix `4i + j` at index `4i + j`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn output_grad_tile(y: [[__m512; 2]; 2]) -> [__m512; 16] {
    // −v exactly (a sign flip, as the portable code's negation).
    let sign = _mm512_set1_epi32(i32::MIN);
    let neg = |v: __m512| _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign));
    // A dY: rows (y0, y0 + y1, y0 − y1, −y1), both halves.
    let ady: [[__m512; 2]; 4] = [
        y[0],
        std::array::from_fn(|h| _mm512_add_ps(y[0][h], y[1][h])),
        std::array::from_fn(|h| _mm512_sub_ps(y[0][h], y[1][h])),
        std::array::from_fn(|h| neg(y[1][h])),
    ];
    // (A dY) Aᵀ: each row's (p, q) becomes (p, p + q, p − q, −q).
    std::array::from_fn(|e| {
        let [p, q] = ady[e / 4];
        match e % 4 {
            0 => p,
            1 => _mm512_add_ps(p, q),
            2 => _mm512_sub_ps(p, q),
            _ => neg(q),
        }
    })
}

/// `V = Bᵀ d B` for the tiles of tile rows `rows`, every input channel,
/// into `v[(e·C + c)·tb + t]` as [`super::transforms::transform_input_portable`] lays it out.
///
/// # Safety
/// [`available`]; `x` holds the N×C×H×W input and `v` the chunk's
/// `16 · C · tb` values.
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
                    let at = (e * c_n + c) * tb + ri * tw + tx0;
                    // Safety: lanes 0..tw − tx0 of this tile row lie inside
                    // the chunk's block of matrix e.
                    unsafe { _mm512_mask_storeu_ps(vp.add(at), store, val) };
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` (+ bias) for the tiles of tile rows `rows`, every output
/// channel, from `m[(e·O + o)·tb + t]`, into the N×O×oh×ow output behind
/// `out`, as [`super::transforms::transform_output_portable`] does.
///
/// # Safety
/// [`available`]; `m` holds the chunk's `16 · O · tb` products; `out`
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
                    _mm512_maskz_loadu_ps(lanes, mp.add((e * o_n + o) * tb + ri * tw + tx0))
                });
                let rows_y = output_tile(&m_e, bias_o);
                for (a, &(y0, y1)) in rows_y.iter().enumerate().take(out_rows) {
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
/// into `dm[(e·O + o)·tb + t]`, as [`super::transforms::transform_output_grad_portable`] does
/// (`dY` is 0 outside the output).
///
/// # Safety
/// [`available`]; `dy` holds the N×O×oh×ow gradient and `dm` the chunk's
/// `16 · O · tb` values.
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
                    let at = (e * o_n + o) * tb + ri * tw + tx0;
                    // Safety: lanes 0..tw − tx0 of this tile row lie inside
                    // the chunk's block of matrix e.
                    unsafe { _mm512_mask_storeu_ps(dp.add(at), store, val) };
                }
            }
        }
    }
}

/// `U = G g Gᵀ` for every (output, input) channel pair of `w` (O×C×3×3),
/// written straight into the GEMM's packed layout: the 16 O × C matrices
/// that [`super::weights::transform_weights`] computes, as [`PackedA::new`] would
/// pack them (same values, same bits), without the unpacked copy in
/// between. `None` when the memory cannot be reserved, or when `w` is too
/// large for the gathers' 32-bit offsets.
///
/// `flipped`: instead, the matrices of the input gradient's kernel, `w`
/// with its taps reversed and its channel axes swapped (16 C × O
/// matrices). Reversing a kernel row reverses the rows of `G g`
/// (`G·rev(g)` is `G g` with rows 0 and 3 swapped), so these are the
/// matrices of `w` transposed, matrix `4i + j` moved to `4p(i) + p(j)`
/// with `p` = (3, 1, 2, 0). (The middle rows then sum the taps in the
/// other order, so the bits may differ from transforming the flipped
/// kernel.)
///
/// Each micro-panel (`MR` rows, up to `KC` columns) takes 16 columns at a
/// time: their kernels are gathered tap by tap into 9 arrays, transformed
/// as whole arrays (as the portable transform does), and written `MR`
/// apart through a block small enough for L1.
pub(super) fn packed_weights(w: &[f32], g: &ConvGeom, flipped: bool) -> Option<Vec<PackedA>> {
    let (o_n, c_n) = (g.c_out, g.c_in);
    let (rows, cols, column_stride) = if flipped {
        (c_n, o_n, 9 * c_n)
    } else {
        (o_n, c_n, 9)
    };
    i32::try_from(column_stride * STEP).ok()?;
    // Safety: `fill_panel` writes all `depth × MR` values of each of the
    // 16 slices (every (column, row) of the panel's block, zeros for the
    // rows past `panel.rows` included), and it runs only where the CPU has
    // AVX-512 (`packed_weights` is called only where `available()`).
    unsafe {
        PackedA::from_panels(super::POS, rows, cols, |panel, outs| {
            // (`fill_panel` needs AVX-512: `packed_weights` runs only where
            // `available()`.)
            if flipped {
                fill_panel::<true>(w, c_n, panel, outs)
            } else {
                fill_panel::<false>(w, c_n, panel, outs)
            }
        })
    }
}

/// One micro-panel of [`packed_weights`] (`FLIPPED`: of the input
/// gradient's matrices), for `w` with `c_n` input channels.
///
/// # Safety
/// AVX-512F; the panel lies inside the packed matrices of `w`.
#[target_feature(enable = "avx512f")]
unsafe fn fill_panel<const FLIPPED: bool>(
    w: &[f32],
    c_n: usize,
    panel: &Panel,
    outs: &mut [&mut [MaybeUninit<f32>]],
) {
    // Where the kernel of (row, column) starts, how far apart consecutive
    // columns' kernels lie, and where matrix e of `w` goes.
    let kernel_at = |row: usize, col: usize| {
        if FLIPPED {
            (col * c_n + row) * 9
        } else {
            (row * c_n + col) * 9
        }
    };
    let column_stride = if FLIPPED { 9 * c_n } else { 9 };
    const REVERSED: [usize; 4] = [3, 1, 2, 0];
    let place: [usize; 16] = std::array::from_fn(|e| {
        if FLIPPED {
            4 * REVERSED[e / 4] + REVERSED[e % 4]
        } else {
            e
        }
    });
    for cb in (0..panel.depth).step_by(STEP) {
        let nc = STEP.min(panel.depth - cb);
        let mut block = [[[0f32; STEP]; super::POS]; MR]; // [row][e][column]
        for (r, matrices) in block.iter_mut().enumerate().take(panel.rows) {
            let first = kernel_at(panel.row + r, panel.col + cb);
            let kernels = &w[first..first + (nc - 1) * column_stride + 9];
            let mut taps = [[0f32; STEP]; 9];
            // Safety: the slice holds the nc kernels, column_stride apart,
            // and column_stride · STEP fits in an i32 (`packed_weights`).
            unsafe { split_taps(kernels, column_stride, nc, &mut taps) };
            // G g: four rows of three columns b (taps b, 3 + b, 6 + b).
            let gg: [[[f32; STEP]; 3]; 4] = {
                let cols: [[[f32; STEP]; 4]; 3] =
                    std::array::from_fn(|b| g_rows(&taps[b], &taps[3 + b], &taps[6 + b]));
                std::array::from_fn(|i| [cols[0][i], cols[1][i], cols[2][i]])
            };
            // (G g) Gᵀ: row i gives matrices 4i .. 4i + 4.
            for (i, [c0, c1, c2]) in gg.iter().enumerate() {
                for (j, u) in g_rows(c0, c1, c2).into_iter().enumerate() {
                    matrices[place[4 * i + j]] = u;
                }
            }
        }
        // Rows side by side: [column][row], the packed order.
        for (e, out) in outs.iter_mut().enumerate() {
            let dst = &mut out[cb * MR..(cb + nc) * MR];
            for (q, d) in dst.chunks_exact_mut(MR).enumerate() {
                for (v, matrices) in d.iter_mut().zip(&block) {
                    v.write(matrices[e][q]);
                }
            }
        }
    }
}

/// The 9 taps of `count` (at most [`STEP`]) 3×3 kernels that start
/// `stride` values apart in `kernels`, tap by tap: `taps[t][q]` = tap `t`
/// of kernel `q`, 0 past the last kernel. One gather per tap.
///
/// # Safety
/// AVX-512F; `kernels` holds `(count − 1)·stride + 9` values and
/// `stride · STEP` fits in an i32.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn split_taps(kernels: &[f32], stride: usize, count: usize, taps: &mut [[f32; STEP]; 9]) {
    let index = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(stride as i32),
    );
    let lanes = first_lanes(count);
    for (t, tap) in taps.iter_mut().enumerate() {
        // Safety: lane q reads kernels[stride·q + t], inside the slice for
        // the lanes q < count that the mask keeps; the store writes 16 f32.
        unsafe {
            let v = _mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                lanes,
                index,
                kernels.as_ptr().wrapping_add(t),
            );
            _mm512_storeu_ps(tap.as_mut_ptr(), v);
        }
    }
}

/// Input channels a weight-transform step takes at once.
const STEP: usize = 16;

/// The four rows of `G` applied to three arrays of taps, element by
/// element: `(a, (a + b + c)/2, (a − b + c)/2, c)`, as [`super::weights::g_row`].
#[inline(always)]
fn g_rows(a: &[f32; STEP], b: &[f32; STEP], c: &[f32; STEP]) -> [[f32; STEP]; 4] {
    let mut out = [*a, [0.0; STEP], [0.0; STEP], *c];
    for q in 0..STEP {
        out[1][q] = (a[q] + b[q] + c[q]) * 0.5;
        out[2][q] = (a[q] - b[q] + c[q]) * 0.5;
    }
    out
}

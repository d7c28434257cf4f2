//! The AVX-512 tile transforms of [`super::avx512`] for planes of at most
//! 8 tiles per row (outputs of up to 16 columns: the 4×4 to 16×16 layers
//! of a CIFAR ResNet). One tile row per vector would leave half to seven
//! eighths of the 16 lanes idle, so here each vector holds two
//! consecutive tile rows of the chunk: lanes `0..tw` the first row's
//! tiles, lanes `tw..2tw` the second's, which are also consecutive in the
//! chunk's matrices, so each result is one store. The two rows may belong
//! to different images. A chunk's odd last row goes alone (its second
//! half computes zeros that are never stored).
//!
//! The arithmetic is [`super::avx512`]'s, operation for operation, so the
//! bits are the portable transforms' (tested).

use super::avx512::{first_lanes, inside};
use super::tile_math::x512::{input_tile, output_grad_tile, output_tile};
use super::{matrix_stride, SharedMut, Tiles};
use crate::ops::conv::geom::ConvGeom;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Whether these kernels handle a plane of `tw` tiles per row.
pub(super) fn fits(tw: usize) -> bool {
    tw <= 8
}

/// Permute indices for a pair of rows of `tw` tiles.
struct PairLanes {
    /// Lane `l`: column `2l` of the first row's 16 (lanes `< tw`), or
    /// column `2(l − tw)` of the second's (lanes 16.. of the pair).
    even: __m512i,
    /// The same, one column on (`2l + 1`).
    odd: __m512i,
    /// Interleaves two per-tile vectors into the first row's columns.
    first: __m512i,
    /// The same for the second row's tiles.
    second: __m512i,
}

impl PairLanes {
    #[target_feature(enable = "avx512f")]
    fn new(tw: usize) -> Self {
        let column = |l: usize| if l < tw { 2 * l } else { 16 + 2 * (l - tw) };
        let even: [i32; 16] = std::array::from_fn(|l| column(l) as i32);
        let odd: [i32; 16] = std::array::from_fn(|l| column(l) as i32 + 1);
        let first: [i32; 16] = std::array::from_fn(|l| (l / 2 + 16 * (l % 2)) as i32);
        let second: [i32; 16] = std::array::from_fn(|l| (tw + l / 2 + 16 * (l % 2)) as i32);
        // Safety: each array holds 16 i32, one zmm.
        let [even, odd, first, second] =
            [even, odd, first, second].map(|a| unsafe { _mm512_loadu_si512(a.as_ptr().cast()) });
        PairLanes {
            even,
            odd,
            first,
            second,
        }
    }
}

/// One tile row's plane (its image's channel `c`): where it starts and
/// the tile row's index in its image.
#[derive(Clone, Copy)]
struct TileRow {
    plane: *const f32,
    ty: usize,
}

impl TileRow {
    /// Tile row `r` of the batch (numbered `n·th + ty`) in channel `c` of
    /// the N×`channels`×`plane_len` buffer `data`.
    fn of(
        data: &[f32],
        tiles: &Tiles,
        r: usize,
        c: usize,
        channels: usize,
        plane_len: usize,
    ) -> Self {
        let (n, ty) = (r / tiles.th, r % tiles.th);
        TileRow {
            plane: data[(n * channels + c) * plane_len..][..plane_len].as_ptr(),
            ty,
        }
    }
}

/// The 16 columns `x0 ..` of row `y` of a plane of `h` rows of `width`,
/// 0 outside the plane.
///
/// # Safety
/// AVX-512F; `plane` points at `h × width` readable values.
#[target_feature(enable = "avx512f")]
unsafe fn load_row(plane: *const f32, y: isize, x0: isize, (h, width): (usize, usize)) -> __m512 {
    if y < 0 || y >= h as isize {
        return _mm512_setzero_ps();
    }
    // Safety: row y lies inside the plane; masked-off lanes (outside the
    // row) are not read.
    unsafe {
        let row = plane.add(y as usize * width);
        _mm512_maskz_loadu_ps(inside(x0, width), row.wrapping_offset(x0))
    }
}

/// The pairs of tile rows of a chunk of `rows` rows: `(first, second)`.
fn pairs(rows: usize) -> impl Iterator<Item = (usize, Option<usize>)> {
    (0..rows)
        .step_by(2)
        .map(move |ri| (ri, (ri + 1 < rows).then_some(ri + 1)))
}

/// [`super::avx512::transform_input`] for planes that [`fits`].
///
/// # Safety
/// As [`super::avx512::transform_input`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_input(
    x: &[f32],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    v: &mut [f32],
) {
    let (c_n, tw) = (g.c_in, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(c_n, tb);
    let (ph, pw) = (g.padding.0 as isize, g.padding.1 as isize);
    let lanes = PairLanes::new(tw);
    let vp = v.as_mut_ptr();
    let plane_len = g.h * g.w;
    for c in 0..c_n {
        for (ri, second) in pairs(rows.len()) {
            let row_of = |ri: usize| TileRow::of(x, tiles, rows.start + ri, c, c_n, plane_len);
            let (a, b) = (row_of(ri), second.map(row_of));
            // d[k][j]: column 2tx + j − pw of input row 2ty − ph + k.
            let mut d = [[_mm512_setzero_ps(); 4]; 4];
            for (k, dk) in d.iter_mut().enumerate() {
                let load = |t: Option<TileRow>, x0: isize| match t {
                    // Safety: the plane holds h × w values.
                    Some(t) => unsafe {
                        load_row(t.plane, 2 * t.ty as isize + k as isize - ph, x0, (g.h, g.w))
                    },
                    None => _mm512_setzero_ps(),
                };
                let (lo, hi) = (load(Some(a), -pw), load(b, -pw));
                let (lo2, hi2) = (load(Some(a), 2 - pw), load(b, 2 - pw));
                dk[0] = _mm512_permutex2var_ps(lo, lanes.even, hi);
                dk[1] = _mm512_permutex2var_ps(lo, lanes.odd, hi);
                dk[2] = _mm512_permutex2var_ps(lo2, lanes.even, hi2);
                dk[3] = _mm512_permutex2var_ps(lo2, lanes.odd, hi2);
            }
            let store = first_lanes(if second.is_some() { 2 * tw } else { tw });
            for (e, val) in input_tile(d).into_iter().enumerate() {
                let at = e * stride + c * tb + ri * tw;
                // Safety: the pair's tiles are consecutive in the chunk's
                // block of matrix e.
                unsafe { _mm512_mask_storeu_ps(vp.add(at), store, val) };
            }
        }
    }
}

/// [`super::avx512::transform_output`] for planes that [`fits`].
///
/// # Safety
/// As [`super::avx512::transform_output`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_output(
    m: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<f32>>,
) {
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(o_n, tb);
    let lanes = PairLanes::new(tw);
    let mp = m.as_ptr();
    for o in 0..o_n {
        let bias_o = _mm512_set1_ps(bias.map_or(0.0, |b| b[o]));
        for (ri, second) in pairs(rows.len()) {
            let load = first_lanes(if second.is_some() { 2 * tw } else { tw });
            // Safety: the pair's tiles lie inside each matrix's row.
            let m_e: [__m512; 16] = std::array::from_fn(|e| unsafe {
                _mm512_maskz_loadu_ps(load, mp.add(e * stride + o * tb + ri * tw))
            });
            for (a, &[y0, y1]) in output_tile(&m_e, bias_o).iter().enumerate() {
                // Output row 2ty + a of the tile row `ri` of the chunk.
                let write = |ri: usize, val: __m512| {
                    let r = rows.start + ri;
                    let (n, ty) = (r / tiles.th, r % tiles.th);
                    if 2 * ty + a < g.oh {
                        let row = ((n * o_n + o) * g.oh + 2 * ty + a) * g.ow;
                        // Safety: columns 0..ow of that output row, which
                        // only this call writes.
                        unsafe {
                            _mm512_mask_storeu_ps(out.0.add(row).cast(), inside(0, g.ow), val)
                        };
                    }
                };
                write(ri, _mm512_permutex2var_ps(y0, lanes.first, y1));
                if let Some(s2) = second {
                    write(s2, _mm512_permutex2var_ps(y0, lanes.second, y1));
                }
            }
        }
    }
}

/// [`super::avx512::transform_output_grad`] for planes that [`fits`].
///
/// # Safety
/// As [`super::avx512::transform_output_grad`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_output_grad(
    dy: &[f32],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    dm: &mut [f32],
) {
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(o_n, tb);
    let plane_len = g.oh * g.ow;
    let lanes = PairLanes::new(tw);
    let dp = dm.as_mut_ptr();
    for o in 0..o_n {
        for (ri, second) in pairs(rows.len()) {
            let row_of = |ri: usize| TileRow::of(dy, tiles, rows.start + ri, o, o_n, plane_len);
            let (a, b) = (row_of(ri), second.map(row_of));
            // (p, q): the even and odd columns of dY rows 2ty and 2ty + 1.
            let mut y = [[_mm512_setzero_ps(); 2]; 2];
            for (k, yk) in y.iter_mut().enumerate() {
                let load = |t: Option<TileRow>| match t {
                    // Safety: the plane holds oh × ow values.
                    Some(t) => unsafe {
                        load_row(t.plane, (2 * t.ty + k) as isize, 0, (g.oh, g.ow))
                    },
                    None => _mm512_setzero_ps(),
                };
                let (lo, hi) = (load(Some(a)), load(b));
                yk[0] = _mm512_permutex2var_ps(lo, lanes.even, hi);
                yk[1] = _mm512_permutex2var_ps(lo, lanes.odd, hi);
            }
            let store = first_lanes(if second.is_some() { 2 * tw } else { tw });
            for (e, val) in output_grad_tile(y).into_iter().enumerate() {
                let at = e * stride + o * tb + ri * tw;
                // Safety: the pair's tiles are consecutive in the chunk's
                // block of matrix e.
                unsafe { _mm512_mask_storeu_ps(dp.add(at), store, val) };
            }
        }
    }
}

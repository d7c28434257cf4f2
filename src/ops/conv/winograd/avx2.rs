//! The three per-tile transforms of Winograd F(2×2, 3×3) in AVX2, for
//! f32, with the same operations in the same order as the portable
//! versions in [`super::transforms`], so all give the same bits (tested).
//!
//! Lane `l` of a vector is tile `t0 + l` of the chunk, tiles numbered
//! `ri·tw + tx` across the chunk's tile rows, whatever the plane's width:
//! a 4×4 plane has 2 tiles per row, too few for vectors along a row (as
//! the AVX-512 versions use), but a chunk always has many tiles. The
//! transformed matrices store tiles contiguously (`e·stride + c·tb + t`), so
//! transformed values are loaded and stored 8 tiles at a time; the pixels
//! a tile reads or writes are gathered, or written one by one, at offsets
//! worked out once per chunk ([`Groups`]): they depend on the tile, not on
//! the channel. Where tile rows are a multiple of 8 tiles long, the input
//! transform loads rows instead of gathering ([`RowLoads`]) and the output
//! transform stores rows instead of single values ([`store_rows`]).

use super::tile_math::x256::{input_tile, output_grad_tile, output_tile};
use super::{matrices_len, matrix_stride, SharedMut, Tiles};
use crate::backend::cpu::simd::avx2::{even_lanes, lane_mask, odd_lanes};
use crate::ops::conv::geom::ConvGeom;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Tiles per vector.
const LANES: usize = 8;

/// Whether this CPU runs these kernels (AVX2 and FMA, within the limit of
/// `simd::set_isa_limit`).
pub(super) fn available() -> bool {
    crate::backend::cpu::simd::VectorIsa::Avx2.is_available()
}

/// Whether the offsets of a buffer of `len` values fit the gathers' i32
/// indices.
pub(super) fn fits_offsets(len: usize) -> bool {
    i32::try_from(len).is_ok()
}

/// For each group of 8 tiles of a chunk and each of `K × J` pixels of a
/// tile (`(k, j)`: row `k`, column `j` from the tile's first), the offset
/// of that pixel in channel 0 of its image and whether it lies inside
/// the plane (offset 0 and lane off where not), for channel-independent
/// gathers and writes.
struct Groups<const P: usize> {
    /// `offsets[group][p][lane]`, `p = k·J + j`.
    offsets: Vec<[[i32; LANES]; P]>,
    /// `inside[group][p][lane]`: −1 (all bits) inside the plane, else 0.
    inside: Vec<[[i32; LANES]; P]>,
}

impl<const P: usize> Groups<P> {
    /// The groups of the chunk's tile rows `rows` for tiles whose pixel
    /// `(k, j)` (`k·cols + j = p`) lies at row `y0·2 + k − pad.0`, column
    /// `x0·2 + j − pad.1` of an `h × w` plane, `image_len` values per
    /// image (channel planes `h·w` apart inside it).
    fn new(
        tiles: &Tiles,
        rows: &Range<usize>,
        cols: usize,
        (h, w): (usize, usize),
        pad: (usize, usize),
        image_len: usize,
    ) -> Self {
        let tb = rows.len() * tiles.tw;
        let groups = tb.div_ceil(LANES);
        let mut offsets = vec![[[0i32; LANES]; P]; groups];
        let mut inside = vec![[[0i32; LANES]; P]; groups];
        for t in 0..tb {
            let (n, ty, tx) = tiles.position(rows.start, t);
            for p in 0..P {
                let (k, j) = (p / cols, p % cols);
                let iy = (2 * ty + k).wrapping_sub(pad.0);
                let ix = (2 * tx + j).wrapping_sub(pad.1);
                if iy < h && ix < w {
                    // The caller checked that the buffer's offsets fit i32.
                    offsets[t / LANES][p][t % LANES] = (n * image_len + iy * w + ix) as i32;
                    inside[t / LANES][p][t % LANES] = -1;
                }
            }
        }
        Groups { offsets, inside }
    }

    /// Pixel `p` of group `gi`'s tiles, gathered from `plane` (channel 0
    /// of the buffer the offsets count from, moved to the channel): 0 in
    /// the lanes outside the plane, whose values are not read.
    ///
    /// # Safety
    /// AVX2; every offset of the group's lanes inside the plane addresses
    /// a readable value from `plane`.
    #[target_feature(enable = "avx2")]
    unsafe fn gather(&self, plane: *const f32, gi: usize, p: usize) -> __m256 {
        // Safety: 8 i32 are one ymm; the caller's contract for the gather
        // (masked-off lanes are not read).
        unsafe {
            let at = _mm256_loadu_si256(self.offsets[gi][p].as_ptr().cast());
            let inside = _mm256_loadu_si256(self.inside[gi][p].as_ptr().cast());
            _mm256_mask_i32gather_ps::<4>(
                _mm256_setzero_ps(),
                plane,
                at,
                _mm256_castsi256_ps(inside),
            )
        }
    }
}

/// Lanes `0..n` of a vector (n ≤ 8) as a mask.
#[target_feature(enable = "avx2")]
pub(super) fn first_lanes(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Stores the first `n` lanes of `v` at `at`.
///
/// # Safety
/// AVX2; `n` values at `at` are writable.
#[target_feature(enable = "avx2")]
unsafe fn store(at: *mut f32, n: usize, v: __m256) {
    // Safety: the caller's contract (masked-off lanes are not written).
    unsafe {
        if n >= LANES {
            _mm256_storeu_ps(at, v)
        } else {
            _mm256_maskstore_ps(at, first_lanes(n), v)
        }
    }
}

/// Where each group of 8 tiles lies in one tile row (tile rows a
/// multiple of 8 tiles long: outputs 16, 32, … wide), the input transform
/// reads a row of a group's patches with four loads instead of four
/// gathers: pixel `j` of 8 tiles side by side is every other value from
/// column `2·tx0 + j − pw` on, so two loads 8 values apart give pixels 0
/// and 1 (even and odd lanes) and two more, 2 values on, pixels 2 and 3.
/// Lanes outside the row are masked (read as 0). The gathers cost as
/// much as the GEMMs of a 32-channel layer at 16² (`perf`, one thread,
/// AMD EPYC); with row loads its three passes took 0.89–0.97 of their
/// time, the 64-channel layer at 32² 0.81–0.92 (alternating runs, 12
/// rounds).
struct RowLoads {
    /// Per group position in a tile row (`tx0 / 8`): the masks of the
    /// loads at offsets 0, 8, 2 and 10, and whether all four are full.
    masks: Vec<([__m256i; 4], bool)>,
    /// Per group of the chunk: its image, tile row and first tile column.
    groups: Vec<(usize, usize, usize)>,
    w: usize,
    h: usize,
    image_len: usize,
    pad: (usize, usize),
}

impl RowLoads {
    /// The row loads of tile rows `rows`, or `None` where a group of 8
    /// tiles would span two tile rows.
    #[target_feature(enable = "avx2")]
    fn new(g: &ConvGeom, tiles: &Tiles, rows: &Range<usize>) -> Option<Self> {
        if !tiles.tw.is_multiple_of(LANES) {
            return None;
        }
        let masks = (0..tiles.tw / LANES)
            .map(|gx| {
                let first = (2 * gx * LANES) as isize - g.padding.1 as isize;
                let bits = |at: isize| {
                    (0..LANES as isize)
                        .filter(|l| (0..g.w as isize).contains(&(first + at + l)))
                        .fold(0u32, |m, l| m | 1 << l)
                };
                let b = [bits(0), bits(8), bits(2), bits(10)];
                (b.map(|bits| lane_mask(bits)), b == [0xff; 4])
            })
            .collect();
        Some(RowLoads {
            masks,
            groups: group_positions(tiles, rows),
            w: g.w,
            h: g.h,
            image_len: g.image_len(),
            pad: g.padding,
        })
    }

    /// Pixels `(k, 0..4)` of the chunk's group `gi` of 8 tiles (one tile
    /// row), in channel 0's `plane` moved to the channel: zeros where the
    /// input row or a column lies in the padding.
    ///
    /// # Safety
    /// AVX2; the tiles' image lies inside the buffer `plane` points into.
    #[target_feature(enable = "avx2")]
    unsafe fn pixels(&self, plane: *const f32, gi: usize, k: usize) -> [__m256; 4] {
        let (n, ty, tx0) = self.groups[gi];
        let iy = (2 * ty + k).wrapping_sub(self.pad.0);
        if iy >= self.h {
            return [_mm256_setzero_ps(); 4];
        }
        let (masks, full) = &self.masks[tx0 / LANES];
        let at = plane
            .wrapping_add(n * self.image_len + iy * self.w + 2 * tx0)
            .wrapping_sub(self.pad.1);
        // Safety: the lanes read (all of them when `full`) lie inside
        // input row iy of the tiles' image.
        let [a, b, a2, b2] = unsafe {
            if *full {
                [0, 8, 2, 10].map(|o| _mm256_loadu_ps(at.add(o)))
            } else {
                let load = |o: usize, m: __m256i| _mm256_maskload_ps(at.wrapping_add(o), m);
                [
                    load(0, masks[0]),
                    load(8, masks[1]),
                    load(2, masks[2]),
                    load(10, masks[3]),
                ]
            }
        };
        [
            even_lanes(a, b),
            odd_lanes(a, b),
            even_lanes(a2, b2),
            odd_lanes(a2, b2),
        ]
    }
}

/// Image, tile row and first tile column of each group of 8 tiles of the
/// chunk of tile rows `rows` (worked out once per chunk, not per channel).
fn group_positions(tiles: &Tiles, rows: &Range<usize>) -> Vec<(usize, usize, usize)> {
    (0..rows.len() * tiles.tw)
        .step_by(LANES)
        .map(|t0| tiles.position(rows.start, t0))
        .collect()
}

/// Where the input transform reads its pixels: rows, or gathers.
enum PixelSource {
    Rows(RowLoads),
    Gathers(Groups<16>),
}

/// Where the output transform writes its pixels: rows of 8 tiles (their
/// [`group_positions`]), or value by value.
enum PixelSink {
    Rows(Vec<(usize, usize, usize)>),
    Scatter(Groups<4>),
}

/// `V = Bᵀ d B` for the tiles of tile rows `rows`, every input channel,
/// into `v[e·stride + c·tb + t]` as the portable transform lays it out.
///
/// # Safety
/// AVX2; `x` holds the N×C×H×W input, its length [`fits_offsets`], and
/// `v` the chunk's [`matrices_len`]`(C, tb)` values.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transform_input(
    x: &[f32],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    v: &mut [f32],
) {
    let (c_n, tb) = (g.c_in, rows.len() * tiles.tw);
    let stride = matrix_stride(c_n, tb);
    assert!(x.len() >= g.n * g.image_len() && v.len() >= matrices_len(c_n, tb));
    let vp = v.as_mut_ptr();
    let source = match RowLoads::new(g, tiles, &rows) {
        Some(r) => PixelSource::Rows(r),
        None => PixelSource::Gathers(Groups::new(
            tiles,
            &rows,
            4,
            (g.h, g.w),
            g.padding,
            g.image_len(),
        )),
    };
    for c in 0..c_n {
        let plane = x.as_ptr().wrapping_add(c * g.h * g.w);
        for (gi, t0) in (0..tb).step_by(LANES).enumerate() {
            // d[k][j]: pixel (k, j) of each tile's patch, 0 in the padding.
            // Safety: lanes inside the plane read inside the image of
            // channel c (offsets from `Groups`, or rows and masks from
            // `RowLoads`, inside x.len()).
            let d: [[__m256; 4]; 4] = match &source {
                PixelSource::Rows(r) => std::array::from_fn(|k| unsafe { r.pixels(plane, gi, k) }),
                PixelSource::Gathers(groups) => std::array::from_fn(|k| {
                    std::array::from_fn(|j| unsafe { groups.gather(plane, gi, 4 * k + j) })
                }),
            };
            for (e, val) in input_tile(d).into_iter().enumerate() {
                // Safety: tiles t0 .. t0 + n of matrix e, channel c.
                unsafe { store(vp.add(e * stride + c * tb + t0), tb - t0, val) };
            }
        }
    }
}

/// `Y = Aᵀ M A` (+ bias) for the tiles of tile rows `rows`, every output
/// channel, from `m[e·stride + o·tb + t]`, into the N×O×oh×ow output behind
/// `out`; tiles that overhang an odd-sized output drop their last row or
/// column.
///
/// # Safety
/// AVX2; `m` holds the chunk's [`matrices_len`]`(O, tb)` products; `out` points at the
/// N×O×oh×ow output, its length [`fits_offsets`], and no other thread
/// writes the rows of these tile rows.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transform_output(
    m: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<f32>>,
) {
    let (o_n, tb) = (g.c_out, rows.len() * tiles.tw);
    let stride = matrix_stride(o_n, tb);
    assert!(m.len() >= matrices_len(o_n, tb));
    let mp = m.as_ptr();
    // Groups of 8 tiles in one tile row write 16 columns of two output
    // rows with vector stores instead of 32 scalar ones.
    let sink = if tiles.tw.is_multiple_of(LANES) {
        PixelSink::Rows(group_positions(tiles, &rows))
    } else {
        PixelSink::Scatter(Groups::new(
            tiles,
            &rows,
            2,
            (g.oh, g.ow),
            (0, 0),
            g.out_image_len(),
        ))
    };
    for o in 0..o_n {
        let bias_o = _mm256_set1_ps(bias.map_or(0.0, |b| b[o]));
        let plane = out.0.wrapping_add(o * g.oh * g.ow).cast::<f32>();
        for (gi, t0) in (0..tb).step_by(LANES).enumerate() {
            let lanes = first_lanes(tb - t0);
            // Safety: tiles t0 .. t0 + n of each matrix lie inside m.
            let m_e: [__m256; 16] = std::array::from_fn(|e| unsafe {
                _mm256_maskload_ps(mp.add(e * stride + o * tb + t0), lanes)
            });
            let y = output_tile(&m_e, bias_o);
            let groups = match &sink {
                PixelSink::Rows(positions) => {
                    // Safety: output rows of these tiles' image, channel
                    // o, which only this task writes.
                    unsafe { store_rows(plane, g, positions[gi], &y) };
                    continue;
                }
                PixelSink::Scatter(groups) => groups,
            };
            for (p, value) in y.iter().flatten().enumerate() {
                let mut v = [0f32; LANES];
                // Safety: 8 f32.
                unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *value) };
                let (offsets, inside) = (&groups.offsets[gi][p], &groups.inside[gi][p]);
                for l in 0..LANES.min(tb - t0) {
                    if inside[l] != 0 {
                        // Safety: an output pixel of channel o of the
                        // tile's image, in a row only this task writes.
                        unsafe { *plane.add(offsets[l] as usize) = v[l] };
                    }
                }
            }
        }
    }
}

/// Writes the outputs `y[a][b]` of a group of 8 tiles at `(n, ty, tx0)`
/// (one tile row: [`transform_output`] where tile rows are a multiple
/// of 8 tiles): output row `2·ty + a` (when inside the output) gets
/// `y[a][0]` and `y[a][1]` interleaved at columns `2·tx0 ..`, up to the
/// output's width.
///
/// # Safety
/// AVX2; `plane` is channel 0's output plane moved to the channel, and
/// no other thread writes these rows.
#[target_feature(enable = "avx2")]
unsafe fn store_rows(
    plane: *mut f32,
    g: &ConvGeom,
    (n, ty, tx0): (usize, usize, usize),
    y: &[[__m256; 2]; 2],
) {
    let cols = g.ow.saturating_sub(2 * tx0).min(2 * LANES);
    for (a, [y0, y1]) in y.iter().enumerate() {
        let oy = 2 * ty + a;
        if oy >= g.oh {
            break;
        }
        let (lo, hi) = (_mm256_unpacklo_ps(*y0, *y1), _mm256_unpackhi_ps(*y0, *y1));
        let halves = [
            _mm256_permute2f128_ps::<0x20>(lo, hi),
            _mm256_permute2f128_ps::<0x31>(lo, hi),
        ];
        let at = plane.wrapping_add(n * g.out_image_len() + oy * g.ow + 2 * tx0);
        for (h, v) in halves.into_iter().enumerate() {
            let count = cols.saturating_sub(LANES * h).min(LANES);
            // Safety: columns 2·tx0 + 8h .. + count of row oy lie inside
            // the output.
            unsafe { store(at.wrapping_add(LANES * h), count, v) };
        }
    }
}

/// `dM = A dY Aᵀ` for the tiles of tile rows `rows`, every output channel,
/// into `dm[e·stride + o·tb + t]` (`dY` is 0 outside the output).
///
/// # Safety
/// AVX2; `dy` holds the N×O×oh×ow gradient, its length [`fits_offsets`],
/// and `dm` the chunk's [`matrices_len`]`(O, tb)` values.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transform_output_grad(
    dy: &[f32],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    dm: &mut [f32],
) {
    let (o_n, tb) = (g.c_out, rows.len() * tiles.tw);
    let stride = matrix_stride(o_n, tb);
    let groups = Groups::<4>::new(tiles, &rows, 2, (g.oh, g.ow), (0, 0), g.out_image_len());
    assert!(dy.len() >= g.n * g.out_image_len() && dm.len() >= matrices_len(o_n, tb));
    let dp = dm.as_mut_ptr();
    for o in 0..o_n {
        let plane = dy.as_ptr().wrapping_add(o * g.oh * g.ow);
        for (gi, t0) in (0..tb).step_by(LANES).enumerate() {
            // y[k][h]: output-gradient pixel (k, h) of each tile, 0 past an
            // odd-sized output. Safety: lanes inside the output read inside
            // the image's channel o (offsets inside dy.len()).
            let y: [[__m256; 2]; 2] = std::array::from_fn(|k| {
                std::array::from_fn(|h| unsafe { groups.gather(plane, gi, 2 * k + h) })
            });
            for (e, val) in output_grad_tile(y).into_iter().enumerate() {
                // Safety: tiles t0 .. t0 + n of matrix e, channel o.
                unsafe { store(dp.add(e * stride + o * tb + t0), tb - t0, val) };
            }
        }
    }
}

/// `dg = Gᵀ dU G` for output channel `o`'s `c_n` kernels: `du` holds the
/// 16 O × C matrices (`du[(e·O + o)·C + c]`, `o_n` = O), `dw_o` the
/// channel's C×3×3 weight gradient. Eight input channels per step: each
/// matrix's 8 values are one load, the adjoint runs lane-wise, and the 9
/// taps × 8 kernels are written through a small block into the kernels'
/// tap-contiguous layout; the last `C mod 8` kernels go through the
/// portable arithmetic. The same operations in the same order as
/// `super::weights::untransform_weights`, so the same bits (tested).
///
/// The portable loop, compiled without AVX and reading 12 values 4·C
/// apart per kernel, took about 2.5 ms of the weight gradient of
/// ResNet-18's 512 × 512 layer on 4×4 planes (one thread, `perf`); with
/// this the pass went from 16.7–18.0 to 15.9–16.9 ms (three alternating
/// runs, AVX-512 host).
///
/// # Safety
/// AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn untransform_channel(
    du: &[f32],
    (o, o_n, c_n): (usize, usize, usize),
    dw_o: &mut [f32],
) {
    assert!(o < o_n && du.len() >= 16 * o_n * c_n && dw_o.len() == 9 * c_n);
    let half = _mm256_set1_ps(0.5);
    // Row i of Gᵀ, as `super::weights::gt_row`.
    let gt_lanes = |i: usize, [u0, u1, u2, u3]: [__m256; 4]| match i {
        0 => _mm256_add_ps(u0, _mm256_mul_ps(_mm256_add_ps(u1, u2), half)),
        1 => _mm256_mul_ps(_mm256_sub_ps(u1, u2), half),
        _ => _mm256_add_ps(_mm256_mul_ps(_mm256_add_ps(u1, u2), half), u3),
    };
    let full = c_n / LANES * LANES;
    for c in (0..full).step_by(LANES) {
        // Safety: matrix e's row o holds c_n values from (e·O + o)·C,
        // inside `du` (asserted), and c + 8 ≤ c_n.
        let u: [__m256; 16] = std::array::from_fn(|e| unsafe {
            _mm256_loadu_ps(du.as_ptr().add((e * o_n + o) * c_n + c))
        });
        // Gᵀ dU: three rows i of four columns j.
        let rows: [[__m256; 4]; 3] = std::array::from_fn(|i| {
            std::array::from_fn(|j| gt_lanes(i, [u[j], u[4 + j], u[8 + j], u[12 + j]]))
        });
        // (Gᵀ dU) G: tap 3i + b of the 8 kernels.
        let mut taps = [[0f32; LANES]; 9];
        for (t, tap) in taps.iter_mut().enumerate() {
            // Safety: a store of 8 values into an array of 8.
            unsafe { _mm256_storeu_ps(tap.as_mut_ptr(), gt_lanes(t % 3, rows[t / 3])) };
        }
        for (q, kernel) in dw_o[9 * c..9 * (c + LANES)].chunks_exact_mut(9).enumerate() {
            for (v, tap) in kernel.iter_mut().zip(&taps) {
                *v = tap[q];
            }
        }
    }
    for c in full..c_n {
        let at = |e: usize| du[(e * o_n + o) * c_n + c];
        let rows: [[f32; 4]; 3] = std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                super::weights::gt_row::<f32>(i, [at(j), at(4 + j), at(8 + j), at(12 + j)])
            })
        });
        for (t, v) in dw_o[9 * c..9 * (c + 1)].iter_mut().enumerate() {
            *v = super::weights::gt_row::<f32>(t % 3, rows[t / 3]);
        }
    }
}

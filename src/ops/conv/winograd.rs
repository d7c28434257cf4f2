//! Winograd F(2×2, 3×3) convolution: the fast path for 3×3 kernels with
//! stride 1 and dilation 1, which is every convolution inside a ResNet
//! basic block except the first of a downsampling stage.
//!
//! The output is cut into 2×2 tiles. Tile (ty, tx) of an output channel
//! depends only on the 4×4 input patch `d` that starts at row `2·ty − ph`
//! and column `2·tx − pw` of each input channel, and Lavin & Gray's
//! minimal filtering algorithm ("Fast Algorithms for Convolutional Neural
//! Networks", 2016) computes it with 16 multiplies per channel pair where
//! the definition needs 36:
//!
//! ```text
//! Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A
//!
//!      ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢1/2  1/2  1/2⎥    Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢1/2 −1/2  1/2⎥         ⎣0  1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦
//! ```
//!
//! For each of the 16 positions `e` of the 4×4 transformed domain, the sum
//! over input channels is a matrix product: `M_e = U_e · V_e`, with `U_e`
//! (O × C) the transformed weights and `V_e` (C × tiles) the transformed
//! input patches. So the 2.25× saving in multiplies still runs on the GEMM
//! kernel, as 16 GEMMs of inner dimension C instead of one of 9·C.
//!
//! The weight gradient follows by the chain rule through the same linear
//! maps: per tile `dM = A dY Aᵀ` (the adjoint of the output transform),
//! `dU_e = Σ_tiles dM_e · V_eᵀ` (16 GEMMs again), and `dg = Gᵀ dU G`. The
//! input gradient of a stride-1 convolution is itself a stride-1
//! convolution with the flipped kernel (`cpu::conv2d_backward_input`), so
//! it reaches this module through [`conv2d_forward`].
//!
//! Work is cut into chunks of whole tile rows. A chunk transforms its
//! patches, runs the 16 GEMMs and transforms the products back on one
//! thread, so its transformed values (16 per patch and channel) stay in
//! that core's cache instead of making a round trip through memory; chunks
//! run in parallel.
//!
//! The transforms only add, subtract and halve, so the results agree with
//! im2col + GEMM to within a few units in the last place of the inputs'
//! magnitudes (the tests compare both against the definition).

use super::cpu::{parallel, sum_in_fixed_runs, ConvGeom, SharedMut};
use crate::backend::cpu::num_threads;
use crate::backend::cpu::pool::take_empty;
use crate::backend::cpu::scratch::with_scratch;
use crate::error::{Error, Result};
use crate::ops::matmul::cpu::{gemm_serial, Gemm, MatRef};
use crate::ops::matmul::packed::{gemm_packed, PackedLhs};
use crate::tensor::Float;
use rayon::prelude::*;
use std::any::TypeId;
use std::mem::MaybeUninit;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
#[path = "winograd_avx512.rs"]
mod avx512;

/// Positions of the 4×4 transformed domain: one GEMM each.
const POS: usize = 16;

/// Fewest input and output channels for which [`applies`] chooses this
/// path. With 16 channels the 16 GEMMs have too short an inner dimension
/// to run fast and im2col + GEMM wins (`examples/conv_passes.rs`).
pub const MIN_CHANNELS: usize = 32;

/// Fewest 2×2 tiles in the batch for which [`applies`] chooses this path
/// on CPUs without the AVX-512 transforms. The weight transform costs as
/// much as the GEMMs would on a single tile, so small batches of small
/// planes (ResNet-18's 512-channel 4×4 layers, 128 tiles at batch 32) are
/// faster through im2col there.
pub const MIN_TILES: usize = 256;

/// [`MIN_TILES`] where the AVX-512 transforms run (f32): with the weights
/// transformed straight into the packed layout, the 512-channel 4×4
/// layers at batch 32 (128 tiles) measured 25-30 % faster in every pass
/// than through im2col (`ferrite bench --conv-layers --filter 512x4x4`).
pub const MIN_TILES_AVX512: usize = 128;

/// The tile threshold of [`applies`] on this CPU.
fn min_tiles() -> usize {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        return MIN_TILES_AVX512;
    }
    MIN_TILES
}

/// Transformed values (inputs and products together) a chunk aims to hold:
/// about 1 MiB of f32, half of a core's L2 cache on the machines we measure.
const CHUNK_VALUES: usize = 1 << 18;

/// Fewest tiles per chunk: each chunk re-reads all 16 transformed weight
/// matrices, so chunks must be wide enough to pay for that.
const MIN_CHUNK_TILES: usize = 64;

/// True when this module can compute the convolution: a 3×3 kernel,
/// stride 1, dilation 1 and one group (any padding and channel count).
pub fn supports(g: &ConvGeom) -> bool {
    (g.kh, g.kw) == (3, 3)
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.groups == 1
        && g.oh > 0
        && g.ow > 0
}

/// True when the CPU convolution routes this geometry here: [`supports`],
/// with at least [`MIN_CHANNELS`] input and output channels and
/// [`MIN_TILES`] output tiles ([`MIN_TILES_AVX512`] with the AVX-512
/// transforms), where it measured faster than im2col.
pub fn applies(g: &ConvGeom) -> bool {
    let tiles = Tiles::of(g);
    supports(g)
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
        && tiles.rows * tiles.tw >= min_tiles()
}

/// The grid of 2×2 output tiles. A "tile row" is one row of tiles of one
/// image; tile rows are numbered `n·th + ty` across the batch.
#[derive(Clone, Copy)]
struct Tiles {
    /// Tile rows per image, `⌈oh / 2⌉`.
    th: usize,
    /// Tiles per tile row, `⌈ow / 2⌉`.
    tw: usize,
    /// Tile rows in the batch, `n · th`.
    rows: usize,
}

impl Tiles {
    fn of(g: &ConvGeom) -> Self {
        let th = g.oh.div_ceil(2);
        Tiles {
            th,
            tw: g.ow.div_ceil(2),
            rows: g.n * th,
        }
    }
}

/// Cuts the tile rows into chunks: about [`CHUNK_VALUES`] transformed
/// values each, at least [`MIN_CHUNK_TILES`] tiles, and at least one chunk
/// per thread when the batch allows.
fn chunk_rows(g: &ConvGeom, tiles: &Tiles) -> Vec<Range<usize>> {
    let by_cache = (CHUNK_VALUES / (POS * (g.c_in + g.c_out)).max(1)).max(MIN_CHUNK_TILES);
    let rows_by_cache = by_cache.div_ceil(tiles.tw).max(1);
    let rows_by_threads = tiles.rows.div_ceil(num_threads()).max(1);
    let per = rows_by_cache.min(rows_by_threads);
    (0..tiles.rows)
        .step_by(per)
        .map(|r| r..(r + per).min(tiles.rows))
        .collect()
}

/// Row `i` of `G` applied to three values: the 4 ways F(2×2, 3×3) mixes
/// the taps of a kernel row or column.
#[inline(always)]
fn g_row<T: Float>(i: usize, a: T, b: T, c: T) -> T {
    let half = T::from_f64(0.5);
    match i {
        0 => a,
        1 => (a + b + c) * half,
        2 => (a - b + c) * half,
        _ => c,
    }
}

/// Row `i` of `Gᵀ` applied to four values: the adjoint of [`g_row`].
#[inline(always)]
fn gt_row<T: Float>(i: usize, u: [T; 4]) -> T {
    let half = T::from_f64(0.5);
    match i {
        0 => u[0] + (u[1] + u[2]) * half,
        1 => (u[1] - u[2]) * half,
        _ => (u[1] + u[2]) * half + u[3],
    }
}

/// `U = G g Gᵀ` for every (output, input) channel pair of `w` (O×C×3×3),
/// laid out as 16 row-major O × C matrices: `u[(e·O + o)·C + c]`.
///
/// Output channels run in parallel. For one output channel the 9 taps of
/// all its C kernels are first split into 9 arrays of C, so every step
/// after that is an elementwise operation on whole arrays.
fn transform_weights<T: Float>(w: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    let (o_n, c_n) = (g.c_out, g.c_in);
    let len = POS * o_n * c_n;
    let mut u = take_empty::<T>(len)?;
    let u_ptr = SharedMut(u.spare_capacity_mut().as_mut_ptr());
    (0..o_n).into_par_iter().for_each_init(
        || vec![T::ZERO; 21 * c_n],
        |buf, o| {
            let (taps, gg) = buf.split_at_mut(9 * c_n);
            for (c, k) in w[o * c_n * 9..(o + 1) * c_n * 9]
                .chunks_exact(9)
                .enumerate()
            {
                for (t, &v) in k.iter().enumerate() {
                    taps[t * c_n + c] = v;
                }
            }
            let tap = |t: usize| &taps[t * c_n..(t + 1) * c_n];
            for i in 0..4 {
                // Row i of G g: three arrays (its columns b = 0, 1, 2).
                for b in 0..3 {
                    let dst = &mut gg[b * c_n..(b + 1) * c_n];
                    let (t0, t1, t2) = (tap(b), tap(3 + b), tap(6 + b));
                    for c in 0..c_n {
                        dst[c] = g_row(i, t0[c], t1[c], t2[c]);
                    }
                }
                let (r0, rest) = gg.split_at(c_n);
                let (r1, r2) = rest.split_at(c_n);
                for j in 0..4 {
                    // Safety: row o of matrix e = 4i + j, inside the buffer;
                    // only the task for output channel o writes it.
                    let dst = unsafe { u_ptr.slice(((4 * i + j) * o_n + o) * c_n, c_n) };
                    for c in 0..c_n {
                        dst[c].write(g_row(j, r0[c], r1[c], r2[c]));
                    }
                }
            }
        },
    );
    // SAFETY: every (e, o) row of C elements was written above: the tasks
    // cover o in 0..O and each writes its row of all 16 matrices.
    unsafe { u.set_len(len) };
    Ok(u)
}

/// `dg = Gᵀ dU G`: the adjoint of [`transform_weights`], from 16 O × C
/// matrices back to the O×C×3×3 weight layout. Output channels run in
/// parallel, each on whole arrays of C as in the forward transform.
fn untransform_weights<T: Float>(du: &[T], g: &ConvGeom) -> Vec<T> {
    let (o_n, c_n) = (g.c_out, g.c_in);
    let mut dw = vec![T::ZERO; o_n * c_n * 9];
    dw.par_chunks_mut(c_n * 9).enumerate().for_each_init(
        || vec![T::ZERO; 12 * c_n],
        |rows, (o, dw_o)| {
            let at = |e: usize| &du[(e * o_n + o) * c_n..(e * o_n + o + 1) * c_n];
            // Gᵀ dU: three rows i of four arrays j.
            for i in 0..3 {
                for j in 0..4 {
                    let dst = &mut rows[(4 * i + j) * c_n..(4 * i + j + 1) * c_n];
                    let (u0, u1, u2, u3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                    for c in 0..c_n {
                        dst[c] = gt_row(i, [u0[c], u1[c], u2[c], u3[c]]);
                    }
                }
            }
            // (Gᵀ dU) G, written tap by tap into the kernels.
            for (c, k) in dw_o.chunks_exact_mut(9).enumerate() {
                for i in 0..3 {
                    let r = |j: usize| rows[(4 * i + j) * c_n + c];
                    let row = [r(0), r(1), r(2), r(3)];
                    for b in 0..3 {
                        k[3 * i + b] = gt_row(b, row);
                    }
                }
            }
        },
    );
    dw
}

/// `dst[i] = f(a[i], b[i])`: the shape of every transform step below.
#[inline(always)]
fn combine2<T: Float>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(x, y);
    }
}

/// `dst[i] = f(a[i], b[i], c[i])`.
#[inline(always)]
fn combine3<T: Float>(dst: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d = f(x, y, z);
    }
}

/// Splits one input row into the even and odd columns of a zero-padded
/// strip: strip column `s` holds input column `s − pad` (0 outside the
/// row), `even[q]` is strip column `2q` and `odd[q]` is `2q + 1`.
fn split_even_odd<T: Float>(src: &[T], pad: usize, even: &mut [T], odd: &mut [T]) {
    let n = even.len();
    let pixel = |s: usize| {
        s.checked_sub(pad)
            .and_then(|x| src.get(x))
            .copied()
            .unwrap_or(T::ZERO)
    };
    // Pairs q whose columns 2q and 2q + 1 both lie inside the row.
    let q_lo = pad.div_ceil(2).min(n);
    let q_hi = ((pad + src.len()) / 2).clamp(q_lo, n);
    let inside = src[2 * q_lo - pad.min(2 * q_lo)..].chunks_exact(2);
    for ((e, o), pair) in even[q_lo..q_hi]
        .iter_mut()
        .zip(&mut odd[q_lo..q_hi])
        .zip(inside)
    {
        *e = pair[0];
        *o = pair[1];
    }
    for q in (0..q_lo).chain(q_hi..n) {
        even[q] = pixel(2 * q);
        odd[q] = pixel(2 * q + 1);
    }
}

/// `s` as f32 when `T` is f32 and the CPU runs [`avx512`]'s transforms.
#[cfg(target_arch = "x86_64")]
fn as_f32<T: 'static>(s: &[T]) -> Option<&[f32]> {
    (TypeId::of::<T>() == TypeId::of::<f32>() && avx512::available())
        // SAFETY: T is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// [`as_f32`] for a mutable slice.
#[cfg(target_arch = "x86_64")]
fn as_f32_mut<T: 'static>(s: &mut [T]) -> Option<&mut [f32]> {
    (TypeId::of::<T>() == TypeId::of::<f32>() && avx512::available())
        // SAFETY: T is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

/// `V = Bᵀ d B` for the tile rows `rows` (see [`transform_input_portable`]),
/// in AVX-512 for f32 where the CPU has it.
fn transform_input<T: Float>(
    x: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    v: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(v)) = (as_f32(x), as_f32_mut(v)) {
        // Safety: AVX-512 is available (as_f32); the buffers are the ones
        // the portable transform takes.
        return unsafe { avx512::transform_input(x, g, tiles, rows, v) };
    }
    transform_input_portable(x, g, tiles, rows, v)
}

/// `Y = Aᵀ M A` (+ bias) for the tile rows `rows` (see
/// [`transform_output_portable`]), in AVX-512 for f32 where the CPU has it.
fn transform_output<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(m) = as_f32(m) {
        let bias = bias.map(|b| as_f32(b).expect("bias has the element type of m"));
        let out = SharedMut(out.0.cast::<MaybeUninit<f32>>());
        // Safety: AVX-512 is available; T is f32, so `out` points at the
        // f32 output the caller vouched for.
        return unsafe { avx512::transform_output(m, bias, g, tiles, rows, out) };
    }
    transform_output_portable(m, bias, g, tiles, rows, out)
}

/// `dM = A dY Aᵀ` for the tile rows `rows` (see
/// [`transform_output_grad_portable`]), in AVX-512 for f32 where the CPU
/// has it.
fn transform_output_grad<T: Float>(
    dy: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    dm: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(dy), Some(dm)) = (as_f32(dy), as_f32_mut(dm)) {
        // Safety: AVX-512 is available; the buffers are the portable ones.
        return unsafe { avx512::transform_output_grad(dy, g, tiles, rows, dm) };
    }
    transform_output_grad_portable(dy, g, tiles, rows, dm)
}

/// `V = Bᵀ d B` for every input channel and every tile of the tile rows
/// `rows`, laid out as 16 row-major C × tb matrices: `v[(e·C + c)·tb + t]`,
/// with `t` the tile's index inside the chunk.
///
/// Per tile row and channel, the 4 input rows its tiles read are split
/// into the even and odd columns of a zero-padded strip; tile `tx` then
/// reads `even[tx], odd[tx], even[tx + 1], odd[tx + 1]`. `Bᵀ` combines the
/// strip's rows and `B` those four columns, each as an elementwise
/// operation on whole arrays.
fn transform_input_portable<T: Float>(
    x: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    v: &mut [T],
) {
    let (c_n, tw) = (g.c_in, tiles.tw);
    let tb = rows.len() * tw;
    let (ph, pw) = g.padding;
    let half = tw + 1;
    let sub = |a: T, b: T| a - b;
    // Even and odd halves of the 4 strip rows, then of the 4 rows of Bᵀ d.
    let mut strip = vec![T::ZERO; 16 * half];
    let (d, bt_d) = strip.split_at_mut(8 * half);
    // Channel by channel, then down the chunk's tile rows: consecutive
    // tile rows read neighbouring input rows, which keeps the reads of
    // x sequential (the other order jumps between planes and stalls on
    // memory latency).
    for c in 0..c_n {
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let plane = &x[(n * c_n + c) * g.h * g.w..(n * c_n + c + 1) * g.h * g.w];
            for (k, pair) in d.chunks_exact_mut(2 * half).enumerate() {
                let (even, odd) = pair.split_at_mut(half);
                let iy = (2 * ty + k).wrapping_sub(ph);
                if iy < g.h {
                    split_even_odd(&plane[iy * g.w..(iy + 1) * g.w], pw, even, odd);
                } else {
                    pair.fill(T::ZERO); // above or below the image: padding
                }
            }
            // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3), both halves.
            let [d0, d1, d2, d3]: [&[T]; 4] =
                std::array::from_fn(|k| &d[k * 2 * half..][..2 * half]);
            let (t0, rest) = bt_d.split_at_mut(2 * half);
            let (t1, rest) = rest.split_at_mut(2 * half);
            let (t2, t3) = rest.split_at_mut(2 * half);
            combine2(t0, d0, d2, sub);
            combine2(t1, d1, d2, |a, b| a + b);
            combine2(t2, d2, d1, sub);
            combine2(t3, d1, d3, sub);
            // (Bᵀ d) B: each row's tile columns (a, b, c, d) =
            // (even[tx], odd[tx], even[tx+1], odd[tx+1]) become
            // (a − c, b + c, c − b, b − d), into the 16 matrices.
            for (i, pair) in bt_d.chunks_exact(2 * half).enumerate() {
                let (even, odd) = pair.split_at(half);
                let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
                let start = |j: usize| ((4 * i + j) * c_n + c) * tb + ri * tw;
                combine2(&mut v[start(0)..][..tw], e0, e1, sub);
                combine2(&mut v[start(1)..][..tw], o0, e1, |a, b| a + b);
                combine2(&mut v[start(2)..][..tw], e1, o0, sub);
                combine2(&mut v[start(3)..][..tw], o0, o1, sub);
            }
        }
    }
}

/// `Y = Aᵀ M A` (+ bias) for every output channel and tile of the tile
/// rows `rows`, from the 16 O × tb product matrices `m`, written into the
/// N×O×oh×ow output behind `out`. Tiles that overhang an odd-sized output
/// drop their last row or column.
fn transform_output_portable<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
) {
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    // Aᵀ M (2 rows of 4 arrays), then (Aᵀ M) A: the even and odd output
    // columns of the tile row's two output rows.
    let mut buf = vec![T::ZERO; 12 * tw];
    let (s, y) = buf.split_at_mut(8 * tw);
    // Channel by channel, then down the tile rows: sequential writes.
    for o in 0..o_n {
        let bias_o = bias.map_or(T::ZERO, |b| b[o]);
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let out_rows = if 2 * ty + 1 < g.oh { 2 } else { 1 };
            let m_e = |e: usize| &m[(e * o_n + o) * tb + ri * tw..][..tw];
            // Aᵀ M: rows (m0 + m1 + m2, m1 − m2 − m3), column by column.
            for (a, dst) in s.chunks_exact_mut(tw).enumerate() {
                let j = a % 4;
                if a < 4 {
                    combine3(dst, m_e(j), m_e(4 + j), m_e(8 + j), |x, y, z| x + y + z);
                } else {
                    combine3(dst, m_e(4 + j), m_e(8 + j), m_e(12 + j), |x, y, z| {
                        x - y - z
                    });
                }
            }
            // (Aᵀ M) A: columns (s0 + s1 + s2, s1 − s2 − s3) of each row.
            for (a, dst) in y.chunks_exact_mut(tw).enumerate() {
                let sj = |j: usize| &s[(4 * (a / 2) + j) * tw..][..tw];
                if a % 2 == 0 {
                    combine3(dst, sj(0), sj(1), sj(2), |x, y, z| x + y + z + bias_o);
                } else {
                    combine3(dst, sj(1), sj(2), sj(3), |x, y, z| x - y - z + bias_o);
                }
            }
            // Safety: tile row `r` is in this chunk only, so output rows
            // 2ty and 2ty + 1 of image n are written by this call alone,
            // and they lie inside the N×O×oh×ow buffer.
            let dst = unsafe { out.slice(((n * o_n + o) * g.oh + 2 * ty) * g.ow, out_rows * g.ow) };
            for (row, line) in dst.chunks_exact_mut(g.ow).enumerate() {
                let (even, odd) = (&y[2 * row * tw..][..tw], &y[(2 * row + 1) * tw..][..tw]);
                let mut pairs = line.chunks_exact_mut(2);
                for ((pair, &e), &od) in pairs.by_ref().zip(even).zip(odd) {
                    pair[0].write(e);
                    pair[1].write(od);
                }
                if let [last] = pairs.into_remainder() {
                    last.write(even[tw - 1]); // odd width: a tile's first column only
                }
            }
        }
    }
}

/// `dM = A dY Aᵀ` for every output channel and tile of the tile rows
/// `rows`: the adjoint of [`transform_output`], laid out like its input
/// (`dm[(e·O + o)·tb + t]`). Outside the output, `dY` counts as 0.
fn transform_output_grad_portable<T: Float>(
    dy: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    dm: &mut [T],
) {
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let plane_len = g.oh * g.ow;
    // Even and odd columns of the tile row's two dY rows, then the even (p)
    // and odd (q) columns of the 4 rows of A dY.
    let mut buf = vec![T::ZERO; 12 * tw];
    let (dy_rows, ady) = buf.split_at_mut(4 * tw);
    // Channel by channel, then down the tile rows: sequential reads.
    for o in 0..o_n {
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let plane = &dy[(n * o_n + o) * plane_len..(n * o_n + o + 1) * plane_len];
            for (k, pair) in dy_rows.chunks_exact_mut(2 * tw).enumerate() {
                let (even, odd) = pair.split_at_mut(tw);
                match plane.get((2 * ty + k) * g.ow..(2 * ty + k + 1) * g.ow) {
                    Some(src) => split_even_odd(src, 0, even, odd),
                    None => pair.fill(T::ZERO), // below an odd-sized output
                }
            }
            // A dY: rows (y0, y0 + y1, y0 − y1, −y1), both halves at once.
            let (y0, y1) = dy_rows.split_at(2 * tw);
            let (r0, rest) = ady.split_at_mut(2 * tw);
            let (r1, rest) = rest.split_at_mut(2 * tw);
            let (r2, r3) = rest.split_at_mut(2 * tw);
            r0.copy_from_slice(y0);
            combine2(r1, y0, y1, |a, b| a + b);
            combine2(r2, y0, y1, |a, b| a - b);
            combine2(r3, y1, y1, |_, b| -b);
            // (A dY) Aᵀ: each row's (p, q) becomes (p, p + q, p − q, −q).
            for (i, pair) in ady.chunks_exact(2 * tw).enumerate() {
                let (p, q) = pair.split_at(tw);
                let start = |j: usize| ((4 * i + j) * o_n + o) * tb + ri * tw;
                dm[start(0)..][..tw].copy_from_slice(p);
                combine2(&mut dm[start(1)..][..tw], p, q, |a, b| a + b);
                combine2(&mut dm[start(2)..][..tw], p, q, |a, b| a - b);
                combine2(&mut dm[start(3)..][..tw], q, q, |_, b| -b);
            }
        }
    }
}

/// Forward: `x` (N×C×H×W), `w` (O×C×3×3), optional `bias` (O), all
/// contiguous; returns N×O×oh×ow. Errors unless [`supports`], or when a
/// buffer is shorter than the geometry needs.
pub fn conv2d_forward<T: Gemm>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    check_supported(g)?;
    let (x, w, bias) = g.forward_operands(x, w, bias)?;
    match weights_packed_directly(w, g, Orientation::AsIs) {
        Some(packed) => forward_with(x, &packed, bias, g),
        None => forward_two_step_packing(x, w, bias, g),
    }
}

/// The forward pass with the weights transformed into 16 matrices first
/// and packed for the GEMM after: the portable route (and the one the
/// tests compare direct packing with).
fn forward_two_step_packing<T: Gemm>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    let (c_n, o_n) = (g.c_in, g.c_out);
    let u = transform_weights(w, g)?;
    let packed: Vec<PackedLhs<T>> = (0..POS)
        .map(|e| PackedLhs::new(MatRef::row_major(&u, e * o_n * c_n, o_n, c_n)))
        .collect();
    forward_with(x, &packed, bias, g)
}

/// Input gradient of the convolution `g`: `dy` (N×O×oh×ow) and `w`
/// (O×C×3×3) → `dx` (N×C×H×W), as the forward convolution of `dy` with
/// the kernel flipped and its channel axes swapped (see
/// `cpu::conv2d_backward_input`).
///
/// With f32 on AVX-512 the flipped kernel is never built: its transformed
/// matrices are those of `w` with the channel axes swapped and the
/// positions of the 4×4 domain reversed (flipping a kernel row reverses
/// `G g`: `G·rev(g)` is `G g` with rows 0 and 3 swapped), written straight
/// into the packed layout. Elsewhere the flipped kernel goes through
/// [`conv2d_forward`]. Errors unless [`supports`] and the flipped
/// convolution exists (padding at most 2, at least 16 input channels), or
/// when a buffer is shorter than the geometry needs.
pub fn conv2d_backward_input<T: Gemm>(dy: &[T], w: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    check_supported(g)?;
    let t = super::plan::flipped_candidate(g).ok_or_else(|| {
        Error::invalid(
            "winograd conv2d input gradient",
            format!("geometry {g:?} has no flipped-kernel convolution"),
        )
    })?;
    let (dy, w) = g.input_grad_operands(dy, w)?;
    match weights_packed_directly(w, g, Orientation::Flipped) {
        Some(packed) => forward_with(dy, &packed, None, &t),
        None => conv2d_forward(dy, &super::cpu::flip_kernel(w, g)?, None, &t),
    }
}

/// Which transformed weights to pack: those of `w` as it is (the forward
/// pass), or those of `w` flipped with its channel axes swapped (the
/// input gradient).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Orientation {
    AsIs,
    Flipped,
}

/// The 16 transformed weight matrices of `w` (geometry `g`) in
/// `orientation`, written straight into the GEMM's packed layout where
/// the element type and CPU have one (f32 with AVX-512); `None`
/// elsewhere, or when the memory cannot be reserved (then the caller
/// transforms and packs them in two steps).
fn weights_packed_directly<T: Gemm>(
    w: &[T],
    g: &ConvGeom,
    orientation: Orientation,
) -> Option<Vec<PackedLhs<'static, T>>> {
    #[cfg(target_arch = "x86_64")]
    if let Some(w) = as_f32(w) {
        let flipped = orientation == Orientation::Flipped;
        let packed = avx512::packed_weights(w, g, flipped)?;
        let (rows, cols) = if flipped {
            (g.c_in, g.c_out)
        } else {
            (g.c_out, g.c_in)
        };
        return packed
            .into_iter()
            .map(|p| {
                // T is f32 (as_f32), whose packed form is `PackedA`.
                let any: Box<dyn std::any::Any> = Box::new(p);
                let p = any.downcast::<T::Packed>().ok()?;
                Some(PackedLhs::from_packed(rows, cols, *p))
            })
            .collect();
    }
    let _ = (w, g, orientation);
    None
}

/// The forward pass of `g` with its 16 transformed weight matrices
/// already packed (`u_packed[e]`: O × C). The operands were checked.
fn forward_with<T: Gemm>(
    x: &[T],
    u_packed: &[PackedLhs<T>],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    let (c_n, o_n) = (g.c_in, g.c_out);
    let tiles = Tiles::of(g);
    let chunks = chunk_rows(g, &tiles);
    let max_tb = chunks.iter().map(|r| r.len()).max().unwrap_or(0) * tiles.tw;
    let len = g.n * o_n * g.oh * g.ow;
    if len == 0 {
        return Ok(Vec::new()); // no output channel (or image): nothing to compute
    }
    let mut out = take_empty::<T>(len)?;
    let out_ptr = SharedMut(out.spare_capacity_mut().as_mut_ptr());
    let run = |rows: &Range<usize>| {
        let tb = rows.len() * tiles.tw;
        with_scratch(POS * max_tb * (c_n + o_n), |scratch: &mut [T]| {
            let (v, m) = scratch.split_at_mut(POS * max_tb * c_n);
            let (v, m) = (&mut v[..POS * tb * c_n], &mut m[..POS * tb * o_n]);
            transform_input(x, g, &tiles, rows.clone(), v);
            for (e, m_e) in m.chunks_exact_mut(o_n * tb).enumerate() {
                let v_e = MatRef::row_major(v, e * c_n * tb, c_n, tb);
                gemm_packed(&u_packed[e], v_e, m_e, false);
            }
            transform_output(m, bias, g, &tiles, rows.clone(), out_ptr);
        })
    };
    if parallel(g) {
        chunks.par_iter().for_each(run);
    } else {
        chunks.iter().for_each(run);
    }
    // SAFETY: the chunks cover every tile row of every image, and for each
    // tile row `transform_output` writes output rows 2ty and 2ty + 1 (the
    // second only when inside the output) of every channel, every column
    // of them: tiles tx cover columns 2tx and 2tx + 1 up to ow. So all
    // n × O × oh × ow elements are written. A panic in a chunk propagates
    // before this line; `out` is then dropped with length 0.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Weight gradient: `x` (N×C×H×W) and `dy` (N×O×oh×ow) → `dw` (O×C×3×3),
/// summed over images. Errors unless [`supports`], or when a buffer is
/// shorter than the geometry needs.
///
/// `dU` is summed over chunks by `sum_in_fixed_runs`, so the result is the
/// same on every call.
pub fn conv2d_backward_weight<T: Gemm>(x: &[T], dy: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    check_supported(g)?;
    let (x, dy) = g.weight_grad_operands(x, dy)?;
    if g.c_in == 0 || g.c_out == 0 {
        return Ok(Vec::new()); // an empty weight has an empty gradient
    }
    let (c_n, o_n) = (g.c_in, g.c_out);
    let tiles = Tiles::of(g);
    let chunks = chunk_rows(g, &tiles);
    let max_tb = chunks.iter().map(|r| r.len()).max().unwrap_or(0) * tiles.tw;
    let du_len = POS * o_n * c_n;
    let add_chunk = |mut du: Vec<T>, rows: &Range<usize>| {
        let tb = rows.len() * tiles.tw;
        with_scratch(POS * max_tb * (c_n + o_n), |scratch: &mut [T]| {
            let (v, dm) = scratch.split_at_mut(POS * max_tb * c_n);
            let (v, dm) = (&mut v[..POS * tb * c_n], &mut dm[..POS * tb * o_n]);
            transform_input(x, g, &tiles, rows.clone(), v);
            transform_output_grad(dy, g, &tiles, rows.clone(), dm);
            for (e, du_e) in du.chunks_exact_mut(o_n * c_n).enumerate() {
                let dm_e = MatRef::row_major(dm, e * o_n * tb, o_n, tb);
                let v_e = MatRef::row_major(v, e * c_n * tb, c_n, tb).t();
                gemm_serial(dm_e, v_e, du_e, true);
            }
        });
        du
    };
    let du = sum_in_fixed_runs(&chunks, du_len, parallel(g), add_chunk);
    Ok(untransform_weights(&du, g))
}

/// An error unless the geometry is one the Winograd kernels compute.
fn check_supported(g: &ConvGeom) -> Result<()> {
    if supports(g) {
        Ok(())
    } else {
        Err(Error::invalid(
            "winograd conv2d",
            format!("geometry {g:?} is not a 3×3, stride-1, dilation-1, ungrouped convolution"),
        ))
    }
}

#[cfg(test)]
#[path = "winograd_tests.rs"]
mod tests;

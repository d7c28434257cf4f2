//! Winograd-style forward pass for 3×3 convolutions with stride 2: the
//! first convolution of a ResNet stage that halves the plane, which
//! F(2×2, 3×3) (`winograd`) cannot take.
//!
//! A stride-2 3×3 kernel splits into its even taps (0 and 2) over the
//! even-offset inputs and its odd tap (1) over the odd-offset ones. In one
//! dimension two outputs need the five inputs `d0…d4` of a window that
//! moves 4 inputs per tile:
//!
//! ```text
//! y0 = g0·d0 + g1·d1 + g2·d2        y1 = g0·d2 + g1·d3 + g2·d4
//! ```
//!
//! The even taps on `(d0, d2, d4)` are Winograd F(2, 2) (three products),
//! the odd tap takes two more, so five products replace six:
//!
//! ```text
//!      ⎡1  0 −1  0  0⎤        ⎡1  0  0⎤
//!      ⎢0  0  1  0  0⎥        ⎢1  0  1⎥
//! Bᵀ = ⎢0  0 −1  0  1⎥    G = ⎢0  0  1⎥    Aᵀ = ⎡1  1  0  1  0⎤
//!      ⎢0  1  0  0  0⎥        ⎢0  1  0⎥         ⎣0  1  1  0  1⎦
//!      ⎣0  0  0  1  0⎦        ⎣0  1  0⎦
//! ```
//!
//! Nested in two dimensions, a 2×2 output tile reads a 5×5 input patch
//! and costs 25 products per channel pair where the definition needs 36
//! (1.44× fewer). As in `winograd`, each of the 25 positions `e` of the
//! transformed domain is a matrix product over input channels, `M_e = U_e
//! · V_e` with `U_e = (G g Gᵀ)_e` (O × C) and `V_e = (Bᵀ d B)_e` (C ×
//! tiles), run on the GEMM kernel, and `Y = Aᵀ M A`. Every transform only
//! adds and subtracts (no fractions), so the result is the definition's
//! sum regrouped.
//!
//! Rows 3 and 4 of `G` are equal, so only 4 × 4 of the 25 transformed
//! weight matrices differ; those 16 are packed once per call and shared.
//! Work is cut into chunks of whole tile rows that transform, multiply and
//! transform back on one thread. `transforms.rs` holds the transforms
//! (compiled again for AVX2 and AVX-512, same values) and `avx512.rs` the
//! vector row mix of the input transform.
//!
//! Only the forward pass runs here, on large planes with many channels
//! ([`applies`]): ResNet-50's 128→128 layer at 56² and 256→256 at 28² and
//! ResNet-18's 128→256 at 28² (batch 32, one thread) took 0.83–0.88× the
//! implicit GEMM's time with AVX-512 and 0.91–0.93× with AVX2 (one run set
//! too noisy to tell), 0.96–0.98× on two threads. The two gradients of
//! these layers run as before (`plan::algorithm`): a stride-2 Winograd
//! weight gradient measured 0.91–0.97× on the large planes and 1.3–2.3×
//! on the small ones.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;
mod transforms;

use super::cpu::{parallel, shares_in_pieces, ConvGeom, SharedMut};
use super::winograd::Tiles;
use crate::backend::cpu::num_threads;
use crate::backend::cpu::pool::{recycle, take_empty};
use crate::backend::cpu::scratch::with_scratch;
use crate::error::{Error, Result};
use crate::ops::matmul::cpu::{Gemm, MatRef};
use crate::ops::matmul::packed::{gemm_packed, PackedLhs};
use crate::tensor::Float;
use rayon::prelude::*;
use std::ops::Range;
use transforms::{scratch_len, transform_input, transform_output};

/// Positions of the 5×5 transformed domain: one GEMM each.
const POS: usize = 25;

/// Fewest input and output channels for which [`applies`] chooses this
/// path. ResNet-18's 64→128 layer at 56² was level with the implicit GEMM
/// (one thread, `ferrite bench --conv-layers`), the 128- and 256-channel
/// layers of ResNet-50 at 56² and 28² 12–15 % faster.
pub const MIN_CHANNELS: usize = 128;

/// Fewest output pixels per image for which [`applies`] chooses this
/// path: 14×14. On smaller planes the transforms cost more than the
/// products save: CIFAR ResNet-18's 64→128 and 128→256 layers (16² and
/// 8² outputs) ran 3–20 % slower than the implicit GEMM, and 7×7 outputs
/// also pay for a tile half outside the plane.
pub const MIN_OUTPUT_PIXELS: usize = 196;

/// Fewest 2×2 output tiles in the batch for which [`applies`] chooses this
/// path: the 16 distinct transformed weight matrices (1.8× the weights)
/// are built and packed on every call, which a few images do not pay
/// back.
pub const MIN_TILES: usize = 1024;

/// Tiles per chunk (whole tile rows, at least this many where the share
/// of a thread allows). A chunk's 25 transformed input and product
/// matrices then outgrow L2 on ResNet's layers (6.6 MB at 256 channels);
/// smaller chunks keep them there but re-read the packed weights more
/// often and give the products fewer columns. Measured on ResNet-50's
/// 256-channel layer at 28² (one thread): 64, 128, 256 and 512 tiles all
/// within the run-to-run spread, 256 the lowest median.
const CHUNK_TILES: usize = 256;

/// Values left unused after each transformed matrix of a chunk (one
/// cache line of f32), so that the 25 rows a transform writes per channel
/// do not fall into one L1 set (see `winograd::matrix_stride`).
const MATRIX_GAP: usize = 16;

/// True when this module can compute the forward pass of `g`: a 3×3
/// kernel, stride 2 both ways, dilation 1, one group, a non-empty output.
pub fn supports(g: &ConvGeom) -> bool {
    (g.kh, g.kw) == (3, 3)
        && g.stride == (2, 2)
        && g.dilation == (1, 1)
        && g.groups == 1
        && g.oh > 0
        && g.ow > 0
}

/// True when the CPU forward routes `g` here: [`supports`], with at least
/// [`MIN_CHANNELS`] input and output channels, [`MIN_OUTPUT_PIXELS`]
/// output pixels per image and [`MIN_TILES`] tiles.
pub fn applies(g: &ConvGeom) -> bool {
    supports(g)
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
        && g.oh * g.ow >= MIN_OUTPUT_PIXELS
        && Tiles::of(g).count() >= MIN_TILES
}

/// Distance between the starts of a chunk's consecutive transformed
/// matrices of `rows × tb` values.
fn matrix_stride(rows: usize, tb: usize) -> usize {
    rows * tb + MATRIX_GAP
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
    if !supports(g) {
        return Err(Error::invalid(
            "winograd stride-2 conv2d",
            format!("geometry {g:?} is not a 3×3, stride-2, dilation-1, ungrouped convolution"),
        ));
    }
    let (x, w, bias) = g.forward_operands(x, w, bias)?;
    let len = g.n * g.c_out * g.oh * g.ow;
    if len == 0 {
        return Ok(Vec::new()); // no image or no output channel
    }
    let (c_n, o_n) = (g.c_in, g.c_out);
    let u = transform_weights(w, g)?;
    let distinct: Vec<PackedLhs<T>> = (0..DISTINCT * DISTINCT)
        .map(|d| PackedLhs::new(MatRef::row_major(&u, d * o_n * c_n, o_n, c_n)))
        .collect();
    let packed: Vec<&PackedLhs<T>> = (0..POS)
        .map(|e| &distinct[distinct_of(e / 5) * DISTINCT + distinct_of(e % 5)])
        .collect();
    let tiles = Tiles::of(g);
    let chunks = chunk_rows(g, &tiles);
    let max_tb = chunks.iter().map(|r| r.len()).max().unwrap_or(0) * tiles.tw;
    let mut out = take_empty::<T>(len)?;
    let out_ptr = SharedMut(out.spare_capacity_mut().as_mut_ptr());
    let run = |rows: &Range<usize>| {
        let tb = rows.len() * tiles.tw;
        let (v_max, m_max) = (
            POS * matrix_stride(c_n, max_tb),
            POS * matrix_stride(o_n, max_tb),
        );
        let tmp_len = scratch_len(max_tb);
        with_scratch(v_max + m_max + tmp_len, |scratch: &mut [T]| {
            let (v, rest) = scratch.split_at_mut(v_max);
            let (m, tmp) = rest.split_at_mut(m_max);
            transform_input(x, g, tiles, rows.clone(), v, tmp);
            for (e, m_e) in m
                .chunks_exact_mut(matrix_stride(o_n, tb))
                .take(POS)
                .enumerate()
            {
                let v_e = MatRef::row_major(v, e * matrix_stride(c_n, tb), c_n, tb);
                gemm_packed(packed[e], v_e, &mut m_e[..o_n * tb], false);
            }
            transform_output(m, bias, g, tiles, rows.clone(), out_ptr, tmp);
        })
    };
    if parallel(g) {
        chunks.par_iter().for_each(run);
    } else {
        chunks.iter().for_each(run);
    }
    drop(packed);
    drop(distinct);
    recycle(u);
    // SAFETY: the chunks cover every tile row of every image, and for each
    // tile row `transform_output` writes output rows 2ty and 2ty + 1 (the
    // second where it lies inside the output) of every channel, all their
    // columns. A panic in a chunk propagates before this line; `out` is
    // then dropped with length 0.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Cuts the tile rows into chunks: one even share per thread, every share
/// into the same number of chunks, the fewest that keep them within about
/// [`CHUNK_TILES`] tiles.
fn chunk_rows(g: &ConvGeom, tiles: &Tiles) -> Vec<Range<usize>> {
    let rows_per_chunk = CHUNK_TILES.div_ceil(tiles.tw).max(1);
    let shares = if parallel(g) { num_threads() } else { 1 };
    shares_in_pieces(tiles.rows, shares, rows_per_chunk)
        .into_iter()
        .map(|(start, len)| start..start + len)
        .collect()
}

/// Distinct rows of `G`: rows 3 and 4 both pick the middle tap, so of
/// the 25 transformed weight matrices only 4 × 4 differ.
const DISTINCT: usize = 4;

/// The distinct row of `G` that row `i` equals.
fn distinct_of(i: usize) -> usize {
    i.min(DISTINCT - 1)
}

/// `U = G g Gᵀ` for every (output, input) channel pair of `w` (O×C×3×3),
/// as the 16 distinct row-major O × C matrices: `u[(d·O + o)·C + c]` with
/// `d = 4·distinct_of(i) + distinct_of(j)`. Row `i` of `G` sums the kernel
/// rows `{0}`, `{0, 2}`, `{2}` or `{1}`, so each matrix row is a sum of
/// one, two or four of the kernel's taps over all input channels: per
/// output channel, the taps are first split into 9 arrays of C, and every
/// step after that is an elementwise operation on whole arrays.
fn transform_weights<T: Float>(w: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    const ROWS: [&[usize]; DISTINCT] = [&[0], &[0, 2], &[2], &[1]];
    let (o_n, c_n) = (g.c_out, g.c_in);
    let len = DISTINCT * DISTINCT * o_n * c_n;
    let mut u = take_empty::<T>(len)?;
    let u_ptr = SharedMut(u.spare_capacity_mut().as_mut_ptr());
    (0..o_n).into_par_iter().for_each_init(
        || vec![T::ZERO; 9 * c_n],
        |taps, o| {
            for (c, k) in w[o * c_n * 9..][..c_n * 9].chunks_exact(9).enumerate() {
                for (t, &v) in k.iter().enumerate() {
                    taps[t * c_n + c] = v;
                }
            }
            let tap = |i: usize, j: usize| &taps[(3 * i + j) * c_n..][..c_n];
            for (di, rows) in ROWS.iter().enumerate() {
                for (dj, cols) in ROWS.iter().enumerate() {
                    // SAFETY: row o of matrix d lies inside the buffer and
                    // is written by this output channel's task alone.
                    let dst = unsafe { u_ptr.slice(((di * DISTINCT + dj) * o_n + o) * c_n, c_n) };
                    let mut terms = rows.iter().flat_map(|&i| cols.iter().map(move |&j| (i, j)));
                    let (i0, j0) = terms.next().expect("every row of G picks a tap");
                    for (d, &v) in dst.iter_mut().zip(tap(i0, j0)) {
                        d.write(v);
                    }
                    for (i, j) in terms {
                        for (d, &v) in dst.iter_mut().zip(tap(i, j)) {
                            // SAFETY: written just above.
                            let sum = unsafe { d.assume_init() } + v;
                            d.write(sum);
                        }
                    }
                }
            }
        },
    );
    // SAFETY: every (d, o, c) was written above.
    unsafe { u.set_len(len) };
    Ok(u)
}

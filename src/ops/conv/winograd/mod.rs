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
//! convolution with the flipped kernel (`cpu::conv2d_backward_input`),
//! computed by [`conv2d_backward_input`].
//!
//! The files: `transforms.rs` holds the portable tile transforms and picks
//! the AVX-512 ones (`avx512.rs`, one tile row per vector, and
//! `avx512_pairs.rs`, two rows per vector for planes of at most 8 tiles
//! per row) or the AVX2 ones (`avx2.rs`, 8 tiles of a chunk per vector,
//! pixels gathered) for f32 where the CPU has them; `weights.rs` holds
//! `G g Gᵀ` and its adjoint, and `packed_weights.rs` the weights written
//! straight into the GEMM's packed layout; `tests.rs` compares every fast
//! path with the portable one or the definition.
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

use super::cpu::{parallel, shares_in_pieces, sum_in_fixed_runs, ConvGeom, SharedMut};
use crate::backend::cpu::num_threads;
use crate::backend::cpu::pool::{recycle, take_empty};
use crate::backend::cpu::scratch::with_scratch;
use crate::error::{Error, Result};
use crate::ops::matmul::cpu::{gemm_serial, Gemm, MatRef};
use crate::ops::matmul::packed::{gemm_packed, PackedLhs};
use rayon::prelude::*;
use std::any::TypeId;
use std::mem::MaybeUninit;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_pairs;
#[cfg(target_arch = "x86_64")]
mod packed_weights;
#[cfg(target_arch = "x86_64")]
mod tile_math;
mod transforms;
mod weight_by_position;
mod weights;

use transforms::{transform_input, transform_output, transform_output_grad};
use weights::{transform_weights, untransform_weights, weights_packed_directly, Orientation};

/// Positions of the 4×4 transformed domain: one GEMM each.
const POS: usize = 16;

/// Fewest input and output channels for which [`applies`] chooses this
/// path. With 16 channels the 16 GEMMs have too short an inner dimension
/// to run fast and im2col + GEMM wins (`examples/conv_passes.rs`).
pub const MIN_CHANNELS: usize = 32;

/// Fewest 2×2 tiles in the batch for which [`applies`] chooses this path
/// on CPUs without ferrite's sgemm (neither AVX2 nor AVX-512). The weight
/// transform costs as much as the GEMMs would on a single tile, so small
/// batches of small planes (ResNet-18's 512-channel 4×4 layers, 128 tiles
/// at batch 32) are faster through im2col there.
pub const MIN_TILES: usize = 256;

/// [`MIN_TILES`] where the weights are transformed straight into the
/// sgemm's packed layout (f32 on AVX-512 or AVX2): the 512-channel 4×4
/// layers at batch 32 (128 tiles) measured faster in every pass than
/// through im2col or the implicit GEMM: 25-30 % on AVX-512, and on AVX2
/// (portable transforms) 23.3 / 26.9 / 23.5 → 17.9 / 18.0 / 18.9 ms for
/// the forward, input and weight gradients (`ferrite bench --conv-layers
/// --filter 512x4x4`, `FERRITE_ISA=avx2`, one thread).
pub const MIN_TILES_PACKED: usize = 128;

/// The tile threshold of [`applies`] on this CPU.
fn min_tiles() -> usize {
    #[cfg(target_arch = "x86_64")]
    if crate::ops::matmul::sgemm::available() {
        return MIN_TILES_PACKED;
    }
    MIN_TILES
}

/// Transformed values (inputs and products together) a chunk aims to hold:
/// about 1 MiB of f32, half of a core's L2 cache on the machines we measure.
const CHUNK_VALUES: usize = 1 << 18;

/// Values left unused after each of a chunk's 16 transformed matrices:
/// one 64-byte cache line of f32. See [`matrix_stride`].
const MATRIX_GAP: usize = 16;

/// Distance, in values, between the starts of consecutive transformed
/// matrices (`channels × tb` each) of a chunk: their size plus
/// [`MATRIX_GAP`].
///
/// A transform writes (or reads) one vector of each of the 16 matrices
/// per channel and tile row. Packed back to back, ResNet's matrices are a
/// power of two long (32 channels × 256 tiles: 32 KiB), so those 16
/// accesses fall in one L1 set, which holds 12 lines; the lines evict
/// each other and the stores stall. The gap staggers them over 16 sets.
/// Measured (`ferrite bench --conv-layers`, batch 32, three alternating
/// rounds), every Winograd pass gained on two threads (3–33 %) and with
/// AVX2 (3–27 %); on one thread with AVX-512 the weight gradients of
/// 32@16² and 64@8² went from 1.21 to 1.08 ms and from 1.39 to 0.89 ms.
/// The transforms' share of the 32@16² weight gradient's profile fell
/// from 45 % to 24 %.
fn matrix_stride(channels: usize, tb: usize) -> usize {
    channels * tb + MATRIX_GAP
}

/// Values that a chunk's 16 transformed matrices of `channels × tb` take,
/// gaps included.
fn matrices_len(channels: usize, tb: usize) -> usize {
    POS * matrix_stride(channels, tb)
}

/// Runs `f(v, m)` on this thread's scratch, cut into a chunk's 16
/// transformed input matrices (`C × tb`) and its 16 product or
/// output-gradient matrices (`O × tb`), laid out as [`matrix_stride`]
/// says; the scratch is sized for the widest chunk (`max_tb` tiles), so
/// it is allocated once per thread.
fn with_chunk_matrices<T: Gemm, R>(
    (c_n, o_n): (usize, usize),
    max_tb: usize,
    tb: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    let v_max = matrices_len(c_n, max_tb);
    with_scratch(v_max + matrices_len(o_n, max_tb), |scratch: &mut [T]| {
        let (v, m) = scratch.split_at_mut(v_max);
        f(
            &mut v[..matrices_len(c_n, tb)],
            &mut m[..matrices_len(o_n, tb)],
        )
    })
}

/// Fewest tiles per chunk the cache budget asks for: each chunk re-reads
/// all 16 transformed weight matrices, so chunks must be wide enough to
/// pay for that.
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
/// [`MIN_TILES`] output tiles ([`MIN_TILES_PACKED`] where the weights are
/// packed directly), where it measured faster than im2col.
pub fn applies(g: &ConvGeom) -> bool {
    let tiles = Tiles::of(g);
    supports(g) && g.c_in >= MIN_CHANNELS && g.c_out >= MIN_CHANNELS && tiles.count() >= min_tiles()
}

/// The grid of 2×2 output tiles. A "tile row" is one row of tiles of one
/// image; tile rows are numbered `n·th + ty` across the batch. Shared with
/// the stride-2 algorithm (`winograd_stride2`), whose tiles are 2×2 too.
#[derive(Clone, Copy)]
pub(super) struct Tiles {
    /// Tile rows per image, `⌈oh / 2⌉`.
    pub(super) th: usize,
    /// Tiles per tile row, `⌈ow / 2⌉`.
    pub(super) tw: usize,
    /// Tile rows in the batch, `n · th`.
    pub(super) rows: usize,
}

impl Tiles {
    /// The tiles of `g`'s output.
    pub(super) fn of(g: &ConvGeom) -> Self {
        let th = g.oh.div_ceil(2);
        Tiles {
            th,
            tw: g.ow.div_ceil(2),
            rows: g.n * th,
        }
    }

    /// Tiles in the batch.
    pub(super) fn count(&self) -> usize {
        self.rows * self.tw
    }

    /// Image, tile row in it and tile column of tile `t` of a chunk whose
    /// first tile row is `first_row` (tiles numbered `ri·tw + tx` across
    /// the chunk's rows).
    pub(super) fn position(&self, first_row: usize, t: usize) -> (usize, usize, usize) {
        let r = first_row + t / self.tw;
        (r / self.th, r % self.th, t % self.tw)
    }
}

/// Cuts the tile rows into chunks: the rows split evenly into one share
/// per thread, and every share evenly into the same number of chunks, the
/// fewest that keep the largest share's chunks within the cache budget
/// (about [`CHUNK_VALUES`] transformed values, but no fewer than
/// [`MIN_CHUNK_TILES`] tiles; an even cut may leave a chunk a few tiles
/// under that floor). The weight gradient sums
/// one run of chunks per thread (`thread_runs`), which are then the
/// shares: cut into equal chunks and a short last one, ResNet-50's
/// 256-channel 14×14 layers had 22 chunks of 10 rows and one of 4, and
/// one of two threads summed 120 rows, the other 104.
fn chunk_rows(g: &ConvGeom, tiles: &Tiles) -> Vec<Range<usize>> {
    let by_cache = (CHUNK_VALUES / (POS * (g.c_in + g.c_out)).max(1)).max(MIN_CHUNK_TILES);
    let rows_by_cache = by_cache.div_ceil(tiles.tw).max(1);
    shares_in_pieces(tiles.rows, num_threads(), rows_by_cache)
        .into_iter()
        .map(|(start, len)| start..start + len)
        .collect()
}

/// `s` as f32 when `T` is f32.
pub(super) fn f32_slice<T: 'static>(s: &[T]) -> Option<&[f32]> {
    (TypeId::of::<T>() == TypeId::of::<f32>())
        // SAFETY: T is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// [`f32_slice`] for a mutable slice.
pub(super) fn f32_slice_mut<T: 'static>(s: &mut [T]) -> Option<&mut [f32]> {
    (TypeId::of::<T>() == TypeId::of::<f32>())
        // SAFETY: T is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
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
    if by_position(g, &tiles) {
        forward_by_position(x, u_packed, bias, g, &tiles, out_ptr);
        // SAFETY: the parts of `forward_by_position` cover every tile row,
        // and `transform_output` writes all of a tile row's outputs (see
        // the argument at the end of this function).
        unsafe { out.set_len(len) };
        return Ok(out);
    }
    let run = |rows: &Range<usize>| {
        let tb = rows.len() * tiles.tw;
        with_chunk_matrices((c_n, o_n), max_tb, tb, |v: &mut [T], m: &mut [T]| {
            transform_input(x, g, &tiles, rows.clone(), v);
            for (e, m_e) in m.chunks_exact_mut(matrix_stride(o_n, tb)).enumerate() {
                let v_e = MatRef::row_major(v, e * matrix_stride(c_n, tb), c_n, tb);
                gemm_packed(&u_packed[e], v_e, &mut m_e[..o_n * tb], false);
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

/// Runs `f(vs, ms)` on this thread's scratch, cut into each part's
/// transformed input matrices (`vs[p]`: 16 of `C × tb`) and product or
/// output-gradient matrices (`ms[p]`: 16 of `O × tb`), laid out as
/// [`matrix_stride`] says: the whole batch's transforms at once, for the
/// computations split by position.
fn with_part_matrices<T: Gemm, R>(
    (c_n, o_n): (usize, usize),
    tiles: &Tiles,
    parts: &[Range<usize>],
    f: impl FnOnce(Vec<&mut [T]>, Vec<&mut [T]>) -> R,
) -> R {
    let tb = |rows: &Range<usize>| rows.len() * tiles.tw;
    let v_len = |rows: &Range<usize>| matrices_len(c_n, tb(rows));
    let m_len = |rows: &Range<usize>| matrices_len(o_n, tb(rows));
    let all_v: usize = parts.iter().map(v_len).sum();
    let all_m: usize = parts.iter().map(m_len).sum();
    with_scratch(all_v + all_m, |scratch: &mut [T]| {
        let (mut v_rest, mut m_rest) = scratch.split_at_mut(all_v);
        let (mut vs, mut ms) = (Vec::new(), Vec::new());
        for rows in parts {
            let (v, tail) = std::mem::take(&mut v_rest).split_at_mut(v_len(rows));
            let (m, m_tail) = std::mem::take(&mut m_rest).split_at_mut(m_len(rows));
            (v_rest, m_rest) = (tail, m_tail);
            vs.push(v);
            ms.push(m);
        }
        f(vs, ms)
    })
}

/// Transformed values (inputs and products of every tile) up to which
/// [`forward_by_position`] may hold the whole batch (32 MiB of f32).
const BY_POSITION_VALUES: usize = 1 << 23;

/// True when the forward runs [`forward_by_position`] (and the weight
/// gradient `weight_by_position`): on several threads,
/// for layers whose 16 transformed weight matrices outweigh the
/// transformed tiles (`4·O·C ≥ tiles·(C + O)`: ResNet's 256- and
/// 512-channel layers on 8×8 and 4×4 planes at batch 32), with the whole
/// batch's transformed values within [`BY_POSITION_VALUES`].
fn by_position(g: &ConvGeom, tiles: &Tiles) -> bool {
    let (c_n, o_n) = (g.c_in, g.c_out);
    let all = tiles.rows * tiles.tw;
    num_threads() > 1
        && parallel(g)
        && POS * all * (c_n + o_n) <= BY_POSITION_VALUES
        && 4 * o_n * c_n >= all * (c_n + o_n)
}

/// The forward with the work split by Winograd position rather than by
/// chunk of tiles: the batch's tile rows are cut into one part per thread
/// and transformed in parallel; then each task takes whole positions `e`
/// and multiplies `Uₑ` by every part's `Vₑ`; then the parts' outputs are
/// transformed back in parallel. Split by chunks, every thread streams all
/// 16 transformed weight matrices (16 MiB for 512 channels); split by
/// position, each reads its share once. The products are the same sums
/// in the same order as the chunked forward's (columns are independent),
/// so the bits are the same.
fn forward_by_position<T: Gemm>(
    x: &[T],
    u_packed: &[PackedLhs<T>],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: &Tiles,
    out: SharedMut<MaybeUninit<T>>,
) {
    let (c_n, o_n) = (g.c_in, g.c_out);
    let per = tiles.rows.div_ceil(num_threads()).max(1);
    let parts: Vec<Range<usize>> = (0..tiles.rows)
        .step_by(per)
        .map(|r| r..(r + per).min(tiles.rows))
        .collect();
    let tb = |rows: &Range<usize>| rows.len() * tiles.tw;
    with_part_matrices((c_n, o_n), tiles, &parts, |mut vs, mut ms| {
        parts
            .par_iter()
            .zip(vs.par_iter_mut())
            .for_each(|(rows, v)| {
                transform_input(x, g, tiles, rows.clone(), v);
            });
        {
            // by_e[e][p]: part p's product matrix of position e (O × tb).
            let mut by_e: Vec<Vec<&mut [T]>> = (0..POS).map(|_| Vec::new()).collect();
            for (rows, m) in parts.iter().zip(ms.iter_mut()) {
                for (e, m_e) in m.chunks_exact_mut(matrix_stride(o_n, tb(rows))).enumerate() {
                    by_e[e].push(&mut m_e[..o_n * tb(rows)]);
                }
            }
            let vs = &vs;
            by_e.par_iter_mut().enumerate().for_each(|(e, m_parts)| {
                for ((rows, v), m_e) in parts.iter().zip(vs).zip(m_parts.iter_mut()) {
                    let v_e = MatRef::row_major(v, e * matrix_stride(c_n, tb(rows)), c_n, tb(rows));
                    gemm_packed(&u_packed[e], v_e, m_e, false);
                }
            });
        }
        parts.par_iter().zip(ms.par_iter()).for_each(|(rows, m)| {
            transform_output(m, bias, g, tiles, rows.clone(), out);
        });
    });
}

/// Weight gradient: `x` (N×C×H×W) and `dy` (N×O×oh×ow) → `dw` (O×C×3×3),
/// summed over images. Errors unless [`supports`], or when a buffer is
/// shorter than the geometry needs.
///
/// `dU` is summed over chunks by `sum_in_fixed_runs`, or, where
/// `by_position` holds, position by position with the chunks in order
/// (`weight_by_position`): either way the result is the same on every
/// call.
pub fn conv2d_backward_weight<T: Gemm>(x: &[T], dy: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    check_supported(g)?;
    let (x, dy) = g.weight_grad_operands(x, dy)?;
    if g.c_in == 0 || g.c_out == 0 {
        return Ok(Vec::new()); // an empty weight has an empty gradient
    }
    let (c_n, o_n) = (g.c_in, g.c_out);
    let tiles = Tiles::of(g);
    let chunks = chunk_rows(g, &tiles);
    if by_position(g, &tiles) {
        return weight_by_position::backward_weight_by_position(x, dy, g, &tiles, &chunks);
    }
    let max_tb = chunks.iter().map(|r| r.len()).max().unwrap_or(0) * tiles.tw;
    let du_len = POS * o_n * c_n;
    let add_chunk = |mut du: Vec<T>, rows: &Range<usize>| {
        let tb = rows.len() * tiles.tw;
        with_chunk_matrices((c_n, o_n), max_tb, tb, |v: &mut [T], dm: &mut [T]| {
            transform_input(x, g, &tiles, rows.clone(), v);
            transform_output_grad(dy, g, &tiles, rows.clone(), dm);
            for (e, du_e) in du.chunks_exact_mut(o_n * c_n).enumerate() {
                let dm_e = MatRef::row_major(dm, e * matrix_stride(o_n, tb), o_n, tb);
                let v_e = MatRef::row_major(v, e * matrix_stride(c_n, tb), c_n, tb).t();
                gemm_serial(dm_e, v_e, du_e, true);
            }
        });
        du
    };
    let du = sum_in_fixed_runs(&chunks, du_len, parallel(g), add_chunk)?;
    let dw = untransform_weights(&du, g);
    recycle(du);
    Ok(dw)
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
mod tests;

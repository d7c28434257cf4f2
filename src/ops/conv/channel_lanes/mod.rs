//! The forward of a 3×3 convolution with padding 1 computed directly,
//! with output channels in the vector lanes (f32, AVX-512 or AVX2).
//!
//! `y[n, o, oy, ox] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x[n, c, sh·oy + i − 1, sw·ox + j − 1]`.
//! The implicit GEMM computes this as `W · X` with the unrolled input `X`
//! on the vector side of its micro-kernel, so every micro-panel of `X`
//! must be gathered from the planes: at stride 2 a pair of loads and a
//! permute per 16 values, and the taps that fall on padding are products
//! with zeros (8 % of a stride-2 layer's products on 8×8 outputs, 16 % on
//! 4×4).
//!
//! Here the roles are swapped: the weights, packed once per call into
//! blocks of [`BLOCK`] output channels (`[channel][tap][64]`), are the
//! vector side, and each input value is broadcast straight from the NCHW
//! planes (a broadcast reads any address, so a stride costs nothing and
//! nothing is gathered or copied). A tile is up to 5 pixels of one output
//! row × 64 output channels in 20 zmm accumulators: per input channel and
//! tap, 4 loads of weights and 5 broadcasts feed 20 fused multiply-adds
//! (AVX2: 16 channels in 2 ymm vectors per pixel, a block's 64 channels
//! as four tiles). The kernel rows that fall on padding (above the first
//! output row, below the last) are left out of the loop, and the left or
//! right kernel column of a row's first or last pixel out of the unrolled
//! taps, so no product with padding is computed. The sums, plus the bias, are
//! transposed in registers and stored as rows of the output planes. The
//! work is one task per group of images and block of weights.
//!
//! Taken by the stride-2 layers of small planes (`pays`): on every
//! stride-2 3×3 layer of the CIFAR ResNet-8/20/18 it measured 0.82–0.95×
//! the implicit GEMM's time with AVX-512 and 0.84–0.98× with AVX2, one
//! or two threads (`benches/RESULTS.md`, sixteenth round).
//!
//! The weight gradient with output channels in the lanes, on the same
//! layers and more, is in `weight_grad` (its kernels in `weight_kernels`).
//!
//! Summation order: each output sums its terms channel by channel, taps
//! in order, in one chain (the GEMM routes add blocks of 256 terms), so
//! results agree with the other routes to rounding (tested against the
//! f64 reference), the same on any thread count and either instruction
//! set.

mod kernels;
#[cfg(test)]
mod tests;
mod weight_grad;
mod weight_kernels;

pub(super) use weight_grad::{pays as pays_weight_grad, try_backward_weight};

use super::cpu::{parallel, SharedMut};
use super::geom::ConvGeom;
use super::implicit::forward_in_f32;
use crate::backend::cpu::num_threads;
use crate::backend::cpu::pool::{recycle, take_empty, take_zeroed};
use crate::backend::cpu::scratch::with_scratch;
use crate::error::{Error, Result};
use crate::ops::matmul::sgemm::{self, pack_runs, Kernel};
use kernels::{Tile, LEFT, RIGHT};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output channels per block of packed weights (four 16-lane vectors).
const BLOCK: usize = 64;

/// Taps of a 3×3 kernel.
const TAPS: usize = 9;

/// Most pixels per tile (with 4 vectors of channels: 20 accumulators).
/// Tiles of 6 (24 accumulators, 4 vectors of weights and a broadcast in
/// 32 registers) had the compiler spill accumulators inside the loop in
/// some builds: the 64→128 layer 23 % slower.
const MOST_PIXELS: usize = 5;

/// Largest input image (bytes) that [`pays`] takes: ResNet-18's
/// 64-channel 56×56 inputs (800 KB) ran 7–10 % slower here than through
/// the implicit GEMM.
const MAX_IMAGE_BYTES: usize = 256 << 10;

/// Fewest pixels per row tile that [`pays`] takes: with 4 vectors of
/// weights per step, a tile of 3 pixels does 12 multiply-adds per 7
/// loads, and 7-pixel rows (4 + 3) ran 4–6 % slower than the implicit
/// GEMM (ResNet-18's 256→512 layer at 14×14).
const MIN_TILE_PIXELS: usize = 4;

/// Whether this route can compute the f32 forward of `g`: a 3×3 kernel
/// with padding 1, dilation 1 and one group, a horizontal stride of 1 or
/// 2, at least one input and one output channel, on a CPU that runs
/// ferrite's sgemm (AVX-512, or AVX2 and FMA).
pub(super) fn supports(g: &ConvGeom) -> bool {
    sgemm::available()
        && (g.kh, g.kw, g.padding, g.dilation, g.groups) == (3, 3, (1, 1), (1, 1), 1)
        && matches!(g.stride.1, 1 | 2)
        && g.c_in > 0
        && g.c_out > 0
}

/// Whether the forward of `g` runs here (f32): where [`supports`] holds,
/// for stride-2 layers whose images' inputs stay in L2
/// ([`MAX_IMAGE_BYTES`]) and whose output rows split into tiles of at
/// least [`MIN_TILE_PIXELS`].
pub(super) fn pays(g: &ConvGeom) -> bool {
    supports(g)
        && g.stride == (2, 2)
        && g.image_len() * std::mem::size_of::<f32>() <= MAX_IMAGE_BYTES
        && row_tiles(g.ow).all(|(_, pixels)| pixels >= MIN_TILE_PIXELS)
}

/// [`conv2d_forward`] when `T` is f32 and [`pays`] holds; `None`
/// otherwise (the caller takes another route).
pub(super) fn try_forward<T: 'static>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Option<Result<Vec<T>>> {
    forward_in_f32(x, w, bias, pays(g), |x, w, bias| {
        conv2d_forward(x, w, bias, g)
    })
}

/// Forward: `x` (N×C×H×W), `w` (O×C×3×3), optional `bias` (O), all
/// contiguous; returns N×O×oh×ow. Errors unless [`supports`], when a
/// buffer is shorter than the geometry needs, or when memory runs out.
pub(super) fn conv2d_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
) -> Result<Vec<f32>> {
    if !supports(g) {
        return Err(Error::invalid(
            "conv2d",
            "the channel-lane forward takes 3×3 kernels with padding 1, no dilation or \
             groups, a horizontal stride of 1 or 2 and channels in and out, on AVX-512 or \
             AVX2 and FMA",
        ));
    }
    forward_on(Kernel::current(), x, w, bias, g)
}

/// [`conv2d_forward`] on the kernels of `isa`, which the CPU runs.
fn forward_on(
    isa: Kernel,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
) -> Result<Vec<f32>> {
    assert!(isa.cpu_has(), "{isa:?} kernels on this CPU");
    let (x, w, bias) = g.forward_operands(x, w, bias)?;
    let packed = PackedWeights::new(isa, w, bias, g)?;
    let len = g.n * g.out_image_len();
    let mut out = take_empty::<f32>(len)?;
    let out_ptr = SharedMut(out.spare_capacity_mut().as_mut_ptr());
    // One task per group of images and block of output channels, group
    // by group: rayon balances them over the threads, and each output
    // value is computed by one task in a fixed order whatever the threads.
    let tasks: Vec<((usize, usize), usize)> = image_groups(g, packed.blocks)
        .flat_map(|group| (0..packed.blocks).map(move |block| (group, block)))
        .collect();
    let run = |&((m0, m), block): &((usize, usize), usize)| {
        with_scratch(g.oh * g.ow * BLOCK, |sums: &mut [f32]| {
            for n in m0..m0 + m {
                // Safety: image n's block of output channels lies inside
                // `out`, written by this task only (the tasks' pairs of
                // images and blocks are disjoint).
                let y = unsafe { out_ptr.slice(n * g.out_image_len(), g.out_image_len()) };
                let x = &x[n * g.image_len()..][..g.image_len()];
                forward_image(isa, x, &packed, block, g, y, sums);
            }
        })
    };
    if parallel(g) {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
    // The next call's weights reuse the buffer (4.7 MB for ResNet-18's
    // 256→512 layer), rather than fresh pages from the system.
    recycle(packed.buf);
    // SAFETY: the tasks cover every image and block of output channels,
    // and `forward_image` writes every channel of its block at every
    // pixel.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Bytes of input images that each block of weights is used on in turn
/// ([`image_groups`]), so that they stay in L2 from one block to the next.
const GROUP_INPUT_BYTES: usize = 512 << 10;

/// The batch's images in groups of at most [`GROUP_INPUT_BYTES`] of input
/// (at least one image each), and small enough that the groups × `blocks`
/// tasks number at least twice the threads, as `(first image, images)`:
/// a task runs one block of weights over a group's images. Every block
/// over each thread's 16 images of ResNet-18's 512-channel 14×14 layer
/// (400 KB each) read the inputs from beyond L2 for every block.
fn image_groups(g: &ConvGeom, blocks: usize) -> impl Iterator<Item = (usize, usize)> {
    let threads = if parallel(g) { num_threads() } else { 1 };
    let groups = (2 * threads).div_ceil(blocks.max(1));
    let bytes = g.image_len() * std::mem::size_of::<f32>();
    let per_group = (GROUP_INPUT_BYTES / bytes.max(1))
        .min(g.n.div_ceil(groups))
        .max(1);
    let n = g.n;
    (0..n)
        .step_by(per_group)
        .map(move |m0| (m0, per_group.min(n - m0)))
}

/// The weights in blocks of [`BLOCK`] output channels, `[block][channel]
/// [tap][BLOCK]` (zeros past the last output channel), 64-byte aligned
/// where the allocator allows, and the bias in blocks of [`BLOCK`].
struct PackedWeights {
    /// The packed weights, from `start`.
    buf: Vec<f32>,
    start: usize,
    bias: Vec<f32>,
    blocks: usize,
}

impl PackedWeights {
    /// Packs `w` (O×C×3×3) and `bias` (O) of `g` on the kernels of `isa`,
    /// the blocks on the threads where the convolution runs in parallel.
    fn new(isa: Kernel, w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Result<Self> {
        let (o, k) = (g.c_out, g.col_rows());
        let blocks = o.div_ceil(BLOCK);
        let block_len = k * BLOCK;
        let len = blocks * block_len;
        let mut buf = take_empty::<f32>(len + 16)?;
        let spare = &mut buf.spare_capacity_mut()[..len + 16];
        // 64-byte aligned where the allocator allows (loads do not need it).
        let start = spare.as_ptr().align_offset(64).min(16);
        let zeros = take_zeroed::<f32>(k)?;
        let pack = |(b, out): (usize, &mut [MaybeUninit<f32>])| {
            pack_block_rows::<BLOCK>(isa, (w, o, k), b, &zeros, out);
        };
        let (head, rest) = spare.split_at_mut(start);
        let (blocks_out, tail) = rest.split_at_mut(len);
        head.iter_mut().chain(tail).for_each(|v| {
            v.write(0.0);
        });
        if parallel(g) {
            blocks_out
                .par_chunks_exact_mut(block_len)
                .enumerate()
                .for_each(pack);
        } else {
            blocks_out
                .chunks_exact_mut(block_len)
                .enumerate()
                .for_each(pack);
        }
        // SAFETY: the head and tail were zeroed and every block packed
        // (`pack_runs` writes all k × BLOCK values of its panel).
        unsafe { buf.set_len(len + 16) };
        let mut padded = take_zeroed::<f32>(blocks * BLOCK)?;
        if let Some(b) = bias {
            padded[..o].copy_from_slice(&b[..o]);
        }
        Ok(PackedWeights {
            buf,
            start,
            bias: padded,
            blocks,
        })
    }

    /// Block `b`'s packed weights.
    fn block(&self, b: usize, g: &ConvGeom) -> &[f32] {
        let len = g.col_rows() * BLOCK;
        &self.buf[self.start + b * len..][..len]
    }
}

/// Packs rows `b·W ..` (up to `W`; zeros past the last) of the row-major
/// matrix `src` (`rows` rows of `len` values) into `out` as `[len][W]`:
/// the blocks of packed weights of the forward, and of the transposed
/// output gradient of the weight gradient (`weight_grad`), on the
/// kernels of `isa`, which the CPU runs. `zeros` holds at least `len`
/// zeros.
fn pack_block_rows<const W: usize>(
    isa: Kernel,
    (src, rows, len): (&[f32], usize, usize),
    b: usize,
    zeros: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    assert!(isa.cpu_has() && src.len() >= rows * len && zeros.len() >= len);
    assert!(out.len() >= len * W && b * W < rows);
    let inside = W.min(rows - b * W);
    let run = |i: usize| {
        if i < inside {
            src[(b * W + i) * len..].as_ptr()
        } else {
            zeros.as_ptr()
        }
    };
    // Safety: the CPU runs `isa`; every run holds `len` values (a row of
    // `src` or `zeros`, asserted); `out` holds len × W, all written.
    unsafe { pack_runs::<W>(isa, len, run, out.as_mut_ptr().cast()) };
}

/// The kernel rows of output row `oy` that lie inside the input: the
/// first one and how many.
fn rows_inside(g: &ConvGeom, oy: usize) -> (usize, usize) {
    let top = oy * g.stride.0; // input row of kernel row 0, plus 1
    let first = 1usize.saturating_sub(top);
    let end = 3.min((g.h + 1).saturating_sub(top));
    (first, end.saturating_sub(first))
}

/// The tiles of an output row of `ow` pixels: as few as hold at most
/// [`MOST_PIXELS`] each, their sizes within one of each other, as
/// `(first pixel, pixels)`.
fn row_tiles(ow: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = ow.div_ceil(MOST_PIXELS);
    let (base, extra) = (ow / tiles.max(1), ow % tiles.max(1));
    (0..tiles).map(move |i| (i * base + i.min(extra), base + usize::from(i < extra)))
}

/// Output channels `block·BLOCK ..` (up to [`BLOCK`]) of one image on the
/// kernels of `isa`: `x`
/// its input planes, `y` its output planes, `sums` room for the sums of
/// every pixel ([`BLOCK`] each): every tile sums all input
/// channels in registers (the block's weights stream from L2), then the
/// sums are stored as the output planes.
fn forward_image(
    isa: Kernel,
    x: &[f32],
    packed: &PackedWeights,
    block: usize,
    g: &ConvGeom,
    y: &mut [MaybeUninit<f32>],
    sums: &mut [f32],
) {
    let out_plane = g.oh * g.ow;
    assert!(x.len() == g.image_len() && y.len() == g.out_image_len());
    assert!(sums.len() >= out_plane * BLOCK);
    let (sh, sw) = g.stride;
    let out_channels = BLOCK.min(g.c_out - block * BLOCK);
    let w = packed.block(block, g);
    let bias = &packed.bias[block * BLOCK..][..BLOCK];
    let y0 = block * BLOCK * out_plane;
    // The block's channels in one tile of up to 4 vectors (AVX-512), or
    // tiles of 16 channels in up to 2 (AVX2).
    let (per_tile, lanes) = match isa {
        Kernel::Avx512 => (BLOCK, 16),
        Kernel::Avx2 => (16, 8),
    };
    for oy in 0..g.oh {
        // At least one kernel row lies inside: padding 1 and a 3-high
        // kernel put row sh·oy, which is below h, under kernel row 1.
        let (first, rows) = rows_inside(g, oy);
        let iy = oy * sh + first - 1;
        for (ox, pixels) in row_tiles(g.ow) {
            let mut edges = 0;
            if ox == 0 {
                edges |= LEFT;
            }
            if ox + pixels == g.ow && sw * (g.ow - 1) + 1 >= g.w {
                edges |= RIGHT;
            }
            for c0 in (0..out_channels).step_by(per_tile) {
                let vectors = (out_channels - c0).min(per_tile).div_ceil(lanes);
                let t = Tile {
                    x: x[iy * g.w..].as_ptr().wrapping_add(sw * ox).wrapping_sub(1),
                    plane: g.h * g.w,
                    row: g.w,
                    channels: g.c_in,
                    rows,
                    w: w[first * 3 * BLOCK + c0..].as_ptr(),
                    sums: sums[(oy * g.ow + ox) * BLOCK + c0..].as_mut_ptr(),
                };
                // Safety: the CPU runs `isa` (asserted by `forward_on`);
                // the tile reads the input's rows iy..
                // (first..first + rows of the kernel lie inside the
                // planes), columns sw·ox − 1 + j of its pixels but the
                // padding columns `edges` names, in the image's planes;
                // `vectors` of channels c0.. of the block's weights from
                // kernel row `first`; and writes them in its pixels' sums.
                unsafe { run_tile(isa, pixels, vectors, sw, edges, &t) };
            }
        }
    }
    // Safety: the CPU runs `isa`; `sums` holds every pixel's BLOCK sums
    // (asserted), `bias` BLOCK values, and `y` the block's out_channels
    // planes from y0 (inside the image's output: block·BLOCK +
    // out_channels ≤ c_out).
    unsafe {
        let y = y[y0..].as_mut_ptr().cast();
        let (s, b) = (sums.as_ptr(), bias.as_ptr());
        match isa {
            Kernel::Avx512 => {
                kernels::store_block_avx512(s, BLOCK, b, out_plane, out_channels, y, out_plane)
            }
            Kernel::Avx2 => {
                kernels::store_block_avx2(s, BLOCK, b, out_plane, out_channels, y, out_plane)
            }
        }
    }
}

/// Runs the kernel of `isa` for `pixels` (1–5) pixels, `vectors` of
/// output channels (1–4 with AVX-512, 1–2 with AVX2), horizontal stride
/// `sw` (1 or 2) and `edges`.
///
/// # Safety
/// The CPU runs `isa`, and as [`kernels::tile_avx512`].
unsafe fn run_tile(isa: Kernel, pixels: usize, vectors: usize, sw: usize, edges: u8, t: &Tile) {
    macro_rules! by_edges {
        ($k:ident, $p:literal, $v:literal, $s:literal) => {
            match edges {
                0 => kernels::$k::<$p, $v, $s, 0>(t),
                LEFT => kernels::$k::<$p, $v, $s, LEFT>(t),
                RIGHT => kernels::$k::<$p, $v, $s, RIGHT>(t),
                _ => kernels::$k::<$p, $v, $s, { LEFT | RIGHT }>(t),
            }
        };
    }
    macro_rules! by_stride {
        ($k:ident, $p:literal, $v:literal) => {
            if sw == 1 {
                by_edges!($k, $p, $v, 1)
            } else {
                by_edges!($k, $p, $v, 2)
            }
        };
    }
    macro_rules! by_vectors {
        ($p:literal) => {
            match (isa, vectors) {
                (Kernel::Avx512, 1) => by_stride!(tile_avx512, $p, 1),
                (Kernel::Avx512, 2) => by_stride!(tile_avx512, $p, 2),
                (Kernel::Avx512, 3) => by_stride!(tile_avx512, $p, 3),
                (Kernel::Avx512, _) => by_stride!(tile_avx512, $p, 4),
                (Kernel::Avx2, 1) => by_stride!(tile_avx2, $p, 1),
                (Kernel::Avx2, _) => by_stride!(tile_avx2, $p, 2),
            }
        };
    }
    // Safety: the caller's contract.
    unsafe {
        match pixels {
            1 => by_vectors!(1),
            2 => by_vectors!(2),
            3 => by_vectors!(3),
            4 => by_vectors!(4),
            _ => by_vectors!(5),
        }
    }
}

//! The weight gradient of a 3×3 convolution with padding 1 computed
//! directly, with output channels in the vector lanes (f32, AVX-512 or
//! AVX2).
//!
//! `dW[o, c, i, j] = Σ_{n, y, x} dY[n, o, y, x] · X[n, c, sh·y + i − 1, sw·x + j − 1]`.
//! The implicit GEMM computes this as `dY · Xᵀ` with the unrolled input
//! gathered and transposed into panels for every product; on the 16→32
//! stride-2 layer of the CIFAR ResNets (32 × 144 sums over 256 pixels per
//! image) that left it at PyTorch's time.
//!
//! Here the output gradient is transposed once per call into blocks of
//! [`GRAD_BLOCK`] output channels per pixel (`[block][image][pixel][32]`,
//! the vector side), and each input value is broadcast straight from the
//! NCHW planes, so nothing of the input is copied. A tile is one input
//! channel × the nine taps × 32 output channels in 18 zmm accumulators,
//! summed over every pixel of a group of images: per pixel, 2 loads of
//! gradient and 9 broadcasts feed 18 fused multiply-adds (AVX2: 16
//! channels in 2 ymm, kernel rows 0–1 then row 2, 12 and 6
//! accumulators). The taps on padding (kernel row 0 of the first output
//! row, column 0 of a row's first pixel, and the last row's and pixel's
//! where the plane ends) are left out. Each task owns a block of output
//! channels × a run of input channels: it sums its tiles over the groups
//! of images in a small buffer (`[c][tap][32]`) and stores it transposed,
//! 16 × 16 in registers, as runs of `dW`'s rows; no partial sums of the
//! whole gradient are kept per thread or added up.
//!
//! Taken (`pays`) with AVX-512 by the stride-2 layers of small planes and
//! the stride-1 layers of 32-channel 16×16 and 64-channel 8×8 inputs,
//! with AVX2 by the stride-2 layers of at most 32 input channels
//! (`benches/RESULTS.md`, seventeenth round).
//!
//! Summation order: each weight sums its pixels image by image, row by
//! row, in one chain per group of images; the groups' sums are added in
//! order. Results agree with the other routes to rounding (tested against
//! the f64 im2col route), and are the same bits on either instruction set
//! and any number of threads.

use super::kernels::{store_block_avx2, store_block_avx512};
use super::weight_kernels::{self, WeightTile};
use super::{pack_block_rows, pays as forward_pays, supports, TAPS};
use crate::backend::cpu::num_threads;
use crate::backend::cpu::pool::{recycle, take_empty, take_zeroed};
use crate::backend::cpu::scratch::with_scratch;
use crate::error::{Error, Result};
use crate::ops::conv::cpu::{parallel, SharedMut};
use crate::ops::conv::geom::ConvGeom;
use crate::ops::conv::implicit::weight_grad_in_f32;
use crate::ops::matmul::sgemm::Kernel;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output channels per pixel of the transposed output gradient.
pub(super) const GRAD_BLOCK: usize = 32;

/// Largest input image (bytes) that [`pays`] takes at stride 1 (AVX-512),
/// where Winograd's F(2×2, 3×3) otherwise runs: 32 KB holds the CIFAR
/// ResNets' 32-channel 16×16 and 64-channel 8×8 layers, where this route
/// measured faster, and not the 16-channel 32×32, 128-channel 16×16 or
/// 256-channel 8×8 ones (64–128 KB), where Winograd's 2.25× fewer
/// products win.
const MAX_STRIDE_1_IMAGE_BYTES: usize = 32 << 10;

/// Fewest output pixels per row that [`pays`] takes at stride 1: the
/// 512-channel 4×4 layer (a row is a first, two middle and a last pixel,
/// each edge its own loop) ran 1.1–1.4× Winograd's time.
const MIN_STRIDE_1_ROW: usize = 8;

/// Most input channels that [`pays`] takes with AVX2: its tiles (16
/// output channels, the kernel rows in two passes) beat the implicit
/// GEMM's AVX2 kernel on the 16→32 stride-2 layer (0.78×) and matched it
/// on 32→64 (0.95×), but not on deeper layers (1.1–1.8×).
const MAX_AVX2_CHANNELS: usize = 32;

/// Whether the f32 weight gradient of `g` runs here: where the forward's
/// [`supports`] holds, at stride 2 where the forward runs here too
/// ([`forward_pays`]: small planes, rows in tiles of at least 4 pixels;
/// ImageNet's 7-wide rows measured 1.05–1.08× the implicit GEMM's time
/// here as well), with AVX2 only for at most [`MAX_AVX2_CHANNELS`] input
/// channels; at stride 1 with AVX-512 for images of at most
/// [`MAX_STRIDE_1_IMAGE_BYTES`] and rows of at least
/// [`MIN_STRIDE_1_ROW`] output pixels.
pub(in crate::ops::conv) fn pays(g: &ConvGeom) -> bool {
    if !supports(g) {
        return false;
    }
    let image = g.image_len() * std::mem::size_of::<f32>();
    match (Kernel::current(), g.stride) {
        (Kernel::Avx512, (2, 2)) => forward_pays(g),
        (Kernel::Avx512, (1, 1)) => image <= MAX_STRIDE_1_IMAGE_BYTES && g.ow >= MIN_STRIDE_1_ROW,
        (Kernel::Avx2, (2, 2)) => forward_pays(g) && g.c_in <= MAX_AVX2_CHANNELS,
        _ => false,
    }
}

/// [`conv2d_backward_weight`] when `T` is f32 and [`pays`] holds; `None`
/// otherwise (the caller takes another route).
pub(in crate::ops::conv) fn try_backward_weight<T: 'static>(
    x: &[T],
    dy: &[T],
    g: &ConvGeom,
) -> Option<Result<Vec<T>>> {
    weight_grad_in_f32(x, dy, pays(g), |x, dy| conv2d_backward_weight(x, dy, g))
}

/// Weight gradient: `x` (N×C×H×W) and `dy` (N×O×oh×ow) → `dw` (O×C×3×3),
/// summed over images. Errors unless [`supports`], when a buffer is
/// shorter than the geometry needs, or when memory runs out.
pub(super) fn conv2d_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    if !supports(g) {
        return Err(Error::invalid(
            "conv2d",
            "the channel-lane weight gradient takes 3×3 kernels with padding 1, no \
             dilation or groups, a horizontal stride of 1 or 2 and channels in and out, \
             on AVX-512 or AVX2 and FMA",
        ));
    }
    backward_weight_on(Kernel::current(), x, dy, g)
}

/// [`conv2d_backward_weight`] on the kernels of `isa`, which the CPU runs.
pub(super) fn backward_weight_on(
    isa: Kernel,
    x: &[f32],
    dy: &[f32],
    g: &ConvGeom,
) -> Result<Vec<f32>> {
    assert!(isa.cpu_has(), "{isa:?} kernels on this CPU");
    let (x, dy) = g.weight_grad_operands(x, dy)?;
    let (o, c) = (g.c_out, g.c_in);
    let dyt = transposed_gradient(isa, dy, g)?;
    let len = o * c * TAPS;
    let mut dw = take_empty::<f32>(len)?;
    let dw_ptr = SharedMut(dw.spare_capacity_mut().as_mut_ptr());
    let groups = image_groups(g);
    let run = |&(b, c0, cs): &(usize, usize, usize)| {
        with_scratch(cs * TAPS * GRAD_BLOCK, |sums: &mut [f32]| {
            sums.fill(0.0);
            for &(n0, m) in &groups {
                for ci in c0..c0 + cs {
                    add_tiles(
                        isa,
                        (b, ci),
                        (n0, m),
                        x,
                        &dyt,
                        g,
                        &mut sums[(ci - c0) * TAPS * GRAD_BLOCK..],
                    );
                }
            }
            let channels = GRAD_BLOCK.min(o - b * GRAD_BLOCK);
            let zeros = [0.0f32; GRAD_BLOCK];
            // Safety: rows b·GRAD_BLOCK.. (`channels` of them) of dW,
            // columns c0·9.. (cs·9 of them): inside dW (block b's channels
            // are output channels, c0 + cs ≤ c), and written by this task
            // only (the tasks' pairs of blocks and runs of input channels
            // are disjoint).
            unsafe {
                let dst = dw_ptr.add((b * GRAD_BLOCK * c + c0) * TAPS).cast::<f32>();
                let (s, z) = (sums.as_ptr(), zeros.as_ptr());
                match isa {
                    Kernel::Avx512 => {
                        store_block_avx512(s, GRAD_BLOCK, z, cs * TAPS, channels, dst, c * TAPS)
                    }
                    Kernel::Avx2 => {
                        store_block_avx2(s, GRAD_BLOCK, z, cs * TAPS, channels, dst, c * TAPS)
                    }
                }
            }
        })
    };
    let tasks = tasks(g);
    if parallel(g) {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
    recycle(dyt);
    // SAFETY: the tasks cover every block of output channels and every
    // input channel, and each stores all nine taps of its channels' pairs.
    unsafe { dw.set_len(len) };
    Ok(dw)
}

/// The output gradient transposed into blocks of [`GRAD_BLOCK`] output
/// channels per pixel, `[block][image][pixel][GRAD_BLOCK]` (zeros past
/// the last output channel): a block's images lie side by side.
fn transposed_gradient(isa: Kernel, dy: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    let (o, pixels) = (g.c_out, g.oh * g.ow);
    let blocks = o.div_ceil(GRAD_BLOCK);
    let len = blocks * g.n * pixels * GRAD_BLOCK;
    let mut dyt = take_empty::<f32>(len)?;
    let zeros = take_zeroed::<f32>(pixels)?;
    let panel = pixels * GRAD_BLOCK;
    let pack = |(i, out): (usize, &mut [MaybeUninit<f32>])| {
        let (b, n) = (i / g.n, i % g.n);
        let dy = &dy[n * g.out_image_len()..][..g.out_image_len()];
        pack_block_rows::<GRAD_BLOCK>(isa, (dy, o, pixels), b, &zeros, out);
    };
    let out = &mut dyt.spare_capacity_mut()[..len];
    if parallel(g) {
        out.par_chunks_exact_mut(panel.max(1))
            .enumerate()
            .for_each(pack);
    } else {
        out.chunks_exact_mut(panel.max(1))
            .enumerate()
            .for_each(pack);
    }
    recycle(zeros);
    // SAFETY: every (block, image) panel was packed, all its values.
    unsafe { dyt.set_len(len) };
    Ok(dyt)
}

/// Bytes of a block's transposed gradient per group of images
/// ([`image_groups`]): a tile walks it once per input channel, from L2.
const GROUP_GRADIENT_BYTES: usize = 512 << 10;

/// The batch's images in groups whose block of transposed gradient fits
/// [`GROUP_GRADIENT_BYTES`] (at least one image each), as `(first image,
/// images)`.
fn image_groups(g: &ConvGeom) -> Vec<(usize, usize)> {
    let bytes = g.oh * g.ow * GRAD_BLOCK * std::mem::size_of::<f32>();
    let per_group = (GROUP_GRADIENT_BYTES / bytes.max(1)).max(1);
    (0..g.n)
        .step_by(per_group)
        .map(|n0| (n0, per_group.min(g.n - n0)))
        .collect()
}

/// The tasks, `(block, first input channel, input channels)`: every block
/// of output channels × the input channels in as few runs as give at
/// least two tasks per thread where the call runs in parallel.
fn tasks(g: &ConvGeom) -> Vec<(usize, usize, usize)> {
    let blocks = g.c_out.div_ceil(GRAD_BLOCK);
    let threads = if parallel(g) { num_threads() } else { 1 };
    let runs = (2 * threads).div_ceil(blocks).min(g.c_in).max(1);
    let per_run = g.c_in.div_ceil(runs);
    (0..blocks)
        .flat_map(|b| {
            (0..g.c_in)
                .step_by(per_run)
                .map(move |c0| (b, c0, per_run.min(g.c_in - c0)))
        })
        .collect()
}

/// Adds the weight gradient of input channel `ci` and block `b` of output
/// channels over images `n0..n0 + m` to `sums` (`[tap][GRAD_BLOCK]`), on
/// the kernels of `isa`: `x` the input, `dyt` the [`transposed_gradient`].
fn add_tiles(
    isa: Kernel,
    (b, ci): (usize, usize),
    (n0, m): (usize, usize),
    x: &[f32],
    dyt: &[f32],
    g: &ConvGeom,
    sums: &mut [f32],
) {
    let pixels = g.oh * g.ow;
    let channels = GRAD_BLOCK.min(g.c_out - b * GRAD_BLOCK);
    let x = &x[n0 * g.image_len() + ci * g.h * g.w..];
    let dyt = &dyt[(b * g.n + n0) * pixels * GRAD_BLOCK..];
    assert!(x.len() >= (m - 1) * g.image_len() + g.h * g.w);
    assert!(dyt.len() >= m * pixels * GRAD_BLOCK && sums.len() >= TAPS * GRAD_BLOCK);
    // A tile's channels: 32 in up to 2 vectors (AVX-512), 16 (AVX2).
    let (per_tile, lanes) = match isa {
        Kernel::Avx512 => (GRAD_BLOCK, 16),
        Kernel::Avx2 => (16, 8),
    };
    for c0 in (0..channels).step_by(per_tile) {
        let t = WeightTile {
            images: m,
            x: x.as_ptr(),
            x_image: g.image_len(),
            h: g.h,
            w: g.w,
            oh: g.oh,
            ow: g.ow,
            sh: g.stride.0,
            right: g.stride.1 * (g.ow - 1) + 1 >= g.w,
            dy: dyt[c0..].as_ptr(),
            dy_image: pixels * GRAD_BLOCK,
            sums: sums[c0..].as_mut_ptr(),
            tap: GRAD_BLOCK,
        };
        let vectors = (channels - c0).min(per_tile).div_ceil(lanes);
        // Safety: the CPU runs `isa`; the tile reads input channel ci's
        // plane of images n0.. (asserted), `vectors` of lanes from channel
        // c0 of each pixel of their transposed gradients (inside the
        // block's GRAD_BLOCK, asserted), and adds to nine runs of as many
        // sums (asserted).
        unsafe { run_tile(isa, vectors, g.stride.1, &t) };
    }
}

/// Runs the weight-gradient kernel of `isa` for `vectors` of output
/// channels (1–2, of 16 lanes with AVX-512 and 8 with AVX2) and
/// horizontal stride `sw` (1 or 2): all nine taps in one pass with
/// AVX-512 (18 zmm accumulators), kernel rows 0–1 then row 2 with AVX2
/// (12 and 6 of the 16 ymm registers).
///
/// # Safety
/// The CPU runs `isa`, and as [`weight_kernels::tile_avx512`].
unsafe fn run_tile(isa: Kernel, vectors: usize, sw: usize, t: &WeightTile) {
    use weight_kernels::{tile_avx2, tile_avx512};
    // Safety: the caller's contract.
    unsafe {
        match (isa, vectors, sw) {
            (Kernel::Avx512, 1, 1) => tile_avx512::<1, 1, 0, 3>(t),
            (Kernel::Avx512, 1, _) => tile_avx512::<1, 2, 0, 3>(t),
            (Kernel::Avx512, _, 1) => tile_avx512::<2, 1, 0, 3>(t),
            (Kernel::Avx512, _, _) => tile_avx512::<2, 2, 0, 3>(t),
            (Kernel::Avx2, 1, 1) => {
                tile_avx2::<1, 1, 0, 2>(t);
                tile_avx2::<1, 1, 2, 1>(t);
            }
            (Kernel::Avx2, 1, _) => {
                tile_avx2::<1, 2, 0, 2>(t);
                tile_avx2::<1, 2, 2, 1>(t);
            }
            (Kernel::Avx2, _, 1) => {
                tile_avx2::<2, 1, 0, 2>(t);
                tile_avx2::<2, 1, 2, 1>(t);
            }
            (Kernel::Avx2, _, _) => {
                tile_avx2::<2, 2, 0, 2>(t);
                tile_avx2::<2, 2, 2, 1>(t);
            }
        }
    }
}

//! The weight gradient of a stride-1 convolution with a 3-wide kernel and
//! few channels, computed directly with output pixels in the vector lanes
//! (f32, AVX2 or AVX-512).
//!
//! `dW[o, c, i, j] = Σ_{n, y, x} dY[n, o, y, x] · X[n, c, y + i − ph, x + j − pw]`.
//! The GEMM routes compute this as `dY · colᵀ`, where the unrolled input
//! `col` must be gathered and transposed into panels: with 3–16 output
//! channels each gathered value then feeds only 3–16 products, and the
//! gather costs as much as the arithmetic (RGB stems and the 16-channel
//! layers of the CIFAR ResNet-8/20 ran at 18–26 % of the FMA peak).
//!
//! Here nothing is gathered. For one input channel `c` and kernel row `i`,
//! a row of `dY` (one vector of `L` pixels per output channel) and the
//! three shifted vectors of the matching input row (taps `j` = 0, 1, 2,
//! lanes outside the input or the output masked to zero) are loaded
//! straight from the NCHW planes, and a block of output channels × three
//! taps of lane-wise sums is updated with one fused multiply-add each
//! (AVX-512: 8 channels × 3 taps = 24 zmm accumulators, 11 loads per 24
//! multiply-adds; AVX2: 3 × 3 in ymm, 6 loads per 9). Each sum keeps its
//! `L` lanes apart in a buffer until every image is done; the lanes are
//! added last.
//!
//! Measured (batch 32, one thread, Intel Xeon; `benches/RESULTS.md`,
//! sixth round): the weight gradients of 3→16 and 16→16 at 32×32 and of
//! ResNet-18's 3→64 stem take 0.28 / 1.56 / 1.14 ms with AVX-512 (about
//! 40 % of the FMA peak) against 0.66 / 2.45 / 1.47 ms through the GEMM
//! routes and PyTorch's 0.40 / 2.15 / 1.43 ms. Above 256 channel pairs
//! the other routes are as fast or faster ([`MAX_CHANNEL_PAIRS`]).
//!
//! Summation order: each lane sums its pixels image by image, row by row;
//! the runs of images of a parallel call are added in order, then the
//! lanes in order. It is not the GEMM routes' order, so results agree
//! with them to rounding, not bit for bit (tested against the f64
//! reference); and the lanes are 16 on AVX-512 and 8 on AVX2, so this is
//! the one convolution route whose results differ in rounding between
//! the two sets. Keeping 16 sums on AVX2 as two 8-lane halves gives the
//! same bits, but measured 10 % slower one half after the other (the
//! per-row work halves) and 50 % slower with both halves in one pass
//! (the accumulators and masks no longer fit the 16 ymm registers).

mod kernels;
#[cfg(test)]
mod tests;

use super::cpu::{parallel, sum_in_fixed_runs};
use super::geom::ConvGeom;
use crate::backend::cpu::pool::{recycle, take_empty};
use crate::backend::cpu::simd::{self, VectorIsa};
use crate::error::{Error, Result};

/// Kernel width this module computes (three taps side by side).
const TAPS: usize = 3;

/// Most `output × input` channel pairs per group for [`applies`]: above
/// it the GEMM and Winograd routes feed each loaded value enough products
/// to win. Measured with this limit raised (one thread, AVX-512, batch
/// 32): 32 × 32 channels at 16×16 took 1.6–1.7 ms here against
/// Winograd's 1.2–1.8, and 64 × 64 at 8×8 (half-empty vectors, a 9 MB
/// lane buffer) 8 ms against 1.0–1.2.
pub const MAX_CHANNEL_PAIRS: usize = 16 * 16;

/// Whether the CPU runs this module's kernels (AVX2 and FMA, or AVX-512).
pub fn available() -> bool {
    simd::detect() != VectorIsa::Baseline
}

/// Whether this module computes the weight gradient of `g` (f32): where
/// [`available`], for 3-wide kernels of any height with stride 1 and
/// dilation 1, any padding and groups, and at most
/// [`MAX_CHANNEL_PAIRS`] channel pairs per group.
pub fn applies(g: &ConvGeom) -> bool {
    available()
        && g.kw == TAPS
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.og() * g.cg() <= MAX_CHANNEL_PAIRS
}

/// [`conv2d_backward_weight`] when `T` is f32 and [`applies`] holds;
/// `None` otherwise.
pub(super) fn try_backward_weight<T: 'static>(
    x: &[T],
    dy: &[T],
    g: &ConvGeom,
) -> Option<Result<Vec<T>>> {
    super::implicit::weight_grad_in_f32(x, dy, applies(g), |x, dy| conv2d_backward_weight(x, dy, g))
}

/// Weight gradient: `x` (N×C×H×W) and `dy` (N×O×oh×ow) → `dw`
/// (O×C/g×kh×3), summed over images. Errors unless [`applies`], or when a
/// buffer is shorter than the geometry needs.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    if !applies(g) {
        return Err(Error::invalid(
            "conv2d",
            format!(
                "the pixel-lane weight gradient needs AVX2 and FMA (or AVX-512), a kernel \
                 3 wide, stride and dilation 1 and at most {MAX_CHANNEL_PAIRS} channel pairs \
                 per group (kernel {}x{}, stride {:?}, dilation {:?}, {}x{} channels)",
                g.kh,
                g.kw,
                g.stride,
                g.dilation,
                g.og(),
                g.cg()
            ),
        ));
    }
    backward_weight_on(simd::detect(), x, dy, g)
}

/// [`conv2d_backward_weight`] on the kernels of `isa` (AVX2 or AVX-512,
/// which the CPU must run; callers checked [`applies`]).
fn backward_weight_on(isa: VectorIsa, x: &[f32], dy: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    let (x, dy) = g.weight_grad_operands(x, dy)?;
    let lanes = isa.f32_lanes();
    let dw_len = g.c_out * g.cg() * g.kh * TAPS;
    if dw_len == 0 {
        // No channels: an empty gradient, and the planes (whose width
        // nothing else bounds then) are never walked.
        return Ok(Vec::new());
    }
    let images: Vec<usize> = (0..g.n).collect();
    let sums = sum_in_fixed_runs(&images, dw_len * lanes, parallel(g), |mut acc, &n| {
        kernels::add_image(isa, &mut acc, x, dy, g, n);
        acc
    })?;
    let mut dw = take_empty::<f32>(dw_len)?;
    dw.extend(sums.chunks_exact(lanes).map(|l| l.iter().sum::<f32>()));
    recycle(sums);
    Ok(dw)
}

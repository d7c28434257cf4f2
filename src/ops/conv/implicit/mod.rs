//! Implicit-GEMM convolution for f32 on CPUs with AVX-512 or AVX2 and
//! FMA (the CPUs of ferrite's own sgemm): the im2col route of `cpu.rs`
//! without its unrolled matrix.
//!
//! im2col writes every receptive field into a `cg·kh·kw × pixels` matrix,
//! and the GEMM then reads that matrix back to pack it into micro-panels.
//! Here the GEMM's packer (`sgemm_with`) gathers the micro-panels
//! straight from the NCHW input instead (`gather`), one unrolled row
//! (kernel tap) over a run of pixels at a time, so the unrolled matrix is
//! never written to memory and the strided reads of a stride-2 layer are
//! done with vector loads and a permute rather than element by element.
//!
//! - Forward: `y[g] = W[g] · X` with the weights packed once per call
//!   (`PackedA`; block by block inside the product where each thread has
//!   one tile, `Weights`) and `X`'s panels (`[tap][32 pixels]`) gathered
//!   per block. One product per image writes straight into the NCHW output
//!   where the planes are large or the packed weights stay in L2 between
//!   images (`writes_planes_directly`); the smallest planes with large
//!   weights (ResNet-18's 512-channel ones) share a product per tile of
//!   images, copied out afterwards.
//! - Weight gradient: `dW[g] += dY[g] · Xᵀ`, whose right operand's panels
//!   (`[pixel][32 taps]`) are the transposes of gathered runs: 32 taps ×
//!   up to 256 pixels are gathered into a 32 KB buffer and transposed in
//!   registers (`pack_runs`). Where the transposed product fills the
//!   GEMM's tiles better (fewer unrolled rows than a panel's 32 columns,
//!   or e.g. 144 × 32 against 32 × 144), it runs as `dW[g]ᵀ += X ·
//!   dY[g]ᵀ` instead, `X` gathered whole per image
//!   (`transposes_weight_gradient`). Per image at stride 2, with
//!   AVX-512, `X` is gathered from a copy of the image whose rows hold
//!   their even columns, then their odd ones (`split_columns`).
//!
//! A run's gathers are planned once (`RunPlan`: per tap and run of
//! pixels, where the values start and which lanes are padding), kept for
//! the task's other images and groups (`Plans`), and filled channel by
//! channel, so each row costs a masked load per output row in each
//! 16 pixels (two at stride 2, into a pair of vectors that a permute
//! thins to its even values) and a store.
//!
//! Summation order is im2col's (each output a sum over taps in order, per
//! `KC` block), so results match the im2col route to rounding of the
//! same terms in the same order (tested bit for bit). The exception is
//! `padding_skip`, the forward of small-plane 3×3 tiles with the
//! padding's products left out (AVX-512): its depth blocks are 252
//! steps, so its bits differ from im2col's by rounding.

mod gather;
mod padding_skip;
mod plans;
mod split_columns;
mod tap_triples;
#[cfg(test)]
mod tests;
mod transposed;
mod weights;

use super::cpu::{
    for_each_tile, image_tiles, largest, parallel, sum_in_fixed_runs, write_planes, SharedMut,
};
use super::geom::ConvGeom;
use super::plan::{Pass, DIRECT_MIN_COLUMNS, DIRECT_MIN_INNER};
use super::winograd::f32_slice;
use crate::backend::cpu::pool::take_empty;
use crate::backend::cpu::scratch::with_scratch;
use crate::error::{Error, Result};
use crate::ops::matmul::sgemm::{self, pack_runs, sgemm_with, strided_on, BBlock, Kernel, Lhs};
use gather::Layout;
use plans::Plans;
use std::any::TypeId;
use std::mem::MaybeUninit;
use transposed::{backward_weight_transposed, transposes_weight_gradient};
use weights::{WeightOrder, Weights};

/// Columns of a packed micro-panel of the right operand.
const NR: usize = sgemm::NR;

/// Whether the CPU runs this module: where ferrite's own sgemm runs
/// (`ops::matmul::sgemm::available`).
pub fn available() -> bool {
    sgemm::available()
}

/// True when this module computes `g` (f32 only): where [`available`], for a
/// horizontal stride of 1 or 2 (any vertical stride, padding, dilation and
/// groups).
pub fn supports(g: &ConvGeom) -> bool {
    available() && gather::stride_supported(g.stride.1)
}

/// An error unless [`supports`].
fn check_supported(g: &ConvGeom) -> Result<()> {
    if supports(g) {
        return Ok(());
    }
    Err(Error::invalid(
        "conv2d",
        format!(
            "the implicit-GEMM kernels need AVX2 and FMA (or AVX-512) and a horizontal \
             stride of 1 or 2 \
             (stride {:?})",
            g.stride
        ),
    ))
}

/// `v` as a vector of `T`, which is f32 (the callers checked).
pub(super) fn into_vec_of<T: 'static>(v: Vec<f32>) -> Vec<T> {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<f32>());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: T is f32: same layout, and the allocation is handed over.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// [`conv2d_forward`] when `T` is f32 and [`supports`] holds; `None`
/// otherwise (the caller then runs im2col).
pub(super) fn try_forward<T: 'static>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Option<Result<Vec<T>>> {
    forward_in_f32(x, w, bias, supports(g), |x, w, bias| {
        conv2d_forward(x, w, bias, g)
    })
}

/// `f(x, w, bias)` on the operands seen as f32, its result seen as `T`,
/// when `T` is f32 and the route `applies`; `None` otherwise (the caller
/// takes another route). Shared by the f32-only forward routes.
pub(super) fn forward_in_f32<T: 'static>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    applies: bool,
    f: impl FnOnce(&[f32], &[f32], Option<&[f32]>) -> Result<Vec<f32>>,
) -> Option<Result<Vec<T>>> {
    let (x, w) = (f32_slice(x)?, f32_slice(w)?);
    let bias = match bias {
        Some(b) => Some(f32_slice(b)?),
        None => None,
    };
    applies.then(|| f(x, w, bias).map(into_vec_of))
}

/// [`conv2d_backward_input_pointwise`] when `T` is f32, [`supports`]
/// holds and `g` is a 1×1 convolution with stride 1 and no padding;
/// `None` otherwise.
pub(super) fn try_backward_input_pointwise<T: 'static>(
    dy: &[T],
    w: &[T],
    g: &ConvGeom,
) -> Option<Result<Vec<T>>> {
    let (dy, w) = (f32_slice(dy)?, f32_slice(w)?);
    input_grad_in_place(g).then(|| conv2d_backward_input_pointwise(dy, w, g).map(into_vec_of))
}

/// Whether the f32 input gradient of `g` runs as
/// [`conv2d_backward_input_pointwise`]: a 1×1 kernel, stride 1, no
/// padding, where [`supports`] holds.
pub(super) fn input_grad_in_place(g: &ConvGeom) -> bool {
    supports(g) && is_pointwise(g)
}

/// [`conv2d_backward_weight`] when `T` is f32 and [`supports`] holds;
/// `None` otherwise.
pub(super) fn try_backward_weight<T: 'static>(
    x: &[T],
    dy: &[T],
    g: &ConvGeom,
) -> Option<Result<Vec<T>>> {
    weight_grad_in_f32(x, dy, supports(g), |x, dy| conv2d_backward_weight(x, dy, g))
}

/// `f(x, dy)` on the operands seen as f32, its result seen as `T`, when
/// `T` is f32 and the route `applies`; `None` otherwise (the caller takes
/// another route). Shared by the f32-only weight-gradient routes.
pub(super) fn weight_grad_in_f32<T: 'static>(
    x: &[T],
    dy: &[T],
    applies: bool,
    f: impl FnOnce(&[f32], &[f32]) -> Result<Vec<f32>>,
) -> Option<Result<Vec<T>>> {
    let (x, dy) = (f32_slice(x)?, f32_slice(dy)?);
    applies.then(|| f(x, dy).map(into_vec_of))
}

/// Where group `gi` of image `n` starts in `x`.
fn group_base(g: &ConvGeom, n: usize, gi: usize) -> usize {
    n * g.image_len() + gi * g.cg() * g.h * g.w
}

/// Forward: `x` (N×C×H×W), `w` (O×C/g×kh×kw), optional `bias` (O), all
/// contiguous; returns N×O×oh×ow. Errors unless [`supports`], or when a
/// buffer is shorter than the geometry needs.
pub fn conv2d_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
) -> Result<Vec<f32>> {
    if let Some(orders) = padding_skip::orders_if_it_pays(g) {
        return padding_skip::forward_in(orders, x, w, bias, g);
    }
    forward_in_order(x, w, WeightOrder::Rows, bias, g)
}

/// Input gradient of a 1×1 convolution with stride 1 and no padding
/// (`is_pointwise`): `dy` (N×O×H×W) and `w` (O×C/g×1×1) → `dx`
/// (N×C×H×W), the forward of `dy` through `W'[g·cg + c, o] = W[g·og + o,
/// c]`, read in place as `W`'s transpose instead of a flipped copy. The
/// copy (`cpu::flip_kernel`, a transpose of `W`) took 5–6 % of ResNet-50's
/// 512→2048 input gradient at 7² on one thread (`perf`). Errors unless
/// [`supports`] and the geometry is pointwise, or when a buffer is
/// shorter than the geometry needs.
pub fn conv2d_backward_input_pointwise(dy: &[f32], w: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    if !is_pointwise(g) {
        return Err(Error::invalid(
            "conv2d",
            "the in-place input gradient needs a 1×1 kernel, stride 1 and no padding",
        ));
    }
    // The input-gradient convolution: dy's channels in, x's out, on the
    // same planes.
    let transposed = ConvGeom {
        c_in: g.c_out,
        c_out: g.c_in,
        ..*g
    };
    forward_in_order(dy, w, WeightOrder::Columns, None, &transposed)
}

/// [`conv2d_forward`] with the weights read in `order`.
fn forward_in_order(
    x: &[f32],
    w: &[f32],
    order: WeightOrder,
    bias: Option<&[f32]>,
    g: &ConvGeom,
) -> Result<Vec<f32>> {
    check_supported(g)?;
    let (x, w, bias) = g.forward_operands(x, w, bias)?;
    let direct = writes_planes_directly(g);
    let tiles = image_tiles(g);
    let weights = Weights::for_forward(w, order, g, direct, tiles.len())?;
    let (og, cols) = (g.og(), g.col_cols());
    let len = g.n * g.out_image_len();
    let mut out = take_empty::<f32>(len)?;
    let prod_len = if direct {
        0
    } else {
        og * largest(&tiles) * cols
    };
    let out_ptr = SharedMut(out.spare_capacity_mut().as_mut_ptr());
    for_each_tile(g, &tiles, |n0, t| {
        let mut plans = Plans::default();
        with_scratch(prod_len, |prod: &mut [f32]| {
            for gi in 0..g.groups {
                // Safety: in range, and each (image, group) pair's planes
                // are written by one task only (tiles hold disjoint images).
                let planes = |n: usize| unsafe {
                    out_ptr.slice(n * g.out_image_len() + gi * og * cols, og * cols)
                };
                if !direct {
                    let ld = t * cols;
                    let prod = &mut prod[..og * ld];
                    // Safety: initialised f32 seen as possibly uninitialised
                    // ones (same layout); only f32 values are written to it.
                    let prod_out = unsafe { &mut *(prod as *mut [f32] as *mut [MaybeUninit<f32>]) };
                    let x = &x[group_base(g, n0, gi)..];
                    forward_product(&weights, gi, x, g, prod_out, &mut plans);
                    for i in 0..t {
                        write_planes(prod, ld, i * cols, g, gi, bias, planes(n0 + i));
                    }
                    continue;
                }
                for i in 0..t {
                    let dst = planes(n0 + i);
                    let x = &x[group_base(g, n0 + i, gi)..];
                    forward_product(&weights, gi, x, g, dst, &mut plans);
                    // Safety: `forward_product` wrote every element, and
                    // f32 and MaybeUninit<f32> share a layout.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), dst.len())
                    };
                    if let Some(b) = bias {
                        for (o, plane) in dst.chunks_exact_mut(cols).enumerate() {
                            let bv = b[gi * og + o];
                            plane.iter_mut().for_each(|v| *v += bv);
                        }
                    }
                }
            }
        })
    });
    // SAFETY: `for_each_tile` runs every tile, and the tiles cover images
    // 0..n. For each of its images and each group, a tile writes all
    // `og × oh·ow` elements of that group's planes, through a product
    // that overwrites its output (direct) or through `write_planes`.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Fewest output pixels per image for one product per image where the
/// packed weights are at most [`DIRECT_MAX_WEIGHT_BYTES`].
const DIRECT_MIN_PIXELS: usize = 64;

/// Most bytes of packed weights for one product per image on planes
/// smaller than [`DIRECT_MIN_COLUMNS`]: the weights are read once per image
/// then, and stay in a 2 MB L2 cache between images.
const DIRECT_MAX_WEIGHT_BYTES: usize = 3 << 19;

/// Whether the forward pass runs one product per image, written straight
/// into the image's output planes, rather than one per tile of images
/// copied out afterwards: for planes of at least [`DIRECT_MIN_COLUMNS`]
/// pixels (as im2col), and for planes of at least [`DIRECT_MIN_PIXELS`]
/// when the packed weights fit [`DIRECT_MAX_WEIGHT_BYTES`].
fn writes_planes_directly(g: &ConvGeom) -> bool {
    let cols = g.col_cols();
    let weight_bytes = g.og() * g.col_rows() * std::mem::size_of::<f32>();
    cols >= DIRECT_MIN_COLUMNS
        || (cols >= DIRECT_MIN_PIXELS && weight_bytes <= DIRECT_MAX_WEIGHT_BYTES)
}

/// Whether `g` is a 1×1 convolution with stride 1 and no padding, whose
/// unrolled matrix is the input itself.
fn is_pointwise(g: &ConvGeom) -> bool {
    (g.kh, g.kw, g.stride, g.padding) == (1, 1, (1, 1), (0, 0))
}

/// The kernel that computes `pass` of `g` here, in words (for
/// `plan::algorithm`).
pub(super) fn route(g: &ConvGeom, pass: Pass) -> &'static str {
    let per_image = match pass {
        Pass::WeightGrad if transposes_weight_gradient(g) => {
            return "implicit gemm per image, transposed"
        }
        Pass::WeightGrad => g.col_cols() >= DIRECT_MIN_INNER,
        Pass::Forward if padding_skip::pays(g) => return "implicit gemm tiles, padding skipped",
        _ => writes_planes_directly(g),
    };
    if per_image {
        "implicit gemm per image"
    } else {
        "implicit gemm tiles"
    }
}

/// `c = W · X` for group `gi` of `weights`, over the pixels that `c` has
/// columns for (`c.len() / og` of them, counted across images from the
/// image whose group is at the start of `x`): one unrolled row of `X` per
/// kernel tap, gathered from `x` panel by panel, with the gathers' plans
/// from `plans`. Every element of `c` is written, none read.
fn forward_product(
    weights: &Weights,
    gi: usize,
    x: &[f32],
    g: &ConvGeom,
    c: &mut [MaybeUninit<f32>],
    plans: &mut Plans,
) {
    let w = weights.group(gi, g);
    let og = g.og();
    let n = c.len().checked_div(og).unwrap_or(0);
    assert_eq!((w.dims(), og * n), ((og, g.col_rows()), c.len()));
    let kernel = Kernel::current();
    let pack = |blk: &BBlock, out: &mut [f32]| {
        let layout = Layout::Panels {
            width: NR,
            depth: blk.kc,
        };
        let plan = plans.get(g, blk.jc, blk.nc, layout);
        plan.fill(kernel, x, (blk.pc, blk.kc), out, NR);
        let width = blk.nc % NR;
        if width > 0 {
            // The last micro-panel's columns past the product are zeros.
            let last = &mut out[(blk.nc - width) * blk.kc..];
            last.chunks_exact_mut(NR)
                .for_each(|row| row[width..].fill(0.0));
        }
    };
    // Safety: the CPU runs `kernel` (`supports`); `c` holds og × n
    // values, row stride n, and is its own buffer; with beta 0 the product
    // writes every element of `c` without reading it.
    let c = c.as_mut_ptr().cast::<f32>();
    unsafe { sgemm_with(kernel, w, n, pack, 0.0, c, n as isize) };
}

/// Weight gradient: `x` and `dy` → `dw` (O×C/g×kh×kw), summed over images.
/// Errors unless [`supports`], or when a buffer is shorter than the
/// geometry needs.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    check_supported(g)?;
    let (x, dy) = g.weight_grad_operands(x, dy)?;
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    if transposes_weight_gradient(g) {
        return backward_weight_transposed(x, dy, g);
    }
    let tiles = image_tiles(g);
    let direct = cols >= DIRECT_MIN_INNER;
    // Adds the weight gradient of the `t` images from `n0` on to `dw`.
    let add_tile = |mut dw: Vec<f32>, &(n0, t): &(usize, usize)| {
        let mut plans = if direct {
            Plans::per_image(g)
        } else {
            Plans::default()
        };
        let mut copy = Vec::new();
        for gi in 0..g.groups {
            let dw_g = &mut dw[gi * og * k..(gi + 1) * og * k];
            if direct {
                for n in n0..n0 + t {
                    let x = &x[group_base(g, n, gi)..];
                    let x = plans.image(x, g, &mut copy);
                    weight_product(dy, (n, 1), gi, x, g, dw_g, &mut plans);
                }
            } else {
                let x = &x[group_base(g, n0, gi)..];
                weight_product(dy, (n0, t), gi, x, g, dw_g, &mut plans);
            }
        }
        dw
    };
    sum_in_fixed_runs(&tiles, g.c_out * k, parallel(g), add_tile)
}

/// `dw += dY · Xᵀ` for group `gi` of the `t` images from `n0` on: `dY`'s
/// planes (`og × oh·ow` per image) read where they lie in `dy` as one
/// `og × t·oh·ow` left operand (`Lhs::Planes`; copying them side by side
/// first took 13 % of ResNet-50's 256→1024 1×1 weight gradient at 14² on
/// one thread), and `X` from image `n0`'s group at the start of `x`. `X`'s
/// panels are gathered 32 taps at a time into runs along the pixels (the
/// gathers' plans from `plans`), then transposed into the packed layout.
#[allow(clippy::too_many_arguments)]
fn weight_product(
    dy: &[f32],
    (n0, t): (usize, usize),
    gi: usize,
    x: &[f32],
    g: &ConvGeom,
    dw: &mut [f32],
    plans: &mut Plans,
) {
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let pixels = t * cols;
    let first = n0 * g.out_image_len() + gi * og * cols;
    // The last image's group of dY ends inside `dy`.
    let end = (n0 + t.max(1) - 1) * g.out_image_len() + (gi + 1) * og * cols;
    assert!(end <= dy.len() && dw.len() == og * k);
    let kernel = Kernel::current();
    if is_pointwise(g) && t == 1 {
        let dy = &dy[first..first + og * cols];
        // One image of a 1×1 stride-1 unpadded convolution: `X` is the
        // image's group itself (k × pixels, row-major), and `Xᵀ`'s panels
        // are transposed straight from it, with no gather into runs first
        // (same values, same bits). ResNet-50's 1×1 weight gradients,
        // one thread: 5-25 % faster. (The forward keeps the gather: packing
        // its panels from the rows in place, 32 values of a row at a time,
        // measured up to 10 % slower on the layers of 256-512 channels.)
        let x = &x[..k * pixels];
        // Safety: the CPU runs `kernel` (`supports`); `dy` holds og ×
        // pixels values, `x` k × pixels (read transposed), `dw` og × k,
        // row stride k, its own buffer.
        unsafe {
            let lhs = Lhs::Strided {
                m: og,
                k: pixels,
                a: dy.as_ptr(),
                strides: (pixels as isize, 1),
            };
            let (xp, dwp) = (x.as_ptr(), dw.as_mut_ptr());
            strided_on(
                kernel,
                lhs,
                k,
                xp,
                (1, pixels as isize),
                1.0,
                dwp,
                k as isize,
            )
        };
        return;
    }
    let mut runs = vec![0.0f32; NR * sgemm::KC];
    let pack = |blk: &BBlock, out: &mut [f32]| {
        let kc = blk.kc;
        let plan = plans.get(g, blk.pc, kc, Layout::Run);
        let runs = &mut runs[..NR * kc];
        for jb in (0..blk.nc).step_by(NR) {
            let width = NR.min(blk.nc - jb);
            plan.fill(kernel, x, (blk.jc + jb, width), runs, kc);
            runs[width * kc..].fill(0.0);
            let panel = &mut out[jb * kc..(jb + NR) * kc];
            // Safety: the CPU runs `kernel` (`supports`); NR runs of kc
            // values each, and the panel holds kc × NR values.
            let run = |j: usize| unsafe { runs.as_ptr().add(j * kc) };
            unsafe { pack_runs::<NR>(kernel, kc, run, panel.as_mut_ptr()) };
        }
    };
    let lhs = Lhs::Planes {
        m: og,
        cols,
        planes: t,
        a: dy[first..].as_ptr(),
        row_stride: cols as isize,
        plane_stride: g.out_image_len() as isize,
    };
    // Safety: the CPU runs `kernel` (`supports`); the t images' og × cols
    // planes of group gi lie inside `dy` (checked above), `dw` holds og ×
    // k, row stride k, its own buffer.
    unsafe { sgemm_with(kernel, lhs, k, pack, 1.0, dw.as_mut_ptr(), k as isize) };
}

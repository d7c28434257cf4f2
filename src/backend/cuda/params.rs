//! The argument structs of the kernels, field for field the structs of
//! `kernels/*.cu`.
//!
//! Each kernel takes its scalar arguments as one struct passed by value.
//! The Rust mirror is `#[repr(C)]` with the same fields in the same order;
//! fields are ordered 8-byte first, so neither side has hidden padding. The
//! size of every struct is asserted here at compile time and in the `.cu`
//! file by a `static_assert` with the same number, which NVRTC checks on
//! every compilation (`tests/cuda_kernels_compile.rs`).
//!
//! The constructors validate shapes and fold the derived quantities (merged
//! dims, output sizes, optimizer constants), so launchers stay short.

use crate::error::{Error, Result};
use crate::ground::{checked_numel, collapse_dims, Layout};
use crate::ops::optim::{AdamStep, SgdStep};
use cudarc::driver::DeviceRepr;
use std::mem::size_of;

/// The most dims a strided kernel handles (`FERRITE_MAX_DIMS`), after
/// merging the dims that are contiguous with each other.
pub const MAX_DIMS: usize = 8;

/// Arguments of the elementwise kernels (`kernels/elementwise.cu`): the
/// output shape and, for up to 3 operands, the strides and offset of each
/// operand viewed with that shape (stride 0 on broadcast dims).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElementwiseParams {
    /// Number of output elements.
    pub numel: i64,
    /// Output shape after merging dims; only the first `ndim` entries are used.
    pub shape: [i64; MAX_DIMS],
    /// Strides of each operand `k` in `shape`, in elements (0 on broadcast dims).
    pub strides: [[i64; MAX_DIMS]; 3],
    /// Offset of each operand's first element in its buffer, in elements.
    pub offsets: [i64; 3],
    /// Number of used dims in `shape` and `strides`, at most [`MAX_DIMS`].
    pub ndim: i32,
    /// 1 when every operand is read at `offset + i` (contiguous, not
    /// broadcast): the kernels then skip the index arithmetic.
    pub contiguous: i32,
    /// Scalar argument: `powf` exponent, `clamp`/`in_range` low bound,
    /// `affine` multiplier, `fill` value.
    pub alpha: f32,
    /// Scalar argument: `clamp`/`in_range` high bound, `affine` addend.
    pub beta: f32,
}
const _: () = assert!(size_of::<ElementwiseParams>() == 304);

impl ElementwiseParams {
    /// Parameters for a contiguous output of `shape` and `operands` (1 to
    /// 3 layouts, each already broadcast to `shape`, e.g. with
    /// [`Layout::broadcast_to`]). Dims that are contiguous with each other
    /// in every operand are merged first, so plain contiguous operands
    /// become one flat dim and take the fast path.
    pub fn new(shape: &[usize], operands: &[&Layout]) -> Result<Self> {
        const OP: &str = "ElementwiseParams::new";
        if operands.is_empty() || operands.len() > 3 {
            return Err(Error::invalid(
                OP,
                format!("expected 1 to 3 operands, got {}", operands.len()),
            ));
        }
        for l in operands {
            if l.shape() != shape {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    lhs: shape.to_vec(),
                    rhs: l.shape().to_vec(),
                });
            }
        }
        let numel = checked_numel(OP, shape)?;
        // Pad to three stride sets with copies of the first: the copies never
        // block a merge the real operands allow.
        let pick = |k: usize| operands.get(k).unwrap_or(&operands[0]).strides();
        let (merged, strides) = collapse_dims(shape, [pick(0), pick(1), pick(2)]);
        if merged.len() > MAX_DIMS {
            return Err(Error::invalid(
                OP,
                format!(
                    "shape {shape:?} with these strides needs {} dims after merging, \
                     the kernels handle at most {MAX_DIMS}",
                    merged.len()
                ),
            ));
        }
        let mut p = ElementwiseParams {
            numel: numel as i64,
            shape: [1; MAX_DIMS],
            strides: [[0; MAX_DIMS]; 3],
            offsets: [0; 3],
            ndim: merged.len() as i32,
            contiguous: 0,
            alpha: 0.0,
            beta: 0.0,
        };
        for (d, &size) in merged.iter().enumerate() {
            p.shape[d] = size as i64;
        }
        for (k, (dst, src)) in p.strides.iter_mut().zip(&strides).enumerate() {
            for (to, &from) in dst.iter_mut().zip(src) {
                *to = from as i64;
            }
            p.offsets[k] = operands.get(k).unwrap_or(&operands[0]).offset() as i64;
        }
        let flat = merged.len() == 1 && strides.iter().all(|s| s[0] == 1);
        p.contiguous = i32::from(flat || numel <= 1);
        Ok(p)
    }

    /// Parameters for contiguous operands of `numel` elements at offset 0:
    /// the flat fast path, without building layouts.
    pub fn flat(numel: usize) -> Self {
        let mut p = ElementwiseParams {
            numel: numel as i64,
            shape: [1; MAX_DIMS],
            strides: [[0; MAX_DIMS]; 3],
            offsets: [0; 3],
            ndim: 1,
            contiguous: 1,
            alpha: 0.0,
            beta: 0.0,
        };
        p.shape[0] = numel as i64;
        for s in &mut p.strides {
            s[0] = 1;
        }
        p
    }

    /// The same parameters with the scalar arguments set.
    pub fn with_scalars(mut self, alpha: f32, beta: f32) -> Self {
        self.alpha = alpha;
        self.beta = beta;
        self
    }
}

/// Arguments of the row kernels of `kernels/reduce.cu`: `rows × cols`,
/// row `r` starting at `r · row_stride`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowParams {
    /// Number of rows (one result per row).
    pub rows: i64,
    /// Elements per row, contiguous within the row.
    pub cols: i64,
    /// Elements between the starts of consecutive input rows.
    pub row_stride: i64,
}
const _: () = assert!(size_of::<RowParams>() == 24);

impl RowParams {
    /// Contiguous rows (`row_stride = cols`).
    pub fn contiguous(rows: usize, cols: usize) -> Self {
        RowParams {
            rows: rows as i64,
            cols: cols as i64,
            row_stride: cols as i64,
        }
    }
}

/// Arguments of the strided reductions of `kernels/reduce.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StridedReduceParams {
    /// Number of output elements (product of the kept dims).
    pub out_numel: i64,
    /// Number of input elements reduced into each output (product of the
    /// reduced dims).
    pub red_numel: i64,
    /// Offset of the input's first element in its buffer, in elements.
    pub offset: i64,
    /// Sizes of the kept dims; only the first `out_ndim` entries are used.
    pub out_shape: [i64; MAX_DIMS],
    /// Input strides of the kept dims, in elements.
    pub out_strides: [i64; MAX_DIMS],
    /// Sizes of the reduced dims; only the first `red_ndim` entries are used.
    pub red_shape: [i64; MAX_DIMS],
    /// Input strides of the reduced dims, in elements.
    pub red_strides: [i64; MAX_DIMS],
    /// Number of kept dims, at most [`MAX_DIMS`].
    pub out_ndim: i32,
    /// Number of reduced dims, at most [`MAX_DIMS`].
    pub red_ndim: i32,
}
const _: () = assert!(size_of::<StridedReduceParams>() == 288);

impl StridedReduceParams {
    /// Reducing `input` over `dims` (each `< ndim`, no repeats): the kept
    /// dims index the contiguous output in their original order.
    pub fn new(input: &Layout, dims: &[usize]) -> Result<Self> {
        const OP: &str = "StridedReduceParams::new";
        let nd = input.ndim();
        let mut reduced = vec![false; nd];
        for &d in dims {
            if d >= nd || reduced[d] {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "bad or repeated dim {d} for a tensor of shape {:?}",
                        input.shape()
                    ),
                ));
            }
            reduced[d] = true;
        }
        let split = |keep: bool| -> Vec<(usize, usize)> {
            (0..nd)
                .filter(|&d| reduced[d] != keep)
                .map(|d| (input.shape()[d], input.strides()[d]))
                .collect()
        };
        let (kept, red) = (split(true), split(false));
        if kept.len() > MAX_DIMS || red.len() > MAX_DIMS {
            return Err(Error::invalid(
                OP,
                format!(
                    "at most {MAX_DIMS} kept and {MAX_DIMS} reduced dims, shape {:?}",
                    input.shape()
                ),
            ));
        }
        let mut p = StridedReduceParams {
            out_numel: kept.iter().map(|&(s, _)| s as i64).product(),
            red_numel: red.iter().map(|&(s, _)| s as i64).product(),
            offset: input.offset() as i64,
            out_shape: [1; MAX_DIMS],
            out_strides: [0; MAX_DIMS],
            red_shape: [1; MAX_DIMS],
            red_strides: [0; MAX_DIMS],
            out_ndim: kept.len() as i32,
            red_ndim: red.len() as i32,
        };
        for (d, &(size, stride)) in kept.iter().enumerate() {
            p.out_shape[d] = size as i64;
            p.out_strides[d] = stride as i64;
        }
        for (d, &(size, stride)) in red.iter().enumerate() {
            p.red_shape[d] = size as i64;
            p.red_strides[d] = stride as i64;
        }
        Ok(p)
    }
}

/// Arguments of `kernels/gemm.cu`: `C = alpha·A·B + beta·C` over strided,
/// batched matrices (see the kernel's comment for the stride meaning).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmParams {
    /// Rows of `A` and `C`.
    pub m: i64,
    /// Columns of `B` and `C`.
    pub n: i64,
    /// Columns of `A` and rows of `B` (the summed dim).
    pub k: i64,
    /// Number of matrix products in the batch.
    pub batch: i64,
    /// Row stride of `A` in elements.
    pub a_row: i64,
    /// Column stride of `A` in elements.
    pub a_col: i64,
    /// Row stride of `B` in elements.
    pub b_row: i64,
    /// Column stride of `B` in elements.
    pub b_col: i64,
    /// Row stride of `C` in elements.
    pub c_row: i64,
    /// Column stride of `C` in elements.
    pub c_col: i64,
    /// Elements between consecutive batch items of `A` (0 broadcasts one matrix).
    pub a_batch: i64,
    /// Elements between consecutive batch items of `B` (0 broadcasts one matrix).
    pub b_batch: i64,
    /// Elements between consecutive batch items of `C`.
    pub c_batch: i64,
    /// Scale of the product `A·B`.
    pub alpha: f32,
    /// Scale of the old `C`; with 0, `C` is only written, never read.
    pub beta: f32,
}
const _: () = assert!(size_of::<GemmParams>() == 112);

impl GemmParams {
    /// `C[b] = A[b]·B[b]` for contiguous row-major `A: batch×m×k`,
    /// `B: batch×k×n` and `C: batch×m×n` (alpha 1, beta 0).
    pub fn row_major(batch: usize, m: usize, k: usize, n: usize) -> Self {
        let (m, k, n) = (m as i64, k as i64, n as i64);
        GemmParams {
            m,
            n,
            k,
            batch: batch as i64,
            a_row: k,
            a_col: 1,
            b_row: n,
            b_col: 1,
            c_row: n,
            c_col: 1,
            a_batch: m * k,
            b_batch: k * n,
            c_batch: m * n,
            alpha: 1.0,
            beta: 0.0,
        }
    }
}

/// Arguments of `kernels/conv.cu` (im2col and col2im).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Im2colParams {
    /// Number of images in the batch.
    pub n: i64,
    /// Input channels.
    pub c: i64,
    /// Input height in pixels.
    pub h: i64,
    /// Input width in pixels.
    pub w: i64,
    /// Kernel height.
    pub kh: i64,
    /// Kernel width.
    pub kw: i64,
    /// Output height (computed by [`conv_out_len`]).
    pub oh: i64,
    /// Output width (computed by [`conv_out_len`]).
    pub ow: i64,
    /// Vertical stride between output positions, in input pixels.
    pub stride_h: i64,
    /// Horizontal stride between output positions, in input pixels.
    pub stride_w: i64,
    /// Zero padding added above and below the input, in pixels.
    pub pad_h: i64,
    /// Zero padding added left and right of the input, in pixels.
    pub pad_w: i64,
    /// Vertical dilation: input rows between kernel taps.
    pub dil_h: i64,
    /// Horizontal dilation: input columns between kernel taps.
    pub dil_w: i64,
}
const _: () = assert!(size_of::<Im2colParams>() == 112);

pub use crate::ops::conv::conv_out_len;

impl Im2colParams {
    /// im2col of `n` images of `c × h × w` for a `kh × kw` kernel with the
    /// given (vertical, horizontal) stride, padding and dilation; the
    /// output size is computed and checked.
    pub fn new(
        n: usize,
        (c, h, w): (usize, usize, usize),
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<Self> {
        let oh = conv_out_len(h, kh, stride.0, pad.0, dilation.0);
        let ow = conv_out_len(w, kw, stride.1, pad.1, dilation.1);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(Error::invalid(
                "im2col",
                format!(
                    "a {kh}x{kw} kernel (stride {stride:?}, padding {pad:?}, dilation {dilation:?}) \
                     does not fit an input of {h}x{w}"
                ),
            ));
        };
        let i = |v: usize| v as i64;
        Ok(Im2colParams {
            n: i(n),
            c: i(c),
            h: i(h),
            w: i(w),
            kh: i(kh),
            kw: i(kw),
            oh: i(oh),
            ow: i(ow),
            stride_h: i(stride.0),
            stride_w: i(stride.1),
            pad_h: i(pad.0),
            pad_w: i(pad.1),
            dil_h: i(dilation.0),
            dil_w: i(dilation.1),
        })
    }
}

/// Arguments of `kernels/pool.cu` (adaptive pooling uses only `planes`,
/// `h`, `w`, `oh`, `ow`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Number of `h × w` planes pooled independently (batch × channels).
    pub planes: i64,
    /// Input height.
    pub h: i64,
    /// Input width.
    pub w: i64,
    /// Output height.
    pub oh: i64,
    /// Output width.
    pub ow: i64,
    /// Window height.
    pub kh: i64,
    /// Window width.
    pub kw: i64,
    /// Vertical step between windows, in input rows.
    pub stride_h: i64,
    /// Horizontal step between windows, in input columns.
    pub stride_w: i64,
    /// Implicit padding above and below the input, in rows.
    pub pad_h: i64,
    /// Implicit padding left and right of the input, in columns.
    pub pad_w: i64,
    /// 1: average pooling divides by the padded window area; 0: by the
    /// number of inputs read.
    pub count_include_pad: i32,
    /// Padding to a multiple of 8 bytes; always 0.
    pub _unused: i32,
}
const _: () = assert!(size_of::<Pool2dParams>() == 96);

/// Arguments of `kernels/norm.cu`: the input seen as `n × c × s`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormParams {
    /// Batch size (dim 0 of the input).
    pub n: i64,
    /// Channels (dim 1 of the input).
    pub c: i64,
    /// Elements per channel per sample: product of the dims after 1 (1 for
    /// a rank-2 input).
    pub s: i64,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the batch statistics in the running update:
    /// `running ← momentum·batch + (1 − momentum)·running`.
    pub momentum: f32,
    /// 1: the statistics kernel also updates the running mean and variance.
    pub update_running: i32,
    /// Padding to a multiple of 8 bytes; always 0.
    pub _unused: i32,
}
const _: () = assert!(size_of::<BatchNormParams>() == 40);

impl BatchNormParams {
    /// For an input of `shape` (rank ≥ 2, channels on dim 1).
    pub fn new(shape: &[usize], eps: f64, momentum: f64, update_running: bool) -> Result<Self> {
        if shape.len() < 2 {
            return Err(Error::bad_shape(
                "batch_norm",
                format!("expected an input of rank ≥ 2 (N×C×…), got shape {shape:?}"),
            ));
        }
        let s: usize = shape[2..].iter().product();
        Ok(BatchNormParams {
            n: shape[0] as i64,
            c: shape[1] as i64,
            s: s as i64,
            eps: eps as f32,
            momentum: momentum as f32,
            update_running: i32::from(update_running),
            _unused: 0,
        })
    }
}

/// Arguments of the sigmoid losses of `kernels/loss.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SigmoidLossParams {
    /// Number of logits (and targets).
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C` (for `pos_weight`).
    pub classes: i64,
    /// Stride of the upstream gradient `dy`: 0 for one shared value, 1 for
    /// one value per element.
    pub dy_stride: i64,
    /// Focal loss focusing exponent γ.
    pub gamma: f32,
    /// Focal loss weight α of the positives; used only when `has_alpha` is 1.
    pub alpha: f32,
    /// ASL focusing exponent γ₊ of the positive term.
    pub gamma_pos: f32,
    /// ASL focusing exponent γ₋ of the negative term.
    pub gamma_neg: f32,
    /// ASL probability margin: negatives use `max(p − clip, 0)`.
    pub clip: f32,
    /// Focal loss: 1 to weight by α, 0 for `α_t = 1`.
    pub has_alpha: i32,
}
const _: () = assert!(size_of::<SigmoidLossParams>() == 48);

/// Arguments of `plm_mask_fwd_f32`: mask number `batch` under `seed`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlmMaskParams {
    /// Philox key: the same seed and batch always give the same mask.
    pub seed: u64,
    /// Mask number, part of the Philox counter.
    pub batch: u64,
    /// Mask elements, `B·C` (batch rows × classes).
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C`.
    pub classes: i64,
}
const _: () = assert!(size_of::<PlmMaskParams>() == 32);

/// Arguments of `plm_histogram_fwd_f32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlmHistogramParams {
    /// Number of probabilities (and targets) in the batch.
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C`.
    pub classes: i64,
    /// Histogram bins over `[0, 1]`.
    pub n_bins: i64,
}
const _: () = assert!(size_of::<PlmHistogramParams>() == 24);

/// Arguments of `sgd_step_f32`, the constants rounded to f32 as the CPU
/// kernel rounds them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    /// Number of parameter elements.
    pub n: i64,
    /// Learning rate.
    pub lr: f32,
    /// L2 weight decay, added to the gradient as `wd·p`.
    pub weight_decay: f32,
    /// Momentum factor μ.
    pub momentum: f32,
    /// `1 − dampening`, the weight of the new gradient in the momentum buffer.
    pub dampening_complement: f32,
    /// 1: Nesterov momentum.
    pub nesterov: i32,
    /// 1: the momentum buffer starts as the gradient (first step).
    pub first_step: i32,
    /// 1: a momentum buffer is used; 0: plain SGD, `buf` is unused.
    pub has_buf: i32,
    /// Padding to a multiple of 8 bytes; always 0.
    pub _unused: i32,
}
const _: () = assert!(size_of::<SgdParams>() == 40);

impl SgdParams {
    /// One step over `n` elements; `has_buf` when a momentum buffer is used.
    pub fn new(n: usize, h: &SgdStep, has_buf: bool) -> Self {
        SgdParams {
            n: n as i64,
            lr: h.lr as f32,
            weight_decay: h.weight_decay as f32,
            momentum: h.momentum as f32,
            dampening_complement: (1.0 - h.dampening) as f32,
            nesterov: i32::from(h.nesterov),
            first_step: i32::from(h.first_step),
            has_buf: i32::from(has_buf),
            _unused: 0,
        }
    }
}

/// Arguments of `adam_step_f32`, with the step-dependent constants folded
/// in f64 and rounded to f32 once (as `ops::optim::cpu::adam` does).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Number of parameter elements.
    pub n: i64,
    /// `lr / (1 − β1ᵗ)`: the learning rate with the first bias correction.
    pub step_size: f32,
    /// `1 − β1`.
    pub one_minus_beta1: f32,
    /// β2, the decay rate of the second-moment estimate.
    pub beta2: f32,
    /// `1 − β2`.
    pub one_minus_beta2: f32,
    /// Added to the denominator for numerical stability.
    pub eps: f32,
    /// `√(1 − β2ᵗ)`: the second bias correction.
    pub bc2_sqrt: f32,
    /// `1 − lr·wd`: the AdamW factor on the parameters.
    pub decay: f32,
    /// Weight decay `wd`, added to the gradient as `wd·p` in plain Adam.
    pub weight_decay: f32,
    /// 1: decoupled weight decay (AdamW); 0: L2 on the gradient (Adam).
    pub decoupled: i32,
    /// Padding to a multiple of 8 bytes; always 0.
    pub _unused: i32,
}
const _: () = assert!(size_of::<AdamParams>() == 48);

impl AdamParams {
    /// One step over `n` elements.
    pub fn new(n: usize, h: &AdamStep) -> Self {
        let t = h.step as i32;
        let bc1 = 1.0 - h.beta1.powi(t);
        AdamParams {
            n: n as i64,
            step_size: (h.lr / bc1) as f32,
            one_minus_beta1: (1.0 - h.beta1) as f32,
            beta2: h.beta2 as f32,
            one_minus_beta2: (1.0 - h.beta2) as f32,
            eps: h.eps as f32,
            bc2_sqrt: (1.0 - h.beta2.powi(t)).sqrt() as f32,
            decay: (1.0 - h.lr * h.weight_decay) as f32,
            weight_decay: h.weight_decay as f32,
            decoupled: i32::from(h.decoupled),
            _unused: 0,
        }
    }
}

// Safety: every struct above is #[repr(C)], made of plain integers and
// floats with no padding (sizes asserted), and mirrors the kernel's struct.
unsafe impl DeviceRepr for ElementwiseParams {}
unsafe impl DeviceRepr for RowParams {}
unsafe impl DeviceRepr for StridedReduceParams {}
unsafe impl DeviceRepr for GemmParams {}
unsafe impl DeviceRepr for Im2colParams {}
unsafe impl DeviceRepr for Pool2dParams {}
unsafe impl DeviceRepr for BatchNormParams {}
unsafe impl DeviceRepr for SigmoidLossParams {}
unsafe impl DeviceRepr for PlmMaskParams {}
unsafe impl DeviceRepr for PlmHistogramParams {}
unsafe impl DeviceRepr for SgdParams {}
unsafe impl DeviceRepr for AdamParams {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset of element `i` (row-major in the params' shape) of
    /// operand `k`, the way the kernel's `operand_offset` computes it.
    fn kernel_offset(p: &ElementwiseParams, k: usize, mut i: i64) -> i64 {
        if p.contiguous == 1 {
            return p.offsets[k] + i;
        }
        let mut off = p.offsets[k];
        for d in (0..p.ndim as usize).rev() {
            off += (i % p.shape[d]) * p.strides[k][d];
            i /= p.shape[d];
        }
        off
    }

    /// The offset of element `i` of `layout` straight from its strides.
    fn layout_offset(layout: &Layout, mut i: usize) -> i64 {
        let mut off = layout.offset();
        for d in (0..layout.ndim()).rev() {
            off += (i % layout.shape()[d]) * layout.strides()[d];
            i /= layout.shape()[d];
        }
        off as i64
    }

    fn check_offsets(shape: &[usize], operands: &[&Layout]) -> ElementwiseParams {
        let p = ElementwiseParams::new(shape, operands).unwrap();
        for i in 0..p.numel {
            for (k, l) in operands.iter().enumerate() {
                assert_eq!(
                    kernel_offset(&p, k, i),
                    layout_offset(l, i as usize),
                    "element {i} of operand {k}"
                );
            }
        }
        p
    }

    #[test]
    fn contiguous_operands_take_the_flat_path() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let p = check_offsets(&[2, 3, 4], &[&l, &l]);
        assert_eq!(p.contiguous, 1);
        assert_eq!((p.ndim, p.shape[0], p.numel), (1, 24, 24));
        // A narrowed contiguous view keeps its offset on the flat path.
        let n = Layout::contiguous(&[5, 4]).narrow(0, 2, 3);
        let p = check_offsets(&[3, 4], &[&n]);
        assert_eq!((p.contiguous, p.offsets[0]), (1, 8));
        assert_eq!(ElementwiseParams::flat(10), {
            let l = Layout::contiguous(&[10]);
            ElementwiseParams::new(&[10], &[&l]).unwrap()
        });
    }

    #[test]
    fn broadcast_and_permuted_operands_map_every_element() {
        let out = [3, 4, 5];
        let a = Layout::contiguous(&[4, 1]).broadcast_to(&out);
        let b = Layout::contiguous(&[5, 4, 3]).permute(&[2, 1, 0]);
        let c = Layout::contiguous(&[3, 4, 5]);
        let p = check_offsets(&out, &[&a, &b, &c]);
        assert_eq!(p.contiguous, 0);
        assert!(p.strides[0].contains(&0), "broadcast dims have stride 0");
        // Scalars and empty tensors.
        let s = Layout::contiguous(&[]);
        check_offsets(&[], &[&s]);
        let e = Layout::contiguous(&[0, 3]);
        assert_eq!(ElementwiseParams::new(&[0, 3], &[&e]).unwrap().numel, 0);
    }

    #[test]
    fn elementwise_params_reject_bad_operands() {
        let l = Layout::contiguous(&[2, 3]);
        assert!(ElementwiseParams::new(&[2, 3], &[]).is_err());
        assert!(ElementwiseParams::new(&[2, 3], &[&l, &l, &l, &l]).is_err());
        assert!(ElementwiseParams::new(&[3, 2], &[&l]).is_err());
        // Nine dims that cannot merge (every other one permuted).
        let shape = [2usize; 9];
        let order = [1, 0, 3, 2, 5, 4, 7, 6, 8];
        let p = Layout::contiguous(&shape).permute(&order);
        assert!(ElementwiseParams::new(&shape, &[&p]).is_err());
    }

    #[test]
    fn strided_reduce_splits_kept_and_reduced_dims() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let p = StridedReduceParams::new(&l, &[1]).unwrap();
        assert_eq!((p.out_numel, p.red_numel), (8, 3));
        assert_eq!((p.out_ndim, p.red_ndim), (2, 1));
        assert_eq!(&p.out_shape[..2], &[2, 4]);
        assert_eq!(&p.out_strides[..2], &[12, 1]);
        assert_eq!((p.red_shape[0], p.red_strides[0]), (3, 4));
        let all = StridedReduceParams::new(&l, &[0, 1, 2]).unwrap();
        assert_eq!((all.out_numel, all.red_numel, all.out_ndim), (1, 24, 0));
        assert!(StridedReduceParams::new(&l, &[3]).is_err());
        assert!(StridedReduceParams::new(&l, &[1, 1]).is_err());
    }

    #[test]
    fn conv_output_sizes_follow_the_formula() {
        assert_eq!(conv_out_len(32, 3, 1, 1, 1), Some(32));
        assert_eq!(conv_out_len(224, 7, 2, 3, 1), Some(112));
        assert_eq!(conv_out_len(5, 3, 1, 0, 2), Some(1));
        assert_eq!(
            conv_out_len(4, 3, 1, 0, 2),
            None,
            "dilated kernel wider than input"
        );
        assert_eq!(conv_out_len(4, 3, 0, 0, 1), None);
        assert_eq!(conv_out_len(4, 0, 1, 0, 1), None);
        let p = Im2colParams::new(2, (3, 8, 8), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
        assert_eq!((p.oh, p.ow), (4, 4));
        assert!(Im2colParams::new(1, (1, 2, 2), (3, 3), (1, 1), (0, 0), (1, 1)).is_err());
    }

    #[test]
    fn optimizer_constants_are_folded_like_the_cpu_kernel() {
        let h = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
            step: 3,
        };
        let p = AdamParams::new(10, &h);
        assert_eq!(p.step_size, (1e-3 / (1.0 - 0.9f64.powi(3))) as f32);
        assert_eq!(p.bc2_sqrt, (1.0 - 0.999f64.powi(3)).sqrt() as f32);
        assert_eq!(p.decay, (1.0 - 1e-3 * 0.01) as f32);
        assert_eq!((p.decoupled, p.n), (1, 10));
        let s = SgdParams::new(
            4,
            &SgdStep {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.25,
                nesterov: true,
                weight_decay: 0.0,
                first_step: false,
            },
            true,
        );
        assert_eq!(s.dampening_complement, 0.75);
        assert_eq!((s.nesterov, s.first_step, s.has_buf), (1, 0, 1));
        let b = BatchNormParams::new(&[4, 3, 5, 6], 1e-5, 0.1, true).unwrap();
        assert_eq!((b.n, b.c, b.s, b.update_running), (4, 3, 30, 1));
        assert_eq!(
            BatchNormParams::new(&[4, 3], 1e-5, 0.1, false).unwrap().s,
            1
        );
        assert!(BatchNormParams::new(&[4], 1e-5, 0.1, false).is_err());
    }
}

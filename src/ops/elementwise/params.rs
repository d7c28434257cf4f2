//! Arguments of the elementwise kernels (`kernels/elementwise.cu`).

use crate::error::{Error, Result};
use crate::ground::{checked_numel, collapse_dims, Layout};
use std::mem::size_of;

use crate::backend::cuda::launch::MAX_DIMS;

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

// Safety: #[repr(C)], plain integers and floats with no padding (sizes
// asserted above), mirroring the kernel's struct.
unsafe impl crate::backend::cuda::driver::KernelArg for ElementwiseParams {}

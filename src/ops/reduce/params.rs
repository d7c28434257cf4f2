//! Arguments of the row and strided reduction kernels (`kernels/reduce.cu`).

use crate::error::{Error, Result};
use crate::ground::Layout;
use std::mem::size_of;

use crate::backend::cuda::launch::MAX_DIMS;

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

// Safety: #[repr(C)], plain integers and floats with no padding (sizes
// asserted above), mirroring the kernel's struct.
unsafe impl crate::backend::cuda::driver::KernelArg for RowParams {}
unsafe impl crate::backend::cuda::driver::KernelArg for StridedReduceParams {}

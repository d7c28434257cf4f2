//! Arguments of the indexing kernels (`kernels/index.cu`).

use crate::backend::cuda::launch::MAX_DIMS;
use crate::error::{Error, Result};
use std::mem::size_of;

/// Arguments of `index_check_fwd_i64`: `count` indices, valid in
/// `0..size`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexCheckParams {
    /// Number of indices checked.
    pub count: i64,
    /// Valid indices are `0 ≤ i < size`.
    pub size: i64,
}
const _: () = assert!(size_of::<IndexCheckParams>() == 16);

/// Arguments of `index_select_fwd_*` and `index_add_fwd_f32`: the data as
/// `outer × size × inner` around the indexed dim, and `count` indices.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSelectParams {
    /// Product of the dims before the indexed one.
    pub outer: i64,
    /// Extent of the indexed dim in the data (the valid index range).
    pub size: i64,
    /// Product of the dims after the indexed one.
    pub inner: i64,
    /// Number of indices (the indexed dim's extent in the selection).
    pub count: i64,
}
const _: () = assert!(size_of::<IndexSelectParams>() == 32);

impl IndexSelectParams {
    /// For data of `shape` indexed along `dim` by `count` indices.
    pub fn new(shape: &[usize], dim: usize, count: usize) -> Self {
        let prod = |s: &[usize]| s.iter().product::<usize>() as i64;
        IndexSelectParams {
            outer: prod(&shape[..dim]),
            size: shape[dim] as i64,
            inner: prod(&shape[dim + 1..]),
            count: count as i64,
        }
    }
}

/// Arguments of `gather_fwd_*` and `scatter_add_fwd_f32`: a walk over the
/// positions of `walk`, a contiguous index (and source) of the index
/// shape, and the strided data tensor indexed along `dim`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherParams {
    /// Number of positions walked (product of `walk`).
    pub numel: i64,
    /// Shape walked: the index shape for gather; for scatter_add the index
    /// shape with the data's extent along `dim`.
    pub walk: [i64; MAX_DIMS],
    /// Row-major strides of the (contiguous) index shape.
    pub index_strides: [i64; MAX_DIMS],
    /// Strides of the data tensor: the gathered input, or the output of
    /// scatter_add, in elements.
    pub data_strides: [i64; MAX_DIMS],
    /// Offset of the data tensor's first element, in elements.
    pub data_offset: i64,
    /// Extent of the index shape along `dim`.
    pub index_len: i64,
    /// Extent of the data along `dim` (valid indices are `0..size`).
    pub size: i64,
    /// Rank of every tensor involved, at most [`MAX_DIMS`].
    pub ndim: i32,
    /// The indexed dim.
    pub dim: i32,
}
const _: () = assert!(size_of::<GatherParams>() == 232);

impl GatherParams {
    /// For data of `data_shape` with `data_strides` and `data_offset`,
    /// indexed along `dim` by an index of `index_shape` (same rank). With
    /// `scatter`, the walk covers the data's extent along `dim` (one
    /// position per output element of the block the index reaches);
    /// otherwise it covers the index shape.
    pub fn new(
        op: &'static str,
        (data_shape, data_strides, data_offset): (&[usize], &[usize], usize),
        index_shape: &[usize],
        dim: usize,
        scatter: bool,
    ) -> Result<Self> {
        let ndim = index_shape.len();
        if ndim > MAX_DIMS || data_shape.len() != ndim || dim >= ndim.max(1) {
            return Err(Error::invalid(
                op,
                format!(
                    "the device kernels take ranks up to {MAX_DIMS}, got data {data_shape:?} \
                     and index {index_shape:?} along dim {dim}"
                ),
            ));
        }
        let mut p = GatherParams {
            numel: 0,
            walk: [1; MAX_DIMS],
            index_strides: [0; MAX_DIMS],
            data_strides: [0; MAX_DIMS],
            data_offset: data_offset as i64,
            index_len: index_shape.get(dim).copied().unwrap_or(1) as i64,
            size: data_shape.get(dim).copied().unwrap_or(1) as i64,
            ndim: ndim as i32,
            dim: dim as i32,
        };
        let mut stride = 1i64;
        for d in (0..ndim).rev() {
            p.index_strides[d] = stride;
            stride *= index_shape[d] as i64;
            p.walk[d] = if scatter && d == dim {
                data_shape[d]
            } else {
                index_shape[d]
            } as i64;
            p.data_strides[d] = data_strides[d] as i64;
        }
        p.numel = p.walk[..ndim].iter().product();
        Ok(p)
    }
}

// Safety: #[repr(C)], plain integers and floats with no padding (sizes
// asserted above), mirroring the kernel's struct.
unsafe impl crate::backend::cuda::driver::KernelArg for IndexCheckParams {}
unsafe impl crate::backend::cuda::driver::KernelArg for IndexSelectParams {}
unsafe impl crate::backend::cuda::driver::KernelArg for GatherParams {}

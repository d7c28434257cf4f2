//! Arguments of the pooling kernels (`kernels/pool.cu`).

use std::mem::size_of;

/// Arguments of `kernels/pool.cu`, field for field its `Pool2dParams`
/// struct (named apart from [`crate::ops::Pool2dParams`], what users
/// build). Adaptive pooling uses only `planes`, `h`, `w`, `oh`, `ow`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dKernelParams {
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
const _: () = assert!(size_of::<Pool2dKernelParams>() == 96);

// Safety: #[repr(C)], plain integers and floats with no padding (sizes
// asserted above), mirroring the kernel's struct.
unsafe impl crate::backend::cuda::driver::KernelArg for Pool2dKernelParams {}

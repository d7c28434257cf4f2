//! Arguments of im2col and col2im (`kernels/conv.cu`).

use crate::error::{Error, Result};
use std::mem::size_of;

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
    /// Output height (the convolution geometry of the op layer).
    pub oh: i64,
    /// Output width.
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
    /// 1 when the column buffer and the input each have fewer than 2^31
    /// elements: the kernels then split indices with 32-bit divisions.
    pub small: i64,
}
const _: () = assert!(size_of::<Im2colParams>() == 120);

impl Im2colParams {
    /// im2col of `n` images of `c × h × w` for a `kh × kw` kernel with the
    /// given (vertical, horizontal) stride, padding and dilation, and the
    /// output size `oh × ow` the caller derived from them (the op layer's
    /// validated convolution geometry). Empty sizes are an error.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        (c, h, w): (usize, usize, usize),
        (kh, kw): (usize, usize),
        (oh, ow): (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<Self> {
        if [kh, kw, oh, ow, stride.0, stride.1, dilation.0, dilation.1].contains(&0) {
            return Err(Error::invalid(
                "im2col",
                format!(
                    "a {kh}x{kw} kernel (stride {stride:?}, dilation {dilation:?}) with an \
                     output of {oh}x{ow}: every size must be at least 1"
                ),
            ));
        }
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
            small: 0,
        }
        .with_index_width())
    }

    /// Sets `small` from the element counts of the column buffer
    /// (`C·KH·KW × N·OH·OW`) and of the input.
    fn with_index_width(mut self) -> Self {
        let col = [self.c, self.kh, self.kw, self.n, self.oh, self.ow]
            .iter()
            .try_fold(1i64, |acc, &d| acc.checked_mul(d));
        let image = [self.n, self.c, self.h, self.w]
            .iter()
            .try_fold(1i64, |acc, &d| acc.checked_mul(d));
        let fits = |v: Option<i64>| v.is_some_and(|v| v < i64::from(i32::MAX));
        self.small = i64::from(fits(col) && fits(image));
        self
    }
}

// Safety: #[repr(C)], plain integers and floats with no padding (sizes
// asserted above), mirroring the kernel's struct.
unsafe impl crate::backend::cuda::driver::KernelArg for Im2colParams {}

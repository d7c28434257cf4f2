//! The geometry of one convolution: shapes, hyper-parameters and derived
//! sizes, validated once when it is built.
//!
//! The CPU kernels index raw buffers (and write through raw pointers) by
//! this geometry, so a [`ConvGeom`] can only be made by [`ConvGeom::new`],
//! which checks every rule the kernels rely on with checked arithmetic:
//! positive strides, dilations and groups, channel counts divisible by the
//! groups, a kernel that fits the padded input, and addressable sizes for
//! the input, the weight, the output and one image's column matrix.
//! The kernels' public entry points then check the buffers they are handed
//! against it ([`ConvGeom::forward_operands`] and friends).

use super::Conv2dParams;
use crate::error::{Error, Result};
use crate::tensor::checked_numel;

/// Shapes and hyper-parameters of one convolution, with derived sizes.
/// Built (and validated) by [`ConvGeom::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size (images).
    pub(crate) n: usize,
    /// Input channels, all groups together.
    pub(crate) c_in: usize,
    /// Input height.
    pub(crate) h: usize,
    /// Input width.
    pub(crate) w: usize,
    /// Output channels, all groups together.
    pub(crate) c_out: usize,
    /// Kernel height.
    pub(crate) kh: usize,
    /// Kernel width.
    pub(crate) kw: usize,
    /// Step between output positions, (rows, columns).
    pub(crate) stride: (usize, usize),
    /// Zeros added on each side of the input, (rows, columns).
    pub(crate) padding: (usize, usize),
    /// Spacing between kernel taps, (rows, columns).
    pub(crate) dilation: (usize, usize),
    /// Channel groups; `c_in` and `c_out` are multiples of it.
    pub(crate) groups: usize,
    /// Output height.
    pub(crate) oh: usize,
    /// Output width.
    pub(crate) ow: usize,
}

const OP: &str = "conv2d";

/// The forward operands cut to their exact lengths: input, weight, bias.
type ForwardOperands<'a, T> = (&'a [T], &'a [T], Option<&'a [T]>);

/// The output length of a convolution along one axis,
/// `(in + 2·pad − dilation·(k − 1) − 1) / stride + 1`, or `None` when the
/// dilated kernel does not fit in the padded input, a size is zero, or the
/// arithmetic would overflow. Shared by the CPU op and the CUDA launchers.
pub fn conv_out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let span = dilation.checked_mul(kernel - 1)?.checked_add(1)?;
    let padded = input.checked_add(pad.checked_mul(2)?)?;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

/// The output length along one axis, or an error that says which rule
/// failed: a padded size or dilated kernel too large to compute, or a
/// kernel larger than the padded input.
fn out_len(
    axis: &str,
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dil: usize,
) -> Result<usize> {
    let Some(padded) = pad.checked_mul(2).and_then(|p| p.checked_add(input)) else {
        return Err(Error::invalid(
            OP,
            format!(
                "{axis}: padding {pad} is too large: the padded size {input} + 2·{pad} overflows"
            ),
        ));
    };
    let Some(span) = dil.checked_mul(kernel - 1).and_then(|s| s.checked_add(1)) else {
        return Err(Error::invalid(
            OP,
            format!("{axis}: dilation {dil} is too large: the dilated extent of a size-{kernel} window overflows"),
        ));
    };
    conv_out_len(input, kernel, stride, pad, dil).ok_or_else(|| {
        Error::invalid(
            OP,
            format!(
                "{axis}: kernel {kernel} with dilation {dil} spans {span}, larger than the padded input {padded} (size {input}, padding {pad})"
            ),
        )
    })
}

impl ConvGeom {
    /// The validated geometry of a convolution of an `input` of shape
    /// `[N, C, H, W]` with a `weight` of shape `[O, C/groups, kh, kw]`.
    ///
    /// Errors (naming the rule) unless strides, dilations and groups are
    /// positive, `groups` divides `C` and `O`, the weight has `C/groups`
    /// input channels and a non-empty kernel that fits the padded input, and
    /// every buffer the kernels touch has an addressable size.
    pub fn new(input: [usize; 4], weight: [usize; 4], p: &Conv2dParams) -> Result<ConvGeom> {
        let [n, c, h, wd] = input;
        let [o, cg, kh, kw] = weight;
        if p.stride.0 == 0
            || p.stride.1 == 0
            || p.dilation.0 == 0
            || p.dilation.1 == 0
            || p.groups == 0
        {
            return Err(Error::invalid(
                OP,
                format!("stride, dilation and groups must be positive, got {p:?}"),
            ));
        }
        if c % p.groups != 0 || o % p.groups != 0 || cg.checked_mul(p.groups) != Some(c) {
            return Err(Error::ShapeMismatch {
                op: "conv2d (channels vs groups: weight must be O×C/groups×kh×kw)",
                lhs: input.to_vec(),
                rhs: weight.to_vec(),
            });
        }
        if kh == 0 || kw == 0 {
            return Err(Error::invalid(OP, format!("empty kernel {weight:?}")));
        }
        let oh = out_len("height", h, kh, p.stride.0, p.padding.0, p.dilation.0)?;
        let ow = out_len("width", wd, kw, p.stride.1, p.padding.1, p.dilation.1)?;
        let g = ConvGeom {
            n,
            c_in: c,
            h,
            w: wd,
            c_out: o,
            kh,
            kw,
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
            groups: p.groups,
            oh,
            ow,
        };
        checked_numel(OP, &g.input_shape())?;
        checked_numel(OP, &g.weight_shape())?;
        checked_numel(OP, &g.output_shape())?;
        // One image's column matrix, and the same with the input and output
        // roles swapped (the input gradient's flipped-kernel convolution).
        checked_numel(OP, &[cg, kh, kw, oh, ow])?;
        checked_numel(OP, &[o, kh, kw, h, wd])?;
        Ok(g)
    }

    /// `[N, C, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    /// `[O, C/groups, kh, kw]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.cg(), self.kh, self.kw]
    }
    /// `[N, O, oh, ow]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.oh, self.ow]
    }
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of `col`: one per (channel, kernel row, kernel column).
    pub fn col_rows(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Columns of `col`: one per output pixel.
    pub fn col_cols(&self) -> usize {
        self.oh * self.ow
    }
    pub(crate) fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    /// The input pixel `(iy, ix)` that kernel tap `(i, j)` reads for output
    /// pixel `(oy, ox)`, `(oy·sh − ph + i·dh, ox·sw − pw + j·dw)`, or `None`
    /// where that falls in the padding.
    pub(crate) fn tap_input(
        &self,
        (oy, ox): (usize, usize),
        (i, j): (usize, usize),
    ) -> Option<(usize, usize)> {
        let iy = (oy * self.stride.0 + i * self.dilation.0).checked_sub(self.padding.0)?;
        let ix = (ox * self.stride.1 + j * self.dilation.1).checked_sub(self.padding.1)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }
    pub(crate) fn out_image_len(&self) -> usize {
        self.c_out * self.oh * self.ow
    }
    /// Multiply-adds of the forward pass (saturating: a count, not a size).
    pub fn macs(&self) -> usize {
        [self.c_out, self.oh, self.ow, self.col_rows()]
            .iter()
            .fold(self.n, |acc, &d| acc.saturating_mul(d))
    }

    /// The first `len` elements of `buf`, or an error naming `what` when it
    /// holds fewer.
    fn prefix<'a, T>(what: &str, buf: &'a [T], shape: [usize; 4]) -> Result<&'a [T]> {
        let len = shape.iter().product::<usize>();
        buf.get(..len).ok_or_else(|| {
            Error::bad_shape(
                OP,
                format!(
                    "{what} buffer holds {} elements, shape {shape:?} needs {len}",
                    buf.len()
                ),
            )
        })
    }

    /// Checks the forward operands against the geometry and returns them
    /// cut to their exact lengths: `x` (N×C×H×W), `w` (O×C/g×kh×kw) and an
    /// optional `bias` (O).
    pub(crate) fn forward_operands<'a, T>(
        &self,
        x: &'a [T],
        w: &'a [T],
        bias: Option<&'a [T]>,
    ) -> Result<ForwardOperands<'a, T>> {
        let bias = match bias {
            Some(b) => Some(Self::prefix("bias", b, [self.c_out, 1, 1, 1])?),
            None => None,
        };
        Ok((
            Self::prefix("input", x, self.input_shape())?,
            Self::prefix("weight", w, self.weight_shape())?,
            bias,
        ))
    }

    /// Checks `dy` (N×O×oh×ow) and `w` for the input gradient.
    pub(crate) fn input_grad_operands<'a, T>(
        &self,
        dy: &'a [T],
        w: &'a [T],
    ) -> Result<(&'a [T], &'a [T])> {
        Ok((
            Self::prefix("output gradient", dy, self.output_shape())?,
            Self::prefix("weight", w, self.weight_shape())?,
        ))
    }

    /// Checks `x` and `dy` (N×O×oh×ow) for the weight gradient.
    pub(crate) fn weight_grad_operands<'a, T>(
        &self,
        x: &'a [T],
        dy: &'a [T],
    ) -> Result<(&'a [T], &'a [T])> {
        Ok((
            Self::prefix("input", x, self.input_shape())?,
            Self::prefix("output gradient", dy, self.output_shape())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::conv_out_len;

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
    }
}

//! 2-D convolution (NCHW), with stride, padding, dilation, groups and an
//! optional bias, and its dedicated backward kernels.
//!
//! Output size per spatial dim: `(in + 2·pad − dilation·(k − 1) − 1) / stride + 1`.
//! The kernels are in `cpu.rs` (im2col + GEMM, for any geometry) and
//! `winograd.rs` (3×3 stride-1 layers with enough channels); the backward
//! computes the input and weight gradients with the same machinery and the
//! bias gradient as a sum of the output gradient over batch and space.

pub mod cpu;
pub mod winograd;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::tensor::{CpuStorage, DType, Tensor};
use cpu::ConvGeom;

/// Hyper-parameters of [`Tensor::conv2d`]; `Default` is stride 1, no
/// padding, dilation 1, one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output positions, (rows, columns).
    pub stride: (usize, usize),
    /// Zeros added on each side, (rows, columns).
    pub padding: (usize, usize),
    /// Spacing between kernel taps, (rows, columns).
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels are split into `groups`
    /// independent convolutions (`groups = C` is a depthwise convolution).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// The same stride in both dims.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// The same padding in both dims.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// The same dilation in both dims.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    /// Number of channel groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

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

/// Validates shapes and parameters and derives the geometry.
fn geometry(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<ConvGeom> {
    const OP: &str = "conv2d";
    if x.ndim() != 4 || w.ndim() != 4 {
        return Err(Error::ShapeMismatch {
            op: "conv2d (input N×C×H×W, weight O×C/groups×kh×kw)",
            lhs: x.shape().to_vec(),
            rhs: w.shape().to_vec(),
        });
    }
    x.check_same(OP, w)?;
    x.check_float(OP)?;
    let bad = |msg: String| Err(Error::invalid(OP, msg));
    if p.stride.0 == 0 || p.stride.1 == 0 || p.dilation.0 == 0 || p.dilation.1 == 0 || p.groups == 0
    {
        return bad(format!(
            "stride, dilation and groups must be positive, got {p:?}"
        ));
    }
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (o, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    if c % p.groups != 0 || o % p.groups != 0 || cg * p.groups != c {
        return Err(Error::ShapeMismatch {
            op: "conv2d (channels vs groups: weight must be O×C/groups×kh×kw)",
            lhs: x.shape().to_vec(),
            rhs: w.shape().to_vec(),
        });
    }
    if kh == 0 || kw == 0 {
        return bad(format!("empty kernel {:?}", w.shape()));
    }
    if let Some(b) = bias {
        x.check_same(OP, b)?;
        if b.shape() != [o] {
            return Err(Error::ShapeMismatch {
                op: "conv2d (bias must have one entry per output channel)",
                lhs: vec![o],
                rhs: b.shape().to_vec(),
            });
        }
    }
    let oh = conv_out_len(h, kh, p.stride.0, p.padding.0, p.dilation.0);
    let ow = conv_out_len(wd, kw, p.stride.1, p.padding.1, p.dilation.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        let overflows = |input: usize, pad: usize| {
            pad.checked_mul(2)
                .and_then(|p| input.checked_add(p))
                .is_none()
        };
        if overflows(h, p.padding.0) || overflows(wd, p.padding.1) {
            return bad(format!(
                "padding {:?} is too large: the padded input {:?} overflows",
                p.padding,
                x.shape()
            ));
        }
        return bad(format!(
            "kernel {kh}×{kw} (dilation {:?}) larger than padded input {:?} (padding {:?})",
            p.dilation,
            x.shape(),
            p.padding
        ));
    };
    Ok(ConvGeom {
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
    })
}

/// Contiguous f32 or f64 data of a tensor, converting half types to f32
/// (detached: kernels read it, the graph records the conv op itself).
fn data_of(t: &Tensor) -> Result<Tensor> {
    let t = t.detach();
    match t.dtype() {
        DType::BF16 | DType::F16 => t.to_dtype(DType::F32)?.contiguous(),
        _ => t.contiguous(),
    }
}

/// Runs `f32`/`f64` code on the storages of contiguous tensors of one dtype.
macro_rules! with_float_slices {
    ($dtype:expr, [$($t:ident),*], |$T:ident, $($s:ident),*| $body:expr) => {{
        match $dtype {
            DType::F64 => {
                type $T = f64;
                $(let $s = $t.storage();)*
                $(let $s: &[f64] = match &*$s { CpuStorage::F64(v) => &v[$t.layout().offset()..], _ => unreachable!() };)*
                CpuStorage::F64($body)
            }
            _ => {
                type $T = f32;
                $(let $s = $t.storage();)*
                $(let $s: &[f32] = match &*$s { CpuStorage::F32(v) => &v[$t.layout().offset()..], _ => unreachable!() };)*
                CpuStorage::F32($body)
            }
        }
    }};
}

struct Conv2dBackward {
    input: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
    geom: ConvGeom,
}

impl GradFn for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn inputs(&self) -> Vec<Tensor> {
        let mut v = vec![self.input.clone(), self.weight.clone()];
        v.extend(self.bias.clone());
        v
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let geom = self.geom;
        let dtype = self.input.dtype();
        let dy = data_of(g)?;
        let wide = dy.dtype();
        let grad_input = if self.input.requires_grad() {
            let w = data_of(&self.weight)?;
            let s =
                with_float_slices!(wide, [dy, w], |T, dys, ws| cpu::conv2d_backward_input::<T>(
                    dys, ws, &geom
                ));
            Some(Tensor::from_storage(s, self.input.shape()).to_dtype(dtype)?)
        } else {
            None
        };
        let grad_weight = if self.weight.requires_grad() {
            let x = data_of(&self.input)?;
            let s = with_float_slices!(
                wide,
                [x, dy],
                |T, xs, dys| cpu::conv2d_backward_weight::<T>(xs, dys, &geom)
            );
            Some(Tensor::from_storage(s, self.weight.shape()).to_dtype(dtype)?)
        } else {
            None
        };
        let mut grads = vec![grad_input, grad_weight];
        if let Some(b) = &self.bias {
            grads.push(if b.requires_grad() {
                Some(g.sum(&[0, 2, 3], false)?)
            } else {
                None
            });
        }
        Ok(grads)
    }
}

/// Which forward kernel computes a convolution.
#[derive(Clone, Copy)]
enum Kernel {
    /// im2col + GEMM over image tiles.
    Gemm,
    /// The seven-loop definition.
    Direct,
}

/// Validates, runs `kernel` on contiguous f32/f64 data and returns the
/// untracked output (in the input's dtype) with the geometry.
fn forward(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: Conv2dParams,
    kernel: Kernel,
) -> Result<(Tensor, ConvGeom)> {
    let geom = geometry(x, weight, bias, &params)?;
    let (xd, wd) = (data_of(x)?, data_of(weight)?);
    let bd = bias.map(data_of).transpose()?;
    let s = match &bd {
        Some(b) => with_float_slices!(xd.dtype(), [xd, wd, b], |T, xs, ws, bs| {
            let bs = Some(&bs[..geom.c_out]);
            match kernel {
                Kernel::Gemm => cpu::conv2d_forward::<T>(xs, ws, bs, &geom),
                Kernel::Direct => cpu::conv2d_direct::<T>(xs, ws, bs, &geom),
            }
        }),
        None => with_float_slices!(xd.dtype(), [xd, wd], |T, xs, ws| match kernel {
            Kernel::Gemm => cpu::conv2d_forward::<T>(xs, ws, None, &geom),
            Kernel::Direct => cpu::conv2d_direct::<T>(xs, ws, None, &geom),
        }),
    };
    let out =
        Tensor::from_storage(s, &[geom.n, geom.c_out, geom.oh, geom.ow]).to_dtype(x.dtype())?;
    Ok((out, geom))
}

impl Tensor {
    /// 2-D convolution of an `N×C×H×W` input with an `O×C/groups×kh×kw`
    /// weight and an optional bias of `O` entries (cross-correlation, as
    /// in PyTorch). Returns `N×O×oh×ow`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2dParams,
    ) -> Result<Tensor> {
        let _profile = crate::profile::scope("conv2d");
        let (out, geom) = forward(self, weight, bias, params, Kernel::Gemm)?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(out.track(&inputs, || {
            Box::new(Conv2dBackward {
                input: self.clone(),
                weight: weight.clone(),
                bias: bias.cloned(),
                geom,
            })
        }))
    }

    /// The same convolution computed by the naive definition (no GEMM, no
    /// autodiff): the oracle for tests and a reference for readers.
    pub fn conv2d_reference(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2dParams,
    ) -> Result<Tensor> {
        Ok(forward(self, weight, bias, params, Kernel::Direct)?.0)
    }
}

//! 2-D convolution (NCHW), with stride, padding, dilation, groups and an
//! optional bias, and its dedicated backward kernels.
//!
//! Output size per spatial dim: `(in + 2·pad − dilation·(k − 1) − 1) / stride + 1`.
//! The kernels are in `cpu.rs` (im2col + GEMM, for any geometry),
//! `implicit/` (the same GEMMs with the receptive fields gathered straight
//! into the packed panels: f32 on AVX2 or AVX-512) and `winograd/` (3×3 stride-1
//! layers with enough channels); `plan.rs` picks one; the backward
//! computes the input and weight gradients with the same machinery and the
//! bias gradient as a sum of the output gradient over batch and space.
//!
//! Under [`autocast`](crate::autocast)`(Precision::Bf16, ..)` a convolution
//! of f32 tensors reads its input and weight (and, backward, the output
//! gradient) rounded to bf16 and accumulates in f32: f32 GEMMs on the
//! rounded values on the CPU, bf16 im2col and tensor-core GEMMs with f32
//! outputs on a GPU. Output and gradients are f32, the bias is added in
//! f32, and the backward runs in the precision its forward ran in.

#[cfg(target_arch = "x86_64")]
mod channel_lanes;
pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod direct;
mod geom;
#[cfg(target_arch = "x86_64")]
pub mod implicit;
#[cfg(feature = "cuda")]
pub mod params;
#[cfg(target_arch = "x86_64")]
pub mod pixel_lanes;
pub mod plan;
#[cfg(all(test, target_arch = "x86_64"))]
mod test_support;
mod unroll;
pub mod winograd;
pub mod winograd_stride2;

pub use geom::conv_out_len;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::autocast::{bf16_inputs, bf16_operand};
use crate::ops::dispatch::{compute_data, compute_slice, cuda_arm, with_compute_type};
use crate::ops::KeepDim;
use crate::tensor::{Device, StorageElement, Tensor};
use cpu::ConvGeom;

/// The op's name in errors.
const OP: &str = "conv2d";

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

/// Validates the tensors (rank, dtype, device, bias shape) and derives the
/// geometry, whose own rules [`ConvGeom::new`] checks.
fn geometry(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<ConvGeom> {
    if x.ndim() != 4 || w.ndim() != 4 {
        return Err(Error::ShapeMismatch {
            op: "conv2d (input N×C×H×W, weight O×C/groups×kh×kw)",
            lhs: x.shape().to_vec(),
            rhs: w.shape().to_vec(),
        });
    }
    x.check_same(OP, w)?;
    x.check_float(OP)?;
    let as4 = |t: &Tensor| [t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]];
    let geom = ConvGeom::new(as4(x), as4(w), p)?;
    if let Some(b) = bias {
        x.check_same(OP, b)?;
        if b.shape() != [geom.c_out] {
            return Err(Error::ShapeMismatch {
                op: "conv2d (bias must have one entry per output channel)",
                lhs: vec![geom.c_out],
                rhs: b.shape().to_vec(),
            });
        }
    }
    Ok(geom)
}

/// Runs `$body` with `$T` the compute type of `$dtype` and each `$s` the
/// typed contiguous slice of compute data `$t` (see [`crate::ops::dispatch`]);
/// the result is wrapped in the matching storage.
macro_rules! on_compute_slices {
    ($dtype:expr, [$($t:ident),*], |$T:ident, $($s:ident),*| $body:expr) => {
        with_compute_type!($dtype, |$T| {
            $(let $s = $t.cpu_storage("conv2d")?;)*
            $(let $s = compute_slice::<$T>(&$s, &$t);)*
            <$T as StorageElement>::into_storage($body)
        })
    };
}

struct Conv2dBackward {
    input: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
    geom: ConvGeom,
    /// The forward ran in bf16 mixed precision; so do the gradients.
    mixed: bool,
}

/// [`compute_data`] of `t`, rounded to bf16 values (kept in f32) when
/// `mixed`: what the CPU kernels read in mixed precision.
fn kernel_data(t: &Tensor, mixed: bool) -> Result<Tensor> {
    if mixed {
        bf16_operand(OP, t)
    } else {
        compute_data(OP, t)
    }
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
        if let Device::Cuda(_) = g.device() {
            return cuda_arm!(self.backward_on_device(g));
        }
        let (geom, mixed) = (self.geom, self.mixed);
        let dtype = self.input.dtype();
        let dy = kernel_data(g, mixed)?;
        let wide = dy.dtype();
        let grad_input = if self.input.requires_grad() {
            let w = kernel_data(&self.weight, mixed)?;
            let s =
                on_compute_slices!(wide, [dy, w], |T, dys, ws| cpu::conv2d_backward_input::<T>(
                    dys, ws, &geom
                )?);
            Some(Tensor::from_storage(s, self.input.shape())?.to_dtype(dtype)?)
        } else {
            None
        };
        let grad_weight = if self.weight.requires_grad() {
            let x = kernel_data(&self.input, mixed)?;
            let s = on_compute_slices!(
                wide,
                [x, dy],
                |T, xs, dys| cpu::conv2d_backward_weight::<T>(xs, dys, &geom)?
            );
            Some(Tensor::from_storage(s, self.weight.shape())?.to_dtype(dtype)?)
        } else {
            None
        };
        let mut grads = vec![grad_input, grad_weight];
        if let Some(b) = &self.bias {
            grads.push(if b.requires_grad() {
                Some(g.sum(&[0, 2, 3], KeepDim::No)?)
            } else {
                None
            });
        }
        Ok(grads)
    }
}

impl Conv2dBackward {
    /// The gradients on a CUDA device (see `cuda.rs`).
    #[cfg(feature = "cuda")]
    fn backward_on_device(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (geom, mixed) = (&self.geom, self.mixed);
        let mut grads = vec![
            self.input
                .requires_grad()
                .then(|| cuda::backward_input(g, &self.weight, geom, mixed))
                .transpose()?,
            self.weight
                .requires_grad()
                .then(|| cuda::backward_weight(&self.input, g, geom, mixed))
                .transpose()?,
        ];
        if let Some(b) = &self.bias {
            grads.push(
                b.requires_grad()
                    .then(|| g.sum(&[0, 2, 3], KeepDim::No))
                    .transpose()?,
            );
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
/// untracked output (in the input's dtype) with the geometry. With `mixed`
/// (f32 tensors only), the input and weight are read rounded to bf16.
fn forward(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: Conv2dParams,
    (kernel, mixed): (Kernel, bool),
) -> Result<(Tensor, ConvGeom)> {
    let geom = geometry(x, weight, bias, &params)?;
    if let Device::Cuda(_) = x.device() {
        // Untracked: the caller records the convolution as one op.
        let y = crate::autograd::no_grad(|| -> Result<Tensor> {
            let y: Tensor = cuda_arm!(cuda::forward(x, weight, &geom, mixed))?;
            match bias {
                Some(b) => y.add(&b.reshape(&[1, geom.c_out, 1, 1])?),
                None => Ok(y),
            }
        })?;
        return Ok((y, geom));
    }
    let (xd, wd) = (kernel_data(x, mixed)?, kernel_data(weight, mixed)?);
    let bd = bias.map(|b| compute_data(OP, b)).transpose()?;
    let s = match &bd {
        Some(b) => on_compute_slices!(xd.dtype(), [xd, wd, b], |T, xs, ws, bs| {
            let bs = Some(bs);
            match kernel {
                Kernel::Gemm => cpu::conv2d_forward::<T>(xs, ws, bs, &geom)?,
                Kernel::Direct => cpu::conv2d_direct::<T>(xs, ws, bs, &geom)?,
            }
        }),
        None => on_compute_slices!(xd.dtype(), [xd, wd], |T, xs, ws| match kernel {
            Kernel::Gemm => cpu::conv2d_forward::<T>(xs, ws, None, &geom)?,
            Kernel::Direct => cpu::conv2d_direct::<T>(xs, ws, None, &geom)?,
        }),
    };
    let out =
        Tensor::from_storage(s, &[geom.n, geom.c_out, geom.oh, geom.ow])?.to_dtype(x.dtype())?;
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
        // Decided once, after validation: the dtype check comes first.
        let mixed = self.dtype() == weight.dtype() && bf16_inputs(self.dtype());
        let (out, geom) = forward(self, weight, bias, params, (Kernel::Gemm, mixed))?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(out.track(&inputs, || {
            Box::new(Conv2dBackward {
                input: self.clone(),
                weight: weight.clone(),
                bias: bias.cloned(),
                geom,
                mixed,
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
        Ok(forward(self, weight, bias, params, (Kernel::Direct, false))?.0)
    }
}

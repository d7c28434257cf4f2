//! Batch normalisation as one op (`torch.nn.functional.batch_norm`), with
//! its closed-form backward.
//!
//! For `x` of shape `N×C×*` (channels on dim 1) and `M = N·∏spatial`
//! elements per channel:
//!
//! - **training**: per-channel batch mean `μ` and *biased* variance `σ²`
//!   (sums accumulated in f64), `invstd = 1/√(σ² + eps)`,
//!   `y = (x − μ)·invstd·w + b`; the running statistics, when given, are
//!   updated in place: `rm ← (1 − m)·rm + m·μ`,
//!   `rv ← (1 − m)·rv + m·σ²·M/(M − 1)` (unbiased variance).
//! - **eval**: `y = (x − rm)·invstd·w + b` with `invstd = 1/√(rv + eps)`.
//!
//! The backward saves the input and `(μ, invstd)` per channel. With
//! `x̂ = (x − μ)·invstd` and per-channel sums over batch and space:
//! training `dx = w·invstd/M · (M·dy − Σdy − x̂·Σ(dy·x̂))`, eval
//! `dx = dy·w·invstd`; both modes `dw = Σ(dy·x̂)`, `db = Σdy`. Running
//! statistics are buffers: they never enter the graph and get no gradient.
//! Kernels are in `cpu.rs`; half-precision inputs are computed in f32. On
//! a CUDA device (f32) the kernels of `kernels/norm.cu` do the same work,
//! and the statistics and running buffers never leave the device
//! (`cuda.rs`). Synchronised batch norm (`sync*.rs`) reuses these kernels
//! on a device (`sync_cuda.rs`).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod fused;
mod host;
#[cfg(feature = "cuda")]
pub mod params;
mod runs;

use crate::autograd::{no_grad, GradFn};
use crate::error::{Error, Result};
use crate::ops::dispatch::{compute_data, cuda_arm, with_compute_type};
use crate::tensor::{CpuStorage, DType, Device, Tensor};
use cpu::NcsShape;
use host::{grad_input, grad_sums, grad_sums_input, moments, moments_normalize, normalize};

const OP: &str = "batch_norm";

/// Mode and hyper-parameters of [`Tensor::batch_norm`]. `Default` is
/// training mode, momentum 0.1, eps 1e-5 (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOptions {
    /// Normalise with the batch statistics and update the running ones
    /// (`true`), or normalise with the running statistics (`false`).
    pub training: bool,
    /// Weight of the new batch statistic in the running average, in [0, 1].
    pub momentum: f64,
    /// Added to the variance before the square root; must be ≥ 0.
    pub eps: f64,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        BatchNormOptions {
            training: true,
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}

/// Pushes batch norm's weight and bias gradients onto `grads`, for the
/// affine parameters the layer has (`None` for one that needs no
/// gradient): `dw = Σ dy·x̂ = invstd·Σ dy·(x − μ)` and `db = Σ dy`, from
/// the per-channel sums `(Σ dy, Σ dy·(x − μ))`.
fn push_affine_grads(
    grads: &mut Vec<Option<Tensor>>,
    (weight, bias): (Option<&Tensor>, Option<&Tensor>),
    (sum_dy, sum_dy_xmu): (&[f64], &[f64]),
    invstd: &[f64],
    dtype: DType,
) -> Result<()> {
    if let Some(w) = weight {
        grads.push(if w.requires_grad() {
            let dw: Vec<f64> = sum_dy_xmu.iter().zip(invstd).map(|(s, i)| s * i).collect();
            Some(vector(&dw, dtype)?)
        } else {
            None
        });
    }
    if let Some(b) = bias {
        grads.push(if b.requires_grad() {
            Some(vector(sum_dy, dtype)?)
        } else {
            None
        });
    }
    Ok(())
}

/// A 1-D tensor of `dtype` holding `values`.
fn vector(values: &[f64], dtype: DType) -> Result<Tensor> {
    Tensor::from_storage(
        CpuStorage::from_f64_iter(dtype, values.iter().copied())?,
        &[values.len()],
    )
}

/// Checks that a per-channel tensor `t` matches `x`: same dtype and
/// device, shape `[C]`; a shape error carries `op` (which names the
/// argument) and both shapes.
fn check_per_channel(x: &Tensor, t: &Tensor, op: &'static str) -> Result<()> {
    x.check_same(OP, t)?;
    if t.shape() != [x.shape()[1]] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape().to_vec(),
            rhs: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// Every argument check of [`Tensor::batch_norm`], done before any work.
fn validate(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    opts: &BatchNormOptions,
) -> Result<()> {
    x.check_float(OP)?;
    if x.ndim() < 2 {
        return Err(Error::bad_shape(
            OP,
            format!(
                "expected an input of rank ≥ 2 (N×C×…, channels on dim 1), got shape {:?}",
                x.shape()
            ),
        ));
    }
    if !(opts.eps >= 0.0 && opts.eps.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!("eps must be finite and ≥ 0, got {}", opts.eps),
        ));
    }
    if !(0.0..=1.0).contains(&opts.momentum) {
        return Err(Error::invalid(
            OP,
            format!("momentum must be in [0, 1], got {}", opts.momentum),
        ));
    }
    if let Some(w) = weight {
        check_per_channel(
            x,
            w,
            "batch_norm (weight must have C = input.shape[1] elements)",
        )?;
    }
    if let Some(b) = bias {
        check_per_channel(
            x,
            b,
            "batch_norm (bias must have C = input.shape[1] elements)",
        )?;
    }
    for (name, stat) in [("running_mean", running_mean), ("running_var", running_var)] {
        let Some(stat) = stat else { continue };
        check_per_channel(
            x,
            stat,
            if name == "running_mean" {
                "batch_norm (running_mean must have C = input.shape[1] elements)"
            } else {
                "batch_norm (running_var must have C = input.shape[1] elements)"
            },
        )?;
        if stat.requires_grad() {
            return Err(Error::invalid(
                OP,
                format!("{name} is a buffer and must not require a gradient"),
            ));
        }
        if opts.training && !stat.is_contiguous() {
            return Err(Error::invalid(
                OP,
                format!(
                    "{name} is updated in place in training mode and must be contiguous, \
                     got strides {:?}",
                    stat.strides()
                ),
            ));
        }
    }
    if !opts.training && (running_mean.is_none() || running_var.is_none()) {
        return Err(Error::invalid(
            OP,
            "running_mean and running_var are required in eval mode (training = false)",
        ));
    }
    Ok(())
}

/// Training mode normalises with the batch's statistics, which need more
/// than one value per channel (`values`: the count of one channel, over
/// every rank for synchronised batch norm).
fn check_values_per_channel(x: &Tensor, values: usize, opts: &BatchNormOptions) -> Result<()> {
    if opts.training && values == 1 {
        return Err(Error::invalid(
            OP,
            format!(
                "Expected more than 1 value per channel when training, got input size {:?}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// `buf ← (1 − momentum)·buf + momentum·batch`, in place (f64 arithmetic,
/// rounded to the buffer's dtype), outside the graph.
fn update_running(buf: &Tensor, batch: &[f64], momentum: f64) -> Result<()> {
    let old = buf.to_f64_vec()?;
    let new: Vec<f64> = old
        .iter()
        .zip(batch)
        .map(|(&r, &b)| momentum * b + (1.0 - momentum) * r)
        .collect();
    let src = vector(&new, buf.dtype())?.reshape(buf.shape())?;
    no_grad(|| buf.assign(&src))
}

/// Runs `$f::<T>(args)` with `T` the compute type of `$dtype` (data made
/// by [`compute_data`]; see [`crate::ops::dispatch`]).
macro_rules! dispatch {
    ($dtype:expr, $f:ident($($arg:expr),*)) => {
        with_compute_type!($dtype, |T| $f::<T>($($arg),*))
    };
}

/// The per-channel statistics a forward normalised with, where it ran.
enum Saved {
    /// On the host, in f64: the mean (batch mean, or running mean in eval)
    /// and `1/√(var + eps)`.
    Host { mean: Vec<f64>, invstd: Vec<f64> },
    /// On the CUDA device, in f32: `(mean, invstd)`.
    #[cfg(feature = "cuda")]
    Device(cuda::Stats),
}

struct BatchNormBackward {
    input: Tensor,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    saved: Saved,
    training: bool,
    /// A relu was fused into the output ([`Tensor::batch_norm_relu`]): the
    /// incoming gradient counts only where the output is positive.
    relu: bool,
}

impl GradFn for BatchNormBackward {
    fn name(&self) -> &'static str {
        OP
    }
    fn inputs(&self) -> Vec<Tensor> {
        let mut v = vec![self.input.clone()];
        v.extend(self.weight.clone());
        v.extend(self.bias.clone());
        v
    }
    fn backward(&self, y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // A fused relu's backward masks `g` where the output is not
        // positive (exactly where the normalised value was not: the unfused
        // graph's gradient). The CPU kernel that computes the input
        // gradient folds the mask into its sweep; elsewhere it is a pass.
        let fold =
            self.relu && self.input.requires_grad() && matches!(self.saved, Saved::Host { .. });
        let masked;
        let g = if self.relu && !fold {
            masked = crate::ops::elementwise::relu_grad(g, y)?;
            &masked
        } else {
            g
        };
        let (mean, invstd) = match &self.saved {
            Saved::Host { mean, invstd } => (mean, invstd),
            #[cfg(feature = "cuda")]
            Saved::Device(stats) => return self.backward_on_device(stats, g),
        };
        let sh = NcsShape::of(self.input.shape());
        let m = sh.per_channel() as f64;
        let x = compute_data(OP, &self.input)?;
        // Same compute dtype as x (g may arrive in another float dtype).
        let dy = g.to_dtype(x.dtype())?.contiguous()?;
        let dtype = self.input.dtype();
        let mut grads = Vec::with_capacity(3);
        let (sum_dy, sum_dy_xmu) = if self.input.requires_grad() {
            let w = match &self.weight {
                Some(w) => w.to_f64_vec()?,
                None => vec![1.0; sh.c],
            };
            // dx = a·dy + p·(x − μ) + q: the closed form, per channel.
            let training = self.training;
            let coef = |c: usize, sum_dy: f64, sum_dy_xmu: f64| {
                let a = w[c] * invstd[c];
                if training {
                    let p = -a * invstd[c] * invstd[c] * sum_dy_xmu / m;
                    (a, p, -a * sum_dy / m)
                } else {
                    (a, 0.0, 0.0)
                }
            };
            let z = fold
                .then(|| y.to_dtype(x.dtype())?.contiguous())
                .transpose()?;
            let z = z.as_ref();
            let (s, sum_dy, sum_dy_xmu) =
                dispatch!(x.dtype(), grad_sums_input(&dy, &x, z, sh, mean, &coef))?;
            grads.push(Some(
                Tensor::from_storage(s, self.input.shape())?.to_dtype(dtype)?,
            ));
            (sum_dy, sum_dy_xmu)
        } else {
            grads.push(None);
            dispatch!(x.dtype(), grad_sums(&dy, &x, sh, mean))?
        };
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        push_affine_grads(&mut grads, (w, b), (&sum_dy, &sum_dy_xmu), invstd, dtype)?;
        Ok(grads)
    }
}

#[cfg(feature = "cuda")]
impl BatchNormBackward {
    /// The backward with the statistics saved on the device.
    fn backward_on_device(&self, stats: &cuda::Stats, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let need = [
            self.input.requires_grad(),
            self.weight.as_ref().is_some_and(Tensor::requires_grad),
            self.bias.as_ref().is_some_and(Tensor::requires_grad),
        ];
        let [dx, dw, db] = cuda::batch_norm_backward(
            &self.input,
            self.weight.as_ref(),
            stats,
            self.training,
            g,
            need,
        )?;
        let mut grads = vec![dx];
        if self.weight.is_some() {
            grads.push(dw);
        }
        if self.bias.is_some() {
            grads.push(db);
        }
        Ok(grads)
    }
}

impl Tensor {
    /// Batch normalisation over dim 1 of an `N×C×*` input (rank ≥ 2), as
    /// `torch.nn.functional.batch_norm(x, running_mean, running_var, weight,
    /// bias, training, momentum, eps)`.
    ///
    /// Training mode normalises each channel with its batch mean and biased
    /// variance (statistics accumulated in f64) and, when running statistics
    /// are given, updates them **in place**:
    /// `running_mean = (1 − m)·running_mean + m·batch_mean`,
    /// `running_var = (1 − m)·running_var + m·unbiased_batch_var`. It needs
    /// more than one value per channel. Eval mode normalises with the
    /// running statistics, which are then required. `weight` and `bias`
    /// (`C` elements each, optional: `None` is `affine = False`) scale and
    /// shift the result; gradients flow to the input, weight and bias.
    ///
    /// Running statistics are buffers: `C`-element tensors of the input's
    /// dtype that must not require a gradient (and must be contiguous in
    /// training mode); they are never recorded in the graph. They may be
    /// `None` in training mode. An input with no elements gives an empty
    /// output and leaves the running statistics untouched (as PyTorch).
    ///
    /// Errors: rank < 2, a per-channel tensor whose shape is not `[C]` (the
    /// message names both shapes), dtype or device mismatch, a non-float
    /// input, eval mode without running statistics, one value per channel
    /// in training mode, `eps` < 0, `momentum` outside [0, 1].
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        opts: BatchNormOptions,
    ) -> Result<Tensor> {
        let stats = (running_mean, running_var);
        self.batch_norm_then(stats, weight, bias, opts, false)
    }

    /// [`batch_norm`](Self::batch_norm) followed by [`relu`](Self::relu),
    /// as in a ResNet's `relu(bn(conv(x)))`: on the CPU the relu is applied
    /// as the normalised values are written, which saves a pass over the
    /// activation forward and keeps one activation fewer alive for
    /// backward. Same values and gradients, bit for bit, as the two ops
    /// (tested); same arguments and errors as `batch_norm`. On a CUDA
    /// device the two ops run one after the other.
    pub fn batch_norm_relu(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        opts: BatchNormOptions,
    ) -> Result<Tensor> {
        let stats = (running_mean, running_var);
        if self.device() != Device::Cpu {
            return self
                .batch_norm_then(stats, weight, bias, opts, false)?
                .relu();
        }
        self.batch_norm_then(stats, weight, bias, opts, true)
    }

    /// [`batch_norm`](Self::batch_norm), with a relu fused into the CPU
    /// output when `relu` (see [`batch_norm_relu`](Self::batch_norm_relu)).
    fn batch_norm_then(
        &self,
        (running_mean, running_var): (Option<&Tensor>, Option<&Tensor>),
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        opts: BatchNormOptions,
        relu: bool,
    ) -> Result<Tensor> {
        let _profile = crate::profile::scope("batch_norm");
        validate(self, running_mean, running_var, weight, bias, &opts)?;
        check_values_per_channel(self, NcsShape::of(self.shape()).per_channel(), &opts)?;
        if self.numel() == 0 {
            let out = self.batch_norm_empty(weight, bias)?;
            return if relu { out.relu() } else { Ok(out) };
        }
        let (out, saved) = match self.device() {
            Device::Cpu => {
                let stats = (running_mean, running_var);
                self.batch_norm_on_cpu(stats, weight, bias, &opts, relu)?
            }
            Device::Cuda(_) => cuda_arm!({
                let (out, stats) =
                    cuda::batch_norm(self, running_mean, running_var, weight, bias, &opts)?;
                Ok::<_, Error>((out, Saved::Device(stats)))
            })?,
        };
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        Ok(out.track(&inputs, || {
            Box::new(BatchNormBackward {
                input: self.clone(),
                weight: weight.cloned(),
                bias: bias.cloned(),
                saved,
                training: opts.training,
                relu,
            })
        }))
    }

    /// The CPU forward of [`batch_norm`](Self::batch_norm) (validated,
    /// non-empty input; the output through relu when `relu`): the output
    /// and the statistics it used.
    fn batch_norm_on_cpu(
        &self,
        (running_mean, running_var): (Option<&Tensor>, Option<&Tensor>),
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        opts: &BatchNormOptions,
        relu: bool,
    ) -> Result<(Tensor, Saved)> {
        let sh = NcsShape::of(self.shape());
        let m = sh.per_channel() as f64;
        let x = compute_data(OP, self)?;
        let w = weight.map(Tensor::to_f64_vec).transpose()?;
        let b = bias.map(Tensor::to_f64_vec).transpose()?;
        // y = (x − mean)·scale + shift with scale = w·invstd, shift = bias.
        let coef = |c: usize, invstd: f64| {
            let scale = w.as_ref().map_or(invstd, |w| invstd * w[c]);
            (scale, b.as_ref().map_or(0.0, |b| b[c]))
        };
        let (storage, mean, invstd) = if opts.training {
            let invstd_of = |var_sum: f64| 1.0 / (var_sum / m + opts.eps).sqrt();
            let coef_of_stats = |c: usize, _mean: f64, var_sum: f64| coef(c, invstd_of(var_sum));
            let (storage, mean, var_sum) =
                dispatch!(x.dtype(), moments_normalize(&x, sh, &coef_of_stats, relu))?;
            if let Some(rm) = running_mean {
                update_running(rm, &mean, opts.momentum)?;
            }
            if let Some(rv) = running_var {
                let unbiased: Vec<f64> = var_sum.iter().map(|v| v / (m - 1.0)).collect();
                update_running(rv, &unbiased, opts.momentum)?;
            }
            let invstd: Vec<f64> = var_sum.iter().map(|&v| invstd_of(v)).collect();
            (storage, mean, invstd)
        } else {
            let rm = running_mean.expect("validated").to_f64_vec()?;
            let rv = running_var.expect("validated").to_f64_vec()?;
            let invstd: Vec<f64> = rv.iter().map(|v| 1.0 / (v + opts.eps).sqrt()).collect();
            let (scale, shift): (Vec<f64>, Vec<f64>) =
                invstd.iter().enumerate().map(|(c, &i)| coef(c, i)).unzip();
            let coefs = (&rm[..], &scale[..], &shift[..]);
            let storage = dispatch!(x.dtype(), normalize(&x, sh, coefs, relu))?;
            (storage, rm, invstd)
        };
        let out = Tensor::from_storage(storage, self.shape())?.to_dtype(self.dtype())?;
        Ok((out, Saved::Host { mean, invstd }))
    }

    /// Batch norm of an input with no elements: an empty result that stays
    /// connected to the input, weight and bias (zero gradients), as PyTorch.
    fn batch_norm_empty(&self, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
        let mut per_channel = vec![1; self.ndim()];
        per_channel[1] = self.shape()[1];
        let mut out = self.contiguous_copy()?;
        if let Some(w) = weight {
            out = out.mul(&w.reshape(&per_channel)?)?;
        }
        if let Some(b) = bias {
            out = out.add(&b.reshape(&per_channel)?)?;
        }
        Ok(out)
    }
}

mod sync;
mod sync_backward;
#[cfg(feature = "cuda")]
mod sync_cuda;
mod sync_stats;

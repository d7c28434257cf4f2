//! CUDA side of the sigmoid losses (`kernels/sigmoid_loss.cu`): the
//! kernels' argument struct and their launchers (f32).

use super::{bad_target, Formula, Operands};
use crate::backend::cuda::driver::KernelArg;
use crate::backend::cuda::{launch, DevicePtr};
use crate::error::Result;
use crate::ops::on_cuda::{operands, output, require_f32};
use crate::tensor::{DType, Tensor};
use std::mem::size_of;

const FAMILY: &str = "sigmoid_loss";

/// Arguments of the kernels of `kernels/sigmoid_loss.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SigmoidLossParams {
    /// Number of logits (and targets).
    pub numel: i64,
    /// Length of the weight, read cyclically (≥ 1).
    pub w_len: i64,
    /// Length of the positive weight, read cyclically (≥ 1).
    pub pw_len: i64,
    /// Length of the scale (upstream gradient), read cyclically (≥ 1).
    pub dy_len: i64,
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
const _: () = assert!(size_of::<SigmoidLossParams>() == 56);

// Safety: #[repr(C)], plain integers and floats, no padding (size asserted
// here and in the kernel source).
unsafe impl KernelArg for SigmoidLossParams {}

impl SigmoidLossParams {
    /// The arguments of `formula` (hyper-parameters rounded to f32, as the
    /// CPU kernel rounds them) over the operands `x`.
    pub(crate) fn new(formula: &Formula<f64>, x: &Operands<'_>) -> Self {
        let len = |t: &Tensor| t.numel().max(1) as i64;
        let mut p = SigmoidLossParams {
            numel: x.logits.numel() as i64,
            w_len: len(x.weight),
            pw_len: len(x.pos_weight),
            dy_len: len(x.scale),
            gamma: 0.0,
            alpha: 0.0,
            gamma_pos: 0.0,
            gamma_neg: 0.0,
            clip: 0.0,
            has_alpha: 0,
        };
        match formula.cast::<f32>() {
            Formula::Bce => {}
            Formula::Focal { gamma, alpha } => {
                p.gamma = gamma;
                p.alpha = alpha.unwrap_or(0.0);
                p.has_alpha = i32::from(alpha.is_some());
            }
            Formula::Asl {
                gamma_pos,
                gamma_neg,
                clip,
            } => {
                p.gamma_pos = gamma_pos;
                p.gamma_neg = gamma_neg;
                p.clip = clip;
            }
        }
        p
    }
}

/// The kernel name stem of `formula`.
fn stem(formula: &Formula<f64>) -> &'static str {
    match formula {
        Formula::Bce => "bce_logits",
        Formula::Focal { .. } => "focal",
        Formula::Asl { .. } => "asl",
    }
}

/// The per-element values (`derivative` false, with the targets check,
/// read at the device's next download) or derivatives.
fn launch_values(
    op: &'static str,
    formula: &Formula<f64>,
    x: &Operands<'_>,
    derivative: bool,
) -> Result<Tensor> {
    let ts = [x.logits, x.targets, x.weight, x.pos_weight, x.scale];
    for t in ts {
        require_f32(op, t.dtype())?;
    }
    let ds = operands(op, ts)?;
    let dev = ds[0].dev.clone();
    let [z, y, w, pw, dy]: [DevicePtr; 5] = std::array::from_fn(|k| ds[k].at(ts[k]));
    let params = SigmoidLossParams::new(formula, x);
    let n = x.logits.numel();
    let (out, o) = output(op, &dev, DType::F32, x.logits.shape())?;
    let cfg = launch::elementwise(n);
    if derivative {
        let entry = format!("{}_bwd_f32", stem(formula));
        dev.launch(FAMILY, &entry, cfg, &[&params, &z, &y, &w, &pw, &dy, &o])?;
        return Ok(out);
    }
    let flag = dev.upload(&[u64::MAX])?;
    let entry = format!("{}_fwd_f32", stem(formula));
    dev.launch(
        FAMILY,
        &entry,
        cfg,
        &[&params, &z, &y, &w, &pw, &dy, &o, flag.arg()],
    )?;
    // Read at the next download (see `CudaDevice::defer_check`), so that a
    // training step does not wait for the device here.
    let targets = x.targets.detach();
    dev.defer_check(flag, move |first_bad| {
        // The error path only: fetch the offending value for the message.
        let i = first_bad as usize;
        let value = targets
            .reshape(&[n])
            .and_then(|t| t.narrow(0, i, 1))
            .and_then(|t| t.to_f64_vec());
        match value {
            Ok(v) => bad_target(op, i, v[0]),
            Err(e) => e,
        }
    });
    Ok(out)
}

/// Forward on the device: values, and the targets check.
pub(super) fn forward(
    op: &'static str,
    formula: &Formula<f64>,
    x: &Operands<'_>,
) -> Result<Tensor> {
    launch_values(op, formula, x, false)
}

/// Backward on the device: the derivatives.
pub(super) fn backward(
    op: &'static str,
    formula: &Formula<f64>,
    x: &Operands<'_>,
) -> Result<Tensor> {
    launch_values(op, formula, x, true)
}

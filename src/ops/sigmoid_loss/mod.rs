//! The fused per-element sigmoid losses (BCE with logits, focal, ASL) as
//! one op family: for every logit `z` and target `y`, the value
//! `s·w·ℓ(z, y)` (forward) or `s·w·dℓ/dz` (backward) in one pass, with a
//! cyclic weight `w`, positive weight (BCE) and scale `s`, and the total of
//! the per-element values. Numerically stable for any logit (±100
//! included): see the `formulas` module.
//!
//! `cpu.rs` runs the closed forms on host buffers (f32 and f64); `cuda.rs`
//! launches `kernels/sigmoid_loss.cu` (f32), the same operations in the
//! same order. The autograd node and the argument checks live in
//! `crate::loss`, which calls these functions on tensors only.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub(crate) mod formulas;

pub(crate) use formulas::Formula;

use crate::error::{Error, Result};
use crate::ops::dispatch::cuda_arm;
use crate::tensor::{Device, Tensor};

/// The operands of a per-element sigmoid loss: contiguous tensors of one
/// float dtype on one device. `weight`, `pos_weight` and `scale` are read
/// cyclically (element `i` reads index `i mod len`); a `[C]` vector for
/// `[B, C]` logits, or a single value.
pub(crate) struct Operands<'a> {
    /// The logits.
    pub logits: &'a Tensor,
    /// The targets, of the logits' shape, in [0, 1].
    pub targets: &'a Tensor,
    /// The per-element weight of the loss.
    pub weight: &'a Tensor,
    /// The weight of BCE's positive term (ignored by focal and ASL).
    pub pos_weight: &'a Tensor,
    /// The upstream gradient in backward (per element, or one value), a
    /// single 1 in forward.
    pub scale: &'a Tensor,
}

impl Operands<'_> {
    /// Errors unless every operand lives on the logits' device.
    fn check_device(&self, op: &'static str) -> Result<()> {
        for t in [self.targets, self.weight, self.pos_weight, self.scale] {
            if t.device() != self.logits.device() {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: self.logits.device(),
                    rhs: t.device(),
                });
            }
        }
        Ok(())
    }
}

/// The error for target `value` at flat `index`, outside [0, 1].
fn bad_target(op: &'static str, index: usize, value: f64) -> Error {
    Error::invalid(
        op,
        format!("targets must lie in [0, 1], got {value} at flat index {index}"),
    )
}

/// `scale·weight·ℓ(z, y)` for every logit, after checking that every
/// target lies in [0, 1] (an error naming `op` otherwise). On a device the
/// check is done by the forward kernel, which records the first bad index
/// in a device flag; the host reads the flag back (8 bytes).
pub(crate) fn forward(
    op: &'static str,
    formula: &Formula<f64>,
    x: &Operands<'_>,
) -> Result<Tensor> {
    x.check_device(op)?;
    match x.logits.device() {
        Device::Cpu => {
            if let Some((i, y)) = cpu::first_bad_target(x.targets)? {
                return Err(bad_target(op, i, y));
            }
            cpu::values(formula, x, false)
        }
        Device::Cuda(_) => cuda_arm!(cuda::forward(op, formula, x)),
    }
}

/// `scale·weight·dℓ/dz` for every logit (the targets were checked by the
/// forward).
pub(crate) fn backward(
    op: &'static str,
    formula: &Formula<f64>,
    x: &Operands<'_>,
) -> Result<Tensor> {
    x.check_device(op)?;
    match x.logits.device() {
        Device::Cpu => cpu::values(formula, x, true),
        Device::Cuda(_) => cuda_arm!(cuda::backward(op, formula, x)),
    }
}

/// The sum (or, with `mean`, the mean; NaN over zero elements) of the
/// contiguous per-element values, as a 0-d tensor of their dtype. On the
/// host the sum is accumulated in f64 and rounded once; on a device it is
/// the reduce family's f64-accumulated sum (another summation order) and
/// the mean is that sum times `1/n`.
pub(crate) fn total(values: &Tensor, mean: bool) -> Result<Tensor> {
    match values.device() {
        Device::Cpu => cpu::total(values, mean),
        Device::Cuda(_) => {
            let sum = values.sum_all()?;
            if mean {
                sum.div_scalar(values.numel() as f64)
            } else {
                Ok(sum)
            }
        }
    }
}

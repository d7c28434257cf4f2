//! The fused op behind every per-element sigmoid loss: one pass computes
//! `w·ℓ(z, y)` for each logit and reduces it; the backward recomputes the
//! closed-form `dℓ/dz` and returns `grad_output·w·dℓ/dz` in one more pass,
//! with no intermediate graph. The passes are the `sigmoid_loss` op family
//! (`crate::ops::sigmoid_loss`, on the CPU or a CUDA device); this file
//! checks the arguments and records the op.
//!
//! `weight` and `pos_weight` broadcast against the logits. They are read
//! cyclically from contiguous data: a `[C]` vector for `[B, C]` logits is
//! used as it is, other broadcasts are materialised once.

use super::Reduction;
use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::sigmoid_loss::{self, Formula, Operands};
use crate::tensor::{broadcast_shapes, DType, Tensor};

/// The arguments of a per-element sigmoid loss, before validation.
pub(crate) struct SigmoidLoss<'a> {
    /// The loss's name, used in error messages and as the op name.
    pub op: &'static str,
    pub formula: Formula<f64>,
    pub logits: &'a Tensor,
    pub targets: &'a Tensor,
    pub weight: Option<&'a Tensor>,
    pub pos_weight: Option<&'a Tensor>,
    pub reduction: Reduction,
}

impl SigmoidLoss<'_> {
    /// Validates the arguments and runs the fused op.
    pub fn run(&self) -> Result<Tensor> {
        let _profile = crate::profile::scope(self.op);
        let (op, logits) = (self.op, self.logits);
        logits.check_float(op)?;
        for t in [Some(self.targets), self.weight, self.pos_weight]
            .into_iter()
            .flatten()
        {
            logits.check_same(op, t)?;
        }
        if matches!(logits.dtype(), DType::BF16 | DType::F16) {
            return self.run_widened();
        }
        if self.targets.shape() != logits.shape() {
            return Err(shape_error(op, logits, self.targets));
        }
        if self.targets.requires_grad() {
            return Err(Error::invalid(
                op,
                "targets are constants and must not require a gradient",
            ));
        }
        let targets = self.targets.contiguous()?;
        let weight = self.factor(self.weight, "weight")?;
        let pos_weight = self.factor(self.pos_weight, "pos_weight")?;
        let z = logits.contiguous()?;
        let per_element = sigmoid_loss::forward(
            op,
            &self.formula,
            &Operands {
                logits: &z,
                targets: &targets,
                weight: &weight,
                pos_weight: &pos_weight,
                scale: &one(logits)?,
            },
        )?;
        let out = match self.reduction {
            Reduction::None => per_element,
            Reduction::Sum => sigmoid_loss::total(&per_element, false)?,
            Reduction::Mean => sigmoid_loss::total(&per_element, true)?,
        };
        Ok(out.track(&[logits], || {
            Box::new(SigmoidLossBackward {
                op,
                formula: self.formula,
                logits: logits.clone(),
                targets,
                weight,
                pos_weight,
                reduction: self.reduction,
            })
        }))
    }

    /// Half-precision inputs: computed in f32, the result rounded back.
    fn run_widened(&self) -> Result<Tensor> {
        let wide = |t: &Tensor| t.to_dtype(DType::F32);
        let logits = wide(self.logits)?;
        let targets = wide(self.targets)?;
        let weight = self.weight.map(wide).transpose()?;
        let pos_weight = self.pos_weight.map(wide).transpose()?;
        let out = SigmoidLoss {
            logits: &logits,
            targets: &targets,
            weight: weight.as_ref(),
            pos_weight: pos_weight.as_ref(),
            ..*self
        }
        .run()?;
        out.to_dtype(self.logits.dtype())
    }

    /// A per-element factor (`weight` or `pos_weight`, of the logits' dtype)
    /// checked against the logits' shape and laid out for cyclic reading;
    /// a single 1 when absent.
    fn factor(&self, t: Option<&Tensor>, what: &str) -> Result<Tensor> {
        let (op, logits) = (self.op, self.logits);
        let Some(t) = t else {
            return one(logits);
        };
        match broadcast_shapes(op, logits.shape(), t.shape()) {
            Ok(shape) if shape == logits.shape() => {}
            _ => return Err(shape_error(op, logits, t)),
        }
        if t.requires_grad() {
            return Err(Error::invalid(
                op,
                format!("{what} is a constant and must not require a gradient"),
            ));
        }
        periodic(t, logits.shape())
    }
}

/// The shape error of a loss whose `other` operand does not fit the logits.
fn shape_error(op: &'static str, logits: &Tensor, other: &Tensor) -> Error {
    Error::ShapeMismatch {
        op,
        lhs: logits.shape().to_vec(),
        rhs: other.shape().to_vec(),
    }
}

/// A single 1 of the logits' dtype, on their device.
fn one(logits: &Tensor) -> Result<Tensor> {
    Tensor::full_on(&[1], 1.0, logits.dtype(), logits.device())
}

/// Contiguous data of `t` (which broadcasts to `shape`) that, repeated,
/// fills `shape` in row-major order: `t` itself when its shape, leading 1s
/// dropped, is a suffix of `shape`; otherwise `t` broadcast and copied.
fn periodic(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let lead = t.shape().iter().take_while(|&&d| d == 1).count();
    if shape.ends_with(&t.shape()[lead..]) {
        t.contiguous()
    } else {
        t.broadcast_to(shape)?.contiguous()
    }
}

/// Backward of the fused sigmoid losses: `dz = g·w·dℓ/dz`, where `g` is the
/// upstream gradient per element (`None`), or one value (`Sum`), divided by
/// the element count (`Mean`).
struct SigmoidLossBackward {
    op: &'static str,
    formula: Formula<f64>,
    logits: Tensor,
    /// Contiguous targets and cyclic factors, as the forward used them.
    targets: Tensor,
    weight: Tensor,
    pos_weight: Tensor,
    reduction: Reduction,
}

impl GradFn for SigmoidLossBackward {
    fn name(&self) -> &'static str {
        self.op
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.logits.clone()]
    }
    fn saved(&self) -> Vec<Tensor> {
        vec![
            self.targets.clone(),
            self.weight.clone(),
            self.pos_weight.clone(),
        ]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dtype = self.logits.dtype();
        let g = g.to_dtype(dtype)?;
        let scale = match self.reduction {
            Reduction::None | Reduction::Sum => g.contiguous()?,
            Reduction::Mean => g.div_scalar(self.logits.numel() as f64)?.contiguous()?,
        };
        let grad = sigmoid_loss::backward(
            self.op,
            &self.formula,
            &Operands {
                logits: &self.logits.detach().contiguous()?,
                targets: &self.targets,
                weight: &self.weight,
                pos_weight: &self.pos_weight,
                scale: &scale,
            },
        )?;
        Ok(vec![Some(grad)])
    }
}

//! The fused op behind every per-element sigmoid loss: one pass computes
//! `w·ℓ(z, y)` for each logit and reduces it; the backward recomputes the
//! closed-form `dℓ/dz` from [`Formula::eval`] and returns
//! `grad_output·w·dℓ/dz` in one more pass, with no intermediate graph.
//!
//! `weight` and `pos_weight` broadcast against the logits. They are read
//! cyclically from contiguous data: a `[C]` vector for `[B, C]` logits is
//! used as it is, other broadcasts are materialised once.

use super::formulas::Formula;
use super::Reduction;
use crate::autograd::GradFn;
use crate::backend::cpu::fill_chunks_weighted;
use crate::error::{Error, Result};
use crate::ops::dispatch::with_compute_storage;
use crate::tensor::{
    broadcast_shapes, CpuStorage, DType, Float, StorageElement, Tensor, WithDType,
};

/// Rough cost of one element (exp, ln, powf) in units of a simple
/// elementwise op, for the parallelism threshold.
const WORK_PER_ELEMENT: usize = 16;

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
        check_targets(op, &targets)?;
        let weight = self.factor(self.weight, "weight")?;
        let pos_weight = self.factor(self.pos_weight, "pos_weight")?;
        let n = logits.numel();
        let z = logits.contiguous()?;
        let per_element = elementwise(
            &self.formula,
            Operands {
                logits: &z,
                targets: &targets,
                weight: &weight,
                pos_weight: &pos_weight,
                scale: &Tensor::ones(&[1], logits.dtype())?,
            },
            false,
        )?;
        let out = match self.reduction {
            Reduction::None => Tensor::from_storage(per_element, logits.shape())?,
            Reduction::Sum | Reduction::Mean => {
                let mut total = with_compute_storage!(&per_element, |v: T| {
                    v.iter().map(|x| x.to_f64()).sum::<f64>()
                });
                if self.reduction == Reduction::Mean {
                    total /= n as f64; // NaN over zero elements, like `mean`
                }
                Tensor::from_storage(
                    CpuStorage::from_f64_iter(logits.dtype(), [total].into_iter())?,
                    &[],
                )?
            }
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
            return Tensor::ones(&[1], logits.dtype());
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

/// Errors unless every target lies in [0, 1] (NaN included in the refusal).
fn check_targets(op: &'static str, targets: &Tensor) -> Result<()> {
    let bad = with_compute_storage!(&*targets.cpu_storage("sigmoid loss")?, |v: T| {
        let off = targets.layout().offset();
        v[off..off + targets.numel()]
            .iter()
            .position(|&y| !(0.0..=1.0).contains(&y))
            .map(|i| (i, v[off + i].to_f64()))
    });
    match bad {
        Some((i, y)) => Err(Error::invalid(
            op,
            format!("targets must lie in [0, 1], got {y} at flat index {i}"),
        )),
        None => Ok(()),
    }
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

/// The kernel's tensors, all contiguous and of one float dtype; `weight`,
/// `pos_weight` and `scale` are read cyclically (see [`periodic`]).
struct Operands<'a> {
    logits: &'a Tensor,
    targets: &'a Tensor,
    weight: &'a Tensor,
    pos_weight: &'a Tensor,
    /// The upstream gradient in backward (per element, or one value), a
    /// single 1 in forward.
    scale: &'a Tensor,
}

/// `scale·weight·ℓ` (forward) or `scale·weight·dℓ/dz` (`derivative`) for
/// every logit, as a new storage of the logits' shape.
fn elementwise(formula: &Formula<f64>, x: Operands<'_>, derivative: bool) -> Result<CpuStorage> {
    let ts = [x.logits, x.targets, x.weight, x.pos_weight, x.scale];
    Tensor::read_cpu_storages("sigmoid loss", &ts, |s| match x.logits.dtype() {
        DType::F64 => kernel::<f64>(&formula.cast(), &ts, s, derivative),
        _ => kernel::<f32>(&formula.cast(), &ts, s, derivative),
    })
}

/// The typed loop of [`elementwise`]; `ts` are the operands in order and
/// `s` their storages.
fn kernel<T: Float + StorageElement>(
    formula: &Formula<T>,
    ts: &[&Tensor; 5],
    s: &[&CpuStorage],
    derivative: bool,
) -> CpuStorage {
    let slice = |k: usize| {
        let off = ts[k].layout().offset();
        &T::slice(s[k]).expect("dtype checked by the caller")[off..off + ts[k].numel()]
    };
    let (z, y, w, pw, g) = (slice(0), slice(1), slice(2), slice(3), slice(4));
    let mut out = vec![T::ZERO; z.len()];
    fill_chunks_weighted(&mut out, WORK_PER_ELEMENT, |start, chunk| {
        for (k, o) in chunk.iter_mut().enumerate() {
            let i = start + k;
            let (loss, dloss) = formula.eval(z[i], y[i], pw[i % pw.len()]);
            let v = if derivative { dloss } else { loss };
            *o = g[i % g.len()] * w[i % w.len()] * v;
        }
    });
    T::into_storage(out)
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
        let grad = elementwise(
            &self.formula,
            Operands {
                logits: &self.logits.contiguous()?,
                targets: &self.targets,
                weight: &self.weight,
                pos_weight: &self.pos_weight,
                scale: &scale,
            },
            true,
        )?;
        Ok(vec![Some(Tensor::from_storage(grad, self.logits.shape())?)])
    }
}

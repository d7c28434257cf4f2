//! Elementwise ops: unary math, broadcasting binary math, scalar forms,
//! comparisons, `where`, casts and copies, with their backward rules.
//!
//! Binary ops follow NumPy broadcasting: shapes are aligned from the right
//! and size-1 dimensions stretch. The backward of a broadcast operand sums
//! the gradient back to the operand's shape ([`Tensor::sum_to_shape`]).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "cuda")]
pub mod params;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::dispatch::cuda_arm;
use crate::tensor::{broadcast_shapes, DType, Device, Tensor};

/// A float-to-float elementwise function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `e^x`.
    Exp,
    /// Natural logarithm `ln x` (NaN for x < 0, −∞ at 0).
    Log,
    /// `√x` (NaN for x < 0).
    Sqrt,
    /// `1 / √x`.
    Rsqrt,
    /// `|x|`.
    Abs,
    /// 1 where x > 0, −1 where x < 0, else 0.
    Sign,
    /// `max(x, 0)`; NaN stays NaN.
    Relu,
    /// 1 where x > 0, else 0 (the derivative of relu).
    Step,
    /// Logistic function `1 / (1 + e^−x)`, in `(0, 1)`.
    Sigmoid,
    /// Hyperbolic tangent, in `(−1, 1)`.
    Tanh,
    /// Exact GELU, `x Φ(x)` with the normal CDF Φ (PyTorch's default).
    Gelu,
    /// `Φ(x) + x φ(x)`, the derivative of exact GELU.
    GeluDerivative,
    /// `ln(1 + e^x)`, linear above 20 (PyTorch's default threshold).
    Softplus,
    /// `x^p` for a scalar exponent `p`.
    Powf(f64),
    /// `x` clamped to `[lo, hi]`; NaN stays NaN.
    Clamp(f64, f64),
    /// 1 where lo ≤ x ≤ hi, else 0 (the derivative of clamp).
    InRange(f64, f64),
    /// `x * mul + add`: the scalar forms of add, sub, mul and div.
    Affine(f64, f64),
    /// x where finite, else 0.
    FiniteOrZero,
}

impl UnaryOp {
    /// The op's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Relu => "relu",
            UnaryOp::Step => "step",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluDerivative => "gelu_derivative",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Clamp(..) => "clamp",
            UnaryOp::InRange(..) => "in_range",
            UnaryOp::Affine(..) => "affine",
            UnaryOp::FiniteOrZero => "finite_or_zero",
        }
    }
}

/// A broadcasting float binary function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
    /// `a^b`.
    Pow,
    /// The larger of `a` and `b`; NaN in either propagates.
    Maximum,
    /// The smaller of `a` and `b`; NaN in either propagates.
    Minimum,
}

impl BinaryOp {
    /// The op's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }
}

/// An elementwise comparison producing a `U8` mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `a == b`.
    Eq,
    /// `a != b`.
    Ne,
    /// `a < b`.
    Lt,
    /// `a <= b`.
    Le,
    /// `a > b`.
    Gt,
    /// `a >= b`.
    Ge,
}

struct UnaryBackward {
    op: UnaryOp,
    input: Tensor,
}

impl GradFn for UnaryBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &self.input;
        let grad = match self.op {
            UnaryOp::Neg => g.neg()?,
            UnaryOp::Exp => g.mul(y)?,
            UnaryOp::Log => g.div(x)?,
            UnaryOp::Sqrt => g.div(y)?.mul_scalar(0.5)?,
            // d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 y^3
            UnaryOp::Rsqrt => g.mul(&y.powf(3.0)?)?.mul_scalar(-0.5)?,
            UnaryOp::Abs => g.mul(&x.sign()?)?,
            UnaryOp::Relu => relu_grad(g, x)?,
            UnaryOp::Sigmoid => g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)?,
            UnaryOp::Tanh => g.mul(&y.mul(y)?.affine(-1.0, 1.0)?)?,
            UnaryOp::Gelu => g.mul(&x.unary(UnaryOp::GeluDerivative)?)?,
            UnaryOp::Softplus => g.mul(&x.sigmoid()?)?,
            UnaryOp::Powf(p) => g.mul(&x.powf(p - 1.0)?)?.mul_scalar(p)?,
            UnaryOp::Clamp(lo, hi) => g.mul(&x.unary(UnaryOp::InRange(lo, hi))?)?,
            UnaryOp::Affine(mul, _) => g.mul_scalar(mul)?,
            UnaryOp::FiniteOrZero => {
                g.mul(&x.unary(UnaryOp::FiniteOrZero)?.unary(UnaryOp::Step)?)?
            }
            // Piecewise constant: zero gradient almost everywhere.
            UnaryOp::Sign | UnaryOp::Step | UnaryOp::InRange(..) | UnaryOp::GeluDerivative => {
                g.zeros_like()?
            }
        };
        Ok(vec![Some(grad)])
    }
}

/// Relu's input gradient `g · step(x)` in one fused pass instead of two
/// (backward runs without recording, so it needs no graph node).
pub(crate) fn relu_grad(g: &Tensor, x: &Tensor) -> Result<Tensor> {
    if g.shape() != x.shape() {
        return Err(Error::ShapeMismatch {
            op: "relu_backward",
            lhs: g.shape().to_vec(),
            rhs: x.shape().to_vec(),
        });
    }
    g.check_same("relu_backward", x)?;
    match x.device() {
        Device::Cpu => {
            let s = Tensor::read_cpu_storages("relu_backward", &[g, x], |s| {
                cpu::relu_backward(s[0], g.layout(), s[1], x.layout())
            })??;
            Tensor::from_storage(s, x.shape())
        }
        Device::Cuda(_) => cuda_arm!(cuda::activation_backward("relu", g, x)),
    }
}

struct BinaryBackward {
    op: BinaryOp,
    lhs: Tensor,
    rhs: Tensor,
}

impl GradFn for BinaryBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.lhs.clone(), self.rhs.clone()]
    }
    fn backward(&self, y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&self.lhs, &self.rhs);
        let (ga, gb) = match self.op {
            BinaryOp::Add => (g.clone(), g.clone()),
            BinaryOp::Sub => (g.clone(), g.neg()?),
            BinaryOp::Mul => (g.mul(b)?, g.mul(a)?),
            BinaryOp::Div => (g.div(b)?, g.mul(y)?.div(b)?.neg()?),
            BinaryOp::Pow => (
                g.mul(b)?.mul(&a.pow(&b.affine(1.0, -1.0)?)?)?,
                g.mul(y)?.mul(&a.log()?)?,
            ),
            // Ties split the gradient in half, as PyTorch does.
            BinaryOp::Maximum | BinaryOp::Minimum => {
                let wins = if self.op == BinaryOp::Maximum {
                    a.gt(b)?
                } else {
                    a.lt(b)?
                };
                let share = wins
                    .to_dtype(g.dtype())?
                    .add(&a.eq(b)?.to_dtype(g.dtype())?.mul_scalar(0.5)?)?;
                let ga = g.mul(&share)?;
                let gb = g.sub(&ga)?;
                (ga, gb)
            }
        };
        Ok(vec![
            Some(ga.sum_to_shape(a.shape())?),
            Some(gb.sum_to_shape(b.shape())?),
        ])
    }
}

struct CastBackward {
    input: Tensor,
}

impl GradFn for CastBackward {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(self.input.dtype())?)])
    }
}

struct WhereBackward {
    cond: Tensor,
    on_true: Tensor,
    on_false: Tensor,
}

impl GradFn for WhereBackward {
    fn name(&self) -> &'static str {
        "where_cond"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![
            self.cond.clone(),
            self.on_true.clone(),
            self.on_false.clone(),
        ]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let zero = Tensor::zeros_on(&[], g.dtype(), g.device())?;
        let gt = self
            .cond
            .where_cond(g, &zero)?
            .sum_to_shape(self.on_true.shape())?;
        let gf = self
            .cond
            .where_cond(&zero, g)?
            .sum_to_shape(self.on_false.shape())?;
        Ok(vec![None, Some(gt), Some(gf)])
    }
}

impl Tensor {
    /// Applies a float unary op (public so that users can reach every
    /// variant; the named methods below are the usual entry points).
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let _profile = crate::profile::scope(op.name());
        self.check_float(op.name())?;
        let out = match self.device() {
            Device::Cpu => {
                let s = cpu::unary(op, &*self.cpu_storage(op.name())?, self.layout())?;
                Tensor::from_storage(s, self.shape())?
            }
            Device::Cuda(_) => cuda_arm!(cuda::unary(op, self))?,
        };
        Ok(out.track(&[self], || {
            Box::new(UnaryBackward {
                op,
                input: self.clone(),
            })
        }))
    }

    /// `-x`.
    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    /// `e^x`.
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Rsqrt)
    }
    /// `|x|` (gradient `sign(x)`, 0 at 0).
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    /// -1, 0 or 1 (zero gradient).
    pub fn sign(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sign)
    }
    /// `max(x, 0)` (gradient 0 at 0).
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    /// `1 / (1 + e^-x)`, computed without overflow for large |x|.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    /// Exact GELU, `x Φ(x)`.
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }
    /// `ln(1 + e^x)`, linear for x > 20.
    pub fn softplus(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Softplus)
    }
    /// `x^p` for a scalar exponent.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(p))
    }
    /// `x²`.
    pub fn square(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(2.0))
    }
    /// Limits values to `[min, max]` (pass ±infinity for one-sided clamps).
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        if min > max || min.is_nan() || max.is_nan() {
            return Err(Error::invalid("clamp", format!("min {min} > max {max}")));
        }
        self.unary(UnaryOp::Clamp(min, max))
    }
    /// `x * mul + add` in one pass.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine(mul, add))
    }
    /// `x + s`.
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, s)
    }
    /// `x - s`.
    pub fn sub_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, -s)
    }
    /// `x * s`.
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(s, 0.0)
    }
    /// `x / s`.
    pub fn div_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0 / s, 0.0)
    }

    /// Applies a broadcasting float binary op.
    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope(op.name());
        self.check_same(op.name(), rhs)?;
        self.check_float(op.name())?;
        let shape = broadcast_shapes(op.name(), self.shape(), rhs.shape())?;
        let la = self.layout().broadcast_to(&shape);
        let lb = rhs.layout().broadcast_to(&shape);
        let out = match self.device() {
            Device::Cpu => {
                let s = Tensor::read_cpu_storages(op.name(), &[self, rhs], |s| {
                    cpu::binary(op, s[0], &la, s[1], &lb)
                })??;
                Tensor::from_storage(s, &shape)?
            }
            Device::Cuda(_) => cuda_arm!(cuda::binary(op, (self, &la), (rhs, &lb), &shape))?,
        };
        Ok(out.track(&[self, rhs], || {
            Box::new(BinaryBackward {
                op,
                lhs: self.clone(),
                rhs: rhs.clone(),
            })
        }))
    }

    /// `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, rhs)
    }
    /// `self - rhs` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, rhs)
    }
    /// `self * rhs` with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, rhs)
    }
    /// `self / rhs` with broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, rhs)
    }
    /// `self ^ rhs` with broadcasting.
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Pow, rhs)
    }
    /// Elementwise maximum (ties share the gradient equally).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Maximum, rhs)
    }
    /// Elementwise minimum (ties share the gradient equally).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Minimum, rhs)
    }

    /// Elementwise comparison with broadcasting (any dtype); a `U8` mask.
    pub fn compare(&self, op: CmpOp, rhs: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope("compare");
        self.check_same("compare", rhs)?;
        let shape = broadcast_shapes("compare", self.shape(), rhs.shape())?;
        let la = self.layout().broadcast_to(&shape);
        let lb = rhs.layout().broadcast_to(&shape);
        match self.device() {
            Device::Cpu => {
                let mask = Tensor::read_cpu_storages("compare", &[self, rhs], |s| {
                    cpu::compare(op, s[0], &la, s[1], &lb)
                })??;
                Tensor::from_vec(mask, &shape)
            }
            Device::Cuda(_) => cuda_arm!(cuda::compare(op, (self, &la), (rhs, &lb), &shape)),
        }
    }
    /// `self == rhs` as a `U8` mask.
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(CmpOp::Eq, rhs)
    }
    /// `self != rhs` as a `U8` mask.
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(CmpOp::Ne, rhs)
    }
    /// `self < rhs` as a `U8` mask.
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(CmpOp::Lt, rhs)
    }
    /// `self <= rhs` as a `U8` mask.
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(CmpOp::Le, rhs)
    }
    /// `self > rhs` as a `U8` mask.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(CmpOp::Gt, rhs)
    }
    /// `self >= rhs` as a `U8` mask.
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(CmpOp::Ge, rhs)
    }
    /// Compares with a scalar (converted to this tensor's dtype).
    pub fn compare_scalar(&self, op: CmpOp, s: f64) -> Result<Tensor> {
        self.compare(op, &Tensor::full_on(&[], s, self.dtype(), self.device())?)
    }

    /// `self ? on_true : on_false` elementwise, where `self` is a mask (any
    /// dtype, nonzero = true); all three broadcast together.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope("where_cond");
        on_true.check_same("where_cond", on_false)?;
        let shape = broadcast_shapes("where_cond", on_true.shape(), on_false.shape())?;
        let shape = broadcast_shapes("where_cond", self.shape(), &shape)?;
        let (lc, la, lb) = (
            self.layout().broadcast_to(&shape),
            on_true.layout().broadcast_to(&shape),
            on_false.layout().broadcast_to(&shape),
        );
        let out = match on_true.device() {
            Device::Cpu => {
                let s = Tensor::read_cpu_storages("where", &[self, on_true, on_false], |s| {
                    cpu::where_cond(s[0], &lc, s[1], &la, s[2], &lb)
                })??;
                Tensor::from_storage(s, &shape)?
            }
            Device::Cuda(_) => {
                // The device kernel reads a U8 mask: other masks become one
                // (nonzero = true, as on the CPU).
                cuda_arm!({
                    let mask = if self.dtype() == DType::U8 {
                        self.clone()
                    } else {
                        self.compare_scalar(CmpOp::Ne, 0.0)?
                    };
                    let lc = mask.layout().broadcast_to(&shape);
                    cuda::where_cond((&mask, &lc), (on_true, &la), (on_false, &lb), &shape)
                })?
            }
        };
        Ok(out.track(&[on_true, on_false], || {
            Box::new(WhereBackward {
                cond: self.detach(),
                on_true: on_true.clone(),
                on_false: on_false.clone(),
            })
        }))
    }

    /// Replaces elements where `mask` is nonzero by `value` (mask broadcasts).
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let _profile = crate::profile::scope("masked_fill");
        let fill = Tensor::full_on(&[], value, self.dtype(), self.device())?;
        let out = mask.where_cond(&fill, self)?;
        if out.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "masked_fill",
                lhs: self.shape().to_vec(),
                rhs: mask.shape().to_vec(),
            });
        }
        Ok(out)
    }

    /// Converts to `dtype` (differentiable between float dtypes).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let _profile = crate::profile::scope("to_dtype");
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = match self.device() {
            Device::Cpu => {
                let s = cpu::cast(&*self.cpu_storage("to_dtype")?, self.layout(), dtype)?;
                Tensor::from_storage(s, self.shape())?
            }
            Device::Cuda(_) => cuda_arm!(cuda::cast(self, dtype))?,
        };
        if !dtype.is_float() {
            return Ok(out);
        }
        Ok(out.track(&[self], || {
            Box::new(CastBackward {
                input: self.clone(),
            })
        }))
    }
}

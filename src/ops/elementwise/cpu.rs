//! CPU kernels of the elementwise family.
//!
//! Three generic loops, [`map1`], [`map2`] and [`map3`], apply a closure to
//! one, two or three strided operands that already share the output shape
//! (broadcast operands carry stride 0). Each collapses mergeable dimensions,
//! then walks runs along the innermost dimension: a contiguous operand
//! produces one long run with unit stride, which the compiler vectorises.
//! Outputs are written once, without zero-filling first ([`build`]);
//! above the parallel threshold they are split into chunks across rayon.
//!
//! The typed kernels below dispatch an op enum to a monomorphised closure
//! once per call (never per element). BF16/F16 inputs are widened to f32,
//! computed, and rounded back.

use super::{BinaryOp, CmpOp, UnaryOp};
use crate::backend::cpu::output::build;
use crate::error::Result;
use crate::ops::dispatch::{float_dispatch, float_dispatch2};
use crate::tensor::{
    collapse_dims, walk_runs, with_storage, CpuStorage, DType, Float, Layout, WithDType,
};
use half::{bf16, f16};

/// `out[i] = f(a[i])` for every element of the strided view `la`.
pub fn map1<A, O>(a: &[A], la: &Layout, f: impl Fn(A) -> O + Sync) -> Result<Vec<O>>
where
    A: Copy + Sync,
    O: Copy + Send + Default + 'static,
{
    let (shape, strides) = collapse_dims(la.shape(), [la.strides()]);
    let sa = strides[0][shape.len() - 1];
    build(la.numel(), |start, out| {
        walk_runs(
            &shape,
            &strides,
            [la.offset()],
            start,
            out.len(),
            |_, [oa], run| {
                if sa == 1 {
                    out.extend(a[oa..oa + run].iter().map(|&x| f(x)));
                } else {
                    out.extend((0..run).map(|i| f(a[oa + i * sa])));
                }
            },
        );
    })
}

/// `out[i] = f(a[i], b[i])`; `la` and `lb` must have the output's shape.
pub fn map2<A, B, O>(
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> O + Sync,
) -> Result<Vec<O>>
where
    A: Copy + Sync,
    B: Copy + Sync,
    O: Copy + Send + Default + 'static,
{
    debug_assert_eq!(la.shape(), lb.shape());
    let (shape, strides) = collapse_dims(la.shape(), [la.strides(), lb.strides()]);
    let inner = shape.len() - 1;
    let (sa, sb) = (strides[0][inner], strides[1][inner]);
    build(la.numel(), |start, out| {
        walk_runs(
            &shape,
            &strides,
            [la.offset(), lb.offset()],
            start,
            out.len(),
            |_, [oa, ob], run| match (sa, sb) {
                (1, 1) => {
                    let (xa, xb) = (&a[oa..oa + run], &b[ob..ob + run]);
                    out.extend(xa.iter().zip(xb).map(|(&x, &y)| f(x, y)));
                }
                (1, 0) => {
                    let y = b[ob];
                    out.extend(a[oa..oa + run].iter().map(|&x| f(x, y)));
                }
                (0, 1) => {
                    let x = a[oa];
                    out.extend(b[ob..ob + run].iter().map(|&y| f(x, y)));
                }
                _ => out.extend((0..run).map(|i| f(a[oa + i * sa], b[ob + i * sb]))),
            },
        );
    })
}

/// `out[i] = f(a[i], b[i], c[i])`; all layouts must have the output's shape.
pub fn map3<A, B, C, O>(
    (a, la): (&[A], &Layout),
    (b, lb): (&[B], &Layout),
    (c, lc): (&[C], &Layout),
    f: impl Fn(A, B, C) -> O + Sync,
) -> Result<Vec<O>>
where
    A: Copy + Sync,
    B: Copy + Sync,
    C: Copy + Sync,
    O: Copy + Send + Default + 'static,
{
    let (shape, strides) = collapse_dims(la.shape(), [la.strides(), lb.strides(), lc.strides()]);
    let inner = shape.len() - 1;
    let (sa, sb, sc) = (strides[0][inner], strides[1][inner], strides[2][inner]);
    build(la.numel(), |start, out| {
        walk_runs(
            &shape,
            &strides,
            [la.offset(), lb.offset(), lc.offset()],
            start,
            out.len(),
            |_, [oa, ob, oc], run| {
                out.extend((0..run).map(|i| f(a[oa + i * sa], b[ob + i * sb], c[oc + i * sc])));
            },
        );
    })
}

#[inline]
fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

#[inline]
fn std_normal_cdf<T: Float>(x: T) -> T {
    T::from_f64(0.5) * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

fn unary_typed<T: Float>(op: UnaryOp, v: &[T], l: &Layout) -> Result<Vec<T>> {
    let c = T::from_f64;
    match op {
        UnaryOp::Neg => map1(v, l, |x: T| -x),
        UnaryOp::Exp => map1(v, l, |x: T| x.exp()),
        UnaryOp::Log => map1(v, l, |x: T| x.ln()),
        UnaryOp::Sqrt => map1(v, l, |x: T| x.sqrt()),
        UnaryOp::Rsqrt => map1(v, l, |x: T| T::ONE / x.sqrt()),
        UnaryOp::Abs => map1(v, l, |x: T| x.abs()),
        UnaryOp::Sign => map1(v, l, |x: T| {
            if x > T::ZERO {
                T::ONE
            } else if x < T::ZERO {
                -T::ONE
            } else {
                T::ZERO
            }
        }),
        UnaryOp::Relu => map1(v, l, relu_value),
        UnaryOp::Step => map1(v, l, |x: T| if x > T::ZERO { T::ONE } else { T::ZERO }),
        UnaryOp::Sigmoid => map1(v, l, sigmoid),
        UnaryOp::Tanh => map1(v, l, |x: T| x.tanh()),
        UnaryOp::Gelu => map1(v, l, |x: T| x * std_normal_cdf(x)),
        UnaryOp::GeluDerivative => {
            let inv_sqrt_2pi = c(1.0 / (2.0 * std::f64::consts::PI).sqrt());
            let half = c(0.5);
            map1(v, l, move |x: T| {
                std_normal_cdf(x) + x * inv_sqrt_2pi * (-half * x * x).exp()
            })
        }
        UnaryOp::Softplus => {
            let threshold = c(20.0);
            map1(
                v,
                l,
                move |x: T| if x > threshold { x } else { x.exp().ln_1p() },
            )
        }
        UnaryOp::Powf(p) => {
            let p = c(p);
            map1(v, l, move |x: T| x.powf(p))
        }
        UnaryOp::Clamp(lo, hi) => {
            let (lo, hi) = (c(lo), c(hi));
            map1(v, l, move |x: T| {
                if x < lo {
                    lo
                } else if x > hi {
                    hi
                } else {
                    x
                }
            })
        }
        UnaryOp::InRange(lo, hi) => {
            let (lo, hi) = (c(lo), c(hi));
            map1(
                v,
                l,
                move |x: T| if x >= lo && x <= hi { T::ONE } else { T::ZERO },
            )
        }
        UnaryOp::Affine(mul, add) => {
            let (m, a) = (c(mul), c(add));
            map1(v, l, move |x: T| x * m + a)
        }
        UnaryOp::FiniteOrZero => map1(v, l, |x: T| {
            if x.is_nan() || x == T::INFINITY || x == T::NEG_INFINITY {
                T::ZERO
            } else {
                x
            }
        }),
    }
}

/// Applies a float unary op to a strided view; returns a contiguous buffer.
pub fn unary(op: UnaryOp, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    float_dispatch!(op.name(), s, l, |v, lay| unary_typed(op, v, lay))
}

fn binary_typed<T: Float>(
    op: BinaryOp,
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
) -> Result<Vec<T>> {
    match op {
        BinaryOp::Add => map2(a, la, b, lb, |x: T, y: T| x + y),
        BinaryOp::Sub => map2(a, la, b, lb, |x: T, y: T| x - y),
        BinaryOp::Mul => map2(a, la, b, lb, |x: T, y: T| x * y),
        BinaryOp::Div => map2(a, la, b, lb, |x: T, y: T| x / y),
        BinaryOp::Pow => map2(a, la, b, lb, |x: T, y: T| x.powf(y)),
        // NaN in either operand propagates, as in PyTorch.
        BinaryOp::Maximum => map2(
            a,
            la,
            b,
            lb,
            |x: T, y: T| if x > y || x.is_nan() { x } else { y },
        ),
        BinaryOp::Minimum => map2(
            a,
            la,
            b,
            lb,
            |x: T, y: T| if x < y || x.is_nan() { x } else { y },
        ),
    }
}

/// Applies a float binary op to two views already broadcast to one shape.
pub fn binary(
    op: BinaryOp,
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
) -> Result<CpuStorage> {
    float_dispatch2!(op.name(), (a, la), (b, lb), |x, lx, y, ly| {
        binary_typed(op, x, lx, y, ly)
    })
}

/// `max(x, 0)`, NaN kept (`NaN > 0` is false, so it is tested
/// explicitly): the value of [`Tensor::relu`](crate::Tensor::relu), also
/// applied by kernels that fuse a relu into their output.
#[inline(always)]
pub fn relu_value<T: Float>(x: T) -> T {
    if x > T::ZERO || x.is_nan() {
        x
    } else {
        T::ZERO
    }
}

/// Relu's input gradient for one element: `g` where `x > 0`, else `0·g`
/// (a NaN or infinite `g` gives NaN there, as `g · step(x)` does). Given
/// relu's output `z = relu(x)` instead of `x`, the same (`z > 0` exactly
/// where `x > 0`), which kernels that fuse a relu use.
#[inline(always)]
pub fn relu_grad_value<T: Float>(g: T, x: T) -> T {
    if x > T::ZERO {
        g
    } else {
        g * T::ZERO
    }
}

/// Relu's input gradient in one pass: `g` where `x > 0`, else `0·g`, the
/// same values as `g · step(x)` (a NaN or infinite `g` gives NaN where
/// `x ≤ 0`, as the product does). `g` and `x` share one shape and dtype.
pub fn relu_backward(
    g: &CpuStorage,
    lg: &Layout,
    x: &CpuStorage,
    lx: &Layout,
) -> Result<CpuStorage> {
    fn typed<T: Float>(g: &[T], lg: &Layout, x: &[T], lx: &Layout) -> Result<Vec<T>> {
        map2(g, lg, x, lx, relu_grad_value)
    }
    float_dispatch2!("relu_backward", (g, lg), (x, lx), |a, la, b, lb| {
        typed(a, la, b, lb)
    })
}

/// Compares two same-dtype views (any dtype) elementwise; 1 where true.
pub fn compare(
    op: CmpOp,
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
) -> Result<Vec<u8>> {
    with_storage!(a, |x: T| {
        let y = <T as crate::tensor::StorageElement>::slice(b).expect("dtypes checked by caller");
        match op {
            CmpOp::Eq => map2(x, la, y, lb, |p: T, q: T| (p == q) as u8),
            CmpOp::Ne => map2(x, la, y, lb, |p: T, q: T| (p != q) as u8),
            CmpOp::Lt => map2(x, la, y, lb, |p: T, q: T| (p < q) as u8),
            CmpOp::Le => map2(x, la, y, lb, |p: T, q: T| (p <= q) as u8),
            CmpOp::Gt => map2(x, la, y, lb, |p: T, q: T| (p > q) as u8),
            CmpOp::Ge => map2(x, la, y, lb, |p: T, q: T| (p >= q) as u8),
        }
    })
}

/// `cond != 0 ? a : b` for three views broadcast to one shape; `a` and `b`
/// share a dtype, `cond` may have any dtype.
pub fn where_cond(
    c: &CpuStorage,
    lc: &Layout,
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
) -> Result<CpuStorage> {
    let mask: Vec<u8> = with_storage!(c, |v: T| map1(v, lc, |x: T| (x.to_f64() != 0.0) as u8))?;
    let lm = Layout::contiguous(lc.shape());
    with_storage!(a, |x: T| {
        let y = <T as crate::tensor::StorageElement>::slice(b).expect("dtypes checked by caller");
        let r = map3(
            (&mask, &lm),
            (x, la),
            (y, lb),
            |m: u8, p: T, q: T| if m != 0 { p } else { q },
        )?;
        Ok(<T as crate::tensor::StorageElement>::into_storage(r))
    })
}

/// Copies a strided view (any dtype) into a new contiguous buffer.
pub fn copy(s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    with_storage!(s, |v: T| Ok(
        <T as crate::tensor::StorageElement>::into_storage(map1(v, l, |x: T| x)?)
    ))
}

/// Converts a strided view to `dtype` (through f64, exact for every pair
/// except i64 beyond 2^53); returns a contiguous buffer.
pub fn cast(s: &CpuStorage, l: &Layout, dtype: DType) -> Result<CpuStorage> {
    with_storage!(s, |v: S| Ok(match dtype {
        DType::F32 => CpuStorage::F32(map1(v, l, |x: S| f32::from_f64(x.to_f64()))?),
        DType::F64 => CpuStorage::F64(map1(v, l, |x: S| x.to_f64())?),
        DType::BF16 => CpuStorage::BF16(map1(v, l, |x: S| {
            <bf16 as WithDType>::from_f64(x.to_f64())
        })?),
        DType::F16 => CpuStorage::F16(map1(v, l, |x: S| {
            <f16 as WithDType>::from_f64(x.to_f64())
        })?),
        DType::I64 => CpuStorage::I64(map1(v, l, |x: S| i64::from_f64(x.to_f64()))?),
        DType::U8 => CpuStorage::U8(map1(v, l, |x: S| u8::from_f64(x.to_f64()))?),
    }))
}

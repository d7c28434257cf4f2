//! CUDA launchers of the elementwise family (`kernels/elementwise.cu`):
//! unary maps, fused activation backward, broadcasting binary ops,
//! comparisons, `where`, strided copies, casts and fills. Operands are
//! read through their layouts (strides, offsets, stride-0 broadcast dims),
//! so views never need a copy first.

use super::{BinaryOp, CmpOp, UnaryOp};
use crate::backend::cuda::launch;
use crate::error::{Error, Result};
use crate::ops::elementwise::params::ElementwiseParams;
use crate::ops::on_cuda::{operand, operands, output, require_f32, suffix};
use crate::tensor::{DType, Layout, Tensor};

const FAMILY: &str = "elementwise";

/// The scalar arguments `(alpha, beta)` of a unary op's kernel.
fn scalars(op: UnaryOp) -> (f32, f32) {
    match op {
        UnaryOp::Powf(p) => (p as f32, 0.0),
        UnaryOp::Clamp(lo, hi) | UnaryOp::InRange(lo, hi) => (lo as f32, hi as f32),
        UnaryOp::Affine(mul, add) => (mul as f32, add as f32),
        _ => (0.0, 0.0),
    }
}

/// Launches the one-operand kernel `entry` over the view `x` into a new
/// contiguous tensor of `x`'s shape and `dtype` (maps, copies, casts).
fn map1(
    op: &'static str,
    entry: &str,
    x: &Tensor,
    dtype: DType,
    scalars: (f32, f32),
) -> Result<Tensor> {
    let a = operand(op, x)?;
    let params =
        ElementwiseParams::new(x.shape(), &[x.layout()])?.with_scalars(scalars.0, scalars.1);
    let (out, y) = output(op, &a.dev, dtype, x.shape())?;
    a.dev.launch(
        FAMILY,
        entry,
        launch::elementwise(x.numel()),
        &[&params, &a.ptr, &y],
    )?;
    Ok(out)
}

/// `y = op(x)`, contiguous output of `x`'s shape and dtype.
pub(super) fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let name = op.name();
    let entry = format!("{name}_fwd_{}", suffix(name, x.dtype())?);
    map1(name, &entry, x, x.dtype(), scalars(op))
}

/// `dx = g · f'(x)` for relu (`f'` from the input), sigmoid and tanh (from
/// the output `x` saved by the forward): the fused f32 backward kernels.
pub(super) fn activation_backward(name: &'static str, g: &Tensor, x: &Tensor) -> Result<Tensor> {
    require_f32(name, x.dtype())?;
    let [gd, xd] = operands(name, [g, x])?;
    let params = ElementwiseParams::new(x.shape(), &[g.layout(), x.layout()])?;
    let (out, dx) = output(name, &xd.dev, x.dtype(), x.shape())?;
    gd.dev.launch(
        FAMILY,
        &format!("{name}_bwd_f32"),
        launch::elementwise(x.numel()),
        &[&params, &gd.ptr, &xd.ptr, &dx],
    )?;
    Ok(out)
}

/// `a ∘ b` broadcast to `shape` (`la`, `lb`: the operands' layouts already
/// broadcast to it).
pub(super) fn binary(
    op: BinaryOp,
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    shape: &[usize],
) -> Result<Tensor> {
    let name = op.name();
    let [ad, bd] = operands(name, [a, b])?;
    let params = ElementwiseParams::new(shape, &[la, lb])?;
    let (out, y) = output(name, &ad.dev, a.dtype(), shape)?;
    let entry = format!("{name}_fwd_{}", suffix(name, a.dtype())?);
    ad.dev.launch(
        FAMILY,
        &entry,
        launch::elementwise(params.numel as usize),
        &[&params, &ad.ptr, &bd.ptr, &y],
    )?;
    Ok(out)
}

/// The kernel name of comparison `op`.
fn compare_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
    }
}

/// `a op b` broadcast to `shape`, as a U8 mask (float operands).
pub(super) fn compare(
    op: CmpOp,
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "compare";
    let [ad, bd] = operands(OP, [a, b])?;
    if !a.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: a.dtype(),
        });
    }
    let params = ElementwiseParams::new(shape, &[la, lb])?;
    let (out, y) = output(OP, &ad.dev, DType::U8, shape)?;
    let entry = format!("{}_fwd_{}", compare_name(op), suffix(OP, a.dtype())?);
    ad.dev.launch(
        FAMILY,
        &entry,
        launch::elementwise(params.numel as usize),
        &[&params, &ad.ptr, &bd.ptr, &y],
    )?;
    Ok(out)
}

/// `cond ? a : b` broadcast to `shape` (`cond` a U8 mask).
pub(super) fn where_cond(
    (c, lc): (&Tensor, &Layout),
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "where";
    let [cd, ad, bd] = operands(OP, [c, a, b])?;
    let params = ElementwiseParams::new(shape, &[lc, la, lb])?;
    let (out, y) = output(OP, &ad.dev, a.dtype(), shape)?;
    let entry = format!("where_fwd_{}", suffix(OP, a.dtype())?);
    ad.dev.launch(
        FAMILY,
        &entry,
        launch::elementwise(params.numel as usize),
        &[&params, &cd.ptr, &ad.ptr, &bd.ptr, &y],
    )?;
    Ok(out)
}

/// A contiguous copy of the view `x`, bit for bit.
pub(crate) fn copy(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "contiguous";
    let entry = format!("copy_fwd_{}", suffix(OP, x.dtype())?);
    map1(OP, &entry, x, x.dtype(), (0.0, 0.0))
}

/// `x` converted to `dtype` (through f32, as the CPU does for these
/// pairs); a pair without a kernel is an error naming both dtypes.
pub(super) fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "to_dtype";
    let from = suffix(OP, x.dtype())?;
    let to = suffix(OP, dtype)?;
    if !crate::backend::cuda::compile::names::CASTS.contains(&(from, to)) {
        return Err(Error::invalid(
            OP,
            format!("no device cast from {:?} to {dtype:?}", x.dtype()),
        ));
    }
    map1(OP, &format!("cast_{from}_to_{to}"), x, dtype, (0.0, 0.0))
}

/// A tensor of `shape` on CUDA device `ordinal` filled with `value` as
/// `dtype`: a memset for zeros, the fill kernel for float values, an
/// upload for other integer fills.
pub(crate) fn full(ordinal: usize, shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
    const OP: &str = "full";
    let dev = crate::backend::cuda::device(ordinal)?;
    if value == 0.0 && !value.is_sign_negative() {
        return Ok(crate::ops::on_cuda::zeroed_output(OP, &dev, dtype, shape)?.0);
    }
    if matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
        let (out, y) = output(OP, &dev, dtype, shape)?;
        let n = out.numel();
        let params = ElementwiseParams::flat(n).with_scalars(value as f32, 0.0);
        let entry = format!("fill_fwd_{}", suffix(OP, dtype)?);
        dev.launch(FAMILY, &entry, launch::elementwise(n), &[&params, &y])?;
        return Ok(out);
    }
    Tensor::full(shape, value, dtype)?.to_device(crate::tensor::Device::Cuda(ordinal))
}

/// `x += by` in place over the contiguous i64 tensor `x` (a device-side
/// counter increment: nothing is read back to the host).
pub(crate) fn add_int_(x: &Tensor, by: i64) -> Result<()> {
    const OP: &str = "add_int_";
    let d = crate::ops::on_cuda::operand_mut(OP, x)?;
    let numel = x.numel() as i64;
    d.dev.launch(
        FAMILY,
        "add_int_fwd_i64",
        launch::elementwise(x.numel()),
        &[&numel, &by, &d.at(x)],
    )
}

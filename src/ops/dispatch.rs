//! The element-type dispatch of the float kernels, and the rule for half
//! types, in one place.
//!
//! Float kernels are written once, generic over `T: Float`, and run in one
//! of two *compute types*: f64 for F64 data, f32 for everything else. Half
//! types (BF16, F16) are never computed in directly: their data is widened
//! to f32, the kernel runs in f32, and the result is rounded back to the
//! half type once, at the end. Two forms cover every kernel:
//!
//! - kernels on contiguous buffers (convolution, batch norm, the fused
//!   losses) take [`compute_data`] — a detached, contiguous copy in
//!   the compute type, made only when needed — and reach its typed slice
//!   through [`with_compute_type!`] and [`compute_slice`];
//! - kernels on strided views (elementwise, reductions, softmax, matmul,
//!   pooling)
//!   go through [`float_dispatch!`] (one operand) or [`float_dispatch2!`]
//!   (two operands of one dtype), which run f32 and f64 storage in place
//!   and take half-type views through [`via_f32`] / [`via_f32_2`].

use crate::backend::cpu::pool::try_with_capacity;
use crate::error::{Error, Result};
use crate::ops::elementwise::cpu::map1;
use crate::tensor::{CpuStorage, DType, Float, Layout, StorageElement, Tensor};
use half::{bf16, f16};

/// The type a float kernel computes in for data of `dtype`: F64 for F64,
/// F32 for F32, BF16 and F16; an error naming `op` for other dtypes.
pub(crate) fn compute_dtype(op: &'static str, dtype: DType) -> Result<DType> {
    match dtype {
        DType::F64 => Ok(DType::F64),
        DType::F32 | DType::BF16 | DType::F16 => Ok(DType::F32),
        dtype => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// `t`'s data in its compute type, contiguous and cut off from the graph
/// (the kernels read it; the op records itself). Copies only when `t` is a
/// half type or not contiguous.
pub(crate) fn compute_data(op: &'static str, t: &Tensor) -> Result<Tensor> {
    let t = t.detach();
    let dtype = compute_dtype(op, t.dtype())?;
    if dtype == t.dtype() {
        t.contiguous()
    } else {
        t.to_dtype(dtype)?.contiguous()
    }
}

/// The element types of compute data: f32 and f64.
pub(crate) trait ComputeFloat: Float + StorageElement {}
impl ComputeFloat for f32 {}
impl ComputeFloat for f64 {}

/// The typed elements of contiguous compute data `t`, whose storage `s` is
/// (a guard of `t.storage()`). `T` must be `t`'s compute type, which
/// [`with_compute_type!`] guarantees.
pub(crate) fn compute_slice<'a, T: ComputeFloat>(s: &'a CpuStorage, t: &Tensor) -> &'a [T] {
    let off = t.layout().offset();
    let all = T::slice(s).expect("compute data holds its compute type");
    &all[off..off + t.numel()]
}

/// Runs `$body` with the type alias `$T` bound to the compute type of
/// `$dtype` (a dtype of data made by [`compute_data`]): f64 for F64, f32
/// otherwise.
macro_rules! with_compute_type {
    ($dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            $crate::tensor::DType::F64 => {
                type $T = f64;
                $body
            }
            _ => {
                type $T = f32;
                $body
            }
        }
    };
}
pub(crate) use with_compute_type;

/// Runs `$body` with `$v` bound to the typed `Vec` inside a storage of
/// compute data (f32 or f64, by reference) and `$T` to its element type.
///
/// # Panics
/// On any other storage: callers pass data made by [`compute_data`].
macro_rules! with_compute_storage {
    ($s:expr, |$v:ident : $T:ident| $body:expr) => {
        match $s {
            $crate::tensor::CpuStorage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::tensor::CpuStorage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            other => unreachable!("compute data is f32 or f64, got {:?}", other.dtype()),
        }
    };
}
pub(crate) use with_compute_storage;

/// A half-precision element type (bf16, f16): never computed in directly,
/// but widened to f32 and rounded back once.
pub(crate) trait HalfFloat: Copy + Send + Sync + 'static {
    /// The value as f32 (exact).
    fn widen(self) -> f32;
    /// `v` rounded to the nearest value of this type.
    fn narrow(v: f32) -> Self;
}

impl HalfFloat for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn narrow(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

impl HalfFloat for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn narrow(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// Rounds an f32 result back to the half type once.
fn narrow_all<H: HalfFloat>(r: Vec<f32>) -> Result<Vec<H>> {
    let mut out = try_with_capacity(r.len())?;
    out.extend(r.into_iter().map(H::narrow));
    Ok(out)
}

/// The half-type rule for one strided operand: `v` seen through `l` is
/// widened to contiguous f32, `k` computes on it, and the result is
/// rounded back once.
pub(crate) fn via_f32<H: HalfFloat>(
    v: &[H],
    l: &Layout,
    k: impl FnOnce(&[f32], &Layout) -> Result<Vec<f32>>,
) -> Result<Vec<H>> {
    let wide = map1(v, l, H::widen)?;
    narrow_all(k(&wide, &Layout::contiguous(l.shape()))?)
}

/// [`via_f32`] for two operands, each widened with its own shape.
pub(crate) fn via_f32_2<H: HalfFloat>(
    (a, la): (&[H], &Layout),
    (b, lb): (&[H], &Layout),
    k: impl FnOnce(&[f32], &Layout, &[f32], &Layout) -> Result<Vec<f32>>,
) -> Result<Vec<H>> {
    let (wa, wb) = (map1(a, la, H::widen)?, map1(b, lb, H::widen)?);
    let (ca, cb) = (
        Layout::contiguous(la.shape()),
        Layout::contiguous(lb.shape()),
    );
    narrow_all(k(&wa, &ca, &wb, &cb)?)
}

/// Runs a float kernel on any float storage seen through a strided layout:
/// f32/f64 in place, half types through [`via_f32`]. `$k` receives the
/// typed slice and its layout and returns `Result<Vec<T>>`; other dtypes
/// are an [`Error::UnsupportedDType`] naming `$op_name`.
macro_rules! float_dispatch {
    ($op_name:expr, $s:expr, $l:expr, |$v:ident, $lay:ident| $k:expr) => {{
        use $crate::tensor::{CpuStorage as S, Layout};
        let l: &Layout = $l;
        match $s {
            S::F32($v) => {
                let $lay = l;
                Ok(S::F32($k?))
            }
            S::F64($v) => {
                let $lay = l;
                Ok(S::F64($k?))
            }
            S::BF16(h) => Ok(S::BF16($crate::ops::dispatch::via_f32(
                h,
                l,
                |$v: &[f32], $lay: &Layout| $k,
            )?)),
            S::F16(h) => Ok(S::F16($crate::ops::dispatch::via_f32(
                h,
                l,
                |$v: &[f32], $lay: &Layout| $k,
            )?)),
            other => Err($crate::error::Error::UnsupportedDType {
                op: $op_name,
                dtype: other.dtype(),
            }),
        }
    }};
}
pub(crate) use float_dispatch;

/// [`float_dispatch!`] for two operands of one float dtype: `$k` receives
/// both typed slices and their layouts and returns `Result<Vec<T>>`. Half
/// types go through [`via_f32_2`]; other or mixed dtypes are an
/// [`Error::UnsupportedDType`] naming `$op_name`.
macro_rules! float_dispatch2 {
    ($op_name:expr, ($a:expr, $la:expr), ($b:expr, $lb:expr), |$x:ident, $lx:ident, $y:ident, $ly:ident| $k:expr) => {{
        use $crate::tensor::{CpuStorage as S, Layout};
        let (la, lb): (&Layout, &Layout) = ($la, $lb);
        match ($a, $b) {
            (S::F32($x), S::F32($y)) => {
                let ($lx, $ly) = (la, lb);
                Ok(S::F32($k?))
            }
            (S::F64($x), S::F64($y)) => {
                let ($lx, $ly) = (la, lb);
                Ok(S::F64($k?))
            }
            (S::BF16(p), S::BF16(q)) => Ok(S::BF16($crate::ops::dispatch::via_f32_2(
                (p, la),
                (q, lb),
                |$x: &[f32], $lx: &Layout, $y: &[f32], $ly: &Layout| $k,
            )?)),
            (S::F16(p), S::F16(q)) => Ok(S::F16($crate::ops::dispatch::via_f32_2(
                (p, la),
                (q, lb),
                |$x: &[f32], $lx: &Layout, $y: &[f32], $ly: &Layout| $k,
            )?)),
            (a, _) => Err($crate::error::Error::UnsupportedDType {
                op: $op_name,
                dtype: a.dtype(),
            }),
        }
    }};
}
pub(crate) use float_dispatch2;

/// The CUDA arm of an op's device match: `$e` with the `cuda` feature;
/// without it no tensor can live on a device, so the arm is an error and
/// `$e` (which names CUDA-only code) is not compiled.
#[cfg(feature = "cuda")]
macro_rules! cuda_arm {
    ($e:expr) => {
        $e
    };
}
#[cfg(not(feature = "cuda"))]
macro_rules! cuda_arm {
    ($e:expr) => {
        Err($crate::error::Error::DeviceUnavailable {
            device: $crate::tensor::Device::Cuda(0),
            msg: "this build has no CUDA backend".into(),
        })
    };
}
pub(crate) use cuda_arm;

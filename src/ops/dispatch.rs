//! The element-type dispatch of the float kernels, and the rule for half
//! types, in one place.
//!
//! Float kernels are written once, generic over `T: Float`, and run in one
//! of two *compute types*: f64 for F64 data, f32 for everything else. Half
//! types (BF16, F16) are never computed in directly: their data is widened
//! to f32, the kernel runs in f32, and the result is rounded back to the
//! half type once, at the end. Two forms cover every kernel:
//!
//! - kernels on contiguous buffers (convolution, batch norm, pooling, the
//!   fused losses) take [`compute_data`] — a detached, contiguous copy in
//!   the compute type, made only when needed — and reach its typed slice
//!   through [`with_compute_type!`] and [`compute_slice`];
//! - kernels on strided views (elementwise, reductions, softmax, matmul)
//!   go through [`float_dispatch!`] (one operand) or [`float_dispatch2!`]
//!   (two operands of one dtype), which run f32 and f64 storage in place
//!   and widen half-type views to contiguous f32 first.

use crate::error::{Error, Result};
use crate::tensor::{CpuStorage, DType, Float, StorageElement, Tensor};

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

/// Runs a float kernel on any float storage seen through a strided layout:
/// f32/f64 in place, half types widened to contiguous f32, computed and
/// rounded back. `$k` receives the typed slice and its layout and returns
/// `Result<Vec<T>>`; other dtypes are an [`Error::UnsupportedDType`] naming
/// `$op_name`.
macro_rules! float_dispatch {
    ($op_name:expr, $s:expr, $l:expr, |$v:ident, $lay:ident| $k:expr) => {{
        let l: &$crate::tensor::Layout = $l;
        match $s {
            $crate::tensor::CpuStorage::F32($v) => {
                let $lay = l;
                Ok($crate::tensor::CpuStorage::F32($k?))
            }
            $crate::tensor::CpuStorage::F64($v) => {
                let $lay = l;
                Ok($crate::tensor::CpuStorage::F64($k?))
            }
            $crate::tensor::CpuStorage::BF16(h) => {
                let wide = $crate::ops::dispatch::widen_f32!(h, l)?;
                let $v = &wide;
                let $lay = &$crate::tensor::Layout::contiguous(l.shape());
                let r: Vec<f32> = $k?;
                Ok($crate::tensor::CpuStorage::BF16(
                    $crate::ops::dispatch::narrow_f32!(half::bf16, r),
                ))
            }
            $crate::tensor::CpuStorage::F16(h) => {
                let wide = $crate::ops::dispatch::widen_f32!(h, l)?;
                let $v = &wide;
                let $lay = &$crate::tensor::Layout::contiguous(l.shape());
                let r: Vec<f32> = $k?;
                Ok($crate::tensor::CpuStorage::F16(
                    $crate::ops::dispatch::narrow_f32!(half::f16, r),
                ))
            }
            other => Err($crate::error::Error::UnsupportedDType {
                op: $op_name,
                dtype: other.dtype(),
            }),
        }
    }};
}
pub(crate) use float_dispatch;

/// Widens a half-type view to a contiguous f32 buffer (the first half of
/// the half-type rule; [`narrow_f32!`] is the second).
macro_rules! widen_f32 {
    ($v:expr, $l:expr) => {
        $crate::ops::elementwise::cpu::map1($v, $l, |x| x.to_f32())
    };
}
pub(crate) use widen_f32;

/// Rounds an f32 result back to the half type `$H` (`half::bf16` or
/// `half::f16`) once.
macro_rules! narrow_f32 {
    ($H:ty, $r:expr) => {
        $r.into_iter().map(<$H>::from_f32).collect::<Vec<$H>>()
    };
}
pub(crate) use narrow_f32;

/// [`float_dispatch!`] for two operands of one float dtype: `$k` receives
/// both typed slices and their layouts and returns `Result<Vec<T>>`. Half
/// types are widened to contiguous f32 (each operand keeping its shape),
/// computed and rounded back; other or mixed dtypes are an
/// [`Error::UnsupportedDType`] naming `$op_name`.
macro_rules! float_dispatch2 {
    ($op_name:expr, ($a:expr, $la:expr), ($b:expr, $lb:expr), |$x:ident, $lx:ident, $y:ident, $ly:ident| $k:expr) => {{
        use $crate::tensor::CpuStorage as S;
        let (la, lb): (&$crate::tensor::Layout, &$crate::tensor::Layout) = ($la, $lb);
        match ($a, $b) {
            (S::F32($x), S::F32($y)) => {
                let ($lx, $ly) = (la, lb);
                Ok(S::F32($k?))
            }
            (S::F64($x), S::F64($y)) => {
                let ($lx, $ly) = (la, lb);
                Ok(S::F64($k?))
            }
            (S::BF16(p), S::BF16(q)) => {
                let (wide_a, wide_b) = (
                    $crate::ops::dispatch::widen_f32!(p, la)?,
                    $crate::ops::dispatch::widen_f32!(q, lb)?,
                );
                let (ca, cb) = (
                    $crate::tensor::Layout::contiguous(la.shape()),
                    $crate::tensor::Layout::contiguous(lb.shape()),
                );
                let ($x, $lx, $y, $ly) = (&wide_a, &ca, &wide_b, &cb);
                let r: Vec<f32> = $k?;
                Ok(S::BF16($crate::ops::dispatch::narrow_f32!(half::bf16, r)))
            }
            (S::F16(p), S::F16(q)) => {
                let (wide_a, wide_b) = (
                    $crate::ops::dispatch::widen_f32!(p, la)?,
                    $crate::ops::dispatch::widen_f32!(q, lb)?,
                );
                let (ca, cb) = (
                    $crate::tensor::Layout::contiguous(la.shape()),
                    $crate::tensor::Layout::contiguous(lb.shape()),
                );
                let ($x, $lx, $y, $ly) = (&wide_a, &ca, &wide_b, &cb);
                let r: Vec<f32> = $k?;
                Ok(S::F16($crate::ops::dispatch::narrow_f32!(half::f16, r)))
            }
            (a, _) => Err($crate::error::Error::UnsupportedDType {
                op: $op_name,
                dtype: a.dtype(),
            }),
        }
    }};
}
pub(crate) use float_dispatch2;

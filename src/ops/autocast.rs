//! The mixed-precision scope: which precision the matrix products and
//! convolutions of f32 tensors compute in on the current thread.
//!
//! Inside [`autocast`]`(Precision::Bf16, ..)`, `matmul` (hence `linear`)
//! and `conv2d` on f32 operands round their inputs to bf16, multiply them
//! with f32 accumulation (tensor cores on a GPU) and return an f32 output;
//! their backward passes do the same with the output gradient, so input
//! and weight gradients, master weights, losses, normalisation statistics
//! and optimizer math all stay f32. The precision is captured when an op
//! runs forward, so its backward computes the same way wherever backward is
//! called. Operands of other dtypes (f64, bf16, f16) are unaffected.
//!
//! The scope is per thread and nests like [`no_grad`](crate::no_grad).

use crate::error::{Error, Result};
use crate::ops::elementwise::cpu::map1;
use crate::tensor::{CpuStorage, DType, Device, Tensor};
use half::bf16;
use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

/// The precision of the products inside matmul and conv2d on f32 tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Plain f32 (the default).
    #[default]
    F32,
    /// bf16 inputs, f32 accumulation and f32 outputs.
    Bf16,
}

impl Precision {
    /// The name used on the command line and in messages: `"f32"`, `"bf16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// Parses `"f32"` or `"bf16"` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(Error::invalid(
                "precision",
                format!("unknown precision {s:?}; expected \"f32\" or \"bf16\""),
            )),
        }
    }
}

impl serde::Serialize for Precision {
    /// As its name (`"f32"`, `"bf16"`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Precision {
    /// From its name, as [`FromStr`] reads it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(|e: Error| match e {
            Error::InvalidArgument { msg, .. } => serde::de::Error::custom(msg),
            other => serde::de::Error::custom(other),
        })
    }
}

thread_local! {
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The precision of the current thread's [`autocast`] scope
/// ([`Precision::F32`] outside any scope).
pub fn precision() -> Precision {
    PRECISION.with(|p| p.get())
}

/// Sets this thread's precision until dropped, then restores the previous
/// one (scopes nest; the restore also runs when a panic unwinds).
pub struct AutocastGuard {
    prev: Precision,
}

impl AutocastGuard {
    /// Enters a scope of `precision`.
    pub fn new(precision: Precision) -> Self {
        let prev = PRECISION.with(|p| p.replace(precision));
        AutocastGuard { prev }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        PRECISION.with(|p| p.set(self.prev));
    }
}

/// Runs `f` with matmul and conv2d of f32 tensors computing in `precision`
/// on this thread (see the module documentation).
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let _guard = AutocastGuard::new(precision);
    f()
}

/// True when an op on operands of `dtype` takes the mixed path here: the
/// scope is bf16 and the operands are f32.
pub(crate) fn bf16_inputs(dtype: DType) -> bool {
    dtype == DType::F32 && precision() == Precision::Bf16
}

/// The detached operand a mixed product reads in place of the f32 tensor
/// `t`: on the CPU, `t`'s values rounded to bf16 (nearest, ties to even)
/// but stored as f32, so that the f32 GEMM multiplies exactly the values a
/// tensor core would; on a CUDA device, `t` cast to bf16 for the
/// tensor-core kernels. Either way contiguous.
pub(crate) fn bf16_operand(op: &'static str, t: &Tensor) -> Result<Tensor> {
    match t.device() {
        Device::Cpu => {
            let v = Tensor::read_cpu_storages(op, &[t], |s| match s[0] {
                CpuStorage::F32(v) => map1(v, t.layout(), |x: f32| bf16::from_f32(x).to_f32()),
                other => Err(Error::UnsupportedDType {
                    op,
                    dtype: other.dtype(),
                }),
            })??;
            Tensor::from_storage(CpuStorage::F32(v), t.shape())
        }
        Device::Cuda(_) => t.detach().to_dtype(DType::BF16)?.contiguous(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_nests_and_is_restored() {
        assert_eq!(precision(), Precision::F32);
        let inner = autocast(Precision::Bf16, || {
            let nested = autocast(Precision::F32, precision);
            (precision(), nested)
        });
        assert_eq!(inner, (Precision::Bf16, Precision::F32));
        assert_eq!(precision(), Precision::F32);
        // An error returned from the scope restores it too.
        let r: Result<()> = autocast(Precision::Bf16, || Err(Error::invalid("t", "x")));
        assert!(r.is_err());
        assert_eq!(precision(), Precision::F32);
    }

    #[test]
    fn a_panic_inside_the_scope_restores_it() {
        let caught = std::panic::catch_unwind(|| {
            autocast(Precision::Bf16, || {
                assert_eq!(precision(), Precision::Bf16);
                panic!("inside the scope");
            })
        });
        assert!(caught.is_err());
        assert_eq!(precision(), Precision::F32);
    }

    #[test]
    fn the_scope_is_per_thread() {
        autocast(Precision::Bf16, || {
            let other = std::thread::spawn(precision).join().unwrap();
            assert_eq!(other, Precision::F32);
        });
    }

    #[test]
    fn precision_parses_and_prints_its_names() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!(Precision::default(), Precision::F32);
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("fp16") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn only_f32_operands_take_the_mixed_path() {
        autocast(Precision::Bf16, || {
            assert!(bf16_inputs(DType::F32));
            for d in [DType::F64, DType::BF16, DType::F16, DType::I64] {
                assert!(!bf16_inputs(d), "{d:?}");
            }
        });
        assert!(!bf16_inputs(DType::F32));
    }
}

//! Owned element buffers.
//!
//! [`CpuStorage`] is a plain `Vec` per dtype. Kernels match on it once, then
//! run monomorphised code on the typed slice; the [`with_storage!`] macro
//! writes that match for code that is generic over the element type.

use crate::error::Result;
use crate::ground::{DType, WithDType};
use half::{bf16, f16};

/// Host memory holding the elements of one or more tensor views.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// Elements of dtype [`DType::F32`].
    F32(Vec<f32>),
    /// Elements of dtype [`DType::F64`].
    F64(Vec<f64>),
    /// Elements of dtype [`DType::BF16`].
    BF16(Vec<bf16>),
    /// Elements of dtype [`DType::F16`].
    F16(Vec<f16>),
    /// Elements of dtype [`DType::I64`].
    I64(Vec<i64>),
    /// Elements of dtype [`DType::U8`].
    U8(Vec<u8>),
}

/// Runs `$body` with `$v` bound to the typed `Vec` inside a storage
/// expression (by reference), and `$T` aliased to its element type.
macro_rules! with_storage {
    ($s:expr, |$v:ident : $T:ident| $body:expr) => {
        match $s {
            $crate::backend::cpu::CpuStorage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::backend::cpu::CpuStorage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::backend::cpu::CpuStorage::BF16($v) => {
                #[allow(dead_code)]
                type $T = half::bf16;
                $body
            }
            $crate::backend::cpu::CpuStorage::F16($v) => {
                #[allow(dead_code)]
                type $T = half::f16;
                $body
            }
            $crate::backend::cpu::CpuStorage::I64($v) => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            $crate::backend::cpu::CpuStorage::U8($v) => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
        }
    };
}
pub(crate) use with_storage;

/// Large buffers go back to the CPU buffer cache for reuse.
impl Drop for CpuStorage {
    fn drop(&mut self) {
        with_storage!(self, |v: T| crate::backend::cpu::pool::recycle(
            std::mem::take(v)
        ))
    }
}

impl CpuStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U8(_) => DType::U8,
        }
    }

    /// Number of stored elements.
    pub fn len(&self) -> usize {
        with_storage!(self, |v: T| v.len())
    }

    /// True when no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Result<Self> {
        Self::full(dtype, n, 0.0)
    }

    /// `n` copies of `value` converted to `dtype` (in a recycled buffer
    /// when one of that size is cached, saving the page faults of a fresh one).
    /// A buffer the system refuses is an [`Error::OutOfMemory`](crate::Error::OutOfMemory).
    pub fn full(dtype: DType, n: usize, value: f64) -> Result<Self> {
        fn filled<T: Copy + Default + Send + 'static>(n: usize, v: T) -> Result<Vec<T>> {
            let mut buf = crate::backend::cpu::pool::take_empty::<T>(n)?;
            buf.resize(n, v);
            Ok(buf)
        }
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(filled(n, value as f32)?),
            DType::F64 => CpuStorage::F64(filled(n, value)?),
            DType::BF16 => CpuStorage::BF16(filled(n, WithDType::from_f64(value))?),
            DType::F16 => CpuStorage::F16(filled(n, WithDType::from_f64(value))?),
            DType::I64 => CpuStorage::I64(filled(n, value as i64)?),
            DType::U8 => CpuStorage::U8(filled(n, value as u8)?),
        })
    }

    /// Builds a storage from values given as f64, converted to `dtype`.
    /// The buffer is reserved up front for the iterator's announced length;
    /// a request the system refuses is an
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory).
    pub fn from_f64_iter(dtype: DType, it: impl Iterator<Item = f64>) -> Result<Self> {
        fn collect<T>(it: impl Iterator<Item = T>) -> Result<Vec<T>> {
            let mut v = crate::backend::cpu::pool::try_with_capacity(it.size_hint().0)?;
            v.extend(it);
            Ok(v)
        }
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(collect(it.map(|v| v as f32))?),
            DType::F64 => CpuStorage::F64(collect(it)?),
            DType::BF16 => CpuStorage::BF16(collect(it.map(<bf16 as WithDType>::from_f64))?),
            DType::F16 => CpuStorage::F16(collect(it.map(<f16 as WithDType>::from_f64))?),
            DType::I64 => CpuStorage::I64(collect(it.map(|v| v as i64))?),
            DType::U8 => CpuStorage::U8(collect(it.map(|v| v as u8))?),
        })
    }

    /// Element `i` converted to f64.
    pub fn get_f64(&self, i: usize) -> f64 {
        with_storage!(self, |v: T| v[i].to_f64())
    }
}

/// Conversion between a typed `Vec` and [`CpuStorage`].
pub trait StorageElement: WithDType {
    /// Wraps a vector in the matching storage variant.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Borrows the typed slice, if the storage holds this type.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// Mutably borrows the typed slice, if the storage holds this type.
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! storage_element {
    ($t:ty, $v:ident) => {
        impl StorageElement for $t {
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$v(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
storage_element!(f32, F32);
storage_element!(f64, F64);
storage_element!(bf16, BF16);
storage_element!(f16, F16);
storage_element!(i64, I64);
storage_element!(u8, U8);

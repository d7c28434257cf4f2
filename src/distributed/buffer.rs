//! The host buffers that collectives move between ranks.

use crate::error::{Error, Result};
use crate::tensor::DType;

/// A flat host buffer of `f32` or `f64` values, the unit of every
/// collective of a [`Communicator`](super::Communicator).
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// Single precision (gradients of `f32` parameters).
    F32(Vec<f32>),
    /// Double precision.
    F64(Vec<f64>),
}

impl Default for Buffer {
    /// An empty `f32` buffer.
    fn default() -> Self {
        Buffer::F32(Vec::new())
    }
}

impl Buffer {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len(),
            Buffer::F64(v) => v.len(),
        }
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Buffer::F32(_) => DType::F32,
            Buffer::F64(_) => DType::F64,
        }
    }

    /// A zero-filled buffer of `len` elements of `dtype` (`F32` or `F64`).
    pub fn zeros(dtype: DType, len: usize) -> Result<Buffer> {
        match dtype {
            DType::F32 => Ok(Buffer::F32(vec![0.0; len])),
            DType::F64 => Ok(Buffer::F64(vec![0.0; len])),
            other => Err(Error::UnsupportedDType {
                op: "distributed::Buffer",
                dtype: other,
            }),
        }
    }

    /// Multiplies every element by `factor` (rounded to the buffer's type).
    pub fn scale(&mut self, factor: f64) {
        match self {
            Buffer::F32(v) => {
                let f = factor as f32;
                v.iter_mut().for_each(|x| *x *= f);
            }
            Buffer::F64(v) => v.iter_mut().for_each(|x| *x *= factor),
        }
    }

    /// Adds `other` element by element (same type and length).
    pub fn add_assign(&mut self, other: &Buffer) -> Result<()> {
        self.check_like(other, "Buffer::add_assign")?;
        match (self, other) {
            (Buffer::F32(a), Buffer::F32(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
            (Buffer::F64(a), Buffer::F64(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
            _ => unreachable!("checked above"),
        }
        Ok(())
    }

    /// Fails unless `other` has this buffer's type and length.
    pub fn check_like(&self, other: &Buffer, op: &'static str) -> Result<()> {
        if self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: other.dtype(),
            });
        }
        if self.len() != other.len() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: vec![self.len()],
                rhs: vec![other.len()],
            });
        }
        Ok(())
    }
}

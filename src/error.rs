//! The crate's single error type.
//!
//! Every fallible operation in ferrite returns [`Result<T>`]. Messages name the
//! operation and the offending shapes, dtypes or values, so that a failure deep
//! inside a model points straight at its cause.

use crate::tensor::{DType, Device};
use std::fmt;

/// Shorthand for `std::result::Result<T, ferrite::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in ferrite.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Two operands (or an operand and a requested shape) are incompatible.
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    /// A shape that is invalid on its own (wrong rank, wrong element count...).
    BadShape { op: &'static str, msg: String },
    /// Operands have different dtypes.
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },
    /// The op is not defined for this dtype (e.g. `exp` of an integer tensor).
    UnsupportedDType { op: &'static str, dtype: DType },
    /// Operands live on different devices.
    DeviceMismatch {
        op: &'static str,
        lhs: Device,
        rhs: Device,
    },
    /// The device cannot be used (no driver, no GPU, feature not compiled in...).
    DeviceUnavailable { device: Device, msg: String },
    /// A dimension index is outside `-ndim..ndim`.
    DimOutOfRange {
        op: &'static str,
        dim: isize,
        ndim: usize,
    },
    /// An index value (in `index_select`, `gather`, ...) is outside `0..size`.
    IndexOutOfRange {
        op: &'static str,
        index: i64,
        size: usize,
    },
    /// Any other invalid argument, described in words.
    InvalidArgument { op: &'static str, msg: String },
    /// Automatic differentiation was misused (e.g. backward on a freed graph).
    Autograd(String),
    /// An I/O error while reading or writing `path`.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A file exists but its contents are not what they should be.
    CorruptFile { path: String, msg: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: shape mismatch between {lhs:?} and {rhs:?}")
            }
            Error::BadShape { op, msg } => write!(f, "{op}: {msg}"),
            Error::DTypeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: dtype mismatch between {lhs:?} and {rhs:?}")
            }
            Error::UnsupportedDType { op, dtype } => {
                write!(f, "{op}: not supported for dtype {dtype:?}")
            }
            Error::DeviceMismatch { op, lhs, rhs } => {
                write!(
                    f,
                    "{op}: operands on different devices ({lhs:?} and {rhs:?})"
                )
            }
            Error::DeviceUnavailable { device, msg } => {
                write!(f, "device {device:?} is unavailable: {msg}")
            }
            Error::DimOutOfRange { op, dim, ndim } => write!(
                f,
                "{op}: dimension {dim} out of range for a tensor with {ndim} dimension(s)"
            ),
            Error::IndexOutOfRange { op, index, size } => {
                write!(f, "{op}: index {index} out of range for size {size}")
            }
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            Error::Autograd(msg) => write!(f, "autograd: {msg}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::CorruptFile { path, msg } => write!(f, "{path}: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// Builds an [`Error::InvalidArgument`].
    /// An [`Error::Io`] for `path`, saying `what` was being done.
    pub(crate) fn io(path: &std::path::Path, what: &str, e: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
        }
    }

    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// Builds an [`Error::BadShape`].
    pub(crate) fn bad_shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::BadShape {
            op,
            msg: msg.into(),
        }
    }
}

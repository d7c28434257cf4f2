//! The crate's single error type.
//!
//! Every fallible operation in ferrite returns [`Result<T>`]. Messages name the
//! operation and the offending shapes, dtypes or values, so that a failure deep
//! inside a model points straight at its cause.

use crate::ground::{DType, Device};
use std::fmt;

/// Shorthand for `std::result::Result<T, ferrite::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in ferrite.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Two operands (or an operand and a requested shape) are incompatible.
    ShapeMismatch {
        /// Name of the operation that failed.
        op: &'static str,
        /// Shape of the first operand.
        lhs: Vec<usize>,
        /// Shape of the second operand, or the requested shape.
        rhs: Vec<usize>,
    },
    /// A shape that is invalid on its own (wrong rank, wrong element count...).
    BadShape {
        /// Name of the operation that failed.
        op: &'static str,
        /// What is wrong with the shape.
        msg: String,
    },
    /// Operands have different dtypes.
    DTypeMismatch {
        /// Name of the operation that failed.
        op: &'static str,
        /// Dtype of the first operand.
        lhs: DType,
        /// Dtype of the second operand.
        rhs: DType,
    },
    /// The op is not defined for this dtype (e.g. `exp` of an integer tensor).
    UnsupportedDType {
        /// Name of the operation that failed.
        op: &'static str,
        /// The dtype the operation was given.
        dtype: DType,
    },
    /// Operands live on different devices.
    DeviceMismatch {
        /// Name of the operation that failed.
        op: &'static str,
        /// Device of the first operand.
        lhs: Device,
        /// Device of the second operand.
        rhs: Device,
    },
    /// The device cannot be used (no driver, no GPU, feature not compiled in...).
    DeviceUnavailable {
        /// The device that was asked for.
        device: Device,
        /// Why it cannot be used.
        msg: String,
    },
    /// A dimension index is outside `-ndim..ndim`.
    DimOutOfRange {
        /// Name of the operation that failed.
        op: &'static str,
        /// The dimension index given (negative counts from the end).
        dim: isize,
        /// Number of dimensions of the tensor.
        ndim: usize,
    },
    /// An index value (in `index_select`, `gather`, ...) is outside `0..size`.
    IndexOutOfRange {
        /// Name of the operation that failed.
        op: &'static str,
        /// The offending index value.
        index: i64,
        /// Size of the indexed dimension.
        size: usize,
    },
    /// Any other invalid argument, described in words.
    InvalidArgument {
        /// Name of the operation that failed.
        op: &'static str,
        /// What is wrong with the argument.
        msg: String,
    },
    /// Automatic differentiation was misused (e.g. backward on a freed graph).
    Autograd(String),
    /// An I/O error while reading or writing `path`.
    Io {
        /// The file or directory being accessed.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file exists but its contents are not what they should be.
    CorruptFile {
        /// The file that was read.
        path: String,
        /// What is wrong with its contents.
        msg: String,
    },
    /// A CUDA driver call or kernel failed on a device (a real GPU or the
    /// emulated one): the op or kernel that failed and the driver's or
    /// emulator's message.
    Cuda {
        /// The op, copy or kernel that failed (e.g. `"add_fwd_f32"`).
        op: String,
        /// What went wrong, in words.
        message: String,
    },
    /// A buffer could not be allocated (the system refused the request).
    OutOfMemory {
        /// Size of the refused request, in bytes.
        bytes: usize,
    },
    /// A collective operation between the ranks of a data-parallel job
    /// failed: a rank aborted, panicked or left, or the ranks disagreed on
    /// what to do. The message names the rank.
    Distributed {
        /// The collective that failed (e.g. `"all_reduce"`).
        op: &'static str,
        /// What went wrong, naming the rank at fault.
        msg: String,
    },
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
            Error::Cuda { op, message } => write!(f, "cuda {op}: {message}"),
            Error::OutOfMemory { bytes } => write!(
                f,
                "out of memory: could not allocate {bytes} bytes ({:.1} GiB)",
                *bytes as f64 / (1u64 << 30) as f64
            ),
            Error::Distributed { op, msg } => write!(f, "distributed {op}: {msg}"),
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
    /// An [`Error::Io`] for `path`, saying `what` was being done.
    pub(crate) fn io(path: &std::path::Path, what: &str, e: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
        }
    }

    /// Builds an [`Error::Cuda`] for the op or kernel `op`.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Cuda {
            op: op.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::InvalidArgument`] for the operation `op` (how a
    /// loss closure or a custom module reports bad input, too):
    /// `Error::invalid("my_loss", "needs class labels")`.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// An [`Error::OutOfMemory`] for `n` elements of `T`.
    pub(crate) fn out_of_memory<T>(n: usize) -> Self {
        Error::OutOfMemory {
            bytes: n.saturating_mul(std::mem::size_of::<T>()),
        }
    }

    /// An [`Error::IndexOutOfRange`] for `index`, or an
    /// [`Error::InvalidArgument`] saying the same when `index` does not fit
    /// in `i64` (so `usize::MAX` is shown as itself, not as −1).
    pub(crate) fn index_out_of_range(op: &'static str, index: usize, size: usize) -> Self {
        match i64::try_from(index) {
            Ok(index) => Error::IndexOutOfRange { op, index, size },
            Err(_) => Error::invalid(op, format!("index {index} out of range for size {size}")),
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

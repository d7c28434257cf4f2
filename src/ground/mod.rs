//! Ground types every layer shares and that know nothing of tensors:
//! element types ([`DType`]), devices ([`Device`]), layouts and their index
//! arithmetic ([`Layout`]), and the crate's error ([`Error`], in
//! [`crate::error`]). `backend` and the kernels build on these without
//! importing the tensor layer; [`crate::tensor`] re-exports them.

mod device;
mod dtype;
mod layout;

pub use crate::error::{Error, Result};
pub use device::Device;
pub use dtype::{DType, Float, WithDType};
pub use layout::{broadcast_shapes, checked_numel, contiguous_strides, Layout, MAX_NUMEL};
pub(crate) use layout::{collapse_dims, normalize_dim, normalize_dims, walk_runs};

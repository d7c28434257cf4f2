//! The argument structs of the kernels, field for field the structs of
//! `kernels/*.cu`.
//!
//! Each kernel takes its scalar arguments as one struct passed by value.
//! The Rust mirror is `#[repr(C)]` with the same fields in the same order;
//! fields are ordered 8-byte first, so neither side has hidden padding. The
//! size of every struct is asserted here at compile time and in the `.cu`
//! file by a `static_assert` with the same number, which NVRTC checks on
//! every compilation (`tests/cuda_kernels_compile.rs`).
//!
//! The constructors validate shapes and fold the derived quantities (merged
//! dims, output sizes), so launchers stay short.
//!
//! The families that own their launchers (`src/ops/{sigmoid_loss,plm,optim}`)
//! keep their argument structs beside them, in their `cuda.rs`.

use super::driver::KernelArg;

mod conv;
mod elementwise;
mod gemm;
mod index;
mod norm;
mod pool;
mod reduce;
#[cfg(test)]
mod tests;

pub use conv::Im2colParams;
pub use elementwise::ElementwiseParams;
pub use gemm::GemmParams;
pub use index::{GatherParams, IndexCheckParams, IndexSelectParams};
pub use norm::BatchNormParams;
pub use pool::Pool2dParams;
pub use reduce::{RowParams, StridedReduceParams};

/// The most dims a strided kernel handles (`FERRITE_MAX_DIMS`), after
/// merging the dims that are contiguous with each other.
pub const MAX_DIMS: usize = 8;

// Safety: every argument struct is #[repr(C)], made of plain integers and
// floats with no padding (sizes asserted), and mirrors the kernel's struct.
unsafe impl KernelArg for ElementwiseParams {}
unsafe impl KernelArg for RowParams {}
unsafe impl KernelArg for StridedReduceParams {}
unsafe impl KernelArg for GemmParams {}
unsafe impl KernelArg for Im2colParams {}
unsafe impl KernelArg for Pool2dParams {}
unsafe impl KernelArg for BatchNormParams {}
unsafe impl KernelArg for IndexCheckParams {}
unsafe impl KernelArg for IndexSelectParams {}
unsafe impl KernelArg for GatherParams {}

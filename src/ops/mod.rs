//! Tensor operations, one folder per op family.
//!
//! Each family's `mod.rs` holds the `Tensor` methods (shape rules, dtype
//! checks, op recording) and the backward rules; its `cpu.rs` holds the CPU
//! kernels, which work on raw buffers and layouts and know nothing of
//! autodiff. See `docs/OPS.md` for the checklist of ops and their tests.

pub mod autocast;
pub mod conv;
pub(crate) mod dispatch;
pub mod dropout;
pub mod elementwise;
pub mod index;
pub mod inplace;
#[cfg(all(test, feature = "cuda"))]
mod kernel_tests;
pub mod linear;
pub mod matmul;
pub mod norm;
#[cfg(feature = "cuda")]
pub(crate) mod on_cuda;
pub mod optim;
pub mod plm;
pub mod pool;
pub mod reduce;
pub mod sigmoid_loss;
pub mod softmax;
pub mod transfer;
pub mod view;

pub use autocast::{autocast, precision, AutocastGuard, Precision};
pub use conv::Conv2dParams;
pub use dropout::Mode;
pub use elementwise::{BinaryOp, CmpOp, UnaryOp};
pub use norm::BatchNormOptions;
pub use pool::{PadCount, Pool2dParams};
pub use reduce::KeepDim;

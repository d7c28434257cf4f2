//! Device infrastructure: the CPU threading policy and, with the `cuda`
//! feature, the CUDA context. No autodiff and no tensor semantics here.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

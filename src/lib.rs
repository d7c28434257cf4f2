//! # ferrite
//!
//! A small, readable deep-learning engine in pure Rust: an n-dimensional
//! [`Tensor`] with reverse-mode automatic differentiation, CPU kernels
//! (GEMM through `matrixmultiply`, parallelism through `rayon`) and an
//! optional CUDA backend (feature `cuda`).
//!
//! ```
//! use ferrite::{Tensor, DType};
//! let w = Tensor::from_vec(vec![0.5f32, -1.0], &[2]).unwrap().requires_grad_(true);
//! let x = Tensor::from_vec(vec![3.0f32, 4.0], &[2]).unwrap();
//! let loss = w.mul(&x).unwrap().sum_all().unwrap();
//! let grads = loss.backward().unwrap();
//! assert_eq!(grads.get(&w).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
//! ```
//!
//! Layers: [`ground`] (dtypes, devices, layouts, the error type: no
//! tensors) → [`tensor`] (the handle and its storage) → [`ops`] (kernels
//! and backward rules, one folder per op family) → [`autograd`] (graph
//! walk, gradient store, gradcheck); [`backend`] holds device
//! infrastructure and builds on `ground` only.

#![warn(missing_docs)]

// `#[derive(Module)]` writes paths as `::ferrite::...`; this makes them
// resolve inside ferrite too (the built-in layers use the derive).
extern crate self as ferrite;

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod distributed;
pub mod error;
mod exact_f64;
pub mod ground;
pub mod loss;
pub mod metrics;
mod named;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plm;
pub mod profile;
pub mod provenance;
pub mod tensor;
pub mod train;

/// The `rand` crate this version of ferrite is built with, for the
/// generators its API takes (`Tensor::randn(.., &mut rng)`): use
/// `ferrite::rand` rather than adding `rand` yourself, so the versions
/// always match.
pub use rand;

pub use autograd::{no_grad, GradStore};
pub use error::{Error, Result};
pub use ops::autocast::{autocast, precision, Precision};
pub use ops::KeepDim;
pub use tensor::{DType, Device, Tensor, TensorId};

/// The programs of `docs/TUTORIAL.md`, compiled and run as documentation
/// tests so that the tutorial always matches the code.
#[cfg(doctest)]
#[doc = include_str!("../docs/TUTORIAL.md")]
pub struct TutorialDoctests;

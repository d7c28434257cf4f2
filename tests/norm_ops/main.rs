//! Batch norm: forward values against a plain f64 loop implementation
//! written here, running-statistic updates, gradchecks (training and eval),
//! error cases, and large inputs through the parallel kernels.
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[x.clone()]` reads best here

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod forward;
mod gradients;
mod large;
mod reference;

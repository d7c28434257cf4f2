//! Forward values of every op family against hand-computed results or an
//! independent naive reference (plain loops over f64 in these modules).
//!
//! Large cases (2^20-element reductions, a 300x200x250 matmul, a transposed
//! 512x512 add) exercise the parallel and strided kernel paths.

#[path = "../common/mod.rs"]
mod common;

mod casts;
mod creation;
mod display;
mod elementwise;
mod helpers;
mod matmul;
mod reduce;
mod views;

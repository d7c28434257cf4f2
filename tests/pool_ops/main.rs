//! Pooling ops (`max_pool2d`, `avg_pool2d`, `adaptive_avg_pool2d`):
//! forward values worked out by hand, gradients by finite differences,
//! argmax rules (ties, NaN, −∞), errors, dtypes and layouts, and the
//! parallel path against a serial reference written here.

#[path = "../common/mod.rs"]
mod common;

mod by_hand;
mod gradients;
mod helpers;
mod inputs;
mod parallel;

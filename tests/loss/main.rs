//! The training objectives of `ferrite::loss`: closed-form values (extreme
//! logits included), f64 gradchecks of every loss in every reduction,
//! cross-entropy's weights / label smoothing / ignored index, class-balanced
//! weights, PyTorch parity (`tests/fixtures/gen_losses.py` wrote
//! `losses.json`) and argument errors.

#[path = "../common/mod.rs"]
mod common;

mod cross_entropy;
mod errors;
mod forward;
mod gradients;
mod helpers;
mod parity;

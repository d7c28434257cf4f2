//! Semantics of the autodiff engine: when ops are recorded, detaching,
//! accumulation, retained and freed graphs, explicit upstream gradients,
//! in-place parameter updates, deep graphs and user-defined ops.

#[path = "../common/mod.rs"]
mod common;

mod custom_op;
mod graphs;
mod helpers;
mod in_place;
mod recording;

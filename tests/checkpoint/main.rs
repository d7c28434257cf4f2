//! Checkpoints: safetensors round trips, the file format checked
//! independently, PyTorch interop, strict/non-strict loading, corrupt files,
//! atomic writes and bit-identical training resumption.

mod corrupt;
mod helpers;
mod interop;
mod loading;
mod round_trip;
mod training;

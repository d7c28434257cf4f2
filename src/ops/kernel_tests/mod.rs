//! Tests of the kernels' argument structs, and of each family's kernels
//! launched directly on the emulated GPU against simple Rust references
//! (clamped grids, strict synchronisation, the race check). The tensor-level
//! device suite is in `tests/device_*.rs`.

#[cfg(feature = "cuda-emulator")]
mod families;
#[cfg(feature = "cuda-emulator")]
mod kernels;
mod params;

//! Arguments of the batch-norm kernels (`kernels/norm.cu`).

use crate::error::{Error, Result};
use std::mem::size_of;

/// Arguments of `kernels/norm.cu`: the input seen as `n × c × s`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormParams {
    /// Batch size (dim 0 of the input).
    pub n: i64,
    /// Channels (dim 1 of the input).
    pub c: i64,
    /// Elements per channel per sample: product of the dims after 1 (1 for
    /// a rank-2 input).
    pub s: i64,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the batch statistics in the running update:
    /// `running ← momentum·batch + (1 − momentum)·running`.
    pub momentum: f32,
    /// 1: the statistics kernel also updates the running mean and variance.
    pub update_running: i32,
    /// Padding to a multiple of 8 bytes; always 0.
    pub _unused: i32,
}
const _: () = assert!(size_of::<BatchNormParams>() == 40);

impl BatchNormParams {
    /// For an input of `shape` (rank ≥ 2, channels on dim 1).
    pub fn new(shape: &[usize], eps: f64, momentum: f64, update_running: bool) -> Result<Self> {
        if shape.len() < 2 {
            return Err(Error::bad_shape(
                "batch_norm",
                format!("expected an input of rank ≥ 2 (N×C×…), got shape {shape:?}"),
            ));
        }
        let s: usize = shape[2..].iter().product();
        Ok(BatchNormParams {
            n: shape[0] as i64,
            c: shape[1] as i64,
            s: s as i64,
            eps: eps as f32,
            momentum: momentum as f32,
            update_running: i32::from(update_running),
            _unused: 0,
        })
    }
}

// Safety: #[repr(C)], plain integers and floats with no padding (sizes
// asserted above), mirroring the kernel's struct.
unsafe impl crate::backend::cuda::driver::KernelArg for BatchNormParams {}

//! Sums of integer tensors (`u8` masks from comparisons, `i64` labels or
//! counts), as PyTorch sums bools and integers: the result is `i64`, exact,
//! and not differentiable.
//!
//! On the host each element is widened to `i64` and added with an overflow
//! check. On a device a `u8` tensor is summed as f32 by the float reduction
//! (which accumulates in f64), exact up to [`DEVICE_EXACT_ELEMENTS`] per
//! output; more, or an `i64` tensor on a device, is an error rather than a
//! rounded count.

use crate::error::{Error, Result};
use crate::ops::KeepDim;
use crate::tensor::{DType, Device, Tensor};

/// Largest number of `u8` elements summed into one output on a device:
/// 255 · 2^16 < 2^24, so such a sum is an exact integer in f32.
const DEVICE_EXACT_ELEMENTS: usize = 1 << 16;

/// The `i64` sum of the integer tensor `x` over the sorted `dims`, shaped
/// `out_shape`.
pub(super) fn sum(x: &Tensor, dims: &[usize], out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "sum";
    let per_output: usize = dims.iter().map(|&d| x.shape()[d]).product();
    match x.device() {
        Device::Cpu => {
            let values: Vec<i64> = match x.dtype() {
                DType::U8 => x.to_vec::<u8>()?.into_iter().map(i64::from).collect(),
                DType::I64 => x.to_vec::<i64>()?,
                dtype => return Err(Error::UnsupportedDType { op: OP, dtype }),
            };
            let sums = sum_rows(x.shape(), dims, &values)?;
            Tensor::from_vec(sums, out_shape)
        }
        Device::Cuda(_) => {
            if x.dtype() != DType::U8 || per_output > DEVICE_EXACT_ELEMENTS {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "an exact sum of {per_output} {:?} elements per output is not available on {:?}: \
                         sums of u8 up to {DEVICE_EXACT_ELEMENTS} elements per output are (move the tensor to the CPU for more)",
                        x.dtype(),
                        x.device()
                    ),
                ));
            }
            let d: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
            x.to_dtype(DType::F32)?
                .sum(&d, KeepDim::No)?
                .reshape(out_shape)?
                .to_dtype(DType::I64)
        }
    }
}

/// Sums the row-major `values` of `shape` over the sorted `dims`.
fn sum_rows(shape: &[usize], dims: &[usize], values: &[i64]) -> Result<Vec<i64>> {
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !dims.contains(d)).collect();
    let out_len: usize = kept.iter().map(|&d| shape[d]).product();
    let mut out = vec![0i64; out_len];
    let mut index = vec![0usize; shape.len()];
    for &v in values {
        let mut o = 0;
        for &d in &kept {
            o = o * shape[d] + index[d];
        }
        out[o] = out[o]
            .checked_add(v)
            .ok_or_else(|| Error::invalid("sum", "the integer sum overflows i64"))?;
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

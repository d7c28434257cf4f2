//! Shared helpers: counting inputs, value reads, tie-free inputs and pooling parameters.

use crate::common;
use ferrite::ops::Pool2dParams;
use ferrite::Tensor;
use rand::seq::SliceRandom;

/// `1..=n` as an f64 `shape` tensor (x[r][c] = W·r + c + 1 in one plane).
pub(super) fn counting(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((1..=n).map(|v| v as f64).collect::<Vec<_>>(), shape).unwrap()
}

pub(super) fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// Distinct values (a shuffled `0..n`, scaled and shifted so some are
/// negative) so max pooling has no ties and finite differences of step
/// 1e-6 never reorder two elements.
pub(super) fn no_ties(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.1 - n as f64 * 0.05).collect();
    v.shuffle(&mut common::rng(seed));
    Tensor::from_vec(v, shape).unwrap()
}

pub(super) fn p(kernel: usize, stride: usize, pad: usize) -> Pool2dParams {
    Pool2dParams::new(kernel).stride(stride).padding(pad)
}

//! Shared helpers: f64 tensors, leaves that require grad, values and gradients.

use ferrite::autograd::GradStore;
use ferrite::Tensor;

pub(super) fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

pub(super) fn leaf(v: &[f64], shape: &[usize]) -> Tensor {
    t64(v, shape).requires_grad_(true)
}

pub(super) fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

pub(super) fn grad_of(store: &GradStore, t: &Tensor) -> Vec<f64> {
    vals(store.get(t).expect("gradient missing"))
}

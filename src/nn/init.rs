//! PyTorch's default initialisations, drawn from an explicit generator.

use crate::error::Result;
use crate::tensor::{DType, Tensor};
use rand::Rng;

/// `U(−1/√fan_in, 1/√fan_in)`: what `nn.Linear` and `nn.Conv2d` use by
/// default for weights and biases (Kaiming-uniform with a = √5 reduces to
/// this bound).
pub fn default_uniform<R: Rng + ?Sized>(
    shape: &[usize],
    fan_in: usize,
    rng: &mut R,
) -> Result<Tensor> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Tensor::rand(shape, -bound, bound, DType::F32, rng)
}

/// `N(0, 2 / fan_out)`: Kaiming-normal for ReLU networks in fan-out mode,
/// what torchvision's ResNets use for every convolution.
pub fn kaiming_normal_fan_out<R: Rng + ?Sized>(
    shape: &[usize],
    fan_out: usize,
    rng: &mut R,
) -> Result<Tensor> {
    let std = (2.0 / fan_out.max(1) as f64).sqrt();
    Tensor::randn(shape, 0.0, std, DType::F32, rng)
}

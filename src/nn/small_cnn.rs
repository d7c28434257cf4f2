//! A small convolutional network for 28×28 images (MNIST-sized).

use super::{BatchNorm2d, Bias, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential};
use crate::error::Result;
use crate::ops::{Conv2dParams, Pool2dParams};
use rand::Rng;

/// conv 3×3 (32) → BN → ReLU → max-pool 2 → conv 3×3 (64) → BN → ReLU →
/// max-pool 2 → linear (64·7·7 → `classes`): about 50 K parameters for 10
/// classes; reaches 99 % on MNIST in a few epochs.
///
/// ```
/// use ferrite::nn::{small_cnn, Module};
/// use ferrite::{rand::SeedableRng, DType, Tensor};
/// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
/// let net = small_cnn(1, 10, &mut rng)?;
/// assert_eq!(net.forward(&Tensor::zeros(&[4, 1, 28, 28], DType::F32)?)?.shape(), &[4, 10]);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn small_cnn<R: Rng + ?Sized>(
    in_channels: usize,
    classes: usize,
    rng: &mut R,
) -> Result<Sequential> {
    let same = Conv2dParams::default().padding(1);
    Ok(Sequential::new()
        .with(Conv2d::new(in_channels, 32, 3, same, Bias::No, rng)?)
        .with(BatchNorm2d::new(32)?)
        .with(ReLU)
        .with(MaxPool2d(Pool2dParams::new(2)))
        .with(Conv2d::new(32, 64, 3, same, Bias::No, rng)?)
        .with(BatchNorm2d::new(64)?)
        .with(ReLU)
        .with(MaxPool2d(Pool2dParams::new(2)))
        .with(Flatten)
        .with(Linear::new(64 * 7 * 7, classes, Bias::Yes, rng)?))
}

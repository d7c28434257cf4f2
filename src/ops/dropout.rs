//! Dropout (`torch.nn.functional.dropout`): zeroes each element with
//! probability `p` during training and scales the survivors by `1/(1 − p)`,
//! so the expected value is unchanged.
//!
//! The mask is drawn from a generator passed by the caller (no global RNG),
//! so a seed reproduces it. The op is built from existing differentiable
//! ops: `y = x ⊙ mask` with `mask ∈ {0, 1/(1 − p)}` a constant tensor, so
//! the backward `dx = dy ⊙ mask` comes from `mul` and needs no new `GradFn`.
//!
//! On a device the mask is still drawn on the host, from the same
//! generator and in the same order, so a seed gives the same mask on every
//! device. Only the keep/drop bits travel (one byte per element); the
//! scaled mask is built on the device from them and the scale rounded to
//! the tensor's dtype as on the CPU, so results match the CPU bit for bit.

use crate::error::{Error, Result};
use crate::tensor::{CpuStorage, Device, Tensor};
use rand::Rng;

/// Whether an op runs as in training or as in evaluation (PyTorch's
/// `training=True` / `training=False`, `model.train()` / `model.eval()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Training: dropout drops.
    #[default]
    Train,
    /// Evaluation: dropout is the identity.
    Eval,
}

impl Mode {
    /// [`Mode::Train`] when `training`, else [`Mode::Eval`] (for modules
    /// that keep PyTorch's `training` flag).
    pub fn from_training(training: bool) -> Self {
        if training {
            Mode::Train
        } else {
            Mode::Eval
        }
    }
}

impl Tensor {
    /// Dropout with drop probability `p` in [0, 1].
    ///
    /// ```
    /// use ferrite::ops::Mode;
    /// use ferrite::{rand::SeedableRng, DType, Tensor};
    /// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
    /// let x = Tensor::ones(&[1000], DType::F32)?;
    /// let y = x.dropout(0.5, Mode::Train, &mut rng)?.to_vec::<f32>()?;
    /// // Survivors are scaled by 1 / (1 - p); about half are dropped.
    /// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    /// let kept = y.iter().filter(|&&v| v == 2.0).count();
    /// assert!((400..600).contains(&kept));
    /// // In evaluation it is the identity.
    /// let same = x.dropout(0.5, Mode::Eval, &mut rng)?;
    /// assert_eq!(same.to_vec::<f32>()?, vec![1.0; 1000]);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    ///
    /// - [`Mode::Eval`] or `p == 0`: returns `self` unchanged (the same handle,
    ///   so gradients pass straight through);
    /// - `p == 1`: `self · 0`, zeros that stay connected to the graph (zero
    ///   gradient), as PyTorch;
    /// - otherwise `self ⊙ mask / (1 − p)`, with each mask element kept
    ///   (= 1) with probability `1 − p`: element `i` (row-major) is kept when
    ///   the `i`-th `rng.random::<f64>()` draw is `< 1 − p`. The scaled mask
    ///   is built in `self`'s dtype, and the gradient is `dy ⊙ mask / (1 − p)`.
    ///
    /// Errors: `p` outside [0, 1] (or NaN), a non-float tensor.
    pub fn dropout<R: Rng + ?Sized>(&self, p: f64, mode: Mode, rng: &mut R) -> Result<Tensor> {
        let _profile = crate::profile::scope("dropout");
        self.check_float("dropout")?;
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("probability p must be in [0, 1], got {p}"),
            ));
        }
        if mode == Mode::Eval || p == 0.0 {
            return Ok(self.clone());
        }
        if p == 1.0 {
            return self.mul_scalar(0.0);
        }
        let keep = 1.0 - p;
        let scale = 1.0 / keep;
        if let device @ Device::Cuda(_) = self.device() {
            let mut bits = crate::backend::cpu::pool::try_with_capacity(self.numel())?;
            bits.extend((0..self.numel()).map(|_| u8::from(rng.random::<f64>() < keep)));
            let kept =
                Tensor::from_storage(CpuStorage::U8(bits), self.shape())?.to_device(device)?;
            let scale = Tensor::from_storage(
                CpuStorage::from_f64_iter(self.dtype(), std::iter::once(scale))?,
                &[],
            )?
            .to_device(device)?;
            let mask = kept.to_dtype(self.dtype())?.mul(&scale)?;
            return self.mul(&mask);
        }
        let mask = CpuStorage::from_f64_iter(
            self.dtype(),
            (0..self.numel()).map(|_| {
                if rng.random::<f64>() < keep {
                    scale
                } else {
                    0.0
                }
            }),
        )?;
        self.mul(&Tensor::from_storage(mask, self.shape())?)
    }
}

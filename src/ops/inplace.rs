//! In-place updates, for optimizers and other code that owns parameters.
//!
//! These ops are not recorded in the graph. To keep backward honest they
//! refuse to run while grad mode is on for a tensor that requires a
//! gradient: update parameters inside [`no_grad`](crate::no_grad), after
//! backward, as `torch.no_grad()` requires in PyTorch.

use crate::autograd::is_grad_enabled;
use crate::error::{Error, Result};
use crate::ops::dispatch::cuda_arm;
use crate::tensor::{Device, Tensor};

impl Tensor {
    fn check_writable(&self, op: &'static str, src: &Tensor) -> Result<()> {
        if is_grad_enabled() && self.requires_grad() {
            return Err(Error::Autograd(format!(
                "{op}: in-place update of a tensor that requires a gradient; run it inside no_grad"
            )));
        }
        if !self.is_contiguous() {
            return Err(Error::invalid(
                op,
                format!(
                    "destination must be contiguous, got strides {:?}",
                    self.strides()
                ),
            ));
        }
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: src.shape().to_vec(),
            });
        }
        self.check_same(op, src)
    }

    /// Overwrites this tensor's elements with those of `src` (same shape and
    /// dtype). Every handle sharing the storage sees the new values.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        let _profile = crate::profile::update_scope("assign");
        self.check_writable("assign", src)?;
        match self.device() {
            Device::Cpu => {
                // Read first (src may share our storage), then write.
                let values =
                    crate::ops::elementwise::cpu::copy(&*src.cpu_storage("assign")?, src.layout())?;
                let off = self.layout().offset();
                let n = self.numel();
                let mut dst = self.cpu_storage_mut("assign")?;
                crate::tensor::with_storage!(&mut *dst, |d: T| {
                    let s = <T as crate::tensor::StorageElement>::slice(&values)
                        .expect("dtype checked");
                    d[off..off + n].copy_from_slice(s);
                });
            }
            Device::Cuda(_) => cuda_arm!(assign_on_device(self, src))?,
        }
        Ok(())
    }

    /// `self += by`, in place, for an i64 tensor (counters such as batch
    /// norm's `num_batches_tracked`): on a device the addition runs there,
    /// so nothing waits for a download. Overflow is an error on the host
    /// (nothing is changed); on a device the count wraps as two's complement.
    pub fn add_int_(&self, by: i64) -> Result<()> {
        const OP: &str = "add_int_";
        if self.dtype() != crate::tensor::DType::I64 {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: self.dtype(),
            });
        }
        if !self.is_contiguous() {
            return Err(Error::invalid(OP, "the tensor must be contiguous"));
        }
        match self.device() {
            Device::Cpu => {
                let span = self.layout().offset()..self.layout().offset() + self.numel();
                let mut s = self.cpu_storage_mut(OP)?;
                let values = <i64 as crate::tensor::StorageElement>::slice_mut(&mut s)
                    .expect("dtype checked");
                let values = &mut values[span];
                if let Some(v) = values.iter().find(|v| v.checked_add(by).is_none()) {
                    return Err(Error::invalid(OP, format!("{v} + {by} overflows i64")));
                }
                values.iter_mut().for_each(|v| *v += by);
                Ok(())
            }
            Device::Cuda(_) => cuda_arm!(crate::ops::elementwise::cuda::add_int_(self, by)),
        }
    }

    /// `self += alpha * other`, in place (float dtypes).
    pub fn add_scaled_(&self, other: &Tensor, alpha: f64) -> Result<()> {
        let _profile = crate::profile::update_scope("add_scaled");
        self.check_writable("add_scaled_", other)?;
        let updated = crate::no_grad(|| self.add(&other.mul_scalar(alpha)?))?;
        self.assign(&updated)
    }
}

/// [`Tensor::assign`] on a CUDA device: `src` compacted (a new buffer, so
/// an overlap with `dst` is harmless), then copied device to device into
/// `dst`'s elements; the write counts as an in-place modification.
#[cfg(feature = "cuda")]
fn assign_on_device(dst: &Tensor, src: &Tensor) -> Result<()> {
    use crate::ops::on_cuda::operand;
    const OP: &str = "assign";
    let values = crate::ops::elementwise::cuda::copy(src)?;
    let from = operand(OP, &values)?;
    let to = operand(OP, dst)?;
    let size = dst.dtype().size_in_bytes();
    let _write = dst.storage_mut();
    to.dev
        .copy_on_device(to.at(dst), from.ptr, dst.numel() * size)
}

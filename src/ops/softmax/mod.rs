//! `softmax` and `log_softmax` along one dimension, with closed-form
//! backward rules:
//! softmax `dx = y ⊙ (g − Σ g ⊙ y)`; log-softmax `dx = g − eʸ ⊙ Σ g`,
//! the sums taken along the softmax dimension.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::GradFn;
use crate::error::Result;
use crate::ops::dispatch::cuda_arm;
use crate::ops::KeepDim;
use crate::tensor::{normalize_dim, Device, Layout, Tensor};

struct SoftmaxBackward {
    input: Tensor,
    dim: isize,
    log: bool,
}

impl GradFn for SoftmaxBackward {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let d = [self.dim];
        let grad = if self.log {
            g.sub(&y.exp()?.mul(&g.sum(&d, KeepDim::Yes)?)?)?
        } else {
            y.mul(&g.sub(&g.mul(y)?.sum(&d, KeepDim::Yes)?)?)?
        };
        Ok(vec![Some(grad)])
    }
}

impl Tensor {
    fn softmax_impl(&self, dim: isize, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax" } else { "softmax" };
        self.check_float(name)?;
        let d = normalize_dim(name, dim, self.ndim().max(1))?;
        if self.ndim() == 0 {
            return self.reshape(&[1])?.softmax_impl(0, log)?.reshape(&[]);
        }
        // Move `dim` last, run the row kernel, and view the result back.
        let last = self.ndim() - 1;
        let mut order: Vec<usize> = (0..self.ndim()).collect();
        order.swap(d, last);
        let moved = self.layout().permute(&order);
        let computed = match self.device() {
            Device::Cpu => {
                let s = cpu::softmax_last_dim(&*self.cpu_storage(name)?, &moved, log)?;
                Tensor::from_storage(s, moved.shape())?
            }
            Device::Cuda(_) => cuda_arm!({
                let rows = self.detach().view_with(name, moved.clone())?.contiguous()?;
                cuda::softmax_rows(&rows, log)
            })?,
        };
        let out = if d == last {
            computed
        } else {
            computed.view_with("softmax", Layout::contiguous(moved.shape()).permute(&order))?
        };
        Ok(out.track(&[self], || {
            Box::new(SoftmaxBackward {
                input: self.clone(),
                dim: d as isize,
                log,
            })
        }))
    }

    /// `exp(x) / Σ exp(x)` along `dim`, computed stably.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        let _profile = crate::profile::scope("softmax");
        self.softmax_impl(dim, false)
    }

    /// `x − log Σ exp(x)` along `dim`, computed stably.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        let _profile = crate::profile::scope("log_softmax");
        self.softmax_impl(dim, true)
    }
}

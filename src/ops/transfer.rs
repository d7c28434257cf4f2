//! Moving tensors between devices: [`Tensor::to_device`], differentiable
//! (the gradient goes back to the source device), like PyTorch's `.to()`.

use crate::autograd::GradFn;
use crate::error::Result;
use crate::tensor::{Device, Tensor};

impl Tensor {
    /// This tensor on `device`: the same handle when already there,
    /// otherwise a contiguous copy (an upload to a GPU, a download from
    /// one). Gradients flow back to the source device. Opening a device
    /// that cannot be used (no GPU, no CUDA support in this build) is an
    /// [`Error::DeviceUnavailable`](crate::Error::DeviceUnavailable).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let _profile = crate::profile::scope("to_device");
        // Copy exactly the elements: a contiguous view that covers its
        // whole buffer as is, anything else compacted on its own device.
        let exact = self.is_contiguous()
            && self.layout().offset() == 0
            && self.storage_len() == self.numel();
        let src = if exact {
            self.detach()
        } else {
            self.detach().contiguous_copy()?
        };
        let copied = src.storage().copy_to(device)?;
        let out = Tensor::from_storage(copied, self.shape())?;
        Ok(out.track(&[self], || {
            Box::new(ToDeviceBackward {
                input: self.clone(),
            })
        }))
    }
}

/// Backward of [`Tensor::to_device`]: the gradient, moved back.
struct ToDeviceBackward {
    input: Tensor,
}

impl GradFn for ToDeviceBackward {
    fn name(&self) -> &'static str {
        "to_device"
    }

    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }

    fn backward(&self, _output: &Tensor, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad_output.to_device(self.input.device())?)])
    }
}

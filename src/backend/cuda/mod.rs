//! CUDA device infrastructure (feature `cuda`).
//!
//! cudarc loads `libcuda` and `libnvrtc` dynamically at run time, so this
//! module compiles on machines without a CUDA toolkit. Because cudarc
//! panics when a library is missing, every entry point first checks that
//! the libraries can be loaded and returns [`Error::DeviceUnavailable`]
//! otherwise. CUDA tensors and kernels (`kernels/*.cu`, compiled with NVRTC
//! at first use) build on this context.

use crate::error::{Error, Result};
use crate::tensor::Device;
use cudarc::driver::CudaContext;
use std::sync::Arc;

/// An initialised CUDA context on one GPU.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
}

fn unavailable(ordinal: usize, msg: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        msg: msg.into(),
    }
}

/// True when the CUDA driver library can be loaded and reports a GPU.
pub fn is_available() -> bool {
    device_count().map(|n| n > 0).unwrap_or(false)
}

/// Number of CUDA devices, or an error if the driver cannot be loaded.
pub fn device_count() -> Result<usize> {
    // Safety: only probes whether the shared library can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(unavailable(
            0,
            "the CUDA driver library (libcuda) was not found",
        ));
    }
    let n = CudaContext::device_count()
        .map_err(|e| unavailable(0, format!("cuInit/cuDeviceGetCount failed: {e:?}")))?;
    Ok(n.max(0) as usize)
}

/// True when the NVRTC runtime compiler can be loaded.
pub fn nvrtc_available() -> bool {
    // Safety: only probes whether the shared library can be opened.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

impl CudaBackend {
    /// Opens the primary context of GPU `ordinal`.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(unavailable(
                ordinal,
                format!("only {count} CUDA device(s) present"),
            ));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| unavailable(ordinal, format!("context creation failed: {e:?}")))?;
        Ok(CudaBackend { ctx })
    }

    /// The GPU's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> Result<String> {
        self.ctx
            .name()
            .map_err(|e| unavailable(self.ctx.ordinal(), format!("{e:?}")))
    }

    /// Compute capability `(major, minor)`, which selects the NVRTC target.
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        self.ctx
            .compute_capability()
            .map_err(|e| unavailable(self.ctx.ordinal(), format!("{e:?}")))
    }

    /// The underlying cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

//! CUDA device infrastructure (feature `cuda`).
//!
//! cudarc loads `libcuda` and `libnvrtc` dynamically at run time, so this
//! module compiles on machines without a CUDA toolkit. cudarc panics when a
//! library is missing, so every entry point first checks that the libraries
//! can be loaded and returns [`Error::DeviceUnavailable`] otherwise: no
//! driver, no GPU or no NVRTC is a clear error, never a panic.
//!
//! - [`driver`]: the [`Driver`](driver::Driver) seam (memory, copies,
//!   launches by kernel name) with two implementations: a real GPU through
//!   cudarc, and the emulated GPU (feature `cuda-emulator`).
//! - [`device`]: [`CudaDevice`], one device behind its driver, with its
//!   caching allocator, and the registry [`device()`] that tensors use.
//! - [`allocator`]: the size-class caching allocator (device independent,
//!   unit-tested on the CPU through the [`RawMemory`] trait).
//! - [`buffer`]: [`CudaBuffer`], a device allocation that returns to the
//!   cache when dropped.
//! - [`compile`]: the `kernels/*.cu` sources, embedded in the binary and
//!   compiled with NVRTC at first use (CUBIN for the GPU's architecture),
//!   cached in the process and on disk, or taken from a prebuilt bundle.
//! - [`check`]: loads every kernel family and checks each launch
//!   configuration against the device's and the kernel's limits.
//! - [`launch`]: grid and block sizes of each kernel shape, and the most
//!   dims a strided kernel takes.
//! - [`storage`]: [`CudaStorage`], the elements of a tensor on a device.
//! - `emulator` (feature `cuda-emulator`): the kernels compiled as C++ and
//!   run on an emulated GPU on the CPU, for tests without a GPU.
//!
//! The launchers live with their ops (`src/ops/<family>/cuda.rs`); this
//! module imports nothing from the op or tensor layers. See `docs/CUDA.md`.

pub mod allocator;
pub mod buffer;
pub mod check;
pub mod compile;
pub mod device;
pub mod driver;
#[cfg(feature = "cuda-emulator")]
pub(crate) mod emulator;
pub mod launch;
pub mod storage;

pub use allocator::{AllocatorStats, CachingAllocator, RawMemory};
pub use buffer::CudaBuffer;
pub use device::{device, emulation_requested, CudaDevice, TransferStats, EMULATE_ENV};
pub use driver::DevicePtr;
pub use storage::CudaStorage;

use crate::error::{Error, Result};
use crate::ground::Device;
use cudarc::driver::CudaContext;

/// The error for GPU `ordinal` being unusable, with the reason in words.
pub(crate) fn unavailable(ordinal: usize, msg: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        msg: msg.into(),
    }
}

/// The error for a failed driver call `what` on GPU `ordinal`.
pub(crate) fn driver_error(ordinal: usize, what: &str, e: cudarc::driver::DriverError) -> Error {
    unavailable(ordinal, format!("{what} failed: {e:?}"))
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

/// An error unless NVRTC can be loaded (checked before any NVRTC call,
/// which would otherwise panic inside cudarc).
pub(crate) fn require_nvrtc(ordinal: usize) -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(unavailable(
            ordinal,
            "the NVRTC runtime compiler (libnvrtc) was not found; it compiles the CUDA kernels \
             and ships with the CUDA toolkit (or the nvidia-cuda-nvrtc wheel): add its directory \
             to LD_LIBRARY_PATH",
        ))
    }
}

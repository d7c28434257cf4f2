//! The driver seam under [`CudaDevice`](super::CudaDevice): the few calls a
//! device needs (memory, copies, kernel launches by name, synchronisation),
//! with two implementations:
//!
//! - [`gpu::GpuDriver`]: a real NVIDIA GPU through cudarc (the CUDA driver
//!   API, kernels compiled by NVRTC);
//! - `emulated::EmulatedDriver` (feature `cuda-emulator`): the emulated
//!   GPU, which runs the same `kernels/*.cu` compiled as C++ on the CPU.
//!
//! Everything above this trait (buffers, the caching allocator, launchers,
//! tensors) is the same code on both, so the emulator tests the whole CUDA
//! path except the hardware itself.

pub mod attributes;
pub mod gpu;
mod staging;

#[cfg(feature = "cuda-emulator")]
pub mod emulated;

pub use attributes::{DeviceLimits, KernelAttributes};

use crate::backend::cuda::compile::ModuleLoad;
use crate::error::Result;
use cudarc::driver::LaunchConfig;

/// A device address (`CUdeviceptr` on a GPU; a host address of the
/// emulator's memory on the emulated GPU).
pub type DevicePtr = u64;

/// The calls a device makes. Every call is ordered on the device's single
/// stream: a copy or launch may return before it has run, and
/// [`Driver::synchronize`] (or a copy to the host) waits for everything
/// queued before it.
pub trait Driver: Send + Sync {
    /// Allocates `bytes` bytes of device memory (uninitialised).
    fn alloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// Frees memory obtained from [`Driver::alloc`].
    fn free(&self, ptr: DevicePtr);
    /// Copies `src` to device address `dst`.
    fn copy_htod(&self, dst: DevicePtr, src: &[u8]) -> Result<()>;
    /// Copies `dst.len()` bytes from device address `src` into `dst`, once
    /// everything queued before has finished.
    fn copy_dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()>;
    /// Copies `bytes` bytes between device addresses.
    fn copy_dtod(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()>;
    /// Sets `bytes` bytes at `dst` to `value`.
    fn memset(&self, dst: DevicePtr, value: u8, bytes: usize) -> Result<()>;
    /// Queues kernel `entry` of `kernels/<family>.cu` with launch shape
    /// `cfg`; `args[i]` holds the bytes of the kernel's i-th argument (the
    /// parameter struct by value, then 8-byte device pointers), as
    /// `cuLaunchKernel` takes them.
    fn launch(&self, family: &str, entry: &str, cfg: &LaunchConfig, args: &[&[u8]]) -> Result<()>;
    /// Waits until every queued copy and kernel has finished.
    fn synchronize(&self) -> Result<()>;
    /// The device's name, e.g. "NVIDIA H100 80GB HBM3" or "emulated GPU".
    fn name(&self) -> Result<String>;
    /// Compute capability `(major, minor)`.
    fn compute_capability(&self) -> (i32, i32);
    /// The architecture the kernels are built for (e.g. `"sm_90"`).
    fn arch(&self) -> &str;
    /// True for the emulated GPU.
    fn is_emulated(&self) -> bool;
    /// Makes kernel family `family` ready to launch (compiles and loads
    /// it on a GPU; checks that the emulated GPU has each of its kernels)
    /// and says how.
    fn load_family(&self, family: &str) -> Result<ModuleLoad>;
    /// The resources of kernel `entry` of `family` (loading the family if
    /// needed); `None` where the device has no such figures (the emulated
    /// GPU).
    fn kernel_attributes(&self, family: &str, entry: &str) -> Result<Option<KernelAttributes>>;
    /// The device's launch limits.
    fn limits(&self) -> Result<DeviceLimits>;
}

/// A value passed to a kernel by value: plain bytes with no pointers into
/// host memory and no padding that matters (the `#[repr(C)]` parameter
/// structs, scalars, device addresses).
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or primitive) and hold no references.
pub unsafe trait KernelArg: Copy {
    /// The value's bytes, as the kernel reads them.
    fn arg_bytes(&self) -> &[u8] {
        // Safety: `Self: KernelArg` is a plain-old-data type (the trait's
        // contract), so its bytes can be read for its whole size.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                std::mem::size_of::<Self>(),
            )
        }
    }
}

// Safety: primitives are plain old data.
unsafe impl KernelArg for u64 {}
// Safety: as above.
unsafe impl KernelArg for i64 {}
// Safety: as above.
unsafe impl KernelArg for u32 {}
// Safety: as above.
unsafe impl KernelArg for f32 {}

/// An element type whose values can be copied to and from a device as raw
/// bytes: any bit pattern is a valid value and there is no padding.
///
/// # Safety
/// Implementors must be primitive numbers (or `#[repr(transparent)]` over
/// one) for which every bit pattern is valid.
pub unsafe trait Pod: Copy + Default + Send + Sync + 'static {}

// Safety: primitive numbers; every bit pattern is a value.
unsafe impl Pod for u8 {}
// Safety: as above.
unsafe impl Pod for u16 {}
// Safety: as above.
unsafe impl Pod for u32 {}
// Safety: as above.
unsafe impl Pod for u64 {}
// Safety: as above.
unsafe impl Pod for i32 {}
// Safety: as above.
unsafe impl Pod for i64 {}
// Safety: as above.
unsafe impl Pod for f32 {}
// Safety: as above.
unsafe impl Pod for f64 {}
// Safety: `half::bf16` is a transparent u16.
unsafe impl Pod for half::bf16 {}
// Safety: `half::f16` is a transparent u16.
unsafe impl Pod for half::f16 {}

/// The bytes of `values`.
pub fn pod_bytes<T: Pod>(values: &[T]) -> &[u8] {
    // Safety: `T: Pod` has no padding, so all its bytes are initialised.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

/// The bytes of `values`, writable.
pub fn pod_bytes_mut<T: Pod>(values: &mut [T]) -> &mut [u8] {
    // Safety: as in `pod_bytes`; any bytes written form valid `T`s (`Pod`).
    unsafe {
        std::slice::from_raw_parts_mut(
            values.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(values),
        )
    }
}

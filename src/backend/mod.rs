//! Device backends below the op layer: the CPU backend and, with the `cuda`
//! feature, the CUDA one (a real GPU or the emulated GPU). No autodiff and
//! no tensor semantics here.
//!
//! [`Storage`] is the one seam between a tensor and its device: a tensor's
//! buffer is either host memory ([`CpuStorage`]) or device memory
//! (`CudaStorage`), and each op family matches on it once.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::error::{Error, Result};
use crate::ground::{DType, Device};
pub use cpu::CpuStorage;
#[cfg(feature = "cuda")]
pub use cuda::CudaStorage;

/// How to run the CUDA path on a machine without a GPU, appended to the
/// error of a CUDA device that cannot be opened.
const EMULATOR_HINT: &str = "without a GPU, the same kernels run on the CPU in the emulated GPU: \
                             build with `--features cuda-emulator` and set FERRITE_CUDA_EMULATE=1";

/// Opens `device` (a no-op for the CPU), so that a program can say at once
/// when the device it was asked for cannot be used: no CUDA support in this
/// build, no driver, no GPU or no NVRTC is an
/// [`Error::DeviceUnavailable`] saying why and how to run on the emulated
/// GPU instead.
pub fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => cuda::device(n).map(|_| ()).map_err(|e| match e {
            Error::DeviceUnavailable { device, msg } if !cuda::emulation_requested() => {
                Error::DeviceUnavailable {
                    device,
                    msg: format!("{msg} ({EMULATOR_HINT})"),
                }
            }
            e => e,
        }),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::DeviceUnavailable {
            device,
            msg: format!(
                "this build has no CUDA backend: build with `--features cuda` ({EMULATOR_HINT})"
            ),
        }),
    }
}

/// The buffer behind a tensor and its views, on the device it lives on.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// Memory of a CUDA device (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda(CudaStorage),
}

impl Storage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.dtype(),
        }
    }

    /// Number of stored elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.len(),
        }
    }

    /// True when no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device the elements live on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.device().device(),
        }
    }

    /// The host storage, or [`Error::DeviceMismatch`] naming `op` when the
    /// elements live on a device: nothing is ever downloaded silently.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn cpu(&self, op: &'static str) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Err(not_on_cpu(op, s.device().device())),
        }
    }

    /// The host storage, writable (see [`Storage::cpu`]).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn cpu_mut(&mut self, op: &'static str) -> Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Err(not_on_cpu(op, s.device().device())),
        }
    }

    /// A copy of the first `len` elements on `device` (upload, download, or
    /// a copy between devices).
    pub fn copy_to(&self, device: Device) -> Result<Storage> {
        match (self, device) {
            (Storage::Cpu(s), Device::Cpu) => Ok(Storage::Cpu(s.clone())),
            #[cfg(feature = "cuda")]
            (Storage::Cpu(s), Device::Cuda(n)) => {
                Ok(Storage::Cuda(CudaStorage::upload(&cuda::device(n)?, s)?))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(s), Device::Cpu) => Ok(Storage::Cpu(s.download()?)),
            #[cfg(feature = "cuda")]
            (Storage::Cuda(s), Device::Cuda(n)) => {
                // Between two devices: through the host (peer copies are
                // not wired).
                Ok(Storage::Cuda(CudaStorage::upload(
                    &cuda::device(n)?,
                    &s.download()?,
                )?))
            }
            #[cfg(not(feature = "cuda"))]
            (Storage::Cpu(_), device) => Err(Error::DeviceUnavailable {
                device,
                msg: "this build has no CUDA backend: build with `--features cuda` \
                      (or `cuda-emulator` for the emulated GPU)"
                    .into(),
            }),
        }
    }
}

impl From<CpuStorage> for Storage {
    fn from(s: CpuStorage) -> Self {
        Storage::Cpu(s)
    }
}

#[cfg(feature = "cuda")]
impl From<CudaStorage> for Storage {
    fn from(s: CudaStorage) -> Self {
        Storage::Cuda(s)
    }
}

/// The error for a host-only access to a tensor that lives on `device`.
#[cfg(feature = "cuda")]
pub(crate) fn not_on_cpu(op: &'static str, device: Device) -> Error {
    Error::DeviceMismatch {
        op,
        lhs: Device::Cpu,
        rhs: device,
    }
}

//! What every op family's `cuda.rs` needs: the device operand of a tensor,
//! fresh device outputs, kernel-name suffixes, and the check that operands
//! share one device. Only compiled with the `cuda` feature.

use crate::backend::cuda::{CudaDevice, CudaStorage, DevicePtr};
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::tensor::{checked_numel, DType, Tensor};
use std::sync::Arc;

/// A tensor's device buffer, read under a short lock. The tensor handle the
/// caller holds keeps the buffer alive; kernels queued on it run in stream
/// order before any later reuse of its memory.
pub(crate) struct Operand {
    /// The device holding the buffer.
    pub dev: Arc<CudaDevice>,
    /// Address of the buffer's first element (the layout's offsets count
    /// from here).
    pub ptr: DevicePtr,
}

/// The device operand of `t`, or an error naming `op` when `t` is not on a
/// CUDA device.
pub(crate) fn operand(op: &'static str, t: &Tensor) -> Result<Operand> {
    device_buffer(op, &t.storage())
}

/// The device and buffer address of storage `s`.
fn device_buffer(op: &'static str, s: &Storage) -> Result<Operand> {
    match s {
        Storage::Cuda(s) => Ok(Operand {
            dev: s.device().clone(),
            ptr: s.buffer().ptr(),
        }),
        Storage::Cpu(_) => Err(Error::invalid(
            op,
            "the CUDA kernel was given a CPU tensor (a bug in the op's device dispatch)",
        )),
    }
}

impl Operand {
    /// The address of `t`'s first element: the buffer plus the layout's
    /// offset (`t` must be the tensor this operand was read from).
    pub fn at(&self, t: &Tensor) -> DevicePtr {
        self.ptr + (t.layout().offset() * t.dtype().size_in_bytes()) as DevicePtr
    }
}

/// The device operand of `t` for a kernel that writes into it in place:
/// counts as an in-place modification of `t` (bumps its version, so a
/// graph that saved `t` earlier refuses to use the changed values).
pub(crate) fn operand_mut(op: &'static str, t: &Tensor) -> Result<Operand> {
    device_buffer(op, &t.storage_mut())
}

/// The null device pointer, for an optional kernel argument left out.
pub(crate) const NULL: DevicePtr = 0;

/// The operands of `ts`, which must all be on the same device.
pub(crate) fn operands<const N: usize>(op: &'static str, ts: [&Tensor; N]) -> Result<[Operand; N]> {
    for t in &ts[1..] {
        ts[0].check_same_device(op, t)?;
    }
    let mut out = Vec::with_capacity(N);
    for t in ts {
        out.push(operand(op, t)?);
    }
    out.try_into()
        .map_err(|_| Error::invalid(op, "operand count"))
}

/// A new contiguous tensor of `shape` and `dtype` on `dev`, uninitialised
/// (the kernel that follows writes every element), and its address.
pub(crate) fn output(
    op: &'static str,
    dev: &Arc<CudaDevice>,
    dtype: DType,
    shape: &[usize],
) -> Result<(Tensor, DevicePtr)> {
    let n = checked_numel(op, shape)?;
    with_address(CudaStorage::alloc(dev, dtype, n)?, shape)
}

/// A new tensor of `shape` and `dtype` on `dev` holding zeros, and its
/// address (for kernels that accumulate).
pub(crate) fn zeroed_output(
    op: &'static str,
    dev: &Arc<CudaDevice>,
    dtype: DType,
    shape: &[usize],
) -> Result<(Tensor, DevicePtr)> {
    let n = checked_numel(op, shape)?;
    with_address(CudaStorage::zeros(dev, dtype, n)?, shape)
}

/// The tensor of `shape` owning `storage`, and the storage's address.
fn with_address(storage: CudaStorage, shape: &[usize]) -> Result<(Tensor, DevicePtr)> {
    let ptr = storage.buffer().ptr();
    Ok((Tensor::from_storage(storage, shape)?, ptr))
}

/// The suffix of `dtype` in kernel names (`relu_fwd_bf16`), or
/// [`Error::UnsupportedDType`]: the device kernels have no f64 variants.
pub(crate) fn suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        DType::U8 => Ok("u8"),
        DType::I64 => Ok("i64"),
        DType::F64 => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// Errors unless `dtype` is f32: the kernels that only exist in f32.
pub(crate) fn require_f32(op: &'static str, dtype: DType) -> Result<()> {
    if dtype == DType::F32 {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype })
    }
}

//! [`CudaStorage`]: the elements of a tensor in device memory.

use super::buffer::CudaBuffer;
use super::device::CudaDevice;
use crate::backend::cpu::CpuStorage;
use crate::error::{Error, Result};
use crate::ground::DType;
use std::sync::Arc;

/// `len` elements of `dtype` in a buffer of `device` (bf16/f16 as their raw
/// 16-bit patterns, u8 masks as bytes, i64 indices as 8 bytes).
pub struct CudaStorage {
    buffer: CudaBuffer,
    dtype: DType,
    len: usize,
    device: Arc<CudaDevice>,
}

impl CudaStorage {
    /// Wraps `buffer`, which must hold `len` elements of `dtype`.
    pub fn new(
        device: &Arc<CudaDevice>,
        buffer: CudaBuffer,
        dtype: DType,
        len: usize,
    ) -> Result<Self> {
        buffer.check_bytes("CudaStorage::new", "the buffer", len, dtype.size_in_bytes())?;
        Ok(CudaStorage {
            buffer,
            dtype,
            len,
            device: device.clone(),
        })
    }

    /// A fresh, uninitialised storage of `len` elements of `dtype` (for a
    /// kernel to write in full).
    pub fn alloc(device: &Arc<CudaDevice>, dtype: DType, len: usize) -> Result<Self> {
        let bytes = len.checked_mul(dtype.size_in_bytes()).ok_or_else(|| {
            Error::invalid("CudaStorage::alloc", format!("{len} elements overflow"))
        })?;
        Self::new(device, device.alloc(bytes)?, dtype, len)
    }

    /// A storage of `len` zeros of `dtype` (all-zero bytes are zero in
    /// every dtype).
    pub fn zeros(device: &Arc<CudaDevice>, dtype: DType, len: usize) -> Result<Self> {
        let bytes = len.checked_mul(dtype.size_in_bytes()).ok_or_else(|| {
            Error::invalid("CudaStorage::zeros", format!("{len} elements overflow"))
        })?;
        Self::new(device, device.alloc_zeroed(bytes)?, dtype, len)
    }

    /// A copy of host storage `s` on `device`.
    pub fn upload(device: &Arc<CudaDevice>, s: &CpuStorage) -> Result<Self> {
        let buffer = match s {
            CpuStorage::F32(v) => device.upload(v)?,
            CpuStorage::F64(v) => device.upload(v)?,
            CpuStorage::BF16(v) => device.upload(v)?,
            CpuStorage::F16(v) => device.upload(v)?,
            CpuStorage::I64(v) => device.upload(v)?,
            CpuStorage::U8(v) => device.upload(v)?,
        };
        Self::new(device, buffer, s.dtype(), s.len())
    }

    /// A host copy of the elements (waits for the device).
    pub fn download(&self) -> Result<CpuStorage> {
        self.download_range(0..self.len)
    }

    /// A host copy of the elements in `range` (waits for the device).
    pub fn download_range(&self, range: std::ops::Range<usize>) -> Result<CpuStorage> {
        if range.start > range.end || range.end > self.len {
            return Err(Error::invalid(
                "CudaStorage::download_range",
                format!("range {range:?} outside {} elements", self.len),
            ));
        }
        let (d, b, at, n) = (&self.device, &self.buffer, range.start, range.len());
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(d.download_at(b, at, n)?),
            DType::F64 => CpuStorage::F64(d.download_at(b, at, n)?),
            DType::BF16 => CpuStorage::BF16(d.download_at(b, at, n)?),
            DType::F16 => CpuStorage::F16(d.download_at(b, at, n)?),
            DType::I64 => CpuStorage::I64(d.download_at(b, at, n)?),
            DType::U8 => CpuStorage::U8(d.download_at(b, at, n)?),
        })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device holding the elements.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// The device buffer.
    pub fn buffer(&self) -> &CudaBuffer {
        &self.buffer
    }
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaStorage")
            .field("dtype", &self.dtype)
            .field("len", &self.len)
            .field("device", &self.device.ordinal())
            .finish()
    }
}

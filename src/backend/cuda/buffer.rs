//! Device buffers: [`CudaBuffer`], a block of GPU memory from the device's
//! caching allocator that goes back to the cache when dropped, and
//! [`DriverMemory`], the raw allocator behind that cache.

use super::allocator::{CachingAllocator, RawMemory};
use super::driver_error;
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use std::sync::{Arc, Mutex};

/// Raw device memory from the driver, allocated and freed in stream order
/// on the device's stream.
pub struct DriverMemory {
    ordinal: usize,
    stream: Arc<CudaStream>,
}

impl DriverMemory {
    /// Raw memory of GPU `ordinal`, ordered on `stream`.
    pub fn new(ordinal: usize, stream: Arc<CudaStream>) -> Self {
        DriverMemory { ordinal, stream }
    }
}

impl RawMemory for DriverMemory {
    type Block = CudaSlice<u8>;

    fn alloc(&mut self, bytes: usize) -> Result<CudaSlice<u8>> {
        // Safety: the bytes are uninitialised; every user of a CudaBuffer
        // writes before reading (kernels write their whole output, uploads
        // copy the whole slice).
        unsafe { self.stream.alloc::<u8>(bytes) }
            .map_err(|e| driver_error(self.ordinal, &format!("allocating {bytes} bytes"), e))
    }

    fn free(&mut self, block: CudaSlice<u8>) {
        drop(block);
    }
}

/// The allocator shared by a device and its buffers.
pub(crate) type SharedAllocator = Arc<Mutex<CachingAllocator<DriverMemory>>>;

/// A block of device memory holding `len_bytes` meaningful bytes (the block
/// itself may be larger: its size class). Dropping it returns the block to
/// the device's cache; the memory is reused in stream order, so pending
/// kernels that read it finish first.
pub struct CudaBuffer {
    block: Option<CudaSlice<u8>>,
    class: usize,
    len_bytes: usize,
    pool: SharedAllocator,
}

impl CudaBuffer {
    /// Takes a block of at least `len_bytes` bytes from `pool`.
    pub(crate) fn allocate(pool: &SharedAllocator, len_bytes: usize) -> Result<Self> {
        let (block, class) = lock(pool).allocate(len_bytes)?;
        Ok(CudaBuffer {
            block: Some(block),
            class,
            len_bytes,
            pool: pool.clone(),
        })
    }

    /// The number of meaningful bytes.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// The number of `T` elements the meaningful bytes hold.
    pub fn len<T>(&self) -> usize {
        self.len_bytes / std::mem::size_of::<T>().max(1)
    }

    /// True when the buffer holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// The device memory, to pass as a kernel argument (a device pointer).
    pub fn slice(&self) -> &CudaSlice<u8> {
        self.block
            .as_ref()
            .expect("a CudaBuffer holds its block until dropped")
    }

    /// The device memory, mutably (for kernel outputs and uploads).
    pub fn slice_mut(&mut self) -> &mut CudaSlice<u8> {
        self.block
            .as_mut()
            .expect("a CudaBuffer holds its block until dropped")
    }

    /// Checks that the buffer holds at least `count` elements of `T`;
    /// `op` and `what` name the caller and the argument in the error.
    pub fn check_holds<T>(&self, op: &'static str, what: &str, count: usize) -> Result<()> {
        let need = count
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::invalid(op, format!("{what}: {count} elements overflow")))?;
        if need > self.len_bytes {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} holds {} bytes but {count} elements of {} bytes are needed",
                    self.len_bytes,
                    std::mem::size_of::<T>()
                ),
            ));
        }
        Ok(())
    }

    /// Copies `host` into the start of the buffer (asynchronously on
    /// `stream`; the host slice is staged by the driver).
    pub(crate) fn write<T: DeviceRepr>(
        &mut self,
        stream: &Arc<CudaStream>,
        ordinal: usize,
        host: &[T],
    ) -> Result<()> {
        self.check_holds::<T>("CudaBuffer::write", "the buffer", host.len())?;
        if host.is_empty() {
            return Ok(());
        }
        let slice = self.slice_mut();
        // Safety: the block holds at least host.len() elements of T (checked
        // above) and device allocations are 256-byte aligned.
        let mut view = unsafe { slice.transmute_mut::<T>(host.len()) }
            .ok_or_else(|| Error::invalid("CudaBuffer::write", "buffer too small"))?;
        stream
            .memcpy_htod(host, &mut view)
            .map_err(|e| driver_error(ordinal, "copying to the device", e))
    }

    /// Copies the first `count` elements of `T` back to the host (waits for
    /// the stream).
    pub(crate) fn read<T: DeviceRepr + Default + Clone>(
        &self,
        stream: &Arc<CudaStream>,
        ordinal: usize,
        count: usize,
    ) -> Result<Vec<T>> {
        self.check_holds::<T>("CudaBuffer::read", "the buffer", count)?;
        let mut host = vec![T::default(); count];
        if count == 0 {
            return Ok(host);
        }
        // Safety: as in `write`.
        let view = unsafe { self.slice().transmute::<T>(count) }
            .ok_or_else(|| Error::invalid("CudaBuffer::read", "buffer too small"))?;
        stream
            .memcpy_dtoh(&view, host.as_mut_slice())
            .map_err(|e| driver_error(ordinal, "copying to the host", e))?;
        stream
            .synchronize()
            .map_err(|e| driver_error(ordinal, "synchronising the stream", e))?;
        Ok(host)
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            lock(&self.pool).release(block, self.class);
        }
    }
}

/// Locks the allocator; a panic while it was held leaves consistent free
/// lists (every update is a push, pop or counter change), so a poisoned
/// lock is simply taken over.
pub(crate) fn lock(
    pool: &SharedAllocator,
) -> std::sync::MutexGuard<'_, CachingAllocator<DriverMemory>> {
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

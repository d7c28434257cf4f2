//! Device buffers: [`CudaBuffer`], a block of device memory from the
//! device's caching allocator that goes back to the cache when dropped, and
//! [`DriverMemory`], the raw allocator behind that cache.

use super::allocator::{CachingAllocator, RawMemory};
use super::driver::{DevicePtr, Driver};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// Raw device memory from a [`Driver`], allocated and freed in stream order.
pub struct DriverMemory {
    driver: Arc<dyn Driver>,
}

impl DriverMemory {
    /// Raw memory of the device behind `driver`.
    pub fn new(driver: Arc<dyn Driver>) -> Self {
        DriverMemory { driver }
    }
}

impl RawMemory for DriverMemory {
    type Block = DevicePtr;

    fn alloc(&mut self, bytes: usize) -> Result<DevicePtr> {
        self.driver.alloc(bytes)
    }

    fn free(&mut self, block: DevicePtr) {
        self.driver.free(block);
    }
}

/// The allocator shared by a device and its buffers.
pub(crate) type SharedAllocator = Arc<Mutex<CachingAllocator<DriverMemory>>>;

/// A block of device memory holding `len_bytes` meaningful bytes (the block
/// itself may be larger: its size class). Dropping it returns the block to
/// the device's cache; the memory is reused in stream order, so pending
/// kernels that read it finish first.
pub struct CudaBuffer {
    ptr: DevicePtr,
    class: usize,
    len_bytes: usize,
    pool: SharedAllocator,
}

impl CudaBuffer {
    /// Takes a block of at least `len_bytes` bytes from `pool`.
    pub(crate) fn allocate(pool: &SharedAllocator, len_bytes: usize) -> Result<Self> {
        let (ptr, class) = lock(pool).allocate(len_bytes)?;
        Ok(CudaBuffer {
            ptr,
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

    /// The device address of the first byte.
    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }

    /// The device address as a kernel argument.
    pub fn arg(&self) -> &DevicePtr {
        &self.ptr
    }

    /// Checks that the buffer holds at least `count` elements of `T`;
    /// `op` and `what` name the caller and the argument in the error.
    pub fn check_holds<T>(&self, op: &'static str, what: &str, count: usize) -> Result<()> {
        self.check_bytes(op, what, count, std::mem::size_of::<T>())
    }

    /// Checks that the buffer holds at least `count` elements of
    /// `elem_bytes` bytes each.
    pub fn check_bytes(
        &self,
        op: &'static str,
        what: &str,
        count: usize,
        elem_bytes: usize,
    ) -> Result<()> {
        let need = count
            .checked_mul(elem_bytes)
            .ok_or_else(|| Error::invalid(op, format!("{what}: {count} elements overflow")))?;
        if need > self.len_bytes {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} holds {} bytes but {count} elements of {elem_bytes} bytes are needed",
                    self.len_bytes
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        lock(&self.pool).release(self.ptr, self.class);
    }
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBuffer")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len_bytes", &self.len_bytes)
            .finish()
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

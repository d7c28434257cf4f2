//! Pinned staging buffers for uploads to a real GPU.
//!
//! A copy from pageable host memory may make the driver wait for the
//! stream before it stages the data (CUDA's "API synchronization
//! behavior"), so uploading batch `i + 1` could wait for step `i` to
//! finish. Copying the bytes into page-locked memory first makes the upload
//! a true asynchronous DMA: the host queues it behind the step's kernels
//! and moves on. A small ring of pinned buffers is reused round-robin; each
//! remembers (with an event) the upload that reads it, and a buffer is only
//! waited for when the host has come all the way round the ring before the
//! GPU consumed it.

use super::DevicePtr;
use cudarc::driver::result::{self, event};
use cudarc::driver::sys::{CUevent, CUevent_flags, CUstream};
use cudarc::driver::DriverError;
use std::ffi::c_void;

/// Uploads smaller than this go straight from pageable memory: the driver
/// copies them into its command buffer without waiting.
pub(super) const STAGING_THRESHOLD: usize = 64 * 1024;

/// Buffers in the ring: as many uploads as may be in flight at once.
const SLOTS: usize = 4;

/// One page-locked buffer and the event recorded after the upload that
/// reads it.
struct Slot {
    ptr: *mut c_void,
    capacity: usize,
    event: CUevent,
    in_flight: bool,
}

/// The ring of pinned buffers of one GPU (its context must be current in
/// every call, which the driver ensures).
#[derive(Default)]
pub(super) struct StagingRing {
    slots: Vec<Slot>,
    next: usize,
}

// Safety: the raw pointers and events belong to this ring alone; the GPU
// driver keeps the ring behind a mutex, so one thread uses it at a time.
unsafe impl Send for StagingRing {}

impl StagingRing {
    /// Copies `src` into the next pinned buffer (growing it to the next
    /// power of two when too small) and queues its upload to `dst` on
    /// `stream`. Waits only for the previous upload from the same buffer.
    ///
    /// # Safety
    /// `dst` must hold `src.len()` bytes on the device whose context is
    /// current, and `stream` must belong to that context.
    pub(super) unsafe fn upload(
        &mut self,
        dst: DevicePtr,
        src: &[u8],
        stream: CUstream,
    ) -> Result<(), DriverError> {
        if self.slots.len() < SLOTS {
            let event = event::create(CUevent_flags::CU_EVENT_DISABLE_TIMING)?;
            self.slots.push(Slot {
                ptr: std::ptr::null_mut(),
                capacity: 0,
                event,
                in_flight: false,
            });
            self.next = self.slots.len() - 1;
        }
        let slot = &mut self.slots[self.next];
        self.next = (self.next + 1) % SLOTS;
        if slot.in_flight {
            // The host is SLOTS uploads ahead of the GPU: wait for the
            // oldest one, whose buffer is about to be overwritten.
            event::synchronize(slot.event)?;
            slot.in_flight = false;
        }
        if slot.capacity < src.len() {
            if !slot.ptr.is_null() {
                result::free_host(slot.ptr)?;
                slot.ptr = std::ptr::null_mut();
                slot.capacity = 0;
            }
            let capacity = src.len().next_power_of_two();
            slot.ptr = result::malloc_host(capacity, 0)?;
            slot.capacity = capacity;
        }
        let pinned = std::slice::from_raw_parts_mut(slot.ptr as *mut u8, src.len());
        pinned.copy_from_slice(src);
        result::memcpy_htod_async(dst, &*pinned, stream)?;
        event::record(slot.event, stream)?;
        slot.in_flight = true;
        Ok(())
    }

    /// Waits for the uploads in flight and frees every buffer and event
    /// (errors are ignored: this runs when the device is closed).
    ///
    /// # Safety
    /// The ring's context must be current.
    pub(super) unsafe fn release(&mut self) {
        for slot in self.slots.drain(..) {
            if slot.in_flight {
                let _ = event::synchronize(slot.event);
            }
            if !slot.ptr.is_null() {
                let _ = result::free_host(slot.ptr);
            }
            let _ = event::destroy(slot.event);
        }
    }
}

//! The emulated GPU's memory: host allocations with guard zones, addressed
//! by their real host addresses (kernels dereference device pointers
//! directly).
//!
//! Each allocation is `GUARD` bytes of guard, the user bytes (filled with
//! 0xFF, so reading uninitialised memory shows NaN), then padding to a
//! multiple of `ALIGN` and `GUARD` more bytes of guard. Guard bytes hold
//! a position-dependent pattern that launches check afterwards.

use crate::error::{Error, Result};
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

/// Bytes of guard before and (at least) after each allocation.
const GUARD: usize = 256;
/// Alignment of device pointers (cudaMalloc's is 256 bytes).
const ALIGN: usize = 256;

/// One live allocation.
pub(super) struct Allocation {
    /// Start of the whole block (front guard first).
    base: NonNull<u8>,
    layout: Layout,
    /// Usable bytes at `base + GUARD`.
    bytes: usize,
}

/// The expected guard byte at offset `o` from the start of a block.
fn guard_byte(o: usize) -> u8 {
    (o as u8).wrapping_mul(31) ^ 0xA5
}

impl Allocation {
    /// The device pointer (address of the first usable byte).
    pub(super) fn ptr(&self) -> u64 {
        self.base.as_ptr() as u64 + GUARD as u64
    }

    /// Number of usable bytes.
    pub(super) fn len(&self) -> usize {
        self.bytes
    }

    /// The usable bytes.
    pub(super) fn contents(&self) -> &[u8] {
        // Safety: `base + GUARD .. + bytes` lies inside the block allocated
        // with `layout`, initialised at allocation; no kernel runs while a
        // shared borrow of the memory table exists (the table is behind the
        // emulator's mutex, held for whole launches).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(GUARD), self.bytes) }
    }

    /// The usable bytes, writable.
    pub(super) fn contents_mut(&mut self) -> &mut [u8] {
        // Safety: as in `contents`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(GUARD), self.bytes) }
    }

    /// The whole block, guards included.
    fn block_mut(&mut self) -> &mut [u8] {
        // Safety: the block of `layout.size()` bytes allocated at `base`.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.layout.size()) }
    }

    /// Writes the guard pattern around the usable bytes.
    fn fill_guards(&mut self) {
        let tail = GUARD + self.bytes;
        let block = self.block_mut();
        let size = block.len();
        for o in (0..GUARD).chain(tail..size) {
            block[o] = guard_byte(o);
        }
    }

    /// The first overwritten guard byte, as an offset from the device
    /// pointer (negative before it), after restoring the pattern; `None`
    /// when the guards are intact.
    pub(super) fn check_and_repair_guards(&mut self) -> Option<i64> {
        let tail = GUARD + self.bytes;
        let block = self.block_mut();
        let size = block.len();
        let bad = (0..GUARD)
            .chain(tail..size)
            .find(|&o| block[o] != guard_byte(o))?;
        self.fill_guards();
        Some(bad as i64 - GUARD as i64)
    }
}

impl Drop for Allocation {
    /// Returns the block to the system allocator.
    fn drop(&mut self) {
        // Safety: `base` was returned by `std::alloc::alloc(self.layout)`.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// Every live allocation, by device pointer.
#[derive(Default)]
pub(super) struct Memory {
    allocations: BTreeMap<u64, Allocation>,
}

// Safety: `Memory` owns its blocks exclusively (nothing else holds their
// base pointers, except kernels during a launch, which runs while the
// emulator's mutex around `Memory` is held), so moving it between threads
// is sound.
unsafe impl Send for Memory {}

impl Memory {
    /// A fresh allocation of `bytes` usable bytes, filled with 0xFF.
    pub(super) fn alloc(&mut self, bytes: usize) -> Result<u64> {
        let size = bytes
            .checked_next_multiple_of(ALIGN)
            .and_then(|b| b.checked_add(2 * GUARD))
            .ok_or(Error::OutOfMemory { bytes })?;
        let layout =
            Layout::from_size_align(size, ALIGN).map_err(|_| Error::OutOfMemory { bytes })?;
        // Safety: `layout` has a non-zero size (at least 2·GUARD).
        let raw = unsafe { std::alloc::alloc(layout) };
        let base = NonNull::new(raw).ok_or(Error::OutOfMemory { bytes })?;
        let mut a = Allocation {
            base,
            layout,
            bytes,
        };
        a.fill_guards();
        a.contents_mut().fill(0xFF);
        let ptr = a.ptr();
        self.allocations.insert(ptr, a);
        Ok(ptr)
    }

    /// Frees the allocation whose device pointer is `ptr`.
    pub(super) fn free(&mut self, ptr: u64) -> Result<()> {
        self.allocations.remove(&ptr).map(drop).ok_or_else(|| {
            Error::cuda(
                "free",
                format!("0x{ptr:x} is not a live allocation of the emulated GPU"),
            )
        })
    }

    /// The allocation containing address `ptr` (its start, or a byte
    /// inside it).
    pub(super) fn containing(&self, ptr: u64) -> Option<&Allocation> {
        let (_, a) = self.allocations.range(..=ptr).next_back()?;
        (ptr == a.ptr() || ptr - a.ptr() < a.len() as u64).then_some(a)
    }

    /// The allocation whose device pointer is `key`.
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut Allocation> {
        self.allocations.get_mut(&key)
    }

    /// The allocation key and offset of `len` bytes at `ptr`, when they lie
    /// inside one live allocation; an error for `op` otherwise.
    fn locate(&self, op: &str, ptr: u64, len: usize) -> Result<(&Allocation, usize)> {
        let found = self
            .allocations
            .range(..=ptr)
            .next_back()
            .and_then(|(&key, a)| {
                let offset = usize::try_from(ptr - key).ok()?;
                (offset.checked_add(len)? <= a.len()).then_some((a, offset))
            });
        found.ok_or_else(|| {
            Error::cuda(
                op,
                format!("{len} bytes at 0x{ptr:x} are not inside one live allocation"),
            )
        })
    }

    /// `locate`, for writing.
    fn locate_mut(&mut self, op: &str, ptr: u64, len: usize) -> Result<(&mut Allocation, usize)> {
        let key = self.locate(op, ptr, len)?.0.ptr();
        let a = self
            .allocations
            .get_mut(&key)
            .ok_or_else(|| Error::cuda(op, "allocation vanished"))?;
        Ok((a, (ptr - key) as usize))
    }

    /// Copies host bytes to device address `dst`.
    pub(super) fn write(&mut self, dst: u64, src: &[u8]) -> Result<()> {
        let (a, off) = self.locate_mut("copy_htod", dst, src.len())?;
        a.contents_mut()[off..off + src.len()].copy_from_slice(src);
        Ok(())
    }

    /// Copies device bytes at `src` to the host.
    pub(super) fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        let (a, off) = self.locate("copy_dtoh", src, dst.len())?;
        dst.copy_from_slice(&a.contents()[off..off + dst.len()]);
        Ok(())
    }

    /// Copies `bytes` bytes from `src` to `dst` (overlap allowed).
    pub(super) fn copy(&mut self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        let (from, src_off) = self.locate("copy_dtod", src, bytes)?;
        let src_key = from.ptr();
        let (to, dst_off) = self.locate("copy_dtod", dst, bytes)?;
        if to.ptr() == src_key {
            let (a, _) = self.locate_mut("copy_dtod", dst, bytes)?;
            a.contents_mut()
                .copy_within(src_off..src_off + bytes, dst_off);
        } else {
            let data = from.contents()[src_off..src_off + bytes].to_vec();
            let (a, _) = self.locate_mut("copy_dtod", dst, bytes)?;
            a.contents_mut()[dst_off..dst_off + bytes].copy_from_slice(&data);
        }
        Ok(())
    }

    /// Sets `bytes` bytes at `dst` to `value`.
    pub(super) fn fill(&mut self, dst: u64, value: u8, bytes: usize) -> Result<()> {
        let (a, off) = self.locate_mut("memset", dst, bytes)?;
        a.contents_mut()[off..off + bytes].fill(value);
        Ok(())
    }
}

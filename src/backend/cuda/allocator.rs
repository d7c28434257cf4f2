//! A caching allocator for device memory.
//!
//! A training step allocates and frees the same sizes over and over
//! (activations, gradients, temporaries). Asking the driver each time costs
//! a call, and possibly a synchronisation, per op. Instead, freed blocks go
//! to a free list keyed by their *size class* and the next request of the
//! same class takes one back.
//!
//! Size classes: requests are rounded up to at least [`MIN_BLOCK`] bytes,
//! then to one of four steps per power of two (`4·2^k, 5·2^k, 6·2^k,
//! 7·2^k`), so a block wastes less than 25% of its size and sizes that
//! differ by a little share a class. Blocks are never split or merged.
//! When the raw allocator fails (out of memory), every cached block is
//! released and the request is retried once.
//!
//! The bookkeeping is generic over [`RawMemory`], the raw allocate/free
//! pair, so it runs and is tested on the CPU; the device implementation
//! wraps cudarc (`buffer.rs`). The allocator is not thread safe by itself;
//! [`CudaDevice`](super::CudaDevice) keeps it behind a mutex.

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// The smallest block handed out, in bytes (also the alignment unit of the
/// size classes).
pub const MIN_BLOCK: usize = 512;

/// The raw memory source behind a [`CachingAllocator`]: the device driver,
/// or a mock in tests.
pub trait RawMemory {
    /// One raw allocation.
    type Block;
    /// Allocates exactly `bytes` bytes.
    fn alloc(&mut self, bytes: usize) -> Result<Self::Block>;
    /// Returns a block obtained from [`RawMemory::alloc`].
    fn free(&mut self, block: Self::Block);
}

/// Counters of a [`CachingAllocator`] (bytes are size-class bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Allocation requests served.
    pub requests: u64,
    /// Requests served from the cache, without a raw allocation.
    pub cache_hits: u64,
    /// Raw allocations made.
    pub raw_allocs: u64,
    /// Raw frees made (cache releases).
    pub raw_frees: u64,
    /// Bytes handed out and not yet released.
    pub in_use_bytes: usize,
    /// The largest `in_use_bytes` seen.
    pub peak_in_use_bytes: usize,
    /// Bytes held in the free lists.
    pub cached_bytes: usize,
}

/// The size class of a request of `bytes` bytes: the smallest of
/// `MIN_BLOCK` and the values `{4, 5, 6, 7}·2^k` that is `≥ bytes`.
/// `None` when rounding up would overflow `usize`.
pub fn size_class(bytes: usize) -> Option<usize> {
    if bytes <= MIN_BLOCK {
        return Some(MIN_BLOCK);
    }
    // 2^e ≤ bytes − 1 < 2^(e+1); classes between 2^e and 2^(e+1) are
    // 2^(e−2) apart.
    let e = usize::BITS - 1 - (bytes - 1).leading_zeros();
    let step = 1usize << (e - 2);
    bytes.checked_next_multiple_of(step)
}

/// Size-class free lists over a [`RawMemory`], with statistics.
pub struct CachingAllocator<R: RawMemory> {
    raw: R,
    free: BTreeMap<usize, Vec<R::Block>>,
    stats: AllocatorStats,
}

impl<R: RawMemory> CachingAllocator<R> {
    /// An empty cache over `raw`.
    pub fn new(raw: R) -> Self {
        CachingAllocator {
            raw,
            free: BTreeMap::new(),
            stats: AllocatorStats::default(),
        }
    }

    /// A block of at least `bytes` bytes and its size (the size class, to
    /// pass back to [`CachingAllocator::release`]). Reuses a cached block
    /// of the same class when there is one; otherwise allocates, and if
    /// that fails with blocks cached, releases them all and tries again.
    pub fn allocate(&mut self, bytes: usize) -> Result<(R::Block, usize)> {
        let class = size_class(bytes).ok_or_else(|| {
            Error::invalid(
                "CachingAllocator::allocate",
                format!("{bytes} bytes cannot be rounded to a size class"),
            )
        })?;
        self.stats.requests += 1;
        let block = match self.free.get_mut(&class).and_then(Vec::pop) {
            Some(block) => {
                self.stats.cache_hits += 1;
                self.stats.cached_bytes -= class;
                block
            }
            None => self.alloc_raw(class)?,
        };
        self.stats.in_use_bytes += class;
        self.stats.peak_in_use_bytes = self.stats.peak_in_use_bytes.max(self.stats.in_use_bytes);
        Ok((block, class))
    }

    /// A raw allocation of `class` bytes, retried once after emptying the
    /// cache.
    fn alloc_raw(&mut self, class: usize) -> Result<R::Block> {
        match self.raw.alloc(class) {
            Ok(block) => {
                self.stats.raw_allocs += 1;
                Ok(block)
            }
            Err(_) if self.stats.cached_bytes > 0 => {
                self.empty_cache();
                let block = self.raw.alloc(class)?;
                self.stats.raw_allocs += 1;
                Ok(block)
            }
            Err(e) => Err(e),
        }
    }

    /// Puts `block` (of size class `class`, as returned by
    /// [`CachingAllocator::allocate`]) back into the cache.
    pub fn release(&mut self, block: R::Block, class: usize) {
        self.stats.in_use_bytes = self.stats.in_use_bytes.saturating_sub(class);
        self.stats.cached_bytes += class;
        self.free.entry(class).or_default().push(block);
    }

    /// Frees every cached block to the raw allocator (blocks in use are not
    /// affected).
    pub fn empty_cache(&mut self) {
        for (_, blocks) in std::mem::take(&mut self.free) {
            for block in blocks {
                self.raw.free(block);
                self.stats.raw_frees += 1;
            }
        }
        self.stats.cached_bytes = 0;
    }

    /// Restarts the peak from the bytes in use now (to measure the peak of
    /// one piece of work).
    pub fn reset_peak(&mut self) {
        self.stats.peak_in_use_bytes = self.stats.in_use_bytes;
    }

    /// The counters so far.
    pub fn stats(&self) -> AllocatorStats {
        self.stats
    }
}

impl<R: RawMemory> Drop for CachingAllocator<R> {
    fn drop(&mut self) {
        self.empty_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw allocator on the heap that counts live bytes and can refuse
    /// to go over a capacity (an out-of-memory device).
    struct MockMemory {
        next_id: usize,
        live_bytes: usize,
        capacity: usize,
        frees: Vec<usize>,
    }

    impl MockMemory {
        fn with_capacity(capacity: usize) -> Self {
            MockMemory {
                next_id: 0,
                live_bytes: 0,
                capacity,
                frees: Vec::new(),
            }
        }
    }

    /// (id, size) of a mock block.
    type MockBlock = (usize, usize);

    impl RawMemory for MockMemory {
        type Block = MockBlock;
        fn alloc(&mut self, bytes: usize) -> Result<MockBlock> {
            if self.live_bytes + bytes > self.capacity {
                return Err(Error::invalid("mock alloc", "out of memory"));
            }
            self.live_bytes += bytes;
            self.next_id += 1;
            Ok((self.next_id, bytes))
        }
        fn free(&mut self, block: MockBlock) {
            self.live_bytes -= block.1;
            self.frees.push(block.0);
        }
    }

    #[test]
    fn size_classes_bound_the_waste() {
        assert_eq!(size_class(0), Some(512));
        assert_eq!(size_class(1), Some(512));
        assert_eq!(size_class(512), Some(512));
        assert_eq!(size_class(513), Some(640));
        assert_eq!(size_class(640), Some(640));
        assert_eq!(size_class(1000), Some(1024));
        assert_eq!(size_class(1025), Some(1280));
        assert_eq!(size_class(3 << 20), Some(3 << 20));
        assert_eq!(size_class((3 << 20) + 1), Some(7 << 19));
        assert_eq!(size_class(usize::MAX), None);
        let mut previous = 0;
        for bytes in (1..200_000).step_by(97).chain([1 << 30, (1 << 30) + 1]) {
            let class = size_class(bytes).unwrap();
            assert!(class >= bytes, "{bytes} -> {class}");
            assert!(
                bytes <= MIN_BLOCK || (class - bytes) * 4 < bytes,
                "{bytes} -> {class} wastes 25% or more"
            );
            assert_eq!(size_class(class), Some(class), "classes are fixed points");
            assert!(class >= previous, "classes grow with the request");
            previous = class;
        }
    }

    #[test]
    fn released_blocks_are_reused_by_the_same_class() {
        let mut a = CachingAllocator::new(MockMemory::with_capacity(1 << 20));
        let (b1, c1) = a.allocate(1000).unwrap();
        assert_eq!(c1, 1024);
        a.release(b1, c1);
        // 1000 and 1010 share the class 1024: the cached block comes back.
        let (b2, c2) = a.allocate(1010).unwrap();
        assert_eq!(b2, b1);
        assert_eq!(c2, 1024);
        // Another class needs a new raw block.
        let (b3, c3) = a.allocate(5000).unwrap();
        assert_ne!(b3.0, b1.0);
        let s = a.stats();
        assert_eq!(
            (s.requests, s.cache_hits, s.raw_allocs, s.raw_frees),
            (3, 1, 2, 0)
        );
        assert_eq!(s.in_use_bytes, 1024 + c3);
        assert_eq!(s.cached_bytes, 0);
        a.release(b2, c2);
        a.release(b3, c3);
        let s = a.stats();
        assert_eq!(s.in_use_bytes, 0);
        assert_eq!(s.cached_bytes, 1024 + c3);
        assert_eq!(s.peak_in_use_bytes, 1024 + c3);
        // A reset peak starts from what is in use now.
        a.reset_peak();
        assert_eq!(a.stats().peak_in_use_bytes, 0);
        let (b4, c4) = a.allocate(100).unwrap();
        a.release(b4, c4);
        assert_eq!(a.stats().peak_in_use_bytes, c4);
    }

    #[test]
    fn a_training_step_pattern_allocates_only_once() {
        let mut a = CachingAllocator::new(MockMemory::with_capacity(1 << 24));
        let sizes = [4096, 123_456, 4096, 77, 1 << 20];
        for _step in 0..10 {
            let blocks: Vec<_> = sizes.iter().map(|&s| a.allocate(s).unwrap()).collect();
            for (b, c) in blocks {
                a.release(b, c);
            }
        }
        let s = a.stats();
        assert_eq!(
            s.raw_allocs,
            sizes.len() as u64,
            "only the first step allocates"
        );
        assert_eq!(s.cache_hits, 9 * sizes.len() as u64);
    }

    #[test]
    fn out_of_memory_empties_the_cache_and_retries() {
        // Room for two 1 MiB blocks only.
        let mut a = CachingAllocator::new(MockMemory::with_capacity(2 << 20));
        let (b1, c1) = a.allocate(1 << 20).unwrap();
        let (b2, c2) = a.allocate(1 << 20).unwrap();
        a.release(b1, c1);
        a.release(b2, c2);
        // A 1.5 MiB class does not fit next to the cached blocks: they are
        // freed and the retry succeeds.
        let (b3, c3) = a.allocate(3 << 19).unwrap();
        assert_eq!(c3, 3 << 19);
        let s = a.stats();
        assert_eq!(s.raw_frees, 2);
        assert_eq!(s.cached_bytes, 0);
        assert_eq!(s.in_use_bytes, 3 << 19);
        // Nothing cached and still no room: the error comes through.
        assert!(a.allocate(1 << 20).is_err());
        a.release(b3, c3);
    }

    #[test]
    fn empty_cache_and_drop_free_every_cached_block() {
        let mut a = CachingAllocator::new(MockMemory::with_capacity(1 << 20));
        let blocks: Vec<_> = (0..4).map(|i| a.allocate(600 * (i + 1)).unwrap()).collect();
        let kept = a.allocate(100).unwrap();
        for (b, c) in blocks {
            a.release(b, c);
        }
        a.empty_cache();
        assert_eq!(a.stats().raw_frees, 4);
        assert_eq!(a.stats().cached_bytes, 0);
        assert_eq!(
            a.raw.live_bytes, kept.1,
            "only the block in use is still allocated"
        );
        a.release(kept.0, kept.1);
        drop(a);
    }
}

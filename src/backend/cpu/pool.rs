//! A cache of freed large CPU buffers, reused by later allocations of the
//! same element type and length.
//!
//! Large allocations come straight from the OS (glibc maps them freshly),
//! so every new output buffer is paid for with one page fault per 4 KiB on
//! first touch. For a 64 MiB elementwise result that costs more than the
//! arithmetic. Training repeats the same shapes every step, so buffers freed
//! by one step fit the next exactly: dropping a large storage parks its
//! `Vec` here, and kernels ask here first for their output.
//!
//! Only buffers of 32 MiB and more are cached. Smaller ones are left to the
//! system allocator, which reuses them well: glibc serves requests below its
//! mmap threshold (raised dynamically up to 32 MiB) from a heap it keeps, and
//! caching them here by exact size only fragments memory. Measured on a
//! CIFAR ResNet-18 training step (activations of at most 8 MiB): caching
//! everything from 64 KiB took 1.59 s and 893 MiB peak RSS, caching nothing
//! 1.23 s and 494 MiB, while a 64 MiB elementwise add went from 30 ms
//! uncached to 10 ms cached.
//!
//! The cache holds at most [`limit_bytes`] (default 1 GiB; [`set_limit_bytes`]
//! changes it, 0 disables caching) and [`clear`] releases everything.

use crate::error::{Error, Result};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Buffers smaller than this are not cached (see the module docs).
pub const MIN_CACHED_BYTES: usize = 32 << 20;

struct Pool {
    free: HashMap<(TypeId, usize), Vec<Box<dyn Any + Send>>>,
    bytes: usize,
    limit: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool {
        free: HashMap::new(),
        bytes: 0,
        limit: 1 << 30,
    });
    f(pool)
}

/// A cached buffer of exactly `n` elements of `T`, if there is one.
fn take_cached<T: Send + 'static>(n: usize) -> Option<Vec<T>> {
    let bytes = n.checked_mul(std::mem::size_of::<T>())?;
    if bytes < MIN_CACHED_BYTES {
        return None;
    }
    let v = with_pool(|p| {
        let v = p.free.get_mut(&(TypeId::of::<T>(), n))?.pop()?;
        p.bytes -= bytes;
        Some(v)
    })?;
    Some(*v.downcast::<Vec<T>>().expect("keyed by type"))
}

/// A vector of exactly `n` elements whose contents are unspecified (a
/// recycled buffer, or default values): callers overwrite every element.
/// A request the system refuses is an [`Error::OutOfMemory`], not an abort.
pub fn take<T: Copy + Default + Send + 'static>(n: usize) -> Result<Vec<T>> {
    match take_cached(n) {
        Some(v) => Ok(v),
        None => take_zeroed(n),
    }
}

/// An empty vector with room for `n` elements: a recycled buffer of that
/// length, cleared, or a fresh allocation. For kernels that write their
/// output without filling it with zeros first (see `backend::cpu::output`).
/// A request the system refuses is an [`Error::OutOfMemory`], not an abort.
pub fn take_empty<T: Copy + Send + 'static>(n: usize) -> Result<Vec<T>> {
    match take_cached(n) {
        Some(mut v) => {
            v.clear();
            Ok(v)
        }
        None => try_with_capacity(n),
    }
}

/// A vector of `n` default values (zeros for numbers), in a recycled buffer
/// when one is cached. A request the system refuses is an
/// [`Error::OutOfMemory`], not an abort.
pub fn take_zeroed<T: Copy + Default + Send + 'static>(n: usize) -> Result<Vec<T>> {
    let mut v = take_empty::<T>(n)?;
    v.resize(n, T::default());
    Ok(v)
}

/// `Vec::with_capacity(n)`, except that a request the system refuses (or
/// one too large to express in bytes) is an [`Error::OutOfMemory`] instead
/// of an abort.
pub fn try_with_capacity<T>(n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::out_of_memory::<T>(n))?;
    super::huge_pages::advise(&v);
    Ok(v)
}

/// Parks a buffer for reuse (or frees it when small, or when the cache is
/// full).
pub fn recycle<T: Send + 'static>(v: Vec<T>) {
    let bytes = v.len() * std::mem::size_of::<T>();
    if bytes < MIN_CACHED_BYTES {
        return;
    }
    with_pool(move |p| {
        if p.bytes + bytes <= p.limit {
            p.bytes += bytes;
            p.free
                .entry((TypeId::of::<T>(), v.len()))
                .or_default()
                .push(Box::new(v));
        }
    });
}

/// Bytes currently held by the cache.
pub fn cached_bytes() -> usize {
    with_pool(|p| p.bytes)
}

/// The most bytes the cache may hold.
pub fn limit_bytes() -> usize {
    with_pool(|p| p.limit)
}

/// Sets the most bytes the cache may hold (0 disables caching) and frees
/// what no longer fits.
pub fn set_limit_bytes(limit: usize) {
    with_pool(|p| {
        p.limit = limit;
        if p.bytes > limit {
            p.free.clear();
            p.bytes = 0;
        }
    });
}

/// Frees every cached buffer.
pub fn clear() {
    with_pool(|p| {
        p.free.clear();
        p.bytes = 0;
    });
}

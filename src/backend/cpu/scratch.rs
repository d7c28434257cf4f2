//! Per-thread scratch buffers, reused from one kernel call to the next.
//!
//! A convolution tile needs temporary buffers of a few MiB (the `im2col`
//! columns, the GEMM product) that it overwrites before reading. Allocating
//! them on every call pays a zero-fill (`vec![0; n]`) and, when the
//! allocator hands back fresh pages, a page fault per 4 KiB. Instead each
//! thread keeps one buffer per element type here and lends it out again.
//!
//! A lent buffer holds whatever the previous user left in it: callers must
//! write before they read. Buffers above [`MAX_KEPT_BYTES`] are not kept,
//! so a thread holds at most that much per element type.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

/// Largest buffer a thread keeps for reuse.
pub const MAX_KEPT_BYTES: usize = 64 << 20;

thread_local! {
    static BUFFERS: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Runs `f` on a scratch slice of `len` elements of `T` with unspecified
/// contents (this thread's kept buffer, grown if needed). A nested call on
/// the same thread gets a fresh buffer of its own.
pub fn with_scratch<T: Copy + Default + 'static, R>(
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let key = TypeId::of::<T>();
    let kept = BUFFERS.with(|b| b.borrow_mut().remove(&key));
    let mut buf: Vec<T> = kept
        .and_then(|b| b.downcast::<Vec<T>>().ok())
        .map(|b| *b)
        .unwrap_or_default();
    if buf.len() < len {
        // A fresh allocation, advised before the fill first touches it.
        buf = Vec::with_capacity(len);
        super::huge_pages::advise(&buf);
        buf.resize(len, T::default());
    }
    let result = f(&mut buf[..len]);
    if buf.len() * std::mem::size_of::<T>() <= MAX_KEPT_BYTES {
        BUFFERS.with(|b| b.borrow_mut().insert(key, Box::new(buf)));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_a_buffer_of_the_asked_length_and_reuses_it() {
        let p1 = with_scratch::<f32, _>(1000, |s| {
            assert_eq!(s.len(), 1000);
            s.fill(1.0);
            s.as_ptr() as usize
        });
        // A shorter request reuses the same allocation.
        let p2 = with_scratch::<f32, _>(10, |s| {
            assert_eq!(s.len(), 10);
            s.as_ptr() as usize
        });
        assert_eq!(p1, p2);
    }

    #[test]
    fn nested_calls_get_distinct_buffers() {
        with_scratch::<f64, _>(8, |outer| {
            outer.fill(1.0);
            with_scratch::<f64, _>(8, |inner| {
                inner.fill(2.0);
                assert_ne!(outer.as_ptr(), inner.as_ptr());
            });
            assert!(outer.iter().all(|&v| v == 1.0));
        });
    }
}

//! The allocation guard: a global allocator that refuses, and records, any
//! single allocation over [`MAX_ALLOCATION`].
//!
//! A reader that sizes a buffer from a header it has not checked asks for
//! terabytes; on a real machine that aborts the process (or, worse, works
//! on a large one). Under the guard such a request is refused: a fallible
//! allocation (`try_reserve`) sees an error, an infallible one aborts with
//! "memory allocation failed" — and either way the request is recorded
//! (size and the first `ferrite` function on the stack) so the harness
//! reports it as a failure with the input.
//!
//! A fuzz binary installs it with
//! `#[global_allocator] static A: ferrite_fuzz::guard::Guard = ferrite_fuzz::guard::Guard;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;

/// The largest single allocation a reader may make: 1 GiB.
pub const MAX_ALLOCATION: usize = 1 << 30;

/// A refused allocation: its size and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oversize {
    /// Bytes requested.
    pub bytes: usize,
    /// The innermost `ferrite` function on the stack (or the first frame
    /// known), for telling findings apart.
    pub frame: String,
}

static REFUSED: Mutex<Option<Oversize>> = Mutex::new(None);
static LAST_SAID: Mutex<String> = Mutex::new(String::new());

thread_local! {
    /// Set while the guard itself allocates (capturing a backtrace), so
    /// that those allocations go straight to the system allocator.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// The guarding allocator (forwards everything else to [`System`]).
pub struct Guard;

unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION && refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION && refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION && refuse(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Records a refused request (unless the guard is already inside its own
/// bookkeeping, whose allocations pass). Returns whether to refuse.
fn refuse(bytes: usize) -> bool {
    if INSIDE.with(Cell::get) {
        return false;
    }
    INSIDE.with(|c| c.set(true));
    let frame = ferrite_frame();
    // Said once per place (stderr is read back if the refusal aborts).
    if let Ok(mut last) = LAST_SAID.lock() {
        if *last != frame {
            eprintln!("allocation guard: refused {bytes} bytes in {frame}");
            last.clone_from(&frame);
        }
    }
    if let Ok(mut slot) = REFUSED.lock() {
        slot.get_or_insert(Oversize { bytes, frame });
    }
    INSIDE.with(|c| c.set(false));
    true
}

/// The innermost stack frame inside ferrite itself.
pub(crate) fn ferrite_frame() -> String {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    let frames: Vec<&str> = trace
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("at "))
        .map(|l| l.split_once(": ").map_or(l, |(_, f)| f))
        .collect();
    frames
        .iter()
        .find(|f| f.starts_with("ferrite::") || f.starts_with("<ferrite::"))
        .or_else(|| {
            frames
                .iter()
                .find(|f| !f.contains("guard") && !f.contains("backtrace"))
        })
        .map_or_else(|| "unknown".to_string(), |f| strip_hash(f).to_string())
}

/// `ferrite::x::y::h0123abcd` → `ferrite::x::y`.
fn strip_hash(f: &str) -> &str {
    match f.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => f,
    }
}

/// Takes the refused allocation recorded since the last call, if any.
pub fn take_refused() -> Option<Oversize> {
    REFUSED.lock().ok().and_then(|mut slot| slot.take())
}

#[cfg(test)]
mod tests {
    use super::strip_hash;

    #[test]
    fn symbol_hashes_are_stripped() {
        assert_eq!(
            strip_hash("ferrite::a::b::h0123456789abcdef"),
            "ferrite::a::b"
        );
        assert_eq!(strip_hash("ferrite::a::b"), "ferrite::a::b");
    }
}

//! Asks the kernel to back large buffers with 2 MiB pages.
//!
//! Convolutions read their input one channel plane at a time, and a plane
//! of a 32×32 activation is exactly one 4 KiB page, so an implicit-GEMM
//! gather over 64 channels touches 64 pages per tap and keeps missing the
//! TLB. Backed by transparent huge pages, a whole 8 MiB activation needs
//! four TLB entries. Most Linux systems ship with transparent huge pages
//! in `madvise` mode (used only where a program asks), so buffers of at
//! least [`MIN_ADVISED_BYTES`] are advised with `MADV_HUGEPAGE` right after
//! they are allocated, before anything touches them. Measured on a CIFAR
//! ResNet-18 training step (one thread, Intel Xeon with AVX-512), see the
//! commit that added this file.
//!
//! The advice changes no contents and may be ignored by the kernel: it is
//! a performance hint, its result is not checked, and on other systems
//! [`advise`] does nothing.

/// Buffers smaller than this are not advised: a huge page needs a whole
/// aligned 2 MiB range inside the buffer.
pub const MIN_ADVISED_BYTES: usize = 4 << 20;

/// Advises the pages that lie wholly inside the allocation of `v` (its
/// capacity, written or not) to be backed by huge pages, when it spans at
/// least [`MIN_ADVISED_BYTES`].
pub fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
    if bytes >= MIN_ADVISED_BYTES {
        advise_range(v.as_ptr() as usize, bytes);
    }
}

#[cfg(target_os = "linux")]
fn advise_range(start: usize, bytes: usize) {
    const PAGE: usize = 4096;
    let first = start.div_ceil(PAGE) * PAGE;
    let end = (start + bytes) / PAGE * PAGE;
    if end > first {
        // SAFETY: the range lies inside one live allocation of ours, and
        // MADV_HUGEPAGE only sets a flag on the mapping: it neither frees
        // nor changes memory, so no reference into the buffer is affected.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_keeps_contents_and_accepts_any_buffer() {
        advise(&Vec::<f32>::new());
        advise(&vec![1u8; 100]);
        let mut big: Vec<f32> = Vec::with_capacity((MIN_ADVISED_BYTES / 4) + 3);
        advise(&big);
        big.extend((0..big.capacity()).map(|i| i as f32));
        advise(&big);
        assert!(big.iter().enumerate().all(|(i, &x)| x == i as f32));
    }
}

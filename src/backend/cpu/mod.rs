//! The CPU backend: [`CpuStorage`] (one typed `Vec` per dtype), the buffer
//! cache, scratch space, SIMD helpers and the threading policy.
//!
//! Kernels go parallel (on rayon's pool, sized by `RAYON_NUM_THREADS` or the
//! core count) only above a size threshold, where the work per task pays for
//! the scheduling; below it they run serially on the calling thread.
//! GEMM calls inside rayon tasks are always single-threaded, so the two kinds
//! of parallelism never nest.

pub mod huge_pages;
pub mod output;
pub mod pool;
pub mod scratch;
pub mod simd;
mod storage;

pub(crate) use storage::with_storage;
pub use storage::{CpuStorage, StorageElement};

use rayon::prelude::*;

/// Element count above which elementwise kernels and reductions go parallel.
///
/// Handing work to rayon's sleeping workers costs tens of microseconds on
/// the 2-core reference machine (measured: a 32K-element add took 4.5 µs
/// serially and 24 µs split over two threads; at 1M elements the split
/// starts to win), so only jobs of a quarter million elements or more are
/// split. The figures are noisy; the threshold is a coarse compromise.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

/// Threads in the current rayon pool.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Fills `out` by calling `f(start, chunk)` on consecutive chunks, in
/// parallel when `out` holds at least [`PARALLEL_MIN_ELEMENTS`] elements.
/// `start` is the index of the chunk's first element within `out`.
pub fn fill_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    fill_chunks_weighted(out, 1, f)
}

/// Like [`fill_chunks`], for outputs whose elements each cost `work_per_item`
/// elementary steps (e.g. a reduction over rows of that length).
pub fn fill_chunks_weighted<T: Send>(
    out: &mut [T],
    work_per_item: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let n = out.len();
    let work = n.saturating_mul(work_per_item.max(1));
    let threads = num_threads();
    if work < PARALLEL_MIN_ELEMENTS || threads == 1 || n < 2 {
        f(0, out);
        return;
    }
    // A few chunks per thread balance uneven progress; each chunk still
    // carries at least PARALLEL_MIN_ELEMENTS / 4 units of work.
    let min_items = (PARALLEL_MIN_ELEMENTS / 4).div_ceil(work_per_item.max(1));
    let chunk = n.div_ceil(threads * 4).max(min_items).max(1);
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i * chunk, c));
}

/// Calls `f(row_index, row)` for each `row_len`-element row of `out`, in
/// parallel (whole rows per task) when `out` is large enough.
pub fn fill_rows<T: Send>(out: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if row_len == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / row_len;
    let threads = num_threads();
    if out.len() < PARALLEL_MIN_ELEMENTS || threads == 1 || rows < 2 {
        out.chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
        return;
    }
    let rows_per_task = rows
        .div_ceil(threads * 4)
        .max((PARALLEL_MIN_ELEMENTS / 4).div_ceil(row_len));
    out.par_chunks_mut(rows_per_task * row_len)
        .enumerate()
        .for_each(|(t, block)| {
            for (i, r) in block.chunks_mut(row_len).enumerate() {
                f(t * rows_per_task + i, r);
            }
        });
}

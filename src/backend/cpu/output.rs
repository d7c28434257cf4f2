//! New output buffers written once, without zero-initialisation.
//!
//! A kernel writes every element of its output right after allocating it,
//! so filling the buffer with zeros first (`vec![0; n]`, a `memset` for any
//! buffer the allocator recycles) is a wasted pass over memory: about 6 % of
//! a ResNet training step. [`build`] hands a kernel the new buffer's
//! uninitialised slots instead, cut into chunks ([`OutChunk`]) that can only
//! be written front to back and that count what they receive; the vector
//! gets its length only after every slot is known to be written. Kernels
//! stay in safe code; the one `unsafe` line is in [`build_weighted`].

use super::fill_chunks_weighted;
use super::pool::take_empty;
use crate::error::Result;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A run of consecutive, not yet initialised slots of a new buffer,
/// written front to back.
pub struct OutChunk<'a, T> {
    slots: &'a mut [MaybeUninit<T>],
    written: usize,
}

impl<T> OutChunk<'_, T> {
    /// Number of slots in the chunk.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True for a chunk without slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots written so far (the next value goes to slot `written()`).
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes `values` into the next slots, stopping when the chunk is full.
    ///
    /// A slice iterator zipped and mapped (`a.iter().zip(b).map(f)`) keeps
    /// its exact length through the zip below, so the loop vectorises as a
    /// plain indexed loop would.
    #[inline]
    pub fn extend(&mut self, values: impl IntoIterator<Item = T>) {
        let mut count = 0;
        for (slot, v) in self.slots[self.written..].iter_mut().zip(values) {
            slot.write(v);
            count += 1;
        }
        self.written += count;
    }

    /// Writes one value into the next slot.
    ///
    /// # Panics
    /// When the chunk is already full (a kernel bug, not bad input).
    #[inline]
    pub fn push(&mut self, v: T) {
        self.slots[self.written].write(v);
        self.written += 1;
    }
}

/// A vector of `n` elements built by calling `f(start, chunk)` on
/// consecutive chunks that together cover `0..n`, in parallel when `n` is
/// at least [`PARALLEL_MIN_ELEMENTS`](super::PARALLEL_MIN_ELEMENTS). `start`
/// is the index of the chunk's first slot; `f` must fill its chunk
/// completely (through [`OutChunk::extend`] / [`OutChunk::push`]).
///
/// A buffer the system refuses is an [`Error::OutOfMemory`](crate::Error::OutOfMemory).
///
/// # Panics
/// When `f` leaves a slot unwritten (a kernel bug, not bad input).
pub fn build<T>(n: usize, f: impl Fn(usize, &mut OutChunk<T>) + Sync) -> Result<Vec<T>>
where
    T: Copy + Default + Send + 'static,
{
    build_weighted(n, 1, f)
}

/// [`build`] for outputs whose elements each cost `work_per_item`
/// elementary steps (see [`fill_chunks_weighted`]).
pub fn build_weighted<T>(
    n: usize,
    work_per_item: usize,
    f: impl Fn(usize, &mut OutChunk<T>) + Sync,
) -> Result<Vec<T>>
where
    T: Copy + Default + Send + 'static,
{
    let mut out = take_empty::<T>(n)?;
    let total = AtomicUsize::new(0);
    fill_chunks_weighted(
        &mut out.spare_capacity_mut()[..n],
        work_per_item,
        |start, slots| {
            let mut chunk = OutChunk { slots, written: 0 };
            f(start, &mut chunk);
            assert_eq!(
                chunk.written,
                chunk.slots.len(),
                "output kernel left slots {}..{} unwritten",
                start + chunk.written,
                start + chunk.slots.len()
            );
            total.fetch_add(chunk.written, Ordering::Relaxed);
        },
    );
    assert_eq!(total.into_inner(), n, "output kernel skipped a chunk");
    // SAFETY: `OutChunk` only writes its slots front to back and counts each
    // write, so the first `written` slots of every chunk are initialised.
    // Every chunk was checked to be full; the chunks are disjoint `&mut`
    // sub-slices of the first `n` slots and their lengths add up to `n`
    // (checked), so they cover all `n` slots: every element is initialised.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// A vector of `rows × row_len` elements built by column blocks: `blocks`
/// cut `0..row_len` into consecutive ranges, and `f(b, chunks)` fills block
/// `b`, receiving one [`OutChunk`] per row (`chunks[r]` is row `r`'s slots
/// `blocks[b]`). Returns the vector and what each call of `f` returned, in
/// block order. Blocks run in parallel (one task each) when the output
/// holds at least [`PARALLEL_MIN_ELEMENTS`](super::PARALLEL_MIN_ELEMENTS)
/// elements and there is more than one block.
///
/// For kernels whose unit of work is a set of columns across every row,
/// such as batch norm's blocks of channels across the batch: a block can
/// reduce over its inputs and then write its outputs while they are still
/// in cache.
///
/// A buffer the system refuses is an [`Error::OutOfMemory`](crate::Error::OutOfMemory).
///
/// # Panics
/// When `blocks` do not cut `0..row_len` into consecutive ranges, or `f`
/// leaves a slot unwritten (kernel bugs, not bad input).
pub fn build_column_blocks<T, R>(
    rows: usize,
    row_len: usize,
    blocks: &[std::ops::Range<usize>],
    f: impl Fn(usize, &mut [OutChunk<T>]) -> R + Sync,
) -> Result<(Vec<T>, Vec<R>)>
where
    T: Copy + Default + Send + 'static,
    R: Send,
{
    let mut next = 0;
    for b in blocks {
        assert!(
            b.start == next && b.end >= b.start,
            "column blocks {blocks:?} do not cut 0..{row_len}"
        );
        next = b.end;
    }
    assert_eq!(
        next, row_len,
        "column blocks {blocks:?} do not cut 0..{row_len}"
    );
    let n = rows
        .checked_mul(row_len)
        .ok_or_else(|| crate::Error::out_of_memory::<T>(usize::MAX))?;
    let mut out = take_empty::<T>(n)?;
    let mut per_block: Vec<Vec<OutChunk<T>>> =
        blocks.iter().map(|_| Vec::with_capacity(rows)).collect();
    if row_len > 0 {
        for mut row in out.spare_capacity_mut()[..n].chunks_mut(row_len) {
            for (b, chunks) in blocks.iter().zip(per_block.iter_mut()) {
                let (slots, rest) = std::mem::take(&mut row).split_at_mut(b.len());
                chunks.push(OutChunk { slots, written: 0 });
                row = rest;
            }
        }
    }
    let fill = |(b, chunks): (usize, &mut Vec<OutChunk<T>>)| {
        let result = f(b, chunks);
        for (r, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                chunk.written,
                chunk.slots.len(),
                "output kernel left slots of row {r}, block {b} unwritten"
            );
        }
        result
    };
    let results: Vec<R> =
        if n >= super::PARALLEL_MIN_ELEMENTS && super::num_threads() > 1 && blocks.len() > 1 {
            use rayon::prelude::*;
            per_block.par_iter_mut().enumerate().map(fill).collect()
        } else {
            per_block.iter_mut().enumerate().map(fill).collect()
        };
    let written: usize = per_block.iter().flatten().map(|c| c.written).sum();
    assert_eq!(written, n, "output kernel skipped a block");
    drop(per_block);
    // SAFETY: as in `build_weighted`: every chunk is a disjoint `&mut`
    // sub-slice of the first `n` slots (each row cut at the block bounds,
    // rows `row_len` apart), each was checked to be full, and their lengths
    // add up to `n` (checked), so every element is initialised.
    unsafe { out.set_len(n) };
    Ok((out, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_serial_and_parallel_outputs() {
        for n in [0, 1, 7, 1 << 20] {
            let v = build(n, |start, chunk| {
                let len = chunk.len();
                chunk.extend((start..start + len).map(|i| i as u32 * 3));
            })
            .unwrap();
            assert_eq!(v.len(), n);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 * 3));
        }
    }

    #[test]
    fn push_and_extend_mix() {
        let v = build(5, |_, chunk| {
            chunk.push(1.0f32);
            chunk.extend([2.0, 3.0]);
            chunk.extend([4.0, 5.0, 6.0]); // the extra value is dropped
        })
        .unwrap();
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn column_blocks_fill_every_row_serial_and_parallel() {
        for (rows, row_len, cuts) in [
            (0, 5, vec![0..2, 2..5]),
            (3, 0, vec![]),
            (3, 7, vec![0..4, 4..7]),
            (4, 10, vec![0..3, 3..3, 3..10]),
            (64, 1 << 13, vec![0..100, 100..5000, 5000..8192]),
        ] {
            let (v, blocks) = build_column_blocks(rows, row_len, &cuts, |b, chunks| {
                assert_eq!(chunks.len(), rows);
                for (r, chunk) in chunks.iter_mut().enumerate() {
                    let cols = cuts[b].clone();
                    chunk.extend(cols.map(|c| (r * row_len + c) as u32));
                }
                b
            })
            .unwrap();
            assert_eq!(blocks, (0..cuts.len()).collect::<Vec<_>>());
            assert_eq!(v.len(), rows * row_len);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        }
    }

    #[test]
    #[should_panic(expected = "do not cut")]
    fn column_blocks_must_cut_the_row() {
        let _ = build_column_blocks(2, 5, &[0..2, 3..5], |_, _: &mut [OutChunk<u8>]| ());
    }

    #[test]
    #[should_panic(expected = "unwritten")]
    fn an_unwritten_block_slot_is_caught() {
        let _ = build_column_blocks(2, 4, &[0..2, 2..4], |b, chunks| {
            for chunk in chunks.iter_mut().skip(b) {
                chunk.extend([1u8, 2]);
            }
        });
    }

    #[test]
    #[should_panic(expected = "unwritten")]
    fn an_unwritten_slot_is_caught() {
        let _ = build(4, |_, chunk| chunk.extend([1u8, 2, 3]));
    }
}

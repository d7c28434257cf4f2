//! Data-parallel sharding: every global batch of an epoch split into
//! contiguous, balanced per-rank slices, so that the ranks together visit
//! exactly the batches (and images, augmented alike) of one process.

use super::loader::{Batch, DataLoader};
use crate::error::{Error, Result};
use std::cell::Cell;
use std::ops::Range;

thread_local! {
    /// The training batch this thread's forward pass computes (see
    /// [`with_batch_position`]).
    static CURRENT_POSITION: Cell<Option<BatchPosition>> = const { Cell::new(None) };
}

/// Which training step a forward pass belongs to, and which rows of that
/// step's global batch it computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPosition {
    /// Training steps before this one since the start of training
    /// (`epoch · batches per epoch + batch`), the same on every rank and
    /// after a resume.
    pub step: u64,
    /// This forward pass's rows of the global batch.
    pub slice: Slice,
}

/// Runs `f` with `position` as this thread's current training batch.
/// Layers that draw random numbers per element (dropout) read it through
/// [`current_batch_position`] and draw at a place fixed by the step and
/// the rows' global offset, so a data-parallel rank's masks equal those
/// one process draws for the same rows, and a resumed run draws what an
/// uninterrupted one would. The trainers wrap every training forward; the
/// previous value is restored afterwards, also when `f` panics.
pub fn with_batch_position<R>(position: BatchPosition, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<BatchPosition>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT_POSITION.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT_POSITION.with(|c| c.replace(Some(position))));
    f()
}

/// This thread's current training batch, while a [`with_batch_position`]
/// call runs; `None` outside the trainers' training forward passes.
pub fn current_batch_position() -> Option<BatchPosition> {
    CURRENT_POSITION.with(|c| c.get())
}

/// Where one rank's rows lie in a global batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// First row of the rank's slice within the global batch.
    pub offset: usize,
    /// Rows in the rank's slice (0 when the global batch has fewer rows
    /// than there are ranks).
    pub len: usize,
    /// Rows of the global batch.
    pub global_len: usize,
}

impl Slice {
    /// The whole batch of `len` rows (one process).
    pub fn whole(len: usize) -> Slice {
        Slice {
            offset: 0,
            len,
            global_len: len,
        }
    }

    /// Rank `rank`'s slice of a global batch of `global_len` rows shared by
    /// `world` ranks (see [`shard_range`]).
    pub fn of_rank(global_len: usize, rank: usize, world: usize) -> Slice {
        let range = shard_range(global_len, rank, world);
        Slice {
            offset: range.start,
            len: range.len(),
            global_len,
        }
    }

    /// The rows as a range.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The rows of a batch of `len` rows that rank `rank` of `world` takes:
/// contiguous and balanced, the first `len mod world` ranks one row more.
/// Rank `r` starts at `r·⌊len/world⌋ + min(r, len mod world)`; the ranges
/// of ranks `0..world` tile `0..len` in order. An empty range for a rank
/// out of `0..world` (or `world = 0`).
pub fn shard_range(len: usize, rank: usize, world: usize) -> Range<usize> {
    if world == 0 || rank >= world {
        return 0..0;
    }
    let (base, extra) = (len / world, len % world);
    let start = rank * base + rank.min(extra);
    let size = base + usize::from(rank < extra);
    start..start + size
}

/// One rank's view of an epoch: for every global batch, in order, its
/// [`Slice`] and the rank's batch (`None` for an empty slice); see
/// [`DataLoader::shard_epoch`].
#[derive(Debug)]
pub struct ShardedEpoch<'l, 'a> {
    loader: &'l DataLoader<'a>,
    epoch: usize,
    rank: usize,
    world: usize,
    next: usize,
}

impl<'a> DataLoader<'a> {
    /// The batches of epoch `epoch` as rank `rank` of `world` sees them:
    /// the same global batches as [`DataLoader::epoch`] (same shuffle,
    /// same augmentation of every image), each cut by [`shard_range`].
    /// With one rank, exactly [`DataLoader::epoch`]'s batches.
    pub fn shard_epoch(
        &mut self,
        epoch: usize,
        rank: usize,
        world: usize,
    ) -> Result<ShardedEpoch<'_, 'a>> {
        if rank >= world {
            return Err(Error::invalid(
                "DataLoader::shard_epoch",
                format!("rank {rank} is not a rank of a world of {world}"),
            ));
        }
        let loader: &DataLoader<'a> = self.epoch(epoch).loader();
        Ok(ShardedEpoch {
            loader,
            epoch,
            rank,
            world,
            next: 0,
        })
    }
}

impl Iterator for ShardedEpoch<'_, '_> {
    type Item = Result<(Slice, Option<Batch>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let indices = self.loader.batch_indices(self.next)?;
        self.next += 1;
        let slice = Slice::of_rank(indices.len(), self.rank, self.world);
        if slice.len == 0 {
            return Some(Ok((slice, None)));
        }
        Some(
            self.loader
                .batch(&indices[slice.range()], self.epoch)
                .map(|b| (slice, Some(b))),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.loader.num_batches().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for ShardedEpoch<'_, '_> {}

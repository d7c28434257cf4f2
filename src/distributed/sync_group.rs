//! The communicator of layers that synchronise over the ranks during
//! forward and backward (synchronised batch norm), held by the layers and
//! by the graph their backward runs in.

use super::Communicator;
use crate::error::{Error, Result};
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::ThreadId;

/// A handle on this rank's communicator for layers that synchronise their
/// computation over the ranks of a data-parallel job, such as
/// [`BatchNorm2d`](crate::nn::BatchNorm2d) with synchronised statistics
/// (see [`convert_sync_batch_norm`](crate::nn::convert_sync_batch_norm)).
///
/// Modules and backward rules must be `Send + Sync`, while communicators
/// generally are not (an MPI or NCCL communicator belongs to the thread
/// that set it up). A `SyncGroup` is therefore bound to the thread that
/// created it: it can be moved and shared with the model, but its
/// collectives run only on that thread, and anywhere else
/// [`comm`](Self::comm) returns an error (so a synchronised layer used on
/// another thread fails instead of misbehaving). Dropped on another
/// thread, the communicator it holds is leaked rather than released there.
///
/// Clones share the communicator. Collectives issued through a group are
/// part of the communicator's one sequence: every rank must run the same
/// synchronised layers in the same order (same model, same forward and
/// backward), interleaved with the trainer's own collectives in the same
/// way, which the same program on every rank gives.
///
/// ```
/// use ferrite::distributed::{Communicator, SingleProcess, SyncGroup};
/// use std::rc::Rc;
/// let comm: Rc<dyn Communicator> = Rc::new(SingleProcess::new());
/// let group = SyncGroup::new(comm.clone());
/// assert_eq!((group.rank(), group.world_size()), (0, 1));
/// assert!(group.comm().is_ok());
/// // On another thread the handle exists, but its collectives are refused.
/// let elsewhere = group.clone();
/// std::thread::spawn(move || assert!(elsewhere.comm().is_err())).join().unwrap();
/// ```
#[derive(Clone)]
pub struct SyncGroup {
    inner: Arc<Bound>,
}

/// The communicator and the thread it belongs to.
struct Bound {
    owner: ThreadId,
    rank: usize,
    world: usize,
    comm: ManuallyDrop<Rc<dyn Communicator>>,
}

// Safety: `comm` (an `Rc`, not thread-safe) is reached only through
// `SyncGroup::comm`, which hands out a borrow on the owner thread alone
// (and `&dyn Communicator` is not `Send`, so the borrow stays there), and
// it is dropped only on that thread (`Drop` below leaks it elsewhere).
// Thread ids are never reused within a process.
unsafe impl Send for Bound {}
// Safety: as above; shared access from other threads never touches `comm`.
unsafe impl Sync for Bound {}

impl Drop for Bound {
    fn drop(&mut self) {
        if std::thread::current().id() == self.owner {
            // Safety: dropped once, here, on the owner thread.
            unsafe { ManuallyDrop::drop(&mut self.comm) }
        }
    }
}

impl SyncGroup {
    /// A group over `comm`, bound to the calling thread.
    pub fn new(comm: Rc<dyn Communicator>) -> Self {
        SyncGroup {
            inner: Arc::new(Bound {
                owner: std::thread::current().id(),
                rank: comm.rank(),
                world: comm.world_size(),
                comm: ManuallyDrop::new(comm),
            }),
        }
    }

    /// The communicator, on the thread that created the group; an
    /// [`Error::Distributed`] on any other thread.
    pub fn comm(&self) -> Result<&dyn Communicator> {
        if std::thread::current().id() != self.inner.owner {
            return Err(Error::Distributed {
                op: "SyncGroup",
                msg: format!(
                    "rank {}'s synchronisation group was used on another thread than the one \
                     that created it; a communicator serves the thread it belongs to",
                    self.inner.rank
                ),
            });
        }
        Ok(&**self.inner.comm)
    }

    /// This rank's index in the group.
    pub fn rank(&self) -> usize {
        self.inner.rank
    }

    /// Number of ranks in the group.
    pub fn world_size(&self) -> usize {
        self.inner.world
    }
}

impl std::fmt::Debug for SyncGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SyncGroup {{ rank: {}, world_size: {} }}",
            self.inner.rank, self.inner.world
        )
    }
}

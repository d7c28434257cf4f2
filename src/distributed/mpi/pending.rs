//! An all-reduce in flight over MPI (`MPI_Iallreduce`): the buffers are
//! handed to MPI until the request has completed.

use super::Shared;
use ::mpi::collective::SystemOperation;
use ::mpi::datatype::Equivalence;
use ::mpi::request::{Request, StaticScope};
use ::mpi::traits::CommunicatorCollectives as _;
use std::rc::Rc;

/// The sum over all ranks of a buffer of `T`, started and not yet waited
/// for. Dropping it waits for the request (MPI may still write into the
/// buffers until then), so it never leaves memory in MPI's hands.
pub(super) struct Pending<T: Equivalence + 'static> {
    /// The request; `None` once it has completed.
    request: Option<Request<'static, [T], StaticScope>>,
    /// The send and receive buffers, leaked boxes that MPI reads and
    /// writes; `None` once they have been reclaimed.
    buffers: Option<(*mut [T], *mut [T])>,
    /// Keeps MPI initialised (and the communicator alive) until the
    /// request has completed: dropped after [`Drop::drop`] has waited.
    _mpi: Rc<Shared>,
}

impl<T: Equivalence + 'static> Pending<T> {
    /// Starts summing `send` into `recv` (the same length) over the ranks
    /// of `mpi`'s communicator.
    pub(super) fn start(mpi: Rc<Shared>, send: Vec<T>, recv: Vec<T>) -> Self {
        debug_assert_eq!(send.len(), recv.len());
        let send = Box::into_raw(send.into_boxed_slice());
        let recv = Box::into_raw(recv.into_boxed_slice());
        // SAFETY: both pointers come from boxes leaked just above, so they
        // are valid, aligned and not aliased. The references made from them
        // are only held by the request, and the boxes are reclaimed (in
        // `reclaim`) only after the request has completed, which ends MPI's
        // use of both buffers.
        let (send_ref, recv_ref): (&'static [T], &'static mut [T]) =
            unsafe { (&*send, &mut *recv) };
        let request = mpi.comm.immediate_all_reduce_into(
            StaticScope,
            send_ref,
            recv_ref,
            SystemOperation::sum(),
        );
        Pending {
            request: Some(request),
            buffers: Some((send, recv)),
            _mpi: mpi,
        }
    }

    /// Waits for the sum; returns it and the send buffer (for reuse).
    pub(super) fn finish(mut self) -> (Vec<T>, Vec<T>) {
        self.complete();
        self.reclaim().unwrap_or_default()
    }

    /// Waits for the request, if it has not completed yet.
    fn complete(&mut self) {
        if let Some(request) = self.request.take() {
            request.wait_without_status();
        }
    }

    /// The (sum, send) buffers, once the request has completed.
    fn reclaim(&mut self) -> Option<(Vec<T>, Vec<T>)> {
        debug_assert!(self.request.is_none());
        let (send, recv) = self.buffers.take()?;
        // SAFETY: the pointers come from `Box::into_raw` in `start`, the
        // request that borrowed them has completed (see `complete`), and
        // `buffers` is now `None`, so each box is rebuilt exactly once.
        let (send, recv) = unsafe { (Box::from_raw(send), Box::from_raw(recv)) };
        Some((recv.into_vec(), send.into_vec()))
    }
}

impl<T: Equivalence + 'static> Drop for Pending<T> {
    /// Waits for the request (a handle dropped without waiting still takes
    /// part in the collective) and frees the buffers.
    fn drop(&mut self) {
        self.complete();
        drop(self.reclaim());
    }
}

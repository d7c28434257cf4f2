//! [`MpiCommunicator`]: the [`Communicator`] collectives over MPI.

use super::pending::Pending;
use super::{Shared, ERROR_EXIT_CODE};
use crate::distributed::{AllReduce, Buffer, Communicator};
use crate::error::{Error, Result};
use ::mpi::datatype::PartitionMut;
use ::mpi::traits::{Communicator as _, CommunicatorCollectives as _, Root as _};
use ::mpi::Count;
use std::rc::Rc;

/// Spare receive buffers kept for later all-reduces (MPI has no in-place
/// all-reduce in rsmpi, so each one needs a second buffer).
const MAX_SPARES: usize = 16;

/// One rank of an MPI job: a duplicate of `MPI_COMM_WORLD`, made by
/// [`init`](super::init) (or [`run_or_abort`](super::run_or_abort)).
///
/// - All-reduce: `MPI_Iallreduce` (non-blocking) with `MPI_SUM` into a
///   receive buffer (the previous call's send buffer when the type and
///   length match); [`AllReduce::wait`] waits for the request. Open MPI's
///   reductions give the same bits on every rank for a commutative
///   operation (MPI advises it; `examples/ddp_mpi_check.rs` checks it).
///   Non-blocking collectives progress inside MPI calls, so most of the
///   work happens in `wait` and the next `start`.
/// - Broadcast: the root's type and length first, then its values; the
///   other ranks' buffers take the root's type and length.
/// - All-gather: every rank's type and length (`MPI_Allgather`), then the
///   values (`MPI_Allgatherv`); lengths may differ, types may not.
/// - Abort: `MPI_Abort` on `MPI_COMM_WORLD`, which ends every rank of the
///   job (it does not return).
///
/// Errors in MPI itself abort the job (`MPI_ERRORS_ARE_FATAL`, MPI's
/// default); the errors returned are those found before calling MPI, and
/// every rank finds the same ones. Clones share the communicator; MPI is
/// finalised when the last clone (and the last pending all-reduce) is
/// dropped. Not `Send`: MPI was initialised for calls from this thread
/// only (`MPI_THREAD_FUNNELED`).
#[derive(Clone)]
pub struct MpiCommunicator {
    pub(super) shared: Rc<Shared>,
    pub(super) rank: usize,
    pub(super) world: usize,
}

impl std::fmt::Debug for MpiCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCommunicator")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

impl MpiCommunicator {
    /// A receive buffer like `buf` (a spare one when there is one).
    fn scratch_like(&self, buf: &Buffer) -> Result<Buffer> {
        let mut spares = self.shared.spares.borrow_mut();
        let found = spares
            .iter()
            .position(|s| s.dtype() == buf.dtype() && s.len() == buf.len());
        match found {
            Some(i) => Ok(spares.swap_remove(i)),
            None => Buffer::zeros(buf.dtype(), buf.len()),
        }
    }
}

/// Keeps `buf` as a spare receive buffer.
fn keep_spare(shared: &Shared, buf: Buffer) {
    let mut spares = shared.spares.borrow_mut();
    if spares.len() >= MAX_SPARES {
        spares.remove(0);
    }
    spares.push(buf);
}

/// `len` as an MPI element count.
fn count(len: usize, op: &'static str) -> Result<Count> {
    Count::try_from(len).map_err(|_| Error::Distributed {
        op,
        msg: format!("{len} elements exceed MPI's count limit of {}", Count::MAX),
    })
}

/// A buffer's type as a number that travels in a `u64` header.
fn dtype_code(buf: &Buffer) -> u64 {
    match buf {
        Buffer::F32(_) => 1,
        Buffer::F64(_) => 2,
    }
}

/// The rank `root` as MPI's rank type, if it is a rank of the job.
fn mpi_rank(root: usize, world: usize, op: &'static str) -> Result<i32> {
    match i32::try_from(root) {
        Ok(r) if root < world => Ok(r),
        _ => Err(Error::invalid(
            op,
            format!("root {root} is not a rank of a world of {world}"),
        )),
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce> {
        count(buf.len(), "all_reduce")?;
        let recv = self.scratch_like(&buf)?;
        let shared = self.shared.clone();
        match (buf, recv) {
            (Buffer::F32(send), Buffer::F32(recv)) => {
                let pending = Pending::start(shared.clone(), send, recv);
                Ok(AllReduce::new(move || {
                    let (sum, sent) = pending.finish();
                    keep_spare(&shared, Buffer::F32(sent));
                    Ok(Buffer::F32(sum))
                }))
            }
            (Buffer::F64(send), Buffer::F64(recv)) => {
                let pending = Pending::start(shared.clone(), send, recv);
                Ok(AllReduce::new(move || {
                    let (sum, sent) = pending.finish();
                    keep_spare(&shared, Buffer::F64(sent));
                    Ok(Buffer::F64(sum))
                }))
            }
            _ => Err(Error::Distributed {
                op: "all_reduce",
                msg: "the receive buffer's type differs from the send buffer's".into(),
            }),
        }
    }

    fn broadcast(&self, buf: &mut Buffer, root: usize) -> Result<()> {
        let root = self
            .shared
            .comm
            .process_at_rank(mpi_rank(root, self.world, "broadcast")?);
        let mut header = [dtype_code(buf), buf.len() as u64];
        root.broadcast_into(&mut header[..]);
        // Every rank now sees the root's type and length, so every rank
        // fails (or not) alike.
        let len = usize::try_from(header[1]).map_err(|_| Error::Distributed {
            op: "broadcast",
            msg: format!(
                "the root's {} elements do not fit in memory here",
                header[1]
            ),
        })?;
        count(len, "broadcast")?;
        if self.rank != root.rank() as usize {
            *buf = match header[0] {
                1 => Buffer::F32(vec![0.0; len]),
                2 => Buffer::F64(vec![0.0; len]),
                code => {
                    return Err(Error::Distributed {
                        op: "broadcast",
                        msg: format!("the root sent an unknown buffer type {code}"),
                    })
                }
            };
        }
        match buf {
            Buffer::F32(v) => root.broadcast_into(&mut v[..]),
            Buffer::F64(v) => root.broadcast_into(&mut v[..]),
        }
        Ok(())
    }

    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>> {
        let comm = &self.shared.comm;
        let mine = [dtype_code(buf), buf.len() as u64];
        let mut headers = vec![0u64; 2 * self.world];
        comm.all_gather_into(&mine[..], &mut headers[..]);
        // Every rank checks the same headers, so all fail or none does.
        let mut counts = Vec::with_capacity(self.world);
        let mut displs = Vec::with_capacity(self.world);
        let mut total: Count = 0;
        for (r, h) in headers.chunks_exact(2).enumerate() {
            if h[0] != mine[0] {
                return Err(Error::Distributed {
                    op: "all_gather",
                    msg: format!("rank {r}'s buffer type differs from rank {}'s", self.rank),
                });
            }
            let c = usize::try_from(h[1]).map_err(|_| Error::Distributed {
                op: "all_gather",
                msg: format!("rank {r}'s {} elements do not fit in memory here", h[1]),
            })?;
            let c = count(c, "all_gather")?;
            displs.push(total);
            total = total.checked_add(c).ok_or_else(|| Error::Distributed {
                op: "all_gather",
                msg: format!(
                    "the gathered buffers exceed MPI's count limit of {}",
                    Count::MAX
                ),
            })?;
            counts.push(c);
        }
        let lens: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
        Ok(match buf {
            Buffer::F32(v) => {
                let mut all = vec![0f32; total as usize];
                let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
                comm.all_gather_varcount_into(&v[..], &mut parts);
                split(all, &lens).into_iter().map(Buffer::F32).collect()
            }
            Buffer::F64(v) => {
                let mut all = vec![0f64; total as usize];
                let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
                comm.all_gather_varcount_into(&v[..], &mut parts);
                split(all, &lens).into_iter().map(Buffer::F64).collect()
            }
        })
    }

    fn barrier(&self) -> Result<()> {
        self.shared.comm.barrier();
        Ok(())
    }

    fn abort(&self, message: &str) {
        eprintln!(
            "ferrite: rank {} of {} aborts the MPI job: {message}",
            self.rank, self.world
        );
        abort_world(ERROR_EXIT_CODE)
    }
}

/// Ends every rank of the job with exit code `code` (`MPI_Abort` on
/// `MPI_COMM_WORLD`).
pub(super) fn abort_world(code: i32) -> ! {
    ::mpi::topology::SimpleCommunicator::world().abort(code)
}

/// `all` cut into consecutive pieces of `lens` elements.
fn split<T>(all: Vec<T>, lens: &[usize]) -> Vec<Vec<T>> {
    let mut rest = all.into_iter();
    lens.iter()
        .map(|&n| rest.by_ref().take(n).collect())
        .collect()
}

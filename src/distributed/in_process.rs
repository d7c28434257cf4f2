//! Ranks as threads of one process: the communicator the distributed
//! tests run on, in a plain `cargo test`.

use super::rendezvous::{Op, Outcome, Rendezvous};
use super::{AllReduce, Buffer, Communicator};
use crate::error::{Error, Result};
use std::cell::Cell;
use std::sync::Arc;

/// One rank of a group of threads that share memory; build the group with
/// [`InProcess::group`] and move one communicator into each thread.
///
/// Sums are added in rank order (rank 0's buffer, plus rank 1's, ...) once,
/// and every rank receives the same bits, so results are reproducible and
/// identical across ranks. A rank that [aborts](Communicator::abort),
/// panics, or drops its communicator while the others still expect it in
/// a collective makes their collectives fail with an error naming it: no
/// rank waits forever (and no timeout is involved).
///
/// ```
/// use ferrite::distributed::{Buffer, Communicator, InProcess};
/// let group = InProcess::group(3)?;
/// let sums = std::thread::scope(|s| {
///     let handles: Vec<_> = group
///         .into_iter()
///         .map(|comm| s.spawn(move || {
///             let mut buf = Buffer::F32(vec![comm.rank() as f32, 1.0]);
///             comm.all_reduce_sum(&mut buf).map(|_| buf)
///         }))
///         .collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect::<ferrite::Result<Vec<_>>>()
/// })?;
/// assert!(sums.iter().all(|b| *b == Buffer::F32(vec![3.0, 3.0])));
/// # Ok::<(), ferrite::Error>(())
/// ```
pub struct InProcess {
    rank: usize,
    world: usize,
    meeting: Arc<Rendezvous>,
    /// Sequence number of this rank's next collective.
    next: Cell<u64>,
}

impl InProcess {
    /// A group of `world` ranks, rank `i` at index `i`.
    pub fn group(world: usize) -> Result<Vec<InProcess>> {
        if world == 0 {
            return Err(Error::invalid(
                "InProcess::group",
                "a group needs at least one rank",
            ));
        }
        let meeting = Arc::new(Rendezvous::new(world));
        Ok((0..world)
            .map(|rank| InProcess {
                rank,
                world,
                meeting: meeting.clone(),
                next: Cell::new(0),
            })
            .collect())
    }

    /// Joins this rank's next collective with `buf`; its sequence number.
    fn join(&self, op: Op, buf: Buffer) -> Result<u64> {
        let seq = self.next.get();
        self.next.set(seq + 1);
        self.meeting.join(seq, self.rank, op, buf)?;
        Ok(seq)
    }

    /// Joins and waits for a collective whose result is one buffer.
    fn run_same(&self, op: Op, buf: Buffer) -> Result<Buffer> {
        let seq = self.join(op, buf)?;
        match self.meeting.collect(seq, self.rank, op)? {
            Outcome::Same(b) => Ok(b),
            Outcome::Each(_) => Err(internal(op)),
        }
    }
}

fn internal(op: Op) -> Error {
    Error::Distributed {
        op: "in_process",
        msg: format!("{op:?} produced the wrong kind of result"),
    }
}

impl Communicator for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce> {
        let seq = self.join(Op::AllReduceSum, buf)?;
        let (meeting, rank) = (self.meeting.clone(), self.rank);
        Ok(AllReduce::new(move || {
            match meeting.collect(seq, rank, Op::AllReduceSum)? {
                Outcome::Same(b) => Ok(b),
                Outcome::Each(_) => Err(internal(Op::AllReduceSum)),
            }
        }))
    }

    fn broadcast(&self, buf: &mut Buffer, root: usize) -> Result<()> {
        if root >= self.world {
            let msg = format!("root {root} is not a rank of a world of {}", self.world);
            self.abort(&msg);
            return Err(Error::invalid("broadcast", msg));
        }
        *buf = self.run_same(Op::Broadcast(root), std::mem::take(buf))?;
        Ok(())
    }

    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>> {
        let seq = self.join(Op::AllGather, buf.clone())?;
        match self.meeting.collect(seq, self.rank, Op::AllGather)? {
            Outcome::Each(all) => Ok(all),
            Outcome::Same(_) => Err(internal(Op::AllGather)),
        }
    }

    fn barrier(&self) -> Result<()> {
        self.run_same(Op::Barrier, Buffer::default()).map(|_| ())
    }

    fn abort(&self, message: &str) {
        self.meeting
            .fail(format!("rank {} aborted: {message}", self.rank));
    }
}

impl Drop for InProcess {
    /// Leaves the group; while the thread panics, fails it.
    fn drop(&mut self) {
        self.meeting.leave(self.rank, std::thread::panicking());
    }
}

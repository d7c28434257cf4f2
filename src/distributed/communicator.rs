//! The interface between a data-parallel job's ranks.

use super::Buffer;
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// The collectives data-parallel training needs, between the `world_size`
/// ranks of a job (one process, thread or GPU each), as MPI and NCCL
/// provide them.
///
/// Every rank must call the same collectives in the same order, with
/// buffers of the same type and length (an asynchronous all-reduce counts
/// when it starts): collectives are matched by their position in that
/// sequence. A rank that fails calls [`abort`](Self::abort) (or panics, or
/// drops its communicator); the other ranks' pending and later collectives
/// then return an [`Error::Distributed`](crate::Error::Distributed) naming
/// it instead of waiting forever.
///
/// Implementations: [`SingleProcess`](super::SingleProcess) (one rank),
/// [`InProcess`](super::InProcess) (ranks as threads of one process),
/// `mpi::MpiCommunicator` (feature `mpi`: a handle over a non-blocking
/// request; no `Send` bound, since MPI communicators stay on their thread)
/// and `nccl::NcclCommunicator` (feature `cuda`: a handle over work queued
/// on a stream).
pub trait Communicator {
    /// This rank's index, `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the job.
    fn world_size(&self) -> usize;

    /// Starts summing `buf` over all ranks; [`AllReduce::wait`] returns
    /// the sum, the same bits on every rank.
    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce>;

    /// Replaces `buf` on every rank by rank `root`'s.
    fn broadcast(&self, buf: &mut Buffer, root: usize) -> Result<()>;

    /// Every rank's buffer, in rank order (the lengths may differ between
    /// ranks, the type may not).
    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>>;

    /// Returns once every rank has reached it.
    fn barrier(&self) -> Result<()>;

    /// Ends the job because this rank failed: the other ranks' collectives
    /// return an error carrying `message` and this rank's index.
    fn abort(&self, message: &str);

    /// Starts summing the tensor `t` (f32 or f64, the same shape on every
    /// rank) over all ranks; [`TensorAllReduce::wait`] returns the sum on
    /// `t`'s device. The default copies `t` to the host, runs
    /// [`start_all_reduce_sum`](Self::start_all_reduce_sum) and uploads the
    /// result; a communicator that moves device memory itself (NCCL)
    /// reduces a tensor on its GPU where it lies, and may write the sum
    /// into `t`'s storage, so pass a tensor no one else reads.
    fn start_all_reduce_sum_tensor(&self, t: Tensor) -> Result<TensorAllReduce> {
        all_reduce_tensor_through_host(self, t)
    }

    /// Sums `buf` over all ranks in place (blocking).
    fn all_reduce_sum(&self, buf: &mut Buffer) -> Result<()> {
        *buf = self.start_all_reduce_sum(std::mem::take(buf))?.wait()?;
        Ok(())
    }

    /// Averages `buf` over all ranks in place: the sum times
    /// `1 / world_size`.
    fn all_reduce_mean(&self, buf: &mut Buffer) -> Result<()> {
        self.all_reduce_sum(buf)?;
        buf.scale(1.0 / self.world_size() as f64);
        Ok(())
    }
}

/// An all-reduce in flight, from
/// [`Communicator::start_all_reduce_sum`]: [`wait`](Self::wait) for its
/// result. Dropping it without waiting leaves the collective to complete
/// for the other ranks.
pub struct AllReduce(Box<dyn FnOnce() -> Result<Buffer>>);

impl AllReduce {
    /// A handle whose result `wait` produces (blocking until it is there).
    pub fn new(wait: impl FnOnce() -> Result<Buffer> + 'static) -> Self {
        AllReduce(Box::new(wait))
    }

    /// A handle on a result that is already there.
    pub fn done(result: Buffer) -> Self {
        AllReduce::new(move || Ok(result))
    }

    /// Blocks until the sum is there and returns it.
    pub fn wait(self) -> Result<Buffer> {
        (self.0)()
    }
}

impl std::fmt::Debug for AllReduce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AllReduce { .. }")
    }
}

/// A tensor all-reduce in flight, from
/// [`Communicator::start_all_reduce_sum_tensor`]: [`wait`](Self::wait) for
/// the sum. Dropping it without waiting still lets the collective finish
/// before the memory it writes is released.
pub struct TensorAllReduce(Box<dyn FnOnce() -> Result<Tensor>>);

impl TensorAllReduce {
    /// A handle whose result `wait` produces (blocking until it is there).
    pub fn new(wait: impl FnOnce() -> Result<Tensor> + 'static) -> Self {
        TensorAllReduce(Box::new(wait))
    }

    /// Blocks until the sum is there and returns it (on the device of the
    /// tensor given, with its shape).
    pub fn wait(self) -> Result<Tensor> {
        (self.0)()
    }
}

impl std::fmt::Debug for TensorAllReduce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TensorAllReduce { .. }")
    }
}

/// [`Communicator::start_all_reduce_sum_tensor`] through a host buffer:
/// download `t`, start the host all-reduce, and on `wait` upload the sum
/// to `t`'s device in `t`'s shape.
pub fn all_reduce_tensor_through_host<C: Communicator + ?Sized>(
    comm: &C,
    t: Tensor,
) -> Result<TensorAllReduce> {
    let buf = match t.dtype() {
        DType::F32 => Buffer::F32(t.to_vec::<f32>()?),
        DType::F64 => Buffer::F64(t.to_vec::<f64>()?),
        dtype => {
            return Err(Error::UnsupportedDType {
                op: "all_reduce (tensors must be f32 or f64)",
                dtype,
            })
        }
    };
    let (shape, device) = (t.shape().to_vec(), t.device());
    drop(t);
    let pending = comm.start_all_reduce_sum(buf)?;
    Ok(TensorAllReduce::new(move || {
        let sum = match pending.wait()? {
            Buffer::F32(v) => Tensor::from_vec(v, &shape)?,
            Buffer::F64(v) => Tensor::from_vec(v, &shape)?,
        };
        match device {
            Device::Cpu => Ok(sum),
            device => sum.to_device(device),
        }
    }))
}

/// A shared communicator is one: the job's trainer and its synchronised
/// layers ([`SyncGroup`](super::SyncGroup)) can hold the same one (e.g.
/// `Box::new(rc.clone())` for a [`Reducer`](super::Reducer)), and every
/// collective goes to the inner communicator, in the one sequence the
/// ranks must share.
impl<C: Communicator + ?Sized> Communicator for std::rc::Rc<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce> {
        (**self).start_all_reduce_sum(buf)
    }
    fn start_all_reduce_sum_tensor(&self, t: Tensor) -> Result<TensorAllReduce> {
        (**self).start_all_reduce_sum_tensor(t)
    }
    fn broadcast(&self, buf: &mut Buffer, root: usize) -> Result<()> {
        (**self).broadcast(buf, root)
    }
    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>> {
        (**self).all_gather(buf)
    }
    fn barrier(&self) -> Result<()> {
        (**self).barrier()
    }
    fn abort(&self, message: &str) {
        (**self).abort(message)
    }
    fn all_reduce_sum(&self, buf: &mut Buffer) -> Result<()> {
        (**self).all_reduce_sum(buf)
    }
    fn all_reduce_mean(&self, buf: &mut Buffer) -> Result<()> {
        (**self).all_reduce_mean(buf)
    }
}

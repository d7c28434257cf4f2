//! [`NcclCommunicator`]: the [`Communicator`] collectives over NCCL
//! (feature `cuda`), one rank per GPU.
//!
//! NCCL (`libnccl`, loaded at run time by cudarc, built for NCCL 2.28) moves
//! device memory; the trait's buffers live on the host, so every collective
//! uploads its buffer, runs on the communicator's own CUDA stream and
//! downloads the result. cudarc looks for `libnccl.so` (and `libnccl.so.1`,
//! `.9` to `.13`), not `libnccl.so.2` as NCCL's own packages name it: a
//! `libnccl.so` link next to it may be needed. NCCL refuses two ranks on
//! one GPU.
//!
//! Not done yet: the asynchronous-error watchdog (cudarc's safe API does not
//! expose `ncclCommGetAsyncError`), so a rank that aborts or dies does not
//! wake the others; launch NCCL jobs under MPI ([`NcclCommunicator::over`]
//! with an MPI bootstrap), whose `MPI_Abort` ends them all.

use super::{AllReduce, Buffer, Communicator};
use crate::backend::cuda::{device_count, driver_error, unavailable};
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Bytes of an NCCL unique id (`ncclUniqueId`).
const ID_BYTES: usize = 128;

/// One rank of an NCCL job, on one GPU, with its own stream.
///
/// All-reduce uploads the buffer and enqueues `ncclAllReduce` (in place,
/// sum) on the stream; [`AllReduce::wait`] downloads the result, so the
/// host goes on while the GPUs reduce. Broadcast sends the root's type and
/// length first; all-gather gathers the lengths, then buffers padded to
/// the longest. Abort destroys the communicator (`ncclCommAbort`): this
/// rank's later collectives fail, the other ranks are not told (see the
/// [module documentation](self)).
pub struct NcclCommunicator {
    inner: Rc<Inner>,
    rank: usize,
    world: usize,
}

/// What the communicator and its pending all-reduces share.
struct Inner {
    /// `None` once aborted.
    comm: RefCell<Option<Comm>>,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for NcclCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclCommunicator")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

impl NcclCommunicator {
    /// Rank `bootstrap.rank()` of `bootstrap.world_size()` on GPU
    /// `ordinal`: rank 0 makes the NCCL id and sends it to the others
    /// through `bootstrap` (MPI under `mpirun`, threads in one process),
    /// then every rank joins the NCCL communicator. Every rank must call it.
    pub fn over(bootstrap: &dyn Communicator, ordinal: usize) -> Result<Self> {
        // Rank 0 sends an empty buffer when it cannot make the id, so that
        // every rank fails instead of waiting.
        let (mut id, made) = match bootstrap.rank() {
            0 => match new_id(ordinal) {
                Ok(id) => (Buffer::F64(id.iter().map(|&b| b as f64).collect()), Ok(())),
                Err(e) => (Buffer::F64(Vec::new()), Err(e)),
            },
            _ => (Buffer::F64(vec![0.0; ID_BYTES]), Ok(())),
        };
        bootstrap.broadcast(&mut id, 0)?;
        made?;
        let bytes: Vec<u8> = match id {
            Buffer::F64(v) if v.len() == ID_BYTES => v.iter().map(|&b| b as u8).collect(),
            _ => {
                return Err(Error::Distributed {
                    op: "NcclCommunicator::over",
                    msg: "rank 0 could not make an NCCL id (see its error)".into(),
                })
            }
        };
        Self::new(ordinal, bootstrap.rank(), bootstrap.world_size(), &bytes)
    }

    /// Rank `rank` of `world` on GPU `ordinal`, joining the NCCL
    /// communicator named by `id` (the 128 bytes of [`new_id`] on one rank,
    /// sent to all by other means).
    pub fn new(ordinal: usize, rank: usize, world: usize, id: &[u8]) -> Result<Self> {
        if rank >= world {
            return Err(Error::invalid(
                "NcclCommunicator::new",
                format!("rank {rank} is not a rank of a world of {world}"),
            ));
        }
        let id: [u8; ID_BYTES] = id.try_into().map_err(|_| {
            Error::invalid(
                "NcclCommunicator::new",
                format!("an NCCL id has {ID_BYTES} bytes, not {}", id.len()),
            )
        })?;
        let stream = open_stream(ordinal)?;
        let comm = Comm::from_rank(stream.clone(), rank, world, Id::uninit(id.map(|b| b as _)))
            .map_err(|e| nccl_error("NcclCommunicator::new", e))?;
        Ok(NcclCommunicator {
            inner: Rc::new(Inner {
                comm: RefCell::new(Some(comm)),
                stream,
            }),
            rank,
            world,
        })
    }

    /// Runs `f` on the NCCL communicator, unless it was aborted.
    fn with_comm<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Comm) -> std::result::Result<R, cudarc::nccl::result::NcclError>,
    ) -> Result<R> {
        match &*self.inner.comm.borrow() {
            Some(comm) => f(comm).map_err(|e| nccl_error(op, e)),
            None => Err(Error::Distributed {
                op,
                msg: format!("rank {} aborted its NCCL communicator", self.rank),
            }),
        }
    }

    /// Uploads `host`.
    fn upload<T: DeviceRepr>(&self, host: &[T], op: &'static str) -> Result<CudaSlice<T>> {
        self.inner
            .stream
            .clone_htod(host)
            .map_err(|e| cuda_error(op, e))
    }

    /// Starts the in-place sum of `host` (not empty) over the ranks.
    fn start_sum<T>(&self, host: Vec<T>, wrap: fn(Vec<T>) -> Buffer) -> Result<AllReduce>
    where
        T: DeviceRepr + NcclType + 'static,
    {
        let mut dev = self.upload(&host, "all_reduce")?;
        self.with_comm("all_reduce", |c| {
            c.all_reduce_in_place(&mut dev, &ReduceOp::Sum)
        })?;
        let inner = self.inner.clone();
        Ok(AllReduce::new(move || {
            let sum = inner
                .stream
                .clone_dtoh(&dev)
                .map_err(|e| cuda_error("all_reduce", e))?;
            Ok(wrap(sum))
        }))
    }

    /// Broadcasts `host` (the same length on every rank, not empty) from
    /// `root` in place.
    fn broadcast_vec<T>(&self, host: &mut Vec<T>, root: i32) -> Result<()>
    where
        T: DeviceRepr + NcclType,
    {
        let mut dev = self.upload(host, "broadcast")?;
        self.with_comm("broadcast", |c| c.broadcast_in_place(&mut dev, root))?;
        *host = self
            .inner
            .stream
            .clone_dtoh(&dev)
            .map_err(|e| cuda_error("broadcast", e))?;
        Ok(())
    }

    /// Every rank's `host` (all of length `len`), concatenated in rank order.
    fn gather_vec<T>(&self, host: &[T]) -> Result<Vec<T>>
    where
        T: DeviceRepr + NcclType + ValidAsZeroBits,
    {
        let send = self.upload(host, "all_gather")?;
        let mut recv = self
            .inner
            .stream
            .alloc_zeros::<T>(host.len() * self.world)
            .map_err(|e| cuda_error("all_gather", e))?;
        self.with_comm("all_gather", |c| c.all_gather(&send, &mut recv))?;
        self.inner
            .stream
            .clone_dtoh(&recv)
            .map_err(|e| cuda_error("all_gather", e))
    }
}

/// A new NCCL unique id (on one rank; the others receive it), for
/// [`NcclCommunicator::new`]. Fails when libnccl or the GPU is missing.
pub fn new_id(ordinal: usize) -> Result<[u8; ID_BYTES]> {
    require_nccl(ordinal)?;
    let id = Id::new().map_err(|e| nccl_error("nccl::new_id", e))?;
    Ok(id.internal().map(|c| c as u8))
}

/// Fails unless libnccl can be loaded (cudarc would panic otherwise).
fn require_nccl(ordinal: usize) -> Result<()> {
    // Safety: only probes whether the shared library can be opened.
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(unavailable(
            ordinal,
            "the NCCL library (libnccl.so) was not found; NCCL's packages ship libnccl.so.2, \
             which needs a libnccl.so link on the library path",
        ))
    }
}

/// GPU `ordinal`'s context and a new stream for the communicator.
fn open_stream(ordinal: usize) -> Result<Arc<CudaStream>> {
    let count = device_count()?;
    if ordinal >= count {
        return Err(unavailable(
            ordinal,
            format!("only {count} CUDA device(s) present"),
        ));
    }
    require_nccl(ordinal)?;
    let ctx =
        CudaContext::new(ordinal).map_err(|e| driver_error(ordinal, "creating the context", e))?;
    ctx.new_stream()
        .map_err(|e| driver_error(ordinal, "creating the NCCL stream", e))
}

fn nccl_error(op: &'static str, e: cudarc::nccl::result::NcclError) -> Error {
    Error::Distributed {
        op,
        msg: format!("NCCL: {e:?}"),
    }
}

fn cuda_error(op: &'static str, e: cudarc::driver::DriverError) -> Error {
    Error::Distributed {
        op,
        msg: format!("CUDA: {e:?}"),
    }
}

/// A buffer's type as a number that travels in a `u64` header.
fn dtype_code(buf: &Buffer) -> u64 {
    match buf {
        Buffer::F32(_) => 1,
        Buffer::F64(_) => 2,
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce> {
        // Every rank has the same length: an empty buffer is empty everywhere.
        if buf.is_empty() {
            return Ok(AllReduce::done(buf));
        }
        match buf {
            Buffer::F32(v) => self.start_sum(v, Buffer::F32),
            Buffer::F64(v) => self.start_sum(v, Buffer::F64),
        }
    }

    fn broadcast(&self, buf: &mut Buffer, root: usize) -> Result<()> {
        let root = match i32::try_from(root) {
            Ok(r) if root < self.world => r,
            _ => {
                return Err(Error::invalid(
                    "broadcast",
                    format!("root {root} is not a rank of a world of {}", self.world),
                ))
            }
        };
        let mut header = vec![dtype_code(buf), buf.len() as u64];
        self.broadcast_vec(&mut header, root)?;
        let len = usize::try_from(header[1]).map_err(|_| Error::Distributed {
            op: "broadcast",
            msg: format!(
                "the root's {} elements do not fit in memory here",
                header[1]
            ),
        })?;
        if self.rank != root as usize {
            *buf = match header[0] {
                1 => Buffer::F32(vec![0.0; len]),
                _ => Buffer::F64(vec![0.0; len]),
            };
        }
        match buf {
            _ if len == 0 => Ok(()),
            Buffer::F32(v) => self.broadcast_vec(v, root),
            Buffer::F64(v) => self.broadcast_vec(v, root),
        }
    }

    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>> {
        let headers = self.gather_vec(&[dtype_code(buf), buf.len() as u64])?;
        let mut lens = Vec::with_capacity(self.world);
        for (r, h) in headers.chunks_exact(2).enumerate() {
            if h[0] != dtype_code(buf) {
                return Err(Error::Distributed {
                    op: "all_gather",
                    msg: format!("rank {r}'s buffer type differs from rank {}'s", self.rank),
                });
            }
            lens.push(usize::try_from(h[1]).unwrap_or(usize::MAX));
        }
        let longest = lens.iter().copied().max().unwrap_or(0);
        if longest == 0 {
            return Ok(lens.iter().map(|_| buf.clone()).collect());
        }
        fn parts<T: Clone>(all: &[T], longest: usize, lens: &[usize]) -> Vec<Vec<T>> {
            all.chunks_exact(longest)
                .zip(lens)
                .map(|(chunk, &n)| chunk[..n].to_vec())
                .collect()
        }
        Ok(match buf {
            Buffer::F32(v) => {
                let mut padded = v.clone();
                padded.resize(longest, 0.0);
                let all = self.gather_vec(&padded)?;
                parts(&all, longest, &lens)
                    .into_iter()
                    .map(Buffer::F32)
                    .collect()
            }
            Buffer::F64(v) => {
                let mut padded = v.clone();
                padded.resize(longest, 0.0);
                let all = self.gather_vec(&padded)?;
                parts(&all, longest, &lens)
                    .into_iter()
                    .map(Buffer::F64)
                    .collect()
            }
        })
    }

    fn barrier(&self) -> Result<()> {
        self.start_all_reduce_sum(Buffer::F32(vec![0.0]))?
            .wait()
            .map(|_| ())
    }

    fn abort(&self, message: &str) {
        eprintln!(
            "ferrite: rank {} of {} aborts its NCCL communicator: {message}",
            self.rank, self.world
        );
        drop(self.inner.comm.borrow_mut().take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;

    #[test]
    fn bad_arguments_are_errors_before_any_gpu_call() {
        let id = [0u8; ID_BYTES];
        let e = NcclCommunicator::new(0, 2, 2, &id).unwrap_err();
        assert!(e.to_string().contains("rank 2 is not a rank"), "{e}");
        let e = NcclCommunicator::new(0, 0, 1, &id[..5]).unwrap_err();
        assert!(e.to_string().contains("128 bytes, not 5"), "{e}");
    }

    /// One rank over NCCL where a GPU and libnccl are present (collectives
    /// return their input); elsewhere a clear error, never a panic.
    #[test]
    fn a_single_rank_runs_or_reports_why_not() -> Result<()> {
        let comm = match NcclCommunicator::over(&SingleProcess::new(), 0) {
            Ok(comm) => comm,
            Err(Error::DeviceUnavailable { msg, .. }) => {
                eprintln!("no NCCL check: {msg}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut buf = Buffer::F32(vec![1.5, -2.0, 3.25]);
        comm.all_reduce_sum(&mut buf)?;
        assert_eq!(buf, Buffer::F32(vec![1.5, -2.0, 3.25]));
        let mut buf = Buffer::F64(vec![0.5; 3]);
        comm.broadcast(&mut buf, 0)?;
        assert_eq!(buf, Buffer::F64(vec![0.5; 3]));
        let all = comm.all_gather(&Buffer::F64(vec![7.0, 8.0]))?;
        assert_eq!(all, vec![Buffer::F64(vec![7.0, 8.0])]);
        comm.barrier()?;
        comm.abort("test");
        assert!(comm.barrier().is_err());
        Ok(())
    }
}

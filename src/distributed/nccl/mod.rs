//! [`NcclCommunicator`]: the [`Communicator`] collectives over NCCL
//! (feature `cuda`), one rank per GPU.
//!
//! NCCL (`libnccl`, loaded at run time by cudarc, API of NCCL 2.28) moves
//! device memory. Gradients of a model on the communicator's GPU are
//! reduced where they lie
//! ([`start_all_reduce_sum_tensor`](Communicator::start_all_reduce_sum_tensor),
//! which the [`Reducer`](super::Reducer) uses for device parameters); the
//! trait's host buffers are uploaded, reduced and downloaded. Collectives
//! run on the communicator's own stream, ordered after the work already
//! queued on the device's compute stream by an event.
//!
//! Every wait goes through a watchdog ([`raw`]): it polls an event, asks
//! NCCL for asynchronous errors and gives up after a timeout
//! ([`TIMEOUT_ENV`], 10 minutes by default), then aborts the communicator,
//! so a rank whose peer failed gets an error instead of hanging.
//! `ncclCommInitRank` itself still waits for every rank to join.
//!
//! cudarc looks for `libnccl.so` (and `libnccl.so.1`, `.9` to `.13`), not
//! `libnccl.so.2` as NCCL's own packages name it: a `libnccl.so` link next
//! to it may be needed. NCCL refuses two ranks on one GPU.

mod collectives;
mod raw;

pub use raw::{DEFAULT_TIMEOUT, TIMEOUT_ENV};

use super::{all_reduce_tensor_through_host, AllReduce, Buffer, Communicator, TensorAllReduce};
use crate::backend::cuda::{device_count, driver_error, unavailable};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    ValidAsZeroBits,
};
use cudarc::nccl::{result, sys, Id, NcclType};
use raw::{cuda_error, nccl_error, RawComm, ID_BYTES};
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// One rank of an NCCL job, on one GPU, with its own stream.
///
/// All-reduce enqueues `ncclAllReduce` (in place, sum) on the stream and
/// returns; [`AllReduce::wait`] (or [`TensorAllReduce::wait`]) waits
/// through the watchdog, so the host goes on while the GPUs reduce.
/// Broadcast sends the root's type and length first; all-gather gathers
/// the lengths, then buffers padded to the longest. Abort
/// (`ncclCommAbort`) ends this rank's communicator: its later collectives
/// fail, and the other ranks' watchdogs see NCCL's error or their timeout.
pub struct NcclCommunicator {
    inner: Rc<Inner>,
}

/// What the communicator and its pending collectives share.
struct Inner {
    /// `None` once aborted.
    comm: RefCell<Option<RawComm>>,
    ctx: Arc<CudaContext>,
    /// The communicator's stream.
    stream: Arc<CudaStream>,
    ordinal: usize,
    rank: usize,
    world: usize,
    timeout: Cell<Duration>,
}

impl std::fmt::Debug for NcclCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclCommunicator")
            .field("rank", &self.inner.rank)
            .field("world", &self.inner.world)
            .field("gpu", &self.inner.ordinal)
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
    /// sent to all by other means). Collectives time out after
    /// [`TIMEOUT_ENV`] seconds (default [`DEFAULT_TIMEOUT`]).
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
        let timeout = raw::timeout_from_env()?;
        let (ctx, stream) = open_stream(ordinal)?;
        let comm = RawComm::init(&ctx, rank, world, &id)?;
        Ok(NcclCommunicator {
            inner: Rc::new(Inner {
                comm: RefCell::new(Some(comm)),
                ctx,
                stream,
                ordinal,
                rank,
                world,
                timeout: Cell::new(timeout),
            }),
        })
    }

    /// Sets how long a collective may take before this rank aborts.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.inner.timeout.set(timeout);
        self
    }

    /// The GPU this rank runs on.
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// Uploads `host` to the communicator's stream.
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
        const OP: &str = "all_reduce";
        let mut dev = self.upload(&host, OP)?;
        let done = {
            let (ptr, _written) = dev.device_ptr_mut(&self.inner.stream);
            // Safety: `dev` holds `host.len()` elements of T on this
            // communicator's device; it outlives the collective (freed in
            // stream order after it, or after the wait below).
            self.inner.enqueue(OP, |comm, stream| unsafe {
                let p = ptr as *mut c_void;
                result::all_reduce(
                    p,
                    p,
                    host.len(),
                    T::as_nccl_type(),
                    sys::ncclRedOp_t::ncclSum,
                    comm,
                    stream,
                )
            })?
        };
        let inner = self.inner.clone();
        Ok(AllReduce::new(move || {
            inner.wait(&done, OP)?;
            let sum = inner
                .stream
                .clone_dtoh(&dev)
                .map_err(|e| cuda_error(OP, e))?;
            Ok(wrap(sum))
        }))
    }

    /// Broadcasts `host` (the same length on every rank, not empty) from
    /// `root` in place.
    fn broadcast_vec<T>(&self, host: &mut Vec<T>, root: i32) -> Result<()>
    where
        T: DeviceRepr + NcclType,
    {
        const OP: &str = "broadcast";
        let mut dev = self.upload(host, OP)?;
        let done = {
            let (ptr, _written) = dev.device_ptr_mut(&self.inner.stream);
            // Safety: as in `start_sum`; `dev` lives until after the wait.
            self.inner.enqueue(OP, |comm, stream| unsafe {
                let p = ptr as *mut c_void;
                result::broadcast(p, p, host.len(), T::as_nccl_type(), root, comm, stream)
            })?
        };
        self.inner.wait(&done, OP)?;
        *host = self
            .inner
            .stream
            .clone_dtoh(&dev)
            .map_err(|e| cuda_error(OP, e))?;
        Ok(())
    }

    /// Every rank's `host` (all of length `len`), concatenated in rank order.
    fn gather_vec<T>(&self, host: &[T]) -> Result<Vec<T>>
    where
        T: DeviceRepr + NcclType + ValidAsZeroBits,
    {
        const OP: &str = "all_gather";
        let send = self.upload(host, OP)?;
        let mut recv = self
            .inner
            .stream
            .alloc_zeros::<T>(host.len() * self.inner.world)
            .map_err(|e| cuda_error(OP, e))?;
        let done = {
            let (src, _read) = send.device_ptr(&self.inner.stream);
            let (dst, _written) = recv.device_ptr_mut(&self.inner.stream);
            // Safety: `send` holds `host.len()` elements and `recv` world
            // times as many, on this device; both live until after the wait.
            self.inner.enqueue(OP, |comm, stream| unsafe {
                result::all_gather(
                    src as *const c_void,
                    dst as *mut c_void,
                    host.len(),
                    T::as_nccl_type(),
                    comm,
                    stream,
                )
            })?
        };
        self.inner.wait(&done, OP)?;
        self.inner
            .stream
            .clone_dtoh(&recv)
            .map_err(|e| cuda_error(OP, e))
    }

    /// Starts the in-place sum of the device tensor `t` (f32 or f64, on
    /// this communicator's GPU, not emulated, contiguous): the stream waits
    /// for the compute stream's queued work, then reduces.
    fn start_tensor_sum(&self, t: Tensor) -> Result<TensorAllReduce> {
        const OP: &str = "all_reduce";
        let kind = match t.dtype() {
            DType::F32 => f32::as_nccl_type(),
            _ => f64::as_nccl_type(),
        };
        let operand = crate::ops::on_cuda::operand(OP, &t)?;
        let ptr = operand.at(&t);
        let count = t.numel();
        let inner = &self.inner;
        inner.ctx.bind_to_thread().map_err(|e| cuda_error(OP, e))?;
        // The tensor's producers were queued on the device's compute stream
        // (the context's default stream).
        let ready = inner
            .ctx
            .default_stream()
            .record_event(None)
            .map_err(|e| cuda_error(OP, e))?;
        inner.stream.wait(&ready).map_err(|e| cuda_error(OP, e))?;
        // Safety: `t` is contiguous with `count` elements at `ptr` on this
        // communicator's GPU, and the pending handle keeps it alive until
        // the collective has finished (see `TensorInFlight`'s drop).
        let done = inner.enqueue(OP, |comm, stream| unsafe {
            let p = ptr as *mut c_void;
            result::all_reduce(p, p, count, kind, sys::ncclRedOp_t::ncclSum, comm, stream)
        })?;
        let mut flight = TensorInFlight {
            tensor: Some(t),
            done,
            inner: inner.clone(),
        };
        Ok(TensorAllReduce::new(move || flight.finish()))
    }
}

/// A device tensor being reduced in place: it must outlive the collective,
/// so dropping the handle unwaited still waits (through the watchdog)
/// before the tensor's memory can go back to the allocator.
struct TensorInFlight {
    tensor: Option<Tensor>,
    done: CudaEvent,
    inner: Rc<Inner>,
}

impl TensorInFlight {
    /// Waits for the sum and orders the compute stream after it.
    fn finish(&mut self) -> Result<Tensor> {
        const OP: &str = "all_reduce";
        self.inner.wait(&self.done, OP)?;
        self.inner
            .ctx
            .default_stream()
            .wait(&self.done)
            .map_err(|e| cuda_error(OP, e))?;
        self.tensor.take().ok_or_else(|| Error::Distributed {
            op: OP,
            msg: "the all-reduce was already collected".into(),
        })
    }
}

impl Drop for TensorInFlight {
    fn drop(&mut self) {
        if self.tensor.is_some() {
            // On error the wait has aborted the communicator, which stops
            // its kernels; either way the memory is no longer in use.
            let _ = self.inner.wait(&self.done, "all_reduce");
        }
    }
}

impl Inner {
    /// Queues one collective (`f`, given the communicator and stream)
    /// unless the communicator was aborted; returns an event recorded after
    /// it. A failure aborts the communicator.
    fn enqueue(
        &self,
        op: &'static str,
        f: impl FnOnce(
            sys::ncclComm_t,
            sys::cudaStream_t,
        ) -> std::result::Result<result::NcclStatus, result::NcclError>,
    ) -> Result<CudaEvent> {
        let queued = match &*self.comm.borrow() {
            Some(comm) => {
                self.ctx.bind_to_thread().map_err(|e| cuda_error(op, e))?;
                f(comm.handle(), self.stream.cu_stream() as sys::cudaStream_t)
                    .map(drop)
                    .map_err(|e| nccl_error(op, e))
                    .and_then(|()| {
                        self.stream
                            .record_event(None)
                            .map_err(|e| cuda_error(op, e))
                    })
            }
            None => return Err(self.aborted(op)),
        };
        if let Err(e) = &queued {
            self.abort(&e.to_string());
        }
        queued
    }

    /// Waits for `done` through the watchdog; aborts the communicator
    /// when it fails.
    fn wait(&self, done: &CudaEvent, op: &'static str) -> Result<()> {
        let waited = match &*self.comm.borrow() {
            Some(comm) => self
                .ctx
                .bind_to_thread()
                .map_err(|e| cuda_error(op, e))
                .and_then(|()| comm.wait(done, self.timeout.get(), op, self.rank)),
            None => Err(self.aborted(op)),
        };
        if let Err(e) = &waited {
            self.abort(&e.to_string());
        }
        waited
    }

    /// The error of a collective after this rank's abort.
    fn aborted(&self, op: &'static str) -> Error {
        Error::Distributed {
            op,
            msg: format!("rank {} aborted its NCCL communicator", self.rank),
        }
    }

    /// Aborts the communicator (once), saying why on stderr.
    fn abort(&self, message: &str) {
        if let Some(comm) = self.comm.borrow_mut().take() {
            eprintln!(
                "ferrite: rank {} of {} aborts its NCCL communicator: {message}",
                self.rank, self.world
            );
            drop(comm);
        }
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

/// GPU `ordinal`'s (primary) context, the one the CUDA backend uses, and a
/// new stream for the communicator.
fn open_stream(ordinal: usize) -> Result<(Arc<CudaContext>, Arc<CudaStream>)> {
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
    let stream = ctx
        .new_stream()
        .map_err(|e| driver_error(ordinal, "creating the NCCL stream", e))?;
    Ok((ctx, stream))
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

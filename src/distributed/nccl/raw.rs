//! The NCCL communicator handle and the watchdog that waits for it.
//!
//! cudarc's safe `Comm` hides its `ncclComm_t`, so it cannot ask NCCL for
//! asynchronous errors, and it panics when aborting fails on drop. This
//! module owns the raw handle instead ([`RawComm`]) and waits for queued
//! collectives by polling ([`RawComm::wait`]): an event recorded after the
//! collective, `ncclCommGetAsyncError` (set when a peer fails or its
//! connection drops) and a timeout, as PyTorch's NCCL watchdog does. A
//! blocking wait on the stream would never return once a peer has gone.

use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaEvent};
use cudarc::nccl::{result, sys};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// Bytes of an NCCL unique id (`ncclUniqueId`).
pub(super) const ID_BYTES: usize = 128;

/// The environment variable that sets how long a rank waits for a
/// collective before it gives up, in seconds (default
/// [`DEFAULT_TIMEOUT`]).
pub const TIMEOUT_ENV: &str = "FERRITE_NCCL_TIMEOUT_S";

/// How long a collective may take before the rank aborts: 10 minutes, as
/// PyTorch's default for NCCL process groups.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The timeout from [`TIMEOUT_ENV`] (a positive number of seconds), or
/// [`DEFAULT_TIMEOUT`] when unset.
pub(super) fn timeout_from_env() -> Result<Duration> {
    parse_timeout(
        std::env::var_os(TIMEOUT_ENV)
            .map(|t| t.to_string_lossy().into_owned())
            .as_deref(),
    )
}

/// The timeout `text` gives ([`TIMEOUT_ENV`]'s value, `None` when unset).
pub(super) fn parse_timeout(text: Option<&str>) -> Result<Duration> {
    let Some(text) = text else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::invalid(
            "NcclCommunicator",
            format!("{TIMEOUT_ENV}={text:?} is not a number of seconds in (0, 1e9]"),
        )),
    }
}

/// One rank's `ncclComm_t`, aborted (never destroyed, which could wait
/// for a peer that has gone) when dropped.
pub(super) struct RawComm {
    comm: sys::ncclComm_t,
}

impl RawComm {
    /// Joins the communicator named by `id` as `rank` of `world`
    /// (`ncclCommInitRank`, which returns once every rank has joined), on
    /// the device of `ctx`.
    pub fn init(ctx: &CudaContext, rank: usize, world: usize, id: &[u8; ID_BYTES]) -> Result<Self> {
        const OP: &str = "NcclCommunicator::new";
        let (rank_c, world_c) = match (i32::try_from(rank), i32::try_from(world)) {
            (Ok(r), Ok(w)) => (r, w),
            _ => {
                return Err(Error::invalid(
                    OP,
                    format!("a world of {world} ranks is too large for NCCL"),
                ))
            }
        };
        ctx.bind_to_thread().map_err(|e| cuda_error(OP, e))?;
        let id = sys::ncclUniqueId {
            internal: id.map(|b| b as core::ffi::c_char),
        };
        let mut comm = MaybeUninit::uninit();
        // Safety: `comm` is written by NCCL on success and read only then;
        // the rank and world were checked to fit NCCL's ints.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), world_c, id, rank_c)
                .map_err(|e| nccl_error(OP, e))?;
            comm.assume_init()
        };
        Ok(RawComm { comm })
    }

    /// The handle, for the collective calls.
    pub fn handle(&self) -> sys::ncclComm_t {
        self.comm
    }

    /// The error NCCL has recorded for this communicator since it was made
    /// (a failed peer, a dropped connection), if any.
    pub fn async_error(&self) -> Option<sys::ncclResult_t> {
        let mut state = sys::ncclResult_t::ncclSuccess;
        // Safety: `self.comm` is a live communicator; `state` is written.
        let call = unsafe { sys::ncclCommGetAsyncError(self.comm, &mut state) };
        if call != sys::ncclResult_t::ncclSuccess {
            return Some(call);
        }
        match state {
            sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => None,
            error => Some(error),
        }
    }

    /// Waits until `done` (recorded after this rank's collectives) has
    /// completed: polls the event with a growing pause (10 µs to 1 ms),
    /// and gives up with an error when NCCL reports an asynchronous error
    /// or `timeout` passes. The caller aborts the communicator on error.
    pub fn wait(
        &self,
        done: &CudaEvent,
        timeout: Duration,
        op: &'static str,
        rank: usize,
    ) -> Result<()> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(10);
        loop {
            if done.try_is_complete().map_err(|e| cuda_error(op, e))? {
                return Ok(());
            }
            if let Some(error) = self.async_error() {
                return Err(Error::Distributed {
                    op,
                    msg: format!(
                        "rank {rank}: NCCL reported {error:?} while this rank waited \
                         (another rank failed or its connection dropped)"
                    ),
                });
            }
            if started.elapsed() > timeout {
                return Err(Error::Distributed {
                    op,
                    msg: format!(
                        "rank {rank}: the collective did not finish within {:.0} s \
                         (a rank stopped calling collectives, or called them in another order); \
                         {TIMEOUT_ENV} sets the limit",
                        timeout.as_secs_f64()
                    ),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

impl Drop for RawComm {
    fn drop(&mut self) {
        // Safety: the handle is live and dropped once. Abort ends the
        // communicator without waiting for peers; its error is not
        // actionable here.
        let _ = unsafe { result::comm_abort(self.comm) };
    }
}

/// An NCCL failure of `op`.
pub(super) fn nccl_error(op: &'static str, e: result::NcclError) -> Error {
    Error::Distributed {
        op,
        msg: format!("NCCL: {e:?}"),
    }
}

/// A CUDA failure of `op` on the communicator's stream.
pub(super) fn cuda_error(op: &'static str, e: cudarc::driver::DriverError) -> Error {
    Error::Distributed {
        op,
        msg: format!("CUDA: {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_a_positive_number_of_seconds() {
        assert_eq!(parse_timeout(None).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(
            parse_timeout(Some(" 30 ")).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_timeout(Some("0.5")).unwrap(),
            Duration::from_millis(500)
        );
        for bad in ["0", "-3", "nan", "inf", "1e10", "ten", ""] {
            let e = parse_timeout(Some(bad)).unwrap_err();
            assert!(e.to_string().contains(TIMEOUT_ENV), "{bad}: {e}");
        }
    }
}

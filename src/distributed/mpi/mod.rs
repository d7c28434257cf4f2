//! Data-parallel jobs over MPI (feature `mpi`): one process per rank,
//! started by `mpirun`, on one machine or a CPU cluster.
//!
//! ```no_run
//! use ferrite::distributed::{mpi, Communicator};
//!
//! fn main() -> ferrite::Result<()> {
//!     // Initialises MPI; an `Err` (or a panic) on any rank ends the job.
//!     mpi::run_or_abort(|comm| {
//!         println!(
//!             "rank {} of {}: {} threads",
//!             comm.rank(),
//!             comm.world_size(),
//!             mpi::threads_from_affinity()
//!         );
//!         // Build the model on every rank, then
//!         // `Reducer::for_module(Box::new(comm), &model, Default::default())?`,
//!         // `reducer.broadcast_state(&model)?` and train.
//!         Ok(())
//!     })
//! }
//! ```
//!
//! Run it with `mpirun -np 2 target/release/examples/NAME` (as root,
//! Open MPI also wants `--allow-run-as-root`); `examples/ddp_mpi_check.rs`
//! is a complete program.
//!
//! **Failures end the whole job.** MPI has no way to tell the other ranks
//! that one has gone: a rank that panics or returns early leaves them
//! waiting in their next collective or in `MPI_Finalize` forever. So
//! [`init`] installs a panic hook that prints the message, then calls
//! `MPI_Abort` (exit code 101), and [`run_or_abort`] aborts the job (exit
//! code 1) when its closure returns an error. A program that calls
//! [`init`] itself must call [`Communicator::abort`] on its errors.
//!
//! **Threads.** With `-np 2` or less, Open MPI binds each rank to one core
//! by default (`--bind-to core`; more ranks: `--bind-to socket`), and
//! rayon's pool then has one thread: [`threads_from_affinity`] tells how
//! many cores the rank may use, to print or record. To give each rank
//! several cores, start the job with `mpirun --bind-to none` or
//! `--map-by slot:PE=N` (N cores per rank).
//!
//! The feature links the system's MPI library: building needs its
//! development files (`libopenmpi-dev` or MPICH's) and libclang, and the
//! binaries need `libmpi.so` at run time.

mod comm;
mod pending;

pub use comm::MpiCommunicator;

use crate::distributed::{Buffer, Communicator};
use crate::error::{Error, Result};
use ::mpi::environment::Universe;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::Communicator as _;
use ::mpi::Threading;
use std::cell::RefCell;
use std::rc::Rc;

/// Exit code of a job that one rank's panic ended (Rust's own exit code
/// for a panic).
pub const PANIC_EXIT_CODE: i32 = 101;

/// Exit code of a job that one rank's error ended.
pub const ERROR_EXIT_CODE: i32 = 1;

/// What the clones of an [`MpiCommunicator`] and its pending all-reduces
/// share. Fields drop in order: the communicator is freed before the
/// universe finalises MPI.
struct Shared {
    /// A duplicate of `MPI_COMM_WORLD`, so that ferrite's collectives never
    /// match a program's own collectives on the world communicator.
    comm: SimpleCommunicator,
    /// Receive buffers for later all-reduces.
    spares: RefCell<Vec<Buffer>>,
    /// Finalises MPI when dropped.
    _universe: Universe,
}

/// Initialises MPI (`MPI_Init_thread`, funnelled: only this thread calls
/// MPI; rayon's threads compute) and returns this rank's communicator.
/// Installs a panic hook that aborts the job (see the [module
/// documentation](self)).
///
/// MPI can be initialised once per process: a second call, or a call after
/// a communicator has been dropped (which finalises MPI), fails.
pub fn init() -> Result<MpiCommunicator> {
    let (universe, _threading) =
        ::mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| {
            Error::Distributed {
                op: "mpi::init",
                msg:
                    "MPI is already initialised (or finalised): init may be called once per process"
                        .into(),
            }
        })?;
    let comm = universe.world().duplicate();
    let (rank, world) = (comm.rank(), comm.size());
    let comm = MpiCommunicator {
        rank: usize::try_from(rank).unwrap_or_default(),
        world: usize::try_from(world).unwrap_or(1),
        shared: Rc::new(Shared {
            comm,
            spares: RefCell::new(Vec::new()),
            _universe: universe,
        }),
    };
    abort_on_panic(comm.rank, comm.world);
    Ok(comm)
}

/// Initialises MPI, runs `f` with this rank's communicator, and ends the
/// job with [`Communicator::abort`] (exit code [`ERROR_EXIT_CODE`], the
/// error printed with this rank's index) if `f` returns an error: the other
/// ranks do not wait forever. MPI is finalised when `f` has returned
/// successfully and every clone of the communicator has been dropped.
///
/// Errors: only [`init`]'s (MPI already initialised); `f`'s errors do not
/// return.
pub fn run_or_abort<T>(f: impl FnOnce(MpiCommunicator) -> Result<T>) -> Result<T> {
    let comm = init()?;
    let guard = comm.clone();
    match f(comm) {
        Ok(value) => Ok(value),
        Err(e) => {
            guard.abort(&e.to_string());
            unreachable!("MPI_Abort does not return")
        }
    }
}

/// The number of cores this process may run on: its CPU affinity mask
/// (`sched_getaffinity` on Linux, through
/// [`std::thread::available_parallelism`], which also honours cgroup CPU
/// quotas), 1 if unknown.
///
/// Under `mpirun` it is what the launcher's binding left the rank: one core
/// per rank with `-np 2` or less by default. Rayon's global pool (ferrite's
/// CPU kernels) takes the same number of threads unless `RAYON_NUM_THREADS`
/// says otherwise, so a job that runs slower than expected should print it.
pub fn threads_from_affinity() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Chains a panic hook that, after the usual message, aborts the job so the
/// other ranks do not wait for this one forever. Every panic counts, even
/// one a `catch_unwind` would have caught.
fn abort_on_panic(rank: usize, world: usize) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if ::mpi::is_initialized() && !::mpi::is_finalized() {
            eprintln!("ferrite: rank {rank} of {world} panicked; aborting the MPI job");
            comm::abort_world(PANIC_EXIT_CODE);
        }
    }));
}

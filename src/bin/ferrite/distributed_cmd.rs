//! `--distributed`: whether `train` and `compare` run as one process or as
//! one rank of an MPI job (`mpirun -np N ferrite train ... --distributed mpi`).

use ferrite::distributed::Communicator;
use ferrite::train::compare::JobRank;

/// How a run spreads over processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Launch {
    /// One process (the default).
    None,
    /// One rank of an MPI job started by `mpirun`; needs a build with
    /// `--features mpi`.
    Mpi,
}

/// A communicator maker: one communicator per run, all on the same ranks.
type Maker = Box<dyn Fn() -> Box<dyn Communicator>>;

/// This process's place in the job.
pub struct Job {
    /// Makes this rank's communicator for a run; `None` in one process.
    maker: Option<Maker>,
    /// This process's rank (0 in one process).
    rank: usize,
}

impl Job {
    /// One process, no communicator.
    fn single() -> Self {
        Job {
            maker: None,
            rank: 0,
        }
    }

    /// A fresh communicator for one run (`None` in one process).
    pub fn communicator(&self) -> Option<Box<dyn Communicator>> {
        self.maker.as_ref().map(|make| make())
    }

    /// This rank and what makes its communicator for each run (for
    /// `compare_with`); `None` in one process.
    pub fn rank(&self) -> Option<JobRank<'_>> {
        self.maker.as_deref().map(|communicator| JobRank {
            rank: self.rank,
            communicator,
        })
    }

    /// Whether this process prints and writes: rank 0.
    pub fn is_writer(&self) -> bool {
        self.rank == 0
    }
}

/// Runs `f` as one process on `threads` worker threads, or, with
/// [`Launch::Mpi`], as this rank of an MPI job, with `threads` (by default
/// the cores the launcher bound this rank to) in the global pool. Under MPI
/// an error on any rank ends the whole job, naming the rank.
pub fn launch(
    how: Launch,
    threads: Option<usize>,
    f: impl FnOnce(&Job) -> Result<(), String> + Send,
) -> Result<(), String> {
    match how {
        Launch::None => super::with_threads(threads, || f(&Job::single())),
        Launch::Mpi => launch_mpi(threads, f),
    }
}

#[cfg(feature = "mpi")]
fn launch_mpi(
    threads: Option<usize>,
    f: impl FnOnce(&Job) -> Result<(), String>,
) -> Result<(), String> {
    use ferrite::distributed::mpi;
    let n = threads.unwrap_or_else(mpi::threads_from_affinity);
    super::check_threads(n)?;
    // MPI is called from this thread only (funnelled), so the work runs
    // here, with the global pool sized for this rank.
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| format!("cannot start the thread pool: {e}"))?;
    mpi::run_or_abort(|comm| {
        let rank = comm.rank();
        if rank == 0 {
            println!(
                "MPI job of {} rank(s), {n} worker thread(s) per rank",
                comm.world_size()
            );
        }
        let job = Job {
            maker: Some(Box::new(move || Box::new(comm.clone()))),
            rank,
        };
        f(&job).map_err(|msg| ferrite::Error::Distributed { op: "ferrite", msg })
    })
    .map_err(|e| e.to_string())
}

#[cfg(not(feature = "mpi"))]
fn launch_mpi(
    _threads: Option<usize>,
    _f: impl FnOnce(&Job) -> Result<(), String>,
) -> Result<(), String> {
    Err(
        "--distributed mpi needs a ferrite built with `--features mpi` \
         (which links the system's MPI library, e.g. Open MPI's libopenmpi-dev); \
         this build has no MPI backend"
            .into(),
    )
}

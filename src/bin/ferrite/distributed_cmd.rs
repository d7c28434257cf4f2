//! `--distributed`: whether `train` and `compare` run as one process, as
//! one rank of an MPI job (`mpirun -np N ferrite train ... --distributed
//! mpi`), or as one rank per GPU over NCCL (`--distributed nccl`).

use ferrite::distributed::Communicator;
use ferrite::train::compare::JobRank;
use ferrite::Device;

/// How a run spreads over processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Launch {
    /// One process (the default).
    None,
    /// One rank of an MPI job started by `mpirun`; needs a build with
    /// `--features mpi`.
    Mpi,
    /// One rank per GPU, gradients all-reduced by NCCL in device memory;
    /// needs a build with `--features cuda` and `--device cuda`. Started
    /// plainly, this process runs one rank per visible GPU, as threads;
    /// under `mpirun` (a build with `--features mpi,cuda`) each process is
    /// one rank, on the GPU of its local rank.
    Nccl,
}

/// A communicator maker: one communicator per run, all on the same ranks.
type Maker = Box<dyn Fn() -> Box<dyn Communicator>>;

/// This process's place in the job.
pub struct Job {
    /// Makes this rank's communicator for a run; `None` in one process.
    maker: Option<Maker>,
    /// This process's rank (0 in one process).
    rank: usize,
    /// The device this rank trains on, when the launch chose it (a rank
    /// per GPU); `None`: the one `--device` names.
    device: Option<Device>,
}

impl Job {
    /// One process, no communicator.
    fn single() -> Self {
        Job {
            maker: None,
            rank: 0,
            device: None,
        }
    }

    /// The device this rank trains on: its own GPU with
    /// `--distributed nccl`, else `asked` (`--device`).
    pub fn device(&self, asked: Device) -> Device {
        self.device.unwrap_or(asked)
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

/// Runs `f` as one process on `threads` worker threads; with
/// [`Launch::Mpi`], as this rank of an MPI job, with `threads` (by default
/// the cores the launcher bound this rank to) in the global pool; with
/// [`Launch::Nccl`], once per rank on its GPU (see [`Launch::Nccl`];
/// `device` is `--device`, which must be a GPU). An error or a panic on
/// any rank ends the whole job, naming the rank.
pub fn launch(
    how: Launch,
    threads: Option<usize>,
    device: Device,
    f: impl Fn(&Job) -> Result<(), String> + Sync,
) -> Result<(), String> {
    match how {
        Launch::None => super::with_threads(threads, || f(&Job::single())),
        Launch::Mpi => launch_mpi(threads, false, f),
        Launch::Nccl => {
            if !matches!(device, Device::Cuda(_)) {
                return Err("--distributed nccl trains on GPUs, one rank per GPU: \
                            add --device cuda"
                    .into());
            }
            if under_mpirun() {
                launch_mpi(threads, true, f)
            } else {
                super::nccl_launch::launch_threads(threads, f)
            }
        }
    }
}

/// Whether an MPI launcher (`mpirun`, `srun`) started this process.
fn under_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// A job of this process as `rank`, whose communicator for each run is a
/// clone of `comm`, training on `device` (`None`: `--device`).
#[cfg(any(feature = "mpi", feature = "cuda"))]
pub fn job_over<C: Communicator + Clone + 'static>(
    comm: C,
    rank: usize,
    device: Option<Device>,
) -> Job {
    Job {
        maker: Some(Box::new(move || Box::new(comm.clone()))),
        rank,
        device,
    }
}

#[cfg(feature = "mpi")]
fn launch_mpi(
    threads: Option<usize>,
    nccl: bool,
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
                "MPI job of {} rank(s), {n} worker thread(s) per rank{}",
                comm.world_size(),
                if nccl { ", gradients over NCCL" } else { "" }
            );
        }
        let job = if nccl {
            super::nccl_launch::job_over_mpi(&comm)?
        } else {
            job_over(comm, rank, None)
        };
        f(&job).map_err(|msg| ferrite::Error::Distributed { op: "ferrite", msg })
    })
    .map_err(|e| e.to_string())
}

#[cfg(not(feature = "mpi"))]
fn launch_mpi(
    _threads: Option<usize>,
    nccl: bool,
    _f: impl FnOnce(&Job) -> Result<(), String>,
) -> Result<(), String> {
    Err(if nccl {
        "this process runs under an MPI launcher, but this ferrite has no MPI backend \
         to start NCCL with: build it with `--features mpi,cuda`, or run \
         `ferrite ... --distributed nccl` without mpirun (one rank per GPU as threads)"
    } else {
        "--distributed mpi needs a ferrite built with `--features mpi` \
         (which links the system's MPI library, e.g. Open MPI's libopenmpi-dev); \
         this build has no MPI backend"
    }
    .into())
}

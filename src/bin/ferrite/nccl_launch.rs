//! `--distributed nccl`: one rank per GPU, gradients all-reduced by NCCL.
//!
//! Started plainly, the process runs one rank per visible GPU
//! (`CUDA_VISIBLE_DEVICES` chooses them) as threads: rank r trains on
//! `cuda:r`, the ranks exchange the NCCL id in memory, and an error or a
//! panic on any rank ends the process at once, naming the rank (as
//! `MPI_Abort` ends an MPI job), so no rank waits for one that has gone.
//! Under `mpirun` each process is one rank; the NCCL id travels over MPI.

#[cfg(feature = "cuda")]
use super::distributed_cmd::job_over;
use super::distributed_cmd::Job;
#[cfg(feature = "cuda")]
use ferrite::Device;

/// Runs `f` once per visible GPU, each as rank r of an NCCL job on `cuda:r`
/// in its own thread with its own pool of `threads` workers (by default
/// the cores divided among the ranks).
#[cfg(feature = "cuda")]
pub fn launch_threads(
    threads: Option<usize>,
    f: impl Fn(&Job) -> Result<(), String> + Sync,
) -> Result<(), String> {
    use ferrite::distributed::InProcess;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let world = ferrite::backend::cuda::device_count().map_err(|e| e.to_string())?;
    if world == 0 {
        return Err("--distributed nccl found no GPU".into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = threads.unwrap_or((cores / world).max(1));
    println!(
        "NCCL job of {world} rank(s), one per GPU, as threads of this process; \
         {threads} worker thread(s) per rank"
    );
    let group = InProcess::group(world).map_err(|e| e.to_string())?;
    let f = &f;
    std::thread::scope(|s| {
        for (rank, bootstrap) in group.into_iter().enumerate() {
            s.spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    super::with_threads(Some(threads), move || {
                        // The communicator lives on the pool's thread that
                        // runs the whole rank; the bootstrap group stays
                        // alive until the rank ends.
                        let nccl =
                            ferrite::distributed::nccl::NcclCommunicator::over(&bootstrap, rank)
                                .map_err(|e| e.to_string())?;
                        let job = job_over(std::rc::Rc::new(nccl), rank, Some(Device::Cuda(rank)));
                        f(&job)
                    })
                }));
                let msg = match outcome {
                    Ok(Ok(())) => return,
                    Ok(Err(msg)) => msg,
                    Err(_) => "the rank panicked (see above)".to_string(),
                };
                eprintln!("ferrite: error: rank {rank} of {world} failed: {msg}; ending the job");
                std::process::exit(1);
            });
        }
    });
    Ok(())
}

/// `--distributed nccl` in a build without CUDA.
#[cfg(not(feature = "cuda"))]
pub fn launch_threads(
    _threads: Option<usize>,
    _f: impl Fn(&Job) -> Result<(), String> + Sync,
) -> Result<(), String> {
    Err(no_cuda())
}

/// This MPI rank's job over NCCL, on the GPU of its local rank (the
/// launcher's `OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID` or
/// `SLURM_LOCALID`; else the rank modulo the GPUs visible).
#[cfg(all(feature = "mpi", feature = "cuda"))]
pub fn job_over_mpi(comm: &ferrite::distributed::mpi::MpiCommunicator) -> ferrite::Result<Job> {
    use ferrite::distributed::Communicator;
    let rank = comm.rank();
    let local = [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok());
    let gpus = ferrite::backend::cuda::device_count()?;
    let gpu = match local {
        Some(l) => l,
        None if gpus > 0 => rank % gpus,
        None => 0,
    };
    let nccl = ferrite::distributed::nccl::NcclCommunicator::over(comm, gpu)?;
    Ok(job_over(
        std::rc::Rc::new(nccl),
        rank,
        Some(Device::Cuda(gpu)),
    ))
}

/// `--distributed nccl` under MPI in a build without CUDA.
#[cfg(all(feature = "mpi", not(feature = "cuda")))]
pub fn job_over_mpi(_comm: &ferrite::distributed::mpi::MpiCommunicator) -> ferrite::Result<Job> {
    Err(ferrite::Error::Distributed {
        op: "ferrite",
        msg: no_cuda(),
    })
}

/// The error of `--distributed nccl` without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
fn no_cuda() -> String {
    "--distributed nccl needs a ferrite built with `--features cuda` \
     (NCCL is loaded at run time, like the CUDA driver); this build has no CUDA backend"
        .into()
}

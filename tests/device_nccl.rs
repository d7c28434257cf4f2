//! A single-rank NCCL communicator on a real GPU (the GPU validation
//! script runs it): every collective through NCCL returns what one rank
//! gave it, and an aborted communicator refuses further work. Without a
//! GPU or libnccl it says why and passes, unless `FERRITE_REQUIRE_GPU` is
//! set on a real GPU (as on the validation machine), where it fails.
#![cfg(feature = "cuda")]

use ferrite::distributed::nccl::NcclCommunicator;
use ferrite::distributed::{Buffer, Communicator, SingleProcess};
use ferrite::Error;

#[test]
fn a_single_rank_round_trips_every_collective() -> ferrite::Result<()> {
    let comm = match NcclCommunicator::over(&SingleProcess::new(), 0) {
        Ok(comm) => comm,
        Err(Error::DeviceUnavailable { msg, .. }) if !required() => {
            eprintln!("no NCCL check here: {msg}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    println!("device suite: NCCL, 1 rank on GPU 0");
    // Sizes from one element to several MiB, so NCCL's chunking is used.
    for n in [1usize, 1000, 3 << 20] {
        let data: Vec<f32> = (0..n).map(|i| (i % 977) as f32 * 0.25 - 7.0).collect();
        let mut buf = Buffer::F32(data.clone());
        comm.all_reduce_sum(&mut buf)?;
        assert_eq!(buf, Buffer::F32(data.clone()), "all-reduce of {n} f32");
        let pending = comm.start_all_reduce_sum(Buffer::F64(vec![1.25; n]))?;
        assert_eq!(
            pending.wait()?,
            Buffer::F64(vec![1.25; n]),
            "async all-reduce of {n} f64"
        );
    }
    let mut buf = Buffer::F64(vec![0.5, -3.0]);
    comm.broadcast(&mut buf, 0)?;
    assert_eq!(buf, Buffer::F64(vec![0.5, -3.0]));
    let all = comm.all_gather(&Buffer::F32(vec![7.0, 8.0, 9.0]))?;
    assert_eq!(all, vec![Buffer::F32(vec![7.0, 8.0, 9.0])]);
    comm.barrier()?;
    comm.abort("the test is over");
    assert!(
        comm.barrier().is_err(),
        "an aborted communicator still works"
    );
    Ok(())
}

/// Whether a missing NCCL is a failure: on a real GPU that must have it
/// (`FERRITE_REQUIRE_GPU`), not on the emulated GPU, which has no NCCL.
fn required() -> bool {
    std::env::var_os("FERRITE_REQUIRE_GPU").is_some()
        && std::env::var_os("FERRITE_CUDA_EMULATE").is_none()
}

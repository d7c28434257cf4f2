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

/// A tensor on the GPU is reduced in device memory (one rank: the sum is
/// the tensor), and a reducer over NCCL gives one rank the gradients of a
/// plain backward, bit for bit, on the device.
#[test]
fn device_tensors_and_the_reducer_go_through_nccl() -> ferrite::Result<()> {
    use ferrite::distributed::{BucketOptions, Reducer};
    use ferrite::{DType, Device, Tensor};
    use std::rc::Rc;
    let comm = match NcclCommunicator::over(&SingleProcess::new(), 0) {
        Ok(comm) => Rc::new(comm),
        Err(Error::DeviceUnavailable { msg, .. }) if !required() => {
            eprintln!("no NCCL check here: {msg}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let gpu = Device::Cuda(0);
    let values: Vec<f32> = (0..(1 << 20))
        .map(|i| (i % 613) as f32 * 0.5 - 9.0)
        .collect();
    let t = Tensor::from_vec(values.clone(), &[1 << 20])?.to_device(gpu)?;
    let sum = comm.start_all_reduce_sum_tensor(t)?.wait()?;
    assert_eq!(sum.device(), gpu);
    assert_eq!(
        sum.to_vec::<f32>()?,
        values,
        "a one-rank NCCL sum changed the tensor"
    );

    use ferrite::rand::SeedableRng;
    let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(3);
    let w = Tensor::randn(&[64, 32], 0.0, 0.2, DType::F32, &mut rng)?
        .to_device(gpu)?
        .requires_grad_(true);
    let b = Tensor::zeros_on(&[32], DType::F32, gpu)?.requires_grad_(true);
    let x = Tensor::randn(&[16, 64], 0.0, 1.0, DType::F32, &mut rng)?.to_device(gpu)?;
    let loss = || x.matmul(&w)?.add(&b)?.relu()?.sum_all();
    let opts = BucketOptions {
        first_bucket_bytes: 64,
        bucket_bytes: 1024,
    };
    let mut reducer = Reducer::new(Box::new(comm.clone()), &[w.clone(), b.clone()], opts)?;
    let reduced = reducer.backward(&loss()?, 16, 16)?;
    let plain = loss()?.backward()?;
    for p in [&w, &b] {
        let (r, q) = (
            reduced.get(p).expect("reduced"),
            plain.get(p).expect("plain"),
        );
        assert_eq!(r.device(), gpu, "a reduced gradient left the GPU");
        assert_eq!(r.to_vec::<f32>()?, q.to_vec::<f32>()?);
    }
    Ok(())
}

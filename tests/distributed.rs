//! Data-parallel training on the in-process communicator: ranks that each
//! train on a contiguous slice of the global batch end every step with the
//! gradients, and after several steps the parameters, of one process
//! training on the whole batch.
//!
//! Batch norm: with frozen statistics (evaluation mode) the ranks compute
//! exactly what one process computes. In training mode each rank
//! normalises with its own slice's statistics (PyTorch DDP's default),
//! which is not the one-process computation; there the tests check that
//! one rank is the serial run bit for bit and that the ranks stay identical
//! to each other. Synchronised batch norm, which is the one-process
//! computation, is tested in `sync_batch_norm.rs`.

use ferrite::distributed::{BucketOptions, Communicator, InProcess, Reducer, SingleProcess};
use ferrite::loss::cross_entropy;
use ferrite::nn::{BatchNorm2d, Bias, Conv2d, Linear, Module, Visit};
use ferrite::ops::{Conv2dParams, Pool2dParams};
use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{no_grad, DType, GradStore, Result, Tensor};
use std::thread;

/// conv → BN → ReLU → max-pool → conv → BN → ReLU → global pool → linear.
#[derive(Module)]
struct Net {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    fc: Linear,
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?)?.relu()?;
        let h = h.max_pool2d(Pool2dParams::new(2))?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?.relu()?;
        let h = h.adaptive_avg_pool2d((1, 1))?.flatten(1, -1)?;
        self.fc.forward(&h)
    }
}

const CLASSES: usize = 5;
const GLOBAL: usize = 128;

/// A network from `seed`, in training mode or with frozen batch norm
/// (evaluation mode, running statistics drawn from the seed too).
fn net(seed: u64, frozen_bn: bool) -> Result<Net> {
    let mut rng = StdRng::seed_from_u64(seed);
    let same = Conv2dParams::default().padding(1);
    let mut net = Net {
        conv1: Conv2d::new(3, 8, 3, same, Bias::No, &mut rng)?,
        bn1: BatchNorm2d::new(8)?,
        conv2: Conv2d::new(8, 16, 3, same, Bias::No, &mut rng)?,
        bn2: BatchNorm2d::new(16)?,
        fc: Linear::new(16, CLASSES, Bias::Yes, &mut rng)?,
    };
    no_grad(|| -> Result<()> {
        for bn in [&net.bn1, &net.bn2] {
            let c = bn.running_mean.numel();
            bn.running_mean
                .assign(&Tensor::randn(&[c], 0.0, 0.3, DType::F32, &mut rng)?)?;
            bn.running_var
                .assign(&Tensor::rand(&[c], 0.5, 1.5, DType::F32, &mut rng)?)?;
        }
        Ok(())
    })?;
    net.set_training(!frozen_bn);
    Ok(net)
}

/// The global batch of step `step`: images and labels.
fn global_batch(step: usize) -> Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(1000 + step as u64);
    let x = Tensor::randn(&[GLOBAL, 3, 8, 8], 0.0, 1.0, DType::F32, &mut rng)?;
    let labels: Vec<i64> = (0..GLOBAL)
        .map(|i| ((i * 7 + step * 3) % CLASSES) as i64)
        .collect();
    Ok((x, Tensor::from_vec(labels, &[GLOBAL])?))
}

fn sgd(net: &Net) -> Result<Sgd> {
    let config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::default()
    };
    Sgd::new(vec![ParamGroup::new(net.parameters(), 0.1, 1e-4)], config)
}

fn mean_loss(net: &Net, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    cross_entropy(&net.forward(x)?, labels, &Default::default())
}

/// Every parameter's gradient, in parameter order.
fn grads_of(net: &Net, grads: &GradStore) -> Result<Vec<Vec<f32>>> {
    net.parameters()
        .iter()
        .map(|p| {
            grads
                .get(p)
                .expect("a gradient per parameter")
                .to_vec::<f32>()
        })
        .collect()
}

/// Every parameter and buffer, as f64, in state-dict order.
fn state_of(net: &Net) -> Result<Vec<Vec<f64>>> {
    net.state_dict()
        .iter()
        .map(|(_, t)| t.to_f64_vec())
        .collect()
}

/// What a run records: the first step's gradients and the final state.
#[derive(Debug, PartialEq)]
struct Run {
    first_grads: Vec<Vec<f32>>,
    state: Vec<Vec<f64>>,
}

/// One process training `steps` steps on the whole global batches.
fn serial(steps: usize, frozen_bn: bool) -> Result<Run> {
    let net = net(0, frozen_bn)?;
    let mut opt = sgd(&net)?;
    let mut first_grads = Vec::new();
    for step in 0..steps {
        let (x, labels) = global_batch(step)?;
        let grads = mean_loss(&net, &x, &labels)?.backward()?;
        if step == 0 {
            first_grads = grads_of(&net, &grads)?;
        }
        opt.step(&grads)?;
    }
    Ok(Run {
        first_grads,
        state: state_of(&net)?,
    })
}

/// How a data-parallel run is set up.
#[derive(Clone)]
struct Setup {
    /// Samples of each rank's slice of a global batch (summing to GLOBAL).
    slices: Vec<usize>,
    steps: usize,
    frozen_bn: bool,
    /// Broadcast rank 0's buffers after each step (per-rank BN).
    broadcast_buffers: bool,
    buckets: BucketOptions,
}

impl Setup {
    fn new(slices: &[usize], steps: usize) -> Setup {
        assert_eq!(slices.iter().sum::<usize>(), GLOBAL);
        Setup {
            slices: slices.to_vec(),
            steps,
            frozen_bn: true,
            broadcast_buffers: false,
            // Small buckets, so that several all-reduces overlap backward.
            buckets: BucketOptions {
                first_bucket_bytes: 256,
                bucket_bytes: 2048,
            },
        }
    }
}

/// One rank's part of a data-parallel run: a network from its own seed
/// (made rank 0's by the reducer's broadcast), its contiguous slice of
/// every global batch.
fn rank_run(comm: Box<dyn Communicator>, setup: &Setup) -> Result<Run> {
    let rank = comm.rank();
    let net = net(rank as u64 * 17, setup.frozen_bn)?;
    let mut reducer = Reducer::for_module(comm, &net, setup.buckets)?;
    reducer.broadcast_state(&net)?;
    let mut opt = sgd(&net)?;
    let start: usize = setup.slices[..rank].iter().sum();
    let local = setup.slices[rank];
    let mut first_grads = Vec::new();
    for step in 0..setup.steps {
        let (x, labels) = global_batch(step)?;
        let x = x.narrow(0, start, local)?;
        let labels = labels.narrow(0, start, local)?;
        let loss = mean_loss(&net, &x, &labels)?;
        let grads = reducer.backward(&loss, local, GLOBAL)?;
        if step == 0 {
            first_grads = grads_of(&net, &grads)?;
        }
        opt.step(&grads)?;
        if setup.broadcast_buffers {
            reducer.broadcast_buffers(&net)?;
        }
    }
    Ok(Run {
        first_grads,
        state: state_of(&net)?,
    })
}

/// Runs every rank of `setup` on its own thread; their runs in rank order.
fn data_parallel(setup: &Setup) -> Result<Vec<Run>> {
    let group = InProcess::group(setup.slices.len())?;
    thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| s.spawn(move || rank_run(Box::new(comm), setup)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no rank panics"))
            .collect()
    })
}

/// Largest |a − b| over the largest |b|, per tensor; the worst tensor.
fn relative_error<T: Copy + Into<f64>>(a: &[Vec<T>], b: &[Vec<T>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            let scale = y.iter().map(|&v| v.into().abs()).fold(0.0, f64::max);
            let diff = x
                .iter()
                .zip(y)
                .map(|(&p, &q)| (p.into() - q.into()).abs())
                .fold(0.0, f64::max);
            diff / scale.max(1e-12)
        })
        .fold(0.0, f64::max)
}

fn assert_ranks_identical(runs: &[Run]) {
    for (r, run) in runs.iter().enumerate().skip(1) {
        assert!(
            run.state == runs[0].state,
            "rank {r}'s parameters or buffers differ from rank 0's"
        );
    }
}

#[test]
fn two_ranks_of_64_match_one_rank_of_128_with_frozen_batch_norm() -> Result<()> {
    let reference = serial(5, true)?;
    let runs = data_parallel(&Setup::new(&[64, 64], 5))?;
    assert_ranks_identical(&runs);
    let grad_err = relative_error(&runs[0].first_grads, &reference.first_grads);
    assert!(grad_err <= 1e-5, "first-step gradients: {grad_err:e}");
    let state_err = relative_error(&runs[0].state, &reference.state);
    assert!(state_err <= 1e-4, "parameters after 5 steps: {state_err:e}");
    Ok(())
}

#[test]
fn uneven_slices_still_give_the_gradient_of_the_global_mean() -> Result<()> {
    let reference = serial(2, true)?;
    let runs = data_parallel(&Setup::new(&[70, 58], 2))?;
    assert_ranks_identical(&runs);
    let grad_err = relative_error(&runs[0].first_grads, &reference.first_grads);
    assert!(grad_err <= 1e-5, "first-step gradients: {grad_err:e}");
    let state_err = relative_error(&runs[0].state, &reference.state);
    assert!(state_err <= 1e-4, "parameters after 2 steps: {state_err:e}");
    // Three ranks of different sizes, too.
    let runs = data_parallel(&Setup::new(&[50, 33, 45], 1))?;
    assert_ranks_identical(&runs);
    let grad_err = relative_error(&runs[2].first_grads, &reference.first_grads);
    assert!(
        grad_err <= 1e-5,
        "first-step gradients, 3 ranks: {grad_err:e}"
    );
    Ok(())
}

#[test]
fn one_rank_with_the_reducer_is_the_serial_run_bit_for_bit() -> Result<()> {
    for frozen_bn in [true, false] {
        let reference = serial(3, frozen_bn)?;
        let mut setup = Setup::new(&[GLOBAL], 3);
        setup.frozen_bn = frozen_bn;
        let runs = data_parallel(&setup)?;
        assert!(runs[0] == reference, "in-process, frozen_bn {frozen_bn}");
        // The default buckets and the single-process communicator, too.
        setup.buckets = BucketOptions::default();
        let run = rank_run(Box::new(SingleProcess::new()), &setup)?;
        assert!(run == reference, "single process, frozen_bn {frozen_bn}");
    }
    Ok(())
}

#[test]
fn with_per_rank_batch_norm_the_ranks_stay_identical() -> Result<()> {
    let mut setup = Setup::new(&[64, 64], 3);
    setup.frozen_bn = false;
    setup.broadcast_buffers = true;
    let runs = data_parallel(&setup)?;
    assert_ranks_identical(&runs);
    // Per-rank statistics are not the global batch's: the run differs from
    // one process (which is why frozen or synchronised statistics are
    // needed for equivalence).
    let reference = serial(3, false)?;
    assert!(relative_error(&runs[0].first_grads, &reference.first_grads) > 1e-4);
    Ok(())
}

#[test]
fn buckets_follow_reverse_registration_order() -> Result<()> {
    let net = net(0, true)?;
    let sizes = |first: usize, later: usize| -> Result<Vec<usize>> {
        let opts = BucketOptions {
            first_bucket_bytes: first,
            bucket_bytes: later,
        };
        Ok(Reducer::for_module(Box::new(SingleProcess::new()), &net, opts)?.bucket_lens())
    };
    // Parameters: conv1 216, bn1 8 + 8, conv2 1152, bn2 16 + 16, fc 80 + 5.
    assert_eq!(sizes(1 << 20, 25 << 20)?, vec![1501]);
    // fc's bias and weight (85 floats = 340 bytes) fill the first bucket;
    // a parameter larger than a bucket gets its own.
    assert_eq!(sizes(340, 200)?, vec![85, 32, 1152, 16, 216]);
    assert!(Reducer::for_module(
        Box::new(SingleProcess::new()),
        &net,
        BucketOptions {
            first_bucket_bytes: 0,
            bucket_bytes: 1
        }
    )
    .is_err());
    Ok(())
}

#[test]
fn a_rank_that_fails_in_backward_fails_every_rank() -> Result<()> {
    let group = InProcess::group(2)?;
    let results: Vec<Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| {
                s.spawn(move || -> Result<()> {
                    let rank = comm.rank();
                    let net = net(0, true)?;
                    let mut reducer =
                        Reducer::for_module(Box::new(comm), &net, Default::default())?;
                    let (x, labels) = global_batch(0)?;
                    let loss = mean_loss(&net, &x, &labels)?;
                    // Rank 1 claims more samples than the global batch.
                    let local = if rank == 1 { 2 * GLOBAL } else { GLOBAL / 2 };
                    reducer.backward(&loss, local, GLOBAL).map(|_| ())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let msg1 = results[1].as_ref().unwrap_err().to_string();
    assert!(msg1.contains("rank 1 has 256 of 128 samples"), "{msg1}");
    let msg0 = results[0].as_ref().unwrap_err().to_string();
    assert!(msg0.contains("rank 1 aborted"), "{msg0}");
    Ok(())
}

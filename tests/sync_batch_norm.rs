//! Data-parallel training with synchronised batch norm on in-process
//! ranks: a small ResNet (projection shortcut, six batch-norm layers) in
//! training mode, whose ranks each train on a slice of every global
//! batch, ends every step with the gradients, and after several SGD steps
//! the parameters and running statistics, of one process training on the
//! whole batch. Without synchronisation the per-rank statistics make the
//! run differ from one process (so the option is what makes them agree).

use ferrite::distributed::SyncGroup;
use ferrite::distributed::{BucketOptions, Communicator, InProcess, Reducer, SingleProcess};
use ferrite::loss::cross_entropy;
use ferrite::nn::resnet::{BlockKind, ResNet, ResNetConfig, ShortcutKind, Stem};
use ferrite::nn::{convert_sync_batch_norm, Module, Role, Visit};
use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{DType, GradStore, Result, Tensor};
use std::rc::Rc;
use std::thread;

const CLASSES: usize = 5;
const GLOBAL: usize = 128;

/// A CIFAR-style ResNet with two stages of one basic block (8 and 16
/// planes, the second with a projection shortcut), in training mode.
fn net(seed: u64) -> Result<ResNet> {
    let config = ResNetConfig {
        block: BlockKind::Basic,
        layers: vec![1, 1],
        widths: vec![8, 16],
        stem: Stem::Cifar,
        shortcut: ShortcutKind::Projection,
        in_channels: 3,
        num_classes: CLASSES,
    };
    let mut net = ResNet::new(&config, &mut StdRng::seed_from_u64(seed))?;
    net.set_training(true);
    Ok(net)
}

/// The global batch of step `step`: images (mean 0.5, so the statistics
/// matter) and labels.
fn global_batch(step: usize) -> Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(1000 + step as u64);
    let x = Tensor::randn(&[GLOBAL, 3, 8, 8], 0.5, 1.0, DType::F32, &mut rng)?;
    let labels: Vec<i64> = (0..GLOBAL)
        .map(|i| ((i * 7 + step * 3) % CLASSES) as i64)
        .collect();
    Ok((x, Tensor::from_vec(labels, &[GLOBAL])?))
}

fn sgd(net: &ResNet) -> Result<Sgd> {
    let config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::default()
    };
    Sgd::new(vec![ParamGroup::new(net.parameters(), 0.1, 1e-4)], config)
}

fn grads_of(net: &ResNet, grads: &GradStore) -> Result<Vec<Vec<f64>>> {
    net.parameters()
        .iter()
        .map(|p| grads.get(p).expect("a gradient per parameter").to_f64_vec())
        .collect()
}

/// The parameters, or the buffers, as f64 in state-dict order.
fn tensors_of(net: &ResNet, role: Role) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::new();
    net.visit("", &mut |_, t, r| {
        if r == role {
            out.push(t.to_f64_vec());
        }
    });
    out.into_iter().collect()
}

/// A run's first-step gradients and final parameters and buffers.
#[derive(Debug, PartialEq)]
struct Run {
    first_grads: Vec<Vec<f64>>,
    params: Vec<Vec<f64>>,
    buffers: Vec<Vec<f64>>,
}

/// One process, `steps` SGD steps on the whole global batches.
fn serial(steps: usize) -> Result<Run> {
    let net = net(0)?;
    let mut opt = sgd(&net)?;
    let mut first_grads = Vec::new();
    for step in 0..steps {
        let (x, labels) = global_batch(step)?;
        let loss = cross_entropy(&net.forward(&x)?, &labels, &Default::default())?;
        let grads = loss.backward()?;
        if step == 0 {
            first_grads = grads_of(&net, &grads)?;
        }
        opt.step(&grads)?;
    }
    Ok(Run {
        first_grads,
        params: tensors_of(&net, Role::Parameter)?,
        buffers: tensors_of(&net, Role::Buffer)?,
    })
}

/// One rank: its own initialisation (made rank 0's by the broadcast), its
/// contiguous slice of every global batch, synchronised batch norm or not.
fn rank_run(comm: Rc<dyn Communicator>, slices: &[usize], steps: usize, sync: bool) -> Result<Run> {
    let rank = comm.rank();
    let mut net = net(rank as u64 * 17)?;
    if sync {
        convert_sync_batch_norm(&mut net, &SyncGroup::new(comm.clone()));
    }
    let buckets = BucketOptions {
        first_bucket_bytes: 256,
        bucket_bytes: 2048,
    };
    let mut reducer = Reducer::for_module(Box::new(comm), &net, buckets)?;
    reducer.broadcast_state(&net)?;
    let mut opt = sgd(&net)?;
    let start: usize = slices[..rank].iter().sum();
    let local = slices[rank];
    let mut first_grads = Vec::new();
    for step in 0..steps {
        let (x, labels) = global_batch(step)?;
        let (x, labels) = (x.narrow(0, start, local)?, labels.narrow(0, start, local)?);
        let loss = cross_entropy(&net.forward(&x)?, &labels, &Default::default())?;
        let grads = reducer.backward(&loss, local, GLOBAL)?;
        if step == 0 {
            first_grads = grads_of(&net, &grads)?;
        }
        opt.step(&grads)?;
    }
    Ok(Run {
        first_grads,
        params: tensors_of(&net, Role::Parameter)?,
        buffers: tensors_of(&net, Role::Buffer)?,
    })
}

/// Every rank of `slices` on its own thread; their runs in rank order.
fn data_parallel(slices: &[usize], steps: usize, sync: bool) -> Result<Vec<Run>> {
    assert_eq!(slices.iter().sum::<usize>(), GLOBAL);
    let group = InProcess::group(slices.len())?;
    thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| s.spawn(move || rank_run(Rc::new(comm), slices, steps, sync)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no rank panics"))
            .collect()
    })
}

/// Largest |a − b| over the largest |b|, per tensor; the worst tensor.
fn relative_error(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = x
                .iter()
                .zip(y)
                .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
            diff / scale.max(1e-12)
        })
        .fold(0.0, f64::max)
}

/// The errors of rank 0's run against `reference`: first-step gradients,
/// parameters, buffers (running statistics and step counters).
fn errors(runs: &[Run], reference: &Run) -> (f64, f64, f64) {
    (
        relative_error(&runs[0].first_grads, &reference.first_grads),
        relative_error(&runs[0].params, &reference.params),
        relative_error(&runs[0].buffers, &reference.buffers),
    )
}

fn assert_ranks_identical(runs: &[Run]) {
    for (r, run) in runs.iter().enumerate().skip(1) {
        assert!(run.params == runs[0].params, "rank {r}'s parameters differ");
        assert!(run.buffers == runs[0].buffers, "rank {r}'s buffers differ");
    }
}

#[test]
fn two_ranks_of_64_with_synchronised_batch_norm_match_one_rank_of_128() -> Result<()> {
    let reference = serial(5)?;
    let runs = data_parallel(&[64, 64], 5, true)?;
    // Running statistics too: every rank updates them with the same bits.
    assert_ranks_identical(&runs);
    let (grads, params, buffers) = errors(&runs, &reference);
    eprintln!("2 × 64, synchronised: grads {grads:e}, params {params:e}, buffers {buffers:e}");
    assert!(grads <= 1e-5, "first-step gradients: {grads:e}");
    assert!(params <= 1e-4, "parameters after 5 steps: {params:e}");
    assert!(
        buffers <= 1e-6,
        "running statistics after 5 steps: {buffers:e}"
    );
    Ok(())
}

#[test]
fn uneven_slices_with_synchronised_batch_norm_still_match() -> Result<()> {
    let reference = serial(3)?;
    for slices in [&[70, 58][..], &[50, 33, 45]] {
        let runs = data_parallel(slices, 3, true)?;
        assert_ranks_identical(&runs);
        let (grads, params, buffers) = errors(&runs, &reference);
        eprintln!(
            "{slices:?}, synchronised: grads {grads:e}, params {params:e}, buffers {buffers:e}"
        );
        assert!(grads <= 1e-5, "{slices:?}: first-step gradients {grads:e}");
        assert!(params <= 1e-4, "{slices:?}: parameters {params:e}");
        assert!(
            buffers <= 1e-6,
            "{slices:?}: running statistics {buffers:e}"
        );
    }
    Ok(())
}

#[test]
fn without_synchronisation_per_rank_statistics_differ_from_one_process() -> Result<()> {
    let reference = serial(2)?;
    let runs = data_parallel(&[64, 64], 2, false)?;
    let (grads, _, _) = errors(&runs, &reference);
    eprintln!("2 × 64, per-rank statistics: grads {grads:e}");
    assert!(
        grads > 1e-3,
        "per-rank statistics gave the global batch's gradients: {grads:e}"
    );
    // And each rank's running statistics are its own slice's.
    assert!(runs[0].buffers != runs[1].buffers);
    Ok(())
}

#[test]
fn one_rank_with_synchronised_batch_norm_is_the_serial_run_bit_for_bit() -> Result<()> {
    let reference = serial(3)?;
    let run = rank_run(Rc::new(SingleProcess::new()), &[GLOBAL], 3, true)?;
    assert!(run == reference);
    Ok(())
}

#[test]
fn conversion_reaches_every_batch_norm_layer_and_can_be_undone() -> Result<()> {
    let mut net = net(0)?;
    let group = SyncGroup::new(Rc::new(SingleProcess::new()));
    let synced = |net: &ResNet| {
        let mut layers = vec![net.bn1.sync.is_some()];
        for block in net.stages.iter().flatten() {
            let ferrite::nn::resnet::Block::Basic(b) = block else {
                panic!("basic blocks")
            };
            layers.push(b.bn1.sync.is_some());
            layers.push(b.bn2.sync.is_some());
            if let ferrite::nn::resnet::Shortcut::Projection(_, bn) = &b.shortcut {
                layers.push(bn.sync.is_some());
            }
        }
        layers
    };
    assert_eq!(synced(&net), [false; 6]);
    convert_sync_batch_norm(&mut net, &group);
    assert_eq!(synced(&net), [true; 6]);
    net.set_sync_group(None);
    assert_eq!(synced(&net), [false; 6]);
    Ok(())
}

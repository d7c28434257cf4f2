//! Synchronised batch norm on a device (see `tests/device/mod.rs`), over
//! in-process ranks (threads): the op on 2 ranks matches the same ranks on
//! the CPU (output, input/weight/bias gradients, running statistics, even
//! and uneven slices, an empty slice); a small ResNet trained on 2 ranks ×
//! 64 (or 70 + 58) matches 1 × 128 with plain batch norm on the device; the trainer with `sync_batch_norm` on
//! a device model matches the CPU run. The device kernels are f32 only, so
//! an f64 input on the device is refused on every rank (no rank hangs). In
//! CI this runs on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_sync_bn`.

mod ddp;
mod device;

use device::devices;
use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::distributed::{BucketOptions, Communicator, Reducer, SyncGroup};
use ferrite::loss::cross_entropy;
use ferrite::nn::resnet::{BlockKind, ResNet, ResNetConfig, ShortcutKind, Stem};
use ferrite::nn::{
    convert_sync_batch_norm, BatchNorm2d, Bias, Conv2d, Flatten, Linear, Module, ReLU, Role,
    Sequential, Visit,
};
use ferrite::ops::{BatchNormOptions, Conv2dParams};
use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::train::run::Quiet;
use ferrite::train::trainer::Trainer;
use ferrite::{DType, Device, Error, Result, Tensor};
use std::rc::Rc;

const C: usize = 3;

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

fn rc(comm: Box<dyn Communicator>) -> Rc<dyn Communicator> {
    Rc::from(comm)
}

/// One rank's view of a synchronised forward and backward of the global
/// batch cut at `cut` (rank 0 the rows before, rank 1 the rest), on
/// `device`: `[output, dx, dw, db, running mean, running var]`, the
/// gradients of the global mean loss `(1/N)·Σ y·coef` (this rank's loss
/// the mean over its samples, its gradients weighted by its share as the
/// gradient reducer does).
fn op_rank(
    comm: Rc<dyn Communicator>,
    n: usize,
    cut: usize,
    device: Device,
) -> Result<Vec<Vec<f64>>> {
    let mut rng = StdRng::seed_from_u64(7);
    // Far from zero mean, so a wrong mean or variance shows.
    let x = Tensor::randn(&[n, C, 4, 5], 3.0, 1.5, DType::F32, &mut rng)?;
    let coef = Tensor::randn(&[n, C, 4, 5], 0.0, 1.0, DType::F32, &mut rng)?;
    let w = Tensor::randn(&[C], 1.0, 0.3, DType::F32, &mut rng)?;
    let b = Tensor::randn(&[C], 0.0, 0.3, DType::F32, &mut rng)?;
    let rm = Tensor::randn(&[C], 0.0, 1.0, DType::F32, &mut rng)?.to_device(device)?;
    let rv = Tensor::rand(&[C], 0.5, 2.0, DType::F32, &mut rng)?.to_device(device)?;
    let (start, len) = if comm.rank() == 0 {
        (0, cut)
    } else {
        (cut, n - cut)
    };
    let on = |t: Tensor| -> Result<Tensor> { Ok(t.to_device(device)?.requires_grad_(true)) };
    let xr = on(x.narrow(0, start, len)?.contiguous()?)?;
    let (w, b) = (on(w)?, on(b)?);
    let coef = coef
        .narrow(0, start, len)?
        .contiguous()?
        .to_device(device)?;
    let group = SyncGroup::new(comm);
    let opts = BatchNormOptions::default();
    let y = xr.sync_batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), opts, &group)?;
    assert_eq!(y.device(), device, "the output stays on the device");
    let loss = y
        .mul(&coef)?
        .sum_all()?
        .mul_scalar(1.0 / len.max(1) as f64)?;
    let grads = loss.backward()?;
    let share = len as f64 / n as f64;
    let mut out = vec![y.to_f64_vec()?];
    for t in [&xr, &w, &b] {
        let g = grads.get(t).expect("a gradient");
        assert_eq!(g.device(), device, "gradients stay on the device");
        out.push(g.to_f64_vec()?.iter().map(|v| v * share).collect());
    }
    assert_eq!((rm.device(), rv.device()), (device, device));
    out.push(rm.to_f64_vec()?);
    out.push(rv.to_f64_vec()?);
    Ok(out)
}

#[test]
fn two_ranks_on_the_device_match_two_ranks_on_the_cpu() {
    let n = 10;
    for cut in [5, 6, 10] {
        let run = |device: Device| -> Vec<Vec<Vec<f64>>> {
            let runs = ddp::on_ranks(2, |comm| op_rank(rc(comm), n, cut, device));
            runs.into_iter().collect::<Result<_>>().unwrap()
        };
        let cpu = run(Device::Cpu);
        for device in devices() {
            let dev = run(device);
            let mut worst = 0.0f64;
            // Every rank updates its running statistics with the same bits.
            assert_eq!(
                dev[0][4..],
                dev[1][4..],
                "cut {cut}: running statistics differ"
            );
            for rank in 0..2 {
                let names = ["output", "dx", "dw", "db", "running mean", "running var"];
                for (i, name) in names.iter().enumerate() {
                    let err = relative_error(&dev[rank][i..=i], &cpu[rank][i..=i]);
                    worst = worst.max(err);
                    assert!(err <= 1e-5, "cut {cut}, rank {rank}, {name}: {err:e}");
                }
            }
            eprintln!("{device:?} vs the CPU, cut {cut} of {n}: worst {worst:e}");
        }
    }
}

#[test]
fn f64_on_the_device_is_refused_on_every_rank() {
    // The device kernels of batch norm exist in f32 only: an f64 input is
    // an error (as for `batch_norm`) before any collective, and the group
    // is aborted so that the other rank does not wait.
    for device in devices() {
        let errors = ddp::on_ranks(2, |comm| {
            let rank = comm.rank();
            let group = SyncGroup::new(rc(comm));
            let dtype = if rank == 0 { DType::F64 } else { DType::F32 };
            let x = Tensor::ones(&[2, C, 3], dtype)?.to_device(device)?;
            x.sync_batch_norm(None, None, None, None, BatchNormOptions::default(), &group)
        });
        let [first, second] = <[_; 2]>::try_from(errors).unwrap();
        let first = first.unwrap_err();
        assert!(
            matches!(
                first,
                Error::UnsupportedDType {
                    dtype: DType::F64,
                    ..
                }
            ),
            "{first}"
        );
        assert!(second.is_err(), "the other rank is stopped too");
    }
}

// ---- a small ResNet: 2 ranks × 64 against 1 × 128, all on the device ----

const CLASSES: usize = 5;
const GLOBAL: usize = 128;

/// A two-stage CIFAR-style ResNet (4 and 8 planes, a projection shortcut:
/// six batch-norm layers), in training mode, small enough for the emulator.
fn resnet(seed: u64, device: Device) -> Result<ResNet> {
    let config = ResNetConfig {
        block: BlockKind::Basic,
        layers: vec![1, 1],
        widths: vec![4, 8],
        stem: Stem::Cifar,
        shortcut: ShortcutKind::Projection,
        in_channels: 3,
        num_classes: CLASSES,
    };
    let mut net = ResNet::new(&config, &mut StdRng::seed_from_u64(seed))?;
    net.set_training(true);
    net.to_device(device)?;
    Ok(net)
}

/// The global batch of `step`: 4×4 images of mean 0.5, and labels.
fn global_batch(step: usize, device: Device) -> Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(1000 + step as u64);
    let x = Tensor::randn(&[GLOBAL, 3, 4, 4], 0.5, 1.0, DType::F32, &mut rng)?;
    let labels: Vec<i64> = (0..GLOBAL)
        .map(|i| ((i * 7 + step * 3) % CLASSES) as i64)
        .collect();
    Ok((
        x.to_device(device)?,
        Tensor::from_vec(labels, &[GLOBAL])?.to_device(device)?,
    ))
}

/// A run's first-step gradients, then its parameters and buffers.
type Trained = [Vec<Vec<f64>>; 3];

/// `steps` SGD steps of the rank of `comm` on its contiguous slice of
/// every global batch (`slices`), batch norm synchronised when `sync`.
fn resnet_rank(
    comm: Rc<dyn Communicator>,
    slices: &[usize],
    steps: usize,
    device: Device,
    sync: bool,
) -> Result<Trained> {
    let rank = comm.rank();
    let mut net = resnet(rank as u64 * 17, device)?;
    if sync {
        convert_sync_batch_norm(&mut net, &SyncGroup::new(comm.clone()));
    }
    let buckets = BucketOptions {
        first_bucket_bytes: 256,
        bucket_bytes: 2048,
    };
    let mut reducer = Reducer::for_module(Box::new(comm), &net, buckets)?;
    reducer.broadcast_state(&net)?;
    let config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::default()
    };
    let mut opt = Sgd::new(vec![ParamGroup::new(net.parameters(), 0.1, 1e-4)], config)?;
    let start: usize = slices[..rank].iter().sum();
    let local = slices[rank];
    let mut first = Vec::new();
    for step in 0..steps {
        let (x, labels) = global_batch(step, device)?;
        let (x, labels) = (x.narrow(0, start, local)?, labels.narrow(0, start, local)?);
        let loss = cross_entropy(&net.forward(&x)?, &labels, &Default::default())?;
        let grads = reducer.backward(&loss, local, GLOBAL)?;
        if step == 0 {
            first = net
                .parameters()
                .iter()
                .map(|p| grads.get(p).expect("a gradient").to_f64_vec())
                .collect::<Result<_>>()?;
        }
        opt.step(&grads)?;
    }
    Ok([
        first,
        tensors(&net, Role::Parameter)?,
        tensors(&net, Role::Buffer)?,
    ])
}

/// The parameters, or the buffers, as f64 in state-dict order.
fn tensors(net: &dyn Visit, role: Role) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::new();
    net.visit("", &mut |_, t, r| {
        if r == role {
            out.push(t.to_f64_vec());
        }
    });
    out.into_iter().collect()
}

fn resnet_ranks(slices: &[usize], steps: usize, device: Device, sync: bool) -> Vec<Trained> {
    assert_eq!(slices.iter().sum::<usize>(), GLOBAL);
    let runs = ddp::on_ranks(slices.len(), |comm| {
        resnet_rank(rc(comm), slices, steps, device, sync)
    });
    runs.into_iter().collect::<Result<_>>().unwrap()
}

#[test]
fn two_ranks_of_64_on_the_device_match_one_rank_of_128() {
    let steps = 3;
    for device in devices() {
        // The reference: plain batch norm on the whole batch.
        let reference = resnet_ranks(&[GLOBAL], steps, device, false).remove(0);
        for slices in [&[64, 64][..], &[70, 58]] {
            let runs = resnet_ranks(slices, steps, device, true);
            assert!(runs[0][1..] == runs[1][1..], "{slices:?}: the ranks differ");
            let [grads, params, buffers] =
                [0, 1, 2].map(|i| relative_error(&runs[0][i], &reference[i]));
            eprintln!(
                "{device:?} {slices:?} vs 1 × {GLOBAL}: grads {grads:e}, params {params:e}, \
                 buffers {buffers:e}"
            );
            assert!(grads <= 1e-5, "{slices:?}: first-step gradients {grads:e}");
            assert!(params <= 1e-5, "{slices:?}: parameters {params:e}");
            assert!(
                buffers <= 1e-6,
                "{slices:?}: running statistics {buffers:e}"
            );
        }
        // Without synchronisation each rank normalises with its own slice's
        // statistics, which this comparison sees.
        let runs = resnet_ranks(&[64, 64], 1, device, false);
        let grads = relative_error(&runs[0][0], &reference[0]);
        assert!(
            grads > 1e-3,
            "per-rank statistics: first-step gradients {grads:e}"
        );
    }
}

// ---- the trainer ----

/// conv 1→4 (3×3, padding 1) → batch norm → ReLU → flatten → linear 64→3.
fn bn_model(seed: u64, device: Device) -> Result<Sequential> {
    let mut rng = StdRng::seed_from_u64(seed);
    let padded = Conv2dParams::default().padding(1);
    let mut model = Sequential::new()
        .with(Conv2d::new(1, 4, 3, padded, Bias::Yes, &mut rng)?)
        .with(BatchNorm2d::new(4)?)
        .with(ReLU)
        .with(Flatten)
        .with(Linear::new(64, ddp::CLASSES, Bias::Yes, &mut rng)?);
    model.to_device(device)?;
    Ok(model)
}

/// Two SGD steps (64 toy images in global batches of 32) of a 2-rank
/// trainer with synchronised batch norm on `device`: each rank's
/// parameters and buffers.
fn trainer_ranks(device: Device) -> Vec<Vec<Vec<f64>>> {
    let train_set = ddp::dataset(64, 1, false);
    let runs = ddp::on_ranks(2, |comm| {
        let model = bn_model(comm.rank() as u64, device)?;
        let optimizer = ddp::sgd(&model)?;
        let loss = |logits: &Tensor, batch: &Batch| {
            cross_entropy(logits, batch.class_labels()?, &Default::default())
        };
        let mut trainer = Trainer::new(model, optimizer, loss)?
            .epochs(1)
            .with_communicator(comm)?
            .sync_batch_norm()?;
        assert!(trainer.is_batch_norm_synchronised());
        assert_eq!(trainer.device(), device);
        let mut train = DataLoader::new(&train_set, LoaderConfig::training(ddp::BATCH, 5))?;
        trainer.fit(&mut train, None, &mut Quiet)?;
        let mut state = tensors(trainer.model(), Role::Parameter)?;
        state.extend(tensors(trainer.model(), Role::Buffer)?);
        Ok(state)
    });
    runs.into_iter().collect::<Result<_>>().unwrap()
}

#[test]
fn the_trainer_synchronises_batch_norm_of_a_device_model() {
    let cpu = trainer_ranks(Device::Cpu);
    for device in devices() {
        let dev = trainer_ranks(device);
        assert!(dev[0] == dev[1], "the ranks differ on {device:?}");
        let err = relative_error(&dev[0], &cpu[0]);
        eprintln!("trainer on {device:?} vs the CPU: {err:e}");
        assert!(err <= 1e-5, "parameters and buffers after 2 steps: {err:e}");
    }
}

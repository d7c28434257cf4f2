//! The data-parallel reducer with the model on a GPU (see
//! `tests/device/mod.rs`): gradients stay on the device, each bucket is
//! concatenated there and handed to the communicator as a tensor
//! (`start_all_reduce_sum_tensor`; NCCL reduces it in device memory, the
//! in-process communicator used here copies it through the host), and the
//! result is what the CPU reducer computes. In CI this runs on the
//! emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_distributed`.

mod ddp;
mod device;

use ddp::{dataset, on_ranks, relative_error, sgd, BATCH, TRAIN};
use device::devices;
use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::distributed::{
    AllReduce, BucketOptions, Buffer, Communicator, InProcess, Reducer, SingleProcess,
    TensorAllReduce,
};
use ferrite::loss::cross_entropy;
use ferrite::nn::{Bias, Linear, Module};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::train::trainer::{Quiet, Trainer};
use ferrite::{DType, Device, GradStore, Result, Tensor};
use std::cell::Cell;
use std::rc::Rc;
use std::thread;

/// linear → ReLU → linear, plus a layer the loss never reaches (its
/// gradient is the zeros the reducer fills in).
#[derive(Module)]
struct Mlp {
    hidden: Linear,
    out: Linear,
    unused: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.hidden.forward(x)?.relu()?)
    }
}

const GLOBAL: usize = 24;
const CLASSES: usize = 4;

fn mlp(device: Device) -> Result<Mlp> {
    let mut rng = StdRng::seed_from_u64(5);
    let mut m = Mlp {
        hidden: Linear::new(6, 16, Bias::Yes, &mut rng)?,
        out: Linear::new(16, CLASSES, Bias::Yes, &mut rng)?,
        unused: Linear::new(3, 2, Bias::Yes, &mut rng)?,
    };
    m.to_device(device)?;
    Ok(m)
}

fn batch() -> Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(11);
    let x = Tensor::randn(&[GLOBAL, 6], 0.0, 1.0, DType::F32, &mut rng)?;
    let labels: Vec<i64> = (0..GLOBAL).map(|i| ((i * 5) % CLASSES) as i64).collect();
    Ok((x, Tensor::from_vec(labels, &[GLOBAL])?))
}

/// Small buckets, so the model's gradients travel in several all-reduces.
fn small_buckets() -> BucketOptions {
    BucketOptions {
        first_bucket_bytes: 64,
        bucket_bytes: 256,
    }
}

/// A communicator that counts the tensor all-reduces it forwards and
/// checks that each tensor arrives on `device`.
struct Watching<C> {
    inner: C,
    device: Device,
    tensors: Rc<Cell<usize>>,
}

impl<C: Communicator> Communicator for Watching<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce> {
        self.inner.start_all_reduce_sum(buf)
    }
    fn start_all_reduce_sum_tensor(&self, t: Tensor) -> Result<TensorAllReduce> {
        assert_eq!(t.device(), self.device, "a bucket left the device");
        self.tensors.set(self.tensors.get() + 1);
        self.inner.start_all_reduce_sum_tensor(t)
    }
    fn broadcast(&self, buf: &mut Buffer, root: usize) -> Result<()> {
        self.inner.broadcast(buf, root)
    }
    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>> {
        self.inner.all_gather(buf)
    }
    fn barrier(&self) -> Result<()> {
        self.inner.barrier()
    }
    fn abort(&self, message: &str) {
        self.inner.abort(message)
    }
}

/// One rank's first-step gradients (parameter order, on the host) for its
/// slice `start..start + len` of the global batch, the model on `device`,
/// and how many tensor all-reduces it made.
fn rank_grads(
    comm: impl Communicator + 'static,
    device: Device,
    (start, len): (usize, usize),
) -> Result<(Vec<Vec<f32>>, usize)> {
    let tensors = Rc::new(Cell::new(0));
    let comm = Watching {
        inner: comm,
        device,
        tensors: tensors.clone(),
    };
    let model = mlp(device)?;
    let mut reducer = Reducer::for_module(Box::new(comm), &model, small_buckets())?;
    let (x, labels) = batch()?;
    let x = x.narrow(0, start, len)?.to_device(device)?;
    let labels = labels.narrow(0, start, len)?.to_device(device)?;
    let loss = cross_entropy(&model.forward(&x)?, &labels, &Default::default())?;
    let grads = reducer.backward(&loss, len, GLOBAL)?;
    let host = host_grads(&model, &grads, device)?;
    Ok((host, tensors.get()))
}

/// Every parameter's gradient, checked to lie on `device`, as host f32.
fn host_grads(model: &Mlp, grads: &GradStore, device: Device) -> Result<Vec<Vec<f32>>> {
    model
        .parameters()
        .iter()
        .map(|p| {
            let g = grads.get(p).expect("a gradient per parameter");
            assert_eq!(
                g.device(),
                device,
                "a reduced gradient is not on the device"
            );
            assert_eq!(g.shape(), p.shape());
            g.to_vec::<f32>()
        })
        .collect()
}

/// Every rank's gradients for `slices` of the global batch on `device`,
/// ranks as threads.
fn data_parallel(device: Device, slices: &[usize]) -> Result<Vec<(Vec<Vec<f32>>, usize)>> {
    let group = InProcess::group(slices.len())?;
    thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .enumerate()
            .map(|(r, comm)| {
                let start = slices[..r].iter().sum();
                let len = slices[r];
                s.spawn(move || rank_grads(comm, device, (start, len)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no rank panics"))
            .collect()
    })
}

fn max_relative_error(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = y.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-12);
            let diff = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            f64::from(diff / scale)
        })
        .fold(0.0, f64::max)
}

#[test]
fn device_buckets_give_the_cpu_reducers_gradients() -> Result<()> {
    for device in devices() {
        for slices in [&[12, 12][..], &[17, 7], &[5, 11, 8]] {
            let on_device = data_parallel(device, slices)?;
            let on_cpu = data_parallel(Device::Cpu, slices)?;
            let buckets = on_device[0].1;
            assert!(
                buckets >= 2,
                "{buckets} tensor all-reduce(s): the buckets are too few to test"
            );
            for (r, (grads, count)) in on_device.iter().enumerate() {
                assert_eq!(
                    *count, buckets,
                    "rank {r} started another number of buckets"
                );
                assert_eq!(
                    grads, &on_device[0].0,
                    "rank {r}'s gradients differ from rank 0's"
                );
                let err = max_relative_error(grads, &on_cpu[r].0);
                assert!(
                    err <= 1e-5,
                    "{slices:?} rank {r}: {err:e} from the CPU reducer"
                );
            }
            assert_eq!(on_cpu[0].1, 0, "the CPU reducer sent a device tensor");
            // The unused layer's gradients are the zeros filled in.
            let unused = &on_device[0].0[4];
            assert!(unused.iter().all(|&g| g == 0.0));
        }
    }
    Ok(())
}

#[test]
fn one_device_rank_is_plain_backward_bit_for_bit() -> Result<()> {
    for device in devices() {
        let (reduced, buckets) = rank_grads(SingleProcess::new(), device, (0, GLOBAL))?;
        assert!(buckets >= 2);
        let model = mlp(device)?;
        let (x, labels) = batch()?;
        let loss = cross_entropy(
            &model.forward(&x.to_device(device)?)?,
            &labels.to_device(device)?,
            &Default::default(),
        )?;
        let plain = loss.backward()?;
        for (p, g) in model.parameters().iter().zip(&reduced).take(4) {
            let want = plain.get(p).expect("a gradient").to_vec::<f32>()?;
            assert_eq!(g, &want, "a one-rank gradient changed");
        }
    }
    Ok(())
}

#[test]
fn a_tensor_all_reduce_sums_on_the_tensors_device() -> Result<()> {
    for device in std::iter::once(Device::Cpu).chain(devices()) {
        let group = InProcess::group(2)?;
        let sums = thread::scope(|s| {
            let handles: Vec<_> = group
                .into_iter()
                .map(|comm| {
                    s.spawn(move || -> Result<Tensor> {
                        let r = comm.rank() as f64;
                        let t = Tensor::from_vec(vec![1.0 + r, -2.0 * r, 0.25], &[3])?
                            .to_device(device)?;
                        comm.start_all_reduce_sum_tensor(t)?.wait()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no rank panics"))
                .collect::<Result<Vec<_>>>()
        })?;
        for sum in sums {
            assert_eq!(sum.device(), device);
            assert_eq!(sum.to_vec::<f64>()?, vec![3.0, -2.0, 0.5]);
        }
        let comm = SingleProcess::new();
        let t = Tensor::from_vec(vec![1u8, 2], &[2])?.to_device(device)?;
        let e = comm.start_all_reduce_sum_tensor(t).unwrap_err();
        assert!(e.to_string().contains("f32 or f64"), "{e}");
    }
    Ok(())
}

/// Two epochs of the data-parallel trainer (cross entropy, SGD with
/// momentum) with the model on `device`, as one rank of `comm` (none: one
/// process); the final parameters.
fn fit_on(device: Device, comm: Option<Box<dyn Communicator>>) -> Result<Vec<Vec<f32>>> {
    let train_set = dataset(TRAIN, 1, false);
    let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5))?;
    let mut model = ddp::model(comm.as_ref().map_or(0, |c| c.rank() as u64 * 11))?;
    model.to_device(device)?;
    let optimizer = sgd(&model)?;
    let loss = |logits: &Tensor, batch: &Batch| {
        cross_entropy(logits, batch.class_labels()?, &Default::default())
    };
    let mut trainer = Trainer::with_criterion(model, optimizer, loss)?.epochs(2);
    if let Some(comm) = comm {
        trainer = trainer.with_communicator(comm)?;
    }
    trainer.fit(&mut train, None, &mut Quiet)?;
    trainer
        .model()
        .parameters()
        .iter()
        .map(|p| {
            assert_eq!(p.device(), device);
            p.to_vec::<f32>()
        })
        .collect()
}

#[test]
fn the_trainer_on_the_device_with_two_ranks_trains_what_one_cpu_process_trains() -> Result<()> {
    for device in devices() {
        let serial = fit_on(Device::Cpu, None)?;
        let ranks: Vec<_> = on_ranks(2, |comm| fit_on(device, Some(comm)))
            .into_iter()
            .collect::<Result<_>>()?;
        assert_eq!(ranks[0], ranks[1], "the ranks differ");
        let err = relative_error(&ranks[0], &serial);
        assert!(err <= 1e-4, "parameters after 2 epochs: {err:e}");
    }
    Ok(())
}

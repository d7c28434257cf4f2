//! Data-parallel training over MPI, checked against one process: run with
//!
//! ```text
//! cargo build --release --features mpi --example ddp_mpi_check
//! mpirun -np 2 target/release/examples/ddp_mpi_check [--steps 5]
//! ```
//!
//! (as root, add `--allow-run-as-root`). Each rank first checks the
//! communicator's collectives, then trains a small CNN with frozen batch
//! norm on its contiguous slice of every global batch of 128 through the
//! `Reducer`, and rank 0 repeats the run in one process: the first step's
//! gradients must agree to 1e-5 (relative) and the parameters after the
//! last step to 1e-4, and every rank must end with the same bits. Any
//! failure aborts the job with a non-zero exit and a message.
//!
//! `--time-all-reduce MB` then times all-reduces of MB megabytes of `f32`
//! (median and range of 7, after one warm-up) and prints the bandwidth,
//! next to one memory copy of the same buffer.
//!
//! `--panic-on-rank R` (or `--error-on-rank R`) makes rank R panic (or
//! return an error) at the second step, while the other ranks wait in a
//! collective: the job must end at once with a non-zero exit.
//!
//! The network and data are those of `tests/distributed.rs` (copied: an
//! example cannot use a test's code).

use ferrite::distributed::mpi::{self, MpiCommunicator};
use ferrite::distributed::{BucketOptions, Buffer, Communicator, Reducer};
use ferrite::loss::cross_entropy;
use ferrite::nn::{BatchNorm2d, Bias, Conv2d, Linear, Module, Visit};
use ferrite::ops::{Conv2dParams, Pool2dParams};
use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{no_grad, DType, Error, GradStore, Result, Tensor};
use std::process::ExitCode;
use std::time::Instant;

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
const GRAD_TOL: f64 = 1e-5;
const PARAM_TOL: f64 = 1e-4;

/// A network from `seed` with frozen batch norm (running statistics drawn
/// from the seed too).
fn net(seed: u64) -> Result<Net> {
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
    net.set_training(false);
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
fn grads_of(net: &Net, grads: &GradStore) -> Result<Vec<Vec<f64>>> {
    net.parameters()
        .iter()
        .map(|p| match grads.get(p) {
            Some(g) => g.to_f64_vec(),
            None => Err(Error::invalid(
                "ddp_mpi_check",
                "a parameter has no gradient",
            )),
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
struct Run {
    first_grads: Vec<Vec<f64>>,
    state: Vec<Vec<f64>>,
}

/// Command-line options.
#[derive(Default)]
struct Options {
    steps: usize,
    panic_on_rank: Option<usize>,
    error_on_rank: Option<usize>,
    time_all_reduce_mb: Option<usize>,
}

fn parse_args() -> std::result::Result<Options, String> {
    let mut opts = Options {
        steps: 5,
        ..Options::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> std::result::Result<usize, String> {
            let v = args.next().ok_or(format!("{flag} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--steps" => opts.steps = value()?.max(1),
            "--panic-on-rank" => opts.panic_on_rank = Some(value()?),
            "--error-on-rank" => opts.error_on_rank = Some(value()?),
            "--time-all-reduce" => opts.time_all_reduce_mb = Some(value()?),
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    Ok(opts)
}

/// One process training on the whole global batches.
fn serial(steps: usize) -> Result<Run> {
    let net = net(0)?;
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

/// This rank's part of the data-parallel run: a network from its own seed
/// (made rank 0's by the reducer's broadcast), its contiguous slice of
/// every global batch, buckets small enough that several all-reduces are in
/// flight during backward.
fn rank_run(comm: &MpiCommunicator, opts: &Options) -> Result<Run> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let net = net(rank as u64 * 17)?;
    let buckets = BucketOptions {
        first_bucket_bytes: 256,
        bucket_bytes: 2048,
    };
    let mut reducer = Reducer::for_module(Box::new(comm.clone()), &net, buckets)?;
    reducer.broadcast_state(&net)?;
    let mut opt = sgd(&net)?;
    let (start, end) = (GLOBAL * rank / world, GLOBAL * (rank + 1) / world);
    let mut first_grads = Vec::new();
    for step in 0..opts.steps {
        if step == 1 && opts.panic_on_rank == Some(rank) {
            panic!("rank {rank} panics at step {step}, as --panic-on-rank asked");
        }
        if step == 1 && opts.error_on_rank == Some(rank) {
            return Err(Error::invalid(
                "ddp_mpi_check",
                format!("rank {rank} fails at step {step}, as --error-on-rank asked"),
            ));
        }
        let (x, labels) = global_batch(step)?;
        let x = x.narrow(0, start, end - start)?;
        let labels = labels.narrow(0, start, end - start)?;
        let loss = mean_loss(&net, &x, &labels)?;
        let grads = reducer.backward(&loss, end - start, GLOBAL)?;
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

fn failed(msg: String) -> Error {
    Error::invalid("ddp_mpi_check", msg)
}

/// The collectives on buffers whose contents every rank can predict:
/// all-reduce (f32 and f64), broadcast from the last rank into buffers of
/// other lengths and types, all-gather of lengths that differ, barrier.
fn check_collectives(comm: &MpiCommunicator) -> Result<()> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let triangle = (world * (world + 1) / 2) as f64;
    let mut buf = Buffer::F64(vec![(rank + 1) as f64; 1000]);
    comm.all_reduce_sum(&mut buf)?;
    if buf != Buffer::F64(vec![triangle; 1000]) {
        return Err(failed(format!(
            "f64 all-reduce: {:?}...",
            &buf_f64(&buf)[..2]
        )));
    }
    let handles = (0..3)
        .map(|i| comm.start_all_reduce_sum(Buffer::F32(vec![(rank + i) as f32; 5000])))
        .collect::<Result<Vec<_>>>()?;
    for (i, h) in handles.into_iter().enumerate() {
        let want = triangle as f32 + (world * i) as f32 - world as f32;
        if h.wait()? != Buffer::F32(vec![want; 5000]) {
            return Err(failed(format!(
                "f32 all-reduce {i} in flight is not {want}"
            )));
        }
    }
    let root = world - 1;
    let mut buf = if rank == root {
        Buffer::F64((0..7).map(|i| i as f64 * 0.5).collect())
    } else {
        Buffer::F32(vec![-1.0; rank])
    };
    comm.broadcast(&mut buf, root)?;
    if buf != Buffer::F64((0..7).map(|i| i as f64 * 0.5).collect()) {
        return Err(failed(format!("broadcast from rank {root}: {buf:?}")));
    }
    let gathered = comm.all_gather(&Buffer::F32(vec![rank as f32; rank + 1]))?;
    for (r, b) in gathered.iter().enumerate() {
        if *b != Buffer::F32(vec![r as f32; r + 1]) {
            return Err(failed(format!("all-gather: rank {r}'s part is {b:?}")));
        }
    }
    comm.barrier()
}

fn buf_f64(buf: &Buffer) -> Vec<f64> {
    match buf {
        Buffer::F32(v) => v.iter().map(|&x| x as f64).collect(),
        Buffer::F64(v) => v.clone(),
    }
}

/// FNV-1a over the bits of every value, as two exact f64 halves.
fn checksum(state: &[Vec<f64>]) -> Buffer {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in state.iter().flatten() {
        for byte in v.to_bits().to_le_bytes() {
            h = (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Buffer::F64(vec![(h >> 32) as f64, (h & 0xffff_ffff) as f64])
}

/// Largest |a − b| over the largest |b|, per tensor; the worst tensor.
fn relative_error(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = y.iter().map(|v| v.abs()).fold(0.0, f64::max);
            let diff = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max);
            if x.len() == y.len() {
                diff / scale.max(1e-12)
            } else {
                f64::INFINITY
            }
        })
        .fold(
            if a.len() == b.len() {
                0.0
            } else {
                f64::INFINITY
            },
            f64::max,
        )
}

/// Median time of 5 all-reduces of `mb` MB of f32 (after a warm-up).
fn time_all_reduce(comm: &MpiCommunicator, mb: usize) -> Result<()> {
    let len = mb * (1 << 20) / 4;
    let mut buf = Buffer::F32(vec![1.0; len]);
    comm.all_reduce_sum(&mut buf)?;
    let mut times = Vec::new();
    for _ in 0..7 {
        comm.barrier()?;
        let t = Instant::now();
        comm.all_reduce_sum(&mut buf)?;
        times.push(t.elapsed().as_secs_f64());
    }
    // The same bytes through one memory copy, for scale.
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let mut copies = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    copies.sort_by(f64::total_cmp);
    let bytes = (len * 4) as f64;
    if comm.rank() == 0 {
        println!(
            "all-reduce of {mb} MB over {} ranks: {:.2} ms median ({:.2}-{:.2} over 7), \
             {:.2} GB/s of buffer; one memory copy of it: {:.2} ms, {:.2} GB/s",
            comm.world_size(),
            times[3] * 1e3,
            times[0] * 1e3,
            times[6] * 1e3,
            bytes / times[3] / 1e9,
            copies[3] * 1e3,
            bytes / copies[3] / 1e9
        );
    }
    Ok(())
}

fn check(comm: MpiCommunicator, opts: &Options) -> Result<()> {
    let (rank, world) = (comm.rank(), comm.world_size());
    println!(
        "rank {rank} of {world}: {} core(s) by affinity, {} rayon thread(s)",
        mpi::threads_from_affinity(),
        ferrite::backend::cpu::num_threads()
    );
    check_collectives(&comm)?;
    let started = Instant::now();
    let run = rank_run(&comm, opts)?;
    let parallel_s = started.elapsed().as_secs_f64();
    let sums = comm.all_gather(&checksum(&run.state))?;
    if let Some(r) = sums.iter().position(|s| *s != sums[0]) {
        return Err(failed(format!(
            "rank {r}'s parameters after {} steps differ from rank 0's",
            opts.steps
        )));
    }
    if rank != 0 {
        return Ok(());
    }
    let reference = serial(opts.steps)?;
    let grad_err = relative_error(&run.first_grads, &reference.first_grads);
    let param_err = relative_error(&run.state, &reference.state);
    println!(
        "ddp_mpi_check: {world} rank(s) x {} steps in {parallel_s:.2} s; first-step gradients \
         {grad_err:.1e} (<= {GRAD_TOL:.0e}), parameters {param_err:.1e} (<= {PARAM_TOL:.0e}), \
         ranks bit-identical",
        opts.steps
    );
    if grad_err > GRAD_TOL || param_err > PARAM_TOL || grad_err.is_nan() || param_err.is_nan() {
        return Err(failed(format!(
            "the data-parallel run differs from the serial one: gradients {grad_err:e}, \
             parameters {param_err:e}"
        )));
    }
    println!("ddp_mpi_check: passed");
    Ok(())
}

fn run(comm: MpiCommunicator, opts: &Options) -> Result<()> {
    check(comm.clone(), opts)?;
    match opts.time_all_reduce_mb {
        Some(mb) => time_all_reduce(&comm, mb),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("ddp_mpi_check: {msg}");
            return ExitCode::from(2);
        }
    };
    match mpi::run_or_abort(|comm| run(comm, &opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddp_mpi_check: {e}");
            ExitCode::from(2)
        }
    }
}

//! What data-parallel training costs over MPI, on the ranks `mpirun`
//! starts (`cargo build --release --features mpi --example ddp_mpi_bench`,
//! then `mpirun -np 2 target/release/examples/ddp_mpi_bench`):
//!
//! 1. all-reduce of 1 to 64 MB of `f32`, next to one memory copy of the
//!    same buffer (median and range of 7 runs after a warm-up);
//! 2. training steps of the CIFAR ResNet-18 on a global batch of 32
//!    random images (each rank its contiguous slice, SGD with momentum),
//!    with DDP's buckets (all-reduces started while backward runs) and with
//!    one bucket sent after backward: step time, backward time, and the
//!    communication backward did not hide (median of the timed steps).
//!
//! Rank 0 prints. `--steps N` sets the timed steps (default 5),
//! `--sizes 1,4,16,64` the all-reduce sizes in MB, `--skip-steps` leaves
//! the ResNet out. Run it with `-np 1` too: the step without any peer is
//! the baseline the ranks are measured against.

use ferrite::distributed::mpi::{self, MpiCommunicator};
use ferrite::distributed::{BucketOptions, Buffer, Communicator, Reducer, StepTiming};
use ferrite::nn::resnet::{resnet18_cifar, ResNet};
use ferrite::nn::{self, Module};
use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{DType, Result, Tensor};
use std::process::ExitCode;
use std::time::Instant;

/// The global batch of the ResNet steps.
const GLOBAL: usize = 32;

struct Options {
    steps: usize,
    sizes_mb: Vec<usize>,
    skip_steps: bool,
}

fn parse_args() -> std::result::Result<Options, String> {
    let mut opts = Options {
        steps: 5,
        sizes_mb: vec![1, 4, 16, 64],
        skip_steps: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => {
                let v = value()?;
                opts.steps = v.parse().map_err(|_| format!("--steps: {v:?}"))?;
                opts.steps = opts.steps.clamp(1, 1000);
            }
            "--sizes" => {
                let v = value()?;
                opts.sizes_mb = v
                    .split(',')
                    .map(|s| s.parse::<usize>().ok().filter(|&n| (1..=1024).contains(&n)))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!("--sizes: {v:?} is not a list of 1..=1024 MB"))?;
            }
            "--skip-steps" => opts.skip_steps = true,
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    Ok(opts)
}

/// Median, min and max of `xs`.
fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

/// Row 1: all-reduce of `mb` MB against a memory copy of it.
fn all_reduce_row(comm: &MpiCommunicator, mb: usize) -> Result<()> {
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
    let (src, mut dst) = (vec![1.0f32; len], vec![0.0f32; len]);
    let mut copies = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies.push(t.elapsed().as_secs_f64());
    }
    let ((med, lo, hi), (copy, _, _)) = (stats(times), stats(copies));
    let bytes = (len * 4) as f64;
    if comm.rank() == 0 {
        println!(
            "| {mb} | {:.2} ({:.2}–{:.2}) | {:.2} | {:.2} | {:.2} |",
            med * 1e3,
            lo * 1e3,
            hi * 1e3,
            bytes / med / 1e9,
            copy * 1e3,
            bytes / copy / 1e9
        );
    }
    Ok(())
}

/// Row 2: `steps` timed ResNet-18 steps with `buckets`; returns the medians
/// of (step, backward, exposed communication) in seconds.
fn resnet_steps(
    comm: &MpiCommunicator,
    buckets: BucketOptions,
    steps: usize,
) -> Result<(f64, f64, f64)> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let mut rng = StdRng::seed_from_u64(0);
    let net = ResNet::new(&resnet18_cifar(3, 10), &mut rng)?;
    let mut reducer = Reducer::for_module(Box::new(comm.clone()), &net, buckets)?;
    reducer.broadcast_state(&net)?;
    let mut opt = Sgd::new(
        vec![ParamGroup::new(nn::parameters(&net), 0.01, 5e-4)],
        SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        },
    )?;
    let x = Tensor::randn(&[GLOBAL, 3, 32, 32], 0.0, 1.0, DType::F32, &mut rng)?;
    let labels: Vec<i64> = (0..GLOBAL as i64).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, &[GLOBAL, 1])?;
    let (start, end) = (GLOBAL * rank / world, GLOBAL * (rank + 1) / world);
    let (x, y) = (
        x.narrow(0, start, end - start)?,
        y.narrow(0, start, end - start)?,
    );
    let mut rows = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..=steps {
        comm.barrier()?;
        let t = Instant::now();
        let loss = net
            .forward(&x)?
            .log_softmax(1)?
            .gather(1, &y)?
            .mean_all()?
            .neg()?;
        let grads = reducer.backward(&loss, end - start, GLOBAL)?;
        opt.step(&grads)?;
        let StepTiming {
            backward_seconds,
            exposed_seconds,
        } = reducer.last_timing();
        if step > 0 {
            rows.0.push(t.elapsed().as_secs_f64());
            rows.1.push(backward_seconds);
            rows.2.push(exposed_seconds);
        }
    }
    Ok((stats(rows.0).0, stats(rows.1).0, stats(rows.2).0))
}

fn run(comm: MpiCommunicator, opts: &Options) -> Result<()> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let threads = ferrite::backend::cpu::num_threads();
    if rank == 0 {
        println!("{world} rank(s), {threads} thread(s) each\n");
        println!("| MB | all-reduce ms (range) | GB/s | memory copy ms | GB/s |");
        println!("|---:|---:|---:|---:|---:|");
    }
    for &mb in &opts.sizes_mb {
        all_reduce_row(&comm, mb)?;
    }
    if opts.skip_steps {
        return Ok(());
    }
    if rank == 0 {
        println!(
            "\nCIFAR ResNet-18, global batch {GLOBAL}, medians of {} steps\n",
            opts.steps
        );
        println!("| buckets | step ms | backward ms | exposed communication ms |");
        println!("|---|---:|---:|---:|");
    }
    let one_bucket = BucketOptions {
        first_bucket_bytes: usize::MAX,
        bucket_bytes: usize::MAX,
    };
    for (label, buckets) in [
        (
            "DDP buckets (sent during backward)",
            BucketOptions::default(),
        ),
        ("one bucket (sent after backward)", one_bucket),
    ] {
        let (step, backward, exposed) = resnet_steps(&comm, buckets, opts.steps)?;
        if rank == 0 {
            println!(
                "| {label} | {:.1} | {:.1} | {:.1} |",
                step * 1e3,
                backward * 1e3,
                exposed * 1e3
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("ddp_mpi_bench: {msg}");
            return ExitCode::from(2);
        }
    };
    match mpi::run_or_abort(|comm| run(comm, &opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddp_mpi_bench: {e}");
            ExitCode::from(2)
        }
    }
}

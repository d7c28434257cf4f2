//! The `ferrite` command-line tool: `train`, `eval` and `compare` for
//! long-tailed (multi-label) classification with PLM and its baselines,
//! and `bench` for the kernel benchmarks.

mod args;
mod bench_cmd;
#[cfg(feature = "cuda")]
mod cuda_cmd;
mod distributed_cmd;
mod nccl_launch;
mod progress;

use args::RunArgs;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use distributed_cmd::{launch, Job, Launch};
use ferrite::train::compare::{compare_with, Variant};
use ferrite::train::run::{evaluate_checkpoint, Run};
use ferrite::train::{LossSpec, Observer, Quiet};
use ferrite::Device;
use progress::Progress;
use std::path::PathBuf;
use std::process::ExitCode;

/// A small deep-learning engine in pure Rust: train and evaluate ResNets on
/// long-tailed data with Partial Label Masking and its baselines.
#[derive(Parser)]
#[command(name = "ferrite", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Every command allows negative numbers as values, so that `--lr -1`
// reaches our validation (a clear message) instead of being taken for an
// unknown flag.
#[derive(Subcommand)]
enum Command {
    /// Train one model; writes config.json, log.jsonl, checkpoint.safetensors,
    /// report.md, report.json, per_class.svg and learning_curve.svg into --out
    #[command(allow_negative_numbers = true)]
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// Loss: a base loss (bce, focal, asl, ce) with optional settings,
        /// class-balanced weights (cb) and PLM on top, joined by +, e.g.
        /// plm, focal(gamma=1), plm(lambda=0.05)+asl(gamma_neg=2), cb(beta=0.99)+bce.
        /// Settings: focal(gamma=2, alpha=none), asl(gamma_pos=0,
        /// gamma_neg=4, clip=0.05), cb(beta=0.999), plm(lambda=auto,
        /// bins=10, init=ratio|balanced, divergence=pred-gt|gt-pred,
        /// standardize=true, rhat_min=1e-6, rhat_max=1e6). PLM's lambda=auto
        /// is 1/epochs (r̂ can move by about e^Δ over the run, as λ = 0.01
        /// over 100 epochs); a number fixes it. reweight(rhat=1) in place of
        /// plm: PLM's re-weighting control (no masks; positives and negatives
        /// weighted by PLM's keep probabilities at that fixed r̂)
        #[arg(long, default_value = "plm")]
        loss: String,
        /// Seed of initialisation, shuffling, augmentation and PLM masks
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder (must not hold a run unless --resume)
        #[arg(long, default_value = "runs/train")]
        out: PathBuf,
        /// Continue the run in --out from its checkpoint, with its stored
        /// configuration (options that would change the run are refused)
        #[arg(long)]
        resume: bool,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Device: cpu, cuda or cuda:N (a GPU needs a build with `--features cuda`)
        #[arg(long, default_value = "cpu")]
        device: String,
        /// none: one process. mpi: this process is one rank of an MPI job
        /// (`mpirun -np N ferrite ... --distributed mpi`; needs a build with
        /// `--features mpi`). nccl: one rank per GPU, gradients reduced by
        /// NCCL (needs `--features cuda` and --device cuda; one rank per
        /// visible GPU as threads, or one per process under mpirun with
        /// `--features mpi,cuda`). --batch-size is the global batch, split
        /// into contiguous per-rank slices; rank 0 alone prints and writes,
        /// into an --out folder every rank can read. --threads defaults to
        /// the cores the launcher bound the rank to (nccl without mpirun:
        /// the cores divided among the ranks)
        #[arg(long, value_enum, default_value = "none")]
        distributed: Launch,
    },
    /// Evaluate a checkpoint on its run's test set and print the report
    #[command(allow_negative_numbers = true)]
    Eval {
        /// A checkpoint.safetensors written by `ferrite train`
        #[arg(long)]
        checkpoint: PathBuf,
        /// Read the dataset from here instead of the folder stored in the checkpoint
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also write report.md, report.json, per_class.svg and learning_curve.svg into this folder
        #[arg(long)]
        out: Option<PathBuf>,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Device: cpu, cuda or cuda:N (a GPU needs a build with `--features cuda`)
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Train several losses x seeds; writes one table (mean ± std) and one chart
    #[command(allow_negative_numbers = true)]
    Compare {
        #[command(flatten)]
        run: RunArgs,
        /// Comma-separated losses, each written as for `train --loss`, e.g.
        /// bce,focal(gamma=1),plm,plm(init=balanced,lambda=0)
        #[arg(long, default_value = "bce,plm")]
        losses: String,
        /// Comma-separated seeds
        #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
        seeds: Vec<u64>,
        /// Output folder; finished runs in it are reused, interrupted ones resumed
        #[arg(long, default_value = "runs/compare")]
        out: PathBuf,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Device: cpu, cuda or cuda:N (a GPU needs a build with `--features cuda`)
        #[arg(long, default_value = "cpu")]
        device: String,
        /// none: one process. mpi: this process is one rank of an MPI job
        /// (`mpirun -np N ferrite ... --distributed mpi`; needs a build with
        /// `--features mpi`). nccl: one rank per GPU, gradients reduced by
        /// NCCL (needs `--features cuda` and --device cuda; one rank per
        /// visible GPU as threads, or one per process under mpirun with
        /// `--features mpi,cuda`). --batch-size is the global batch, split
        /// into contiguous per-rank slices; rank 0 alone prints and writes,
        /// into an --out folder every rank can read. --threads defaults to
        /// the cores the launcher bound the rank to (nccl without mpirun:
        /// the cores divided among the ranks)
        #[arg(long, value_enum, default_value = "none")]
        distributed: Launch,
    },
    /// Time the kernels and print GFLOP/s or GB/s next to the machine's
    /// peak (CPU), or with --device cuda the GPU benchmarks next to the
    /// datasheet peak and the measured copy bandwidth
    #[command(allow_negative_numbers = true)]
    Bench {
        #[command(flatten)]
        args: bench_cmd::BenchArgs,
    },
    /// Compile every CUDA kernel family to a CUBIN for one architecture
    /// (a prebuilt bundle, used at run time through FERRITE_CUDA_CUBIN_DIR)
    #[cfg(feature = "cuda")]
    CudaCompile {
        /// Target architecture, e.g. sm_90 (H100/H200)
        #[arg(long)]
        arch: String,
        /// Output folder
        #[arg(long)]
        out: PathBuf,
    },
    /// Load every CUDA kernel on a device and check each launch
    /// configuration against the kernel's register and shared-memory limits
    #[cfg(feature = "cuda")]
    CudaCheck {
        /// Device: cuda or cuda:N
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Most worker threads per core that `--threads` accepts: more only adds
/// switching between threads (and a typo like `--threads 100000` would
/// start that many).
const MAX_THREADS_PER_CORE: usize = 4;

/// `--threads` up to this many is accepted on any machine, so that a run
/// checkpointed on a large machine can resume bit-identically (same thread
/// count) on a small one.
const MIN_THREADS_CAP: usize = 256;

/// Checks a `--threads` value: at least 1, at most the larger of
/// [`MAX_THREADS_PER_CORE`] × the cores of this machine and
/// [`MIN_THREADS_CAP`].
fn check_threads(n: usize) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let max = cores
        .saturating_mul(MAX_THREADS_PER_CORE)
        .max(MIN_THREADS_CAP);
    if n == 0 {
        return Err("--threads must be at least 1".into());
    }
    if n > max {
        return Err(format!(
            "--threads {n} is too many: at most {max} (the larger of {MAX_THREADS_PER_CORE} per core on {cores} cores and {MIN_THREADS_CAP})"
        ));
    }
    Ok(())
}

/// Runs `f` on a thread pool of `threads` workers (all cores by default).
fn with_threads<T>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String>
where
    T: Send,
{
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        check_threads(n)?;
        builder = builder.num_threads(n);
    }
    builder
        .build()
        .map_err(|e| format!("cannot start the thread pool: {e}"))?
        .install(f)
}

/// The options of subcommand `name` typed on the command line, except
/// `keep`, as `--name`s (e.g. the ones `train --resume` ignores).
fn options_given(matches: &ArgMatches, name: &str, keep: &[&str]) -> Vec<String> {
    let (Some(m), Some(cmd)) = (
        matches.subcommand_matches(name),
        Cli::command().find_subcommand(name).cloned(),
    ) else {
        return Vec::new();
    };
    cmd.get_arguments()
        .filter(|a| !keep.contains(&a.get_id().as_str()))
        .filter(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// Reads `--device` and opens the device, so that a GPU that cannot be used
/// is reported before any work starts (with how to use the emulated GPU).
fn parse_device(text: &str) -> Result<Device, String> {
    let device: Device = text.parse().map_err(|e: ferrite::Error| e.to_string())?;
    ferrite::backend::check_device(device).map_err(|e| e.to_string())?;
    Ok(device)
}

/// What `train` was asked to do: continue the run in `--out`, or start
/// one; `given` lists the run options typed on the command line.
#[derive(Clone)]
struct TrainRequest {
    run: RunArgs,
    loss: String,
    seed: u64,
    out: PathBuf,
    resume: bool,
    given: Vec<String>,
}

/// The terminal view of a run on the rank that prints (rank 0), silence
/// on the others.
fn observer(job: &Job, label: &str) -> Box<dyn Observer> {
    if job.is_writer() {
        Box::new(Progress::new(label))
    } else {
        Box::new(Quiet)
    }
}

fn train(request: TrainRequest, device: Device, job: &Job) -> Result<(), String> {
    let TrainRequest {
        run,
        loss,
        seed,
        out,
        resume,
        given,
    } = request;
    let device = job.device(device);
    let mut trainer = if resume {
        if !given.is_empty() {
            return Err(format!(
                "--resume continues the run in {} with the configuration stored in its checkpoint; \
                 {} would have no effect (start a new run in another folder to change the run)",
                out.display(),
                given.join(", ")
            ));
        }
        let t = Run::resume_with(&out, device, job.communicator()).map_err(|e| e.to_string())?;
        if job.is_writer() {
            println!(
                "resuming {} after epoch {} of {}",
                out.display(),
                t.epochs_done(),
                t.config().epochs
            );
        }
        t
    } else {
        let loss: LossSpec = loss.parse().map_err(|e: ferrite::Error| e.to_string())?;
        let config = run.to_config(loss, seed).map_err(|e| e.to_string())?;
        refuse(args::without_effect(&given, &config))?;
        Run::new_with(config, &out, device, job.communicator()).map_err(|e| e.to_string())?
    };
    if job.is_writer() {
        print_data(&trainer, device);
    }
    let label = trainer.config().loss.to_string();
    let summary = trainer
        .run(observer(job, &label).as_mut())
        .map_err(|e| e.to_string())?;
    if job.is_writer() {
        println!("\n{}", summary.markdown());
        println!(
            "wrote {0}/report.md, {0}/report.json, {0}/per_class.svg, {0}/learning_curve.svg, {0}/log.jsonl, {0}/checkpoint.safetensors",
            out.display()
        );
    }
    Ok(())
}

/// One line on the run's data: sizes and training positives per class.
fn print_data(trainer: &Run, device: Device) {
    let data = trainer.data();
    println!(
        "{} on {device}: {} training / {} test images, {} classes; training positives per class: {:?}",
        trainer.config().data.kind.name(),
        data.train.len(),
        data.test.len(),
        data.train.num_classes,
        data.train_positives
    );
}

fn eval(
    checkpoint: PathBuf,
    data_dir: Option<PathBuf>,
    out: Option<PathBuf>,
    device: Device,
) -> Result<(), String> {
    let summary = evaluate_checkpoint(&checkpoint, data_dir, device).map_err(|e| e.to_string())?;
    println!("{}", summary.markdown());
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        ferrite::train::report::write_report(&dir, &summary).map_err(|e| e.to_string())?;
        println!("wrote the report into {}", dir.display());
    }
    Ok(())
}

/// `--sync-batch-norm` synchronises the ranks of a data-parallel job: an
/// error without `--distributed`.
fn check_sync_batch_norm(sync: bool, distributed: Launch) -> Result<(), String> {
    if sync && distributed == Launch::None {
        return Err(
            "--sync-batch-norm synchronises batch norm over the ranks of a \
                    data-parallel job and needs --distributed mpi or nccl (one process already \
                    normalises with the whole batch's statistics)"
                .into(),
        );
    }
    Ok(())
}

/// `Err` listing `problems`, if there are any.
fn refuse(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n       "))
    }
}

/// The losses of `compare --losses`: separated by the commas outside
/// parentheses (the ones inside separate a loss's settings).
fn split_losses(text: &str) -> Vec<String> {
    let (mut out, mut current, mut depth) = (Vec::new(), String::new(), 0usize);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 0 && c == ',' {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    out.push(current);
    out
}

fn run_compare(
    run: RunArgs,
    losses: String,
    seeds: Vec<u64>,
    out: PathBuf,
    device: Device,
    given: Vec<String>,
    job: &Job,
) -> Result<(), String> {
    let device = job.device(device);
    let variants = split_losses(&losses)
        .iter()
        .map(|l| l.parse::<Variant>())
        .collect::<ferrite::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    let first = variants.first().ok_or("--losses is empty")?;
    let base = run
        .to_config(first.loss, seeds.first().copied().unwrap_or(0))
        .map_err(|e| e.to_string())?;
    refuse(args::without_effect(&given, &base))?;
    let mut observers = |label: &str| observer(job, label);
    compare_with(
        &base,
        &variants,
        &seeds,
        &out,
        device,
        &mut observers,
        job.rank(),
    )
    .map_err(|e| e.to_string())?;
    if !job.is_writer() {
        return Ok(());
    }
    let table = std::fs::read_to_string(out.join("compare.md")).unwrap_or_default();
    println!("\n{table}");
    println!(
        "wrote {0}/compare.md, {0}/compare.json, {0}/compare.svg",
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Train {
            run,
            loss,
            seed,
            out,
            resume,
            threads,
            device,
            distributed,
        } => {
            let given = options_given(
                &matches,
                "train",
                &["out", "resume", "threads", "device", "distributed"],
            );
            let request = TrainRequest {
                run,
                loss,
                seed,
                out,
                resume,
                given,
            };
            check_sync_batch_norm(request.run.sync_batch_norm, distributed)
                .and_then(|()| parse_device(&device))
                .and_then(|device| {
                    launch(distributed, threads, device, |job| {
                        train(request.clone(), device, job)
                    })
                })
        }
        Command::Eval {
            checkpoint,
            data_dir,
            out,
            threads,
            device,
        } => parse_device(&device)
            .and_then(|device| with_threads(threads, || eval(checkpoint, data_dir, out, device))),
        Command::Compare {
            run,
            losses,
            seeds,
            out,
            threads,
            device,
            distributed,
        } => {
            let given = options_given(&matches, "compare", &[]);
            let checked = check_sync_batch_norm(run.sync_batch_norm, distributed);
            checked
                .and_then(|()| parse_device(&device))
                .and_then(|device| {
                    launch(distributed, threads, device, |job| {
                        let (run, losses, seeds) = (run.clone(), losses.clone(), seeds.clone());
                        run_compare(run, losses, seeds, out.clone(), device, given.clone(), job)
                    })
                })
        }
        Command::Bench { args } => bench_cmd::run(args),
        #[cfg(feature = "cuda")]
        Command::CudaCompile { arch, out } => cuda_cmd::cuda_compile(&arch, &out),
        #[cfg(feature = "cuda")]
        Command::CudaCheck { device, json } => {
            cuda_cmd::cuda_ordinal(&device).and_then(|n| cuda_cmd::cuda_check(n, json))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ferrite: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

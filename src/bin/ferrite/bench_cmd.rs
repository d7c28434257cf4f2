//! `ferrite bench`: the CPU kernel benchmarks, or with `--device cuda` the
//! GPU benchmarks (GEMM, convolution, memory-bound ops, training).

use clap::Args;
use ferrite::bench::{self, BenchConfig};
use ferrite::provenance::Provenance;

/// Options of `ferrite bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Device: cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Smaller sizes, shorter runs (CPU)
    #[arg(long)]
    quick: bool,
    /// Only benchmarks whose name contains this (e.g. matmul, gemm_nn, conv2d)
    #[arg(long)]
    filter: Option<String>,
    /// Use this FMA peak (GFLOP/s) instead of measuring it (CPU)
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// MiB of freed buffers kept for reuse (default 1024; 0 disables) (CPU)
    #[arg(long)]
    buffer_cache_mib: Option<usize>,
    /// Also print where a training step's time goes, op by op (CPU)
    #[arg(long)]
    profile: bool,
    /// Instead of the kernel table: every distinct convolution of the
    /// CIFAR ResNet-8/20/18 and ResNet-18/50, each pass timed on its own
    /// (CPU; --filter picks models by name or layers by shape, e.g.
    /// 512x4x4; --conv-batch the batch; --json)
    #[arg(long)]
    conv_layers: bool,
    /// Tiny sizes for every GPU row (a rehearsal on the emulated GPU);
    /// the options below override them
    #[arg(long)]
    tiny: bool,
    /// Comma-separated GEMM sizes n (n×n×n) (GPU; default 1024,2048,4096,8192)
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Images per convolution batch (GPU: default 128; --conv-layers: 32)
    #[arg(long)]
    conv_batch: Option<usize>,
    /// Elements of the memory-bound rows (GPU; default 2^27)
    #[arg(long)]
    elems: Option<usize>,
    /// Comma-separated batch sizes of the training rows (GPU; default 128,256)
    #[arg(long, value_delimiter = ',')]
    train_batches: Vec<usize>,
    /// Timed training steps per row (GPU; default 10)
    #[arg(long)]
    train_steps: Option<usize>,
    /// Milliseconds of repeated runs per row (GPU; default 1000)
    #[arg(long)]
    budget_ms: Option<u64>,
    /// Print the results as JSON: provenance, peaks and every row with
    /// the min, median and max of its runs (CPU, GPU, --conv-layers)
    #[arg(long)]
    json: bool,
}

/// Runs `ferrite bench` with `args` on a pool of `--threads` workers.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let device: ferrite::Device = args
        .device
        .parse()
        .map_err(|e: ferrite::Error| e.to_string())?;
    if device == ferrite::Device::Cpu && args.conv_layers {
        let (threads, config) = (args.threads, args);
        return crate::with_threads(threads, move || run_conv_layers(&config));
    }
    if args.conv_layers {
        return Err("--conv-layers applies to the CPU (no --device cuda)".to_string());
    }
    if device == ferrite::Device::Cpu {
        let gpu_only = [
            (args.tiny, "--tiny"),
            (!args.sizes.is_empty(), "--sizes"),
            (args.conv_batch.is_some(), "--conv-batch"),
            (args.elems.is_some(), "--elems"),
            (!args.train_batches.is_empty(), "--train-batches"),
            (args.train_steps.is_some(), "--train-steps"),
            (args.budget_ms.is_some(), "--budget-ms"),
        ];
        if let Some((_, flag)) = gpu_only.iter().find(|(given, _)| *given) {
            return Err(format!("{flag} applies to --device cuda only"));
        }
        let config = BenchConfig {
            quick: args.quick,
            filter: args.filter,
            peak_gflops: args.peak_gflops,
            profile: args.profile,
        };
        let (threads, cache, json) = (args.threads, args.buffer_cache_mib, args.json);
        return crate::with_threads(threads, move || run_cpu(config, cache, json));
    }
    let threads = args.threads;
    crate::with_threads(threads, move || run_cuda(args))
}

/// `ferrite bench --conv-layers`: the per-layer convolution table, as
/// Markdown (rows printed as they are measured) or with `--json` as one
/// JSON object at the end.
fn run_conv_layers(args: &BenchArgs) -> Result<(), String> {
    use bench::conv_layers;
    let unsupported = [
        (args.tiny, "--tiny"),
        (!args.sizes.is_empty(), "--sizes"),
        (args.elems.is_some(), "--elems"),
        (!args.train_batches.is_empty(), "--train-batches"),
        (args.train_steps.is_some(), "--train-steps"),
        (args.budget_ms.is_some(), "--budget-ms"),
        (args.profile, "--profile"),
    ];
    if let Some((_, flag)) = unsupported.iter().find(|(given, _)| *given) {
        return Err(format!("{flag} does not apply to --conv-layers"));
    }
    if let Some(mib) = args.buffer_cache_mib {
        ferrite::backend::cpu::pool::set_limit_bytes(mib.saturating_mul(1 << 20));
    }
    let batch = args.conv_batch.unwrap_or(32);
    if batch == 0 {
        return Err("--conv-batch must be at least 1".to_string());
    }
    let peak = match args.peak_gflops {
        Some(p) if p > 0.0 && p.is_finite() => p,
        Some(p) => return Err(format!("--peak-gflops must be positive, got {p}")),
        None => bench::measure_fma_peak().map_or(f64::NAN, |(p, _)| p),
    };
    let budget = std::time::Duration::from_millis(if args.quick { 100 } else { 400 });
    if !args.json {
        println!("{}", Provenance::current().summary_line());
        print!(
            "threads: {}   FMA peak: {peak:.1} GFLOP/s   batch: {batch}\n\n{}",
            rayon::current_num_threads(),
            conv_layers::TABLE_HEADER
        );
    }
    let json = args.json;
    let rows = conv_layers::run(args.filter.as_deref(), batch, (5, budget), |r| {
        if !json {
            print!("{}", conv_layers::format_row(r, peak));
        }
    })
    .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Err("--filter matched no model (resnet8_cifar, resnet20_cifar, resnet18_cifar, resnet18, resnet50) and no layer shape".to_string());
    }
    if json {
        let v = conv_layers::to_json(&rows, peak, batch);
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

fn run_cpu(config: BenchConfig, buffer_cache_mib: Option<usize>, json: bool) -> Result<(), String> {
    if json && config.profile {
        return Err("--profile prints a table: it does not go with --json".to_string());
    }
    if let Some(p) = config.peak_gflops {
        if !(p > 0.0 && p.is_finite()) {
            return Err(format!("--peak-gflops must be positive, got {p}"));
        }
    }
    if let Some(mib) = buffer_cache_mib {
        ferrite::backend::cpu::pool::set_limit_bytes(mib.saturating_mul(1 << 20));
    }
    let provenance = Provenance::current();
    let peaks = bench::peaks(&config);
    let results = bench::run(&config, &peaks).map_err(|e| e.to_string())?;
    if json {
        let steps = bench::run_training_steps(&config).map_err(|e| e.to_string())?;
        let doc = bench::cpu_report_json(&results, &steps, &peaks, &provenance);
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    println!("{}\n", provenance.summary_line());
    print!("{}", bench::format_table(&results, &peaks));
    let steps = bench::run_training_steps(&config).map_err(|e| e.to_string())?;
    if config.profile && steps.is_empty() {
        eprintln!("--profile: the filter selected no training step, nothing to profile");
    }
    if !steps.is_empty() {
        print!("\ntraining steps (forward + backward + SGD momentum, random 3×32×32 batch):\n\n");
        print!("{}", bench::format_steps(&steps, &peaks));
        for step in &steps {
            if let Some(profile) = &step.profile {
                print!(
                    "\nper-op profile of one {} step (average of several):\n\n{profile}",
                    step.model
                );
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(args: BenchArgs) -> Result<(), String> {
    Err(format!(
        "--device {} needs a build with `--features cuda`",
        args.device
    ))
}

#[cfg(feature = "cuda")]
fn run_cuda(args: BenchArgs) -> Result<(), String> {
    use bench::cuda::CudaBenchConfig;
    let cpu_only = [
        (args.quick, "--quick"),
        (args.peak_gflops.is_some(), "--peak-gflops"),
        (args.buffer_cache_mib.is_some(), "--buffer-cache-mib"),
        (args.profile, "--profile"),
    ];
    if let Some((_, flag)) = cpu_only.iter().find(|(given, _)| *given) {
        return Err(format!("{flag} applies to the CPU benchmarks only"));
    }
    let mut config = if args.tiny {
        CudaBenchConfig::tiny()
    } else {
        CudaBenchConfig::default()
    };
    config.ordinal = crate::cuda_cmd::cuda_ordinal(&args.device)?;
    config.filter = args.filter;
    if !args.sizes.is_empty() {
        config.gemm_sizes = args.sizes;
    }
    if !args.train_batches.is_empty() {
        config.train_batches = args.train_batches;
    }
    config.conv_batch = args.conv_batch.unwrap_or(config.conv_batch);
    config.memory_elems = args.elems.unwrap_or(config.memory_elems);
    config.train_steps = args.train_steps.unwrap_or(config.train_steps);
    if let Some(ms) = args.budget_ms {
        config.budget = std::time::Duration::from_millis(ms);
    }
    let zero = [
        (config.gemm_sizes.contains(&0), "--sizes"),
        (config.conv_batch == 0, "--conv-batch"),
        (config.memory_elems == 0, "--elems"),
        (config.train_batches.contains(&0), "--train-batches"),
        (config.train_steps == 0, "--train-steps"),
    ];
    if let Some((_, flag)) = zero.iter().find(|(bad, _)| *bad) {
        return Err(format!("{flag} values must be at least 1"));
    }
    let provenance = Provenance::current();
    let report = bench::cuda::run(&config).map_err(|e| e.to_string())?;
    if args.json {
        let mut doc = report.to_json();
        doc["provenance"] = provenance.to_json();
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        println!("{}", provenance.summary_line());
        print!("{}", report.format());
    }
    Ok(())
}

//! The `ferrite` command-line tool.
//!
//! `ferrite bench` prints the kernel benchmark table (GEMM, elementwise,
//! reduction, softmax) with the machine's measured peaks.

use ferrite::bench::{self, BenchConfig};
use std::process::ExitCode;

const USAGE: &str = "\
usage: ferrite <command> [options]

commands:
  bench    time the CPU kernels and print GFLOP/s or GB/s next to the machine's peak
           --quick            smaller sizes, shorter runs
           --filter NAME      only kernels whose name contains NAME (e.g. matmul)
           --peak-gflops X    use X GFLOP/s as the FMA peak instead of measuring it
           --threads N        size of the thread pool (default: RAYON_NUM_THREADS or all cores)
           --buffer-cache-mib N  bytes of freed buffers kept for reuse (default 1024; 0 disables)
  help     print this message";

fn parse_bench(args: &[String]) -> Result<(BenchConfig, Option<usize>), String> {
    let mut config = BenchConfig::default();
    let mut threads = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => config.quick = true,
            "--filter" => config.filter = Some(value("--filter")?),
            "--peak-gflops" => {
                let v = value("--peak-gflops")?;
                let p: f64 = v
                    .parse()
                    .map_err(|_| format!("--peak-gflops: '{v}' is not a number"))?;
                if p.is_nan() || p <= 0.0 {
                    return Err(format!("--peak-gflops must be positive, got {v}"));
                }
                config.peak_gflops = Some(p);
            }
            "--threads" => {
                let v = value("--threads")?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("--threads: '{v}' is not a positive integer"))?;
                if n == 0 {
                    return Err("--threads must be at least 1".into());
                }
                threads = Some(n);
            }
            "--buffer-cache-mib" => {
                let v = value("--buffer-cache-mib")?;
                let mib: usize = v
                    .parse()
                    .map_err(|_| format!("--buffer-cache-mib: '{v}' is not a whole number"))?;
                ferrite::backend::cpu::pool::set_limit_bytes(mib.saturating_mul(1 << 20));
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    Ok((config, threads))
}

fn run_bench(args: &[String]) -> Result<(), String> {
    let (config, threads) = parse_bench(args)?;
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = threads {
            b = b.num_threads(n);
        }
        b.build()
            .map_err(|e| format!("cannot start the thread pool: {e}"))?
    };
    pool.install(|| {
        let peaks = bench::peaks(&config);
        let results = bench::run(&config, &peaks).map_err(|e| e.to_string())?;
        print!("{}", bench::format_table(&results, &peaks));
        let steps = bench::run_training_steps(&config).map_err(|e| e.to_string())?;
        if !steps.is_empty() {
            print!(
                "\ntraining steps (forward + backward + SGD momentum, random 3×32×32 batch):\n\n"
            );
            print!("{}", bench::format_steps(&steps, &peaks));
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => run_bench(&args[1..]),
        Some("help") | Some("--help") | Some("-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'\n\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ferrite: {msg}");
            ExitCode::FAILURE
        }
    }
}

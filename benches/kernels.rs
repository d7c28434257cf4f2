//! `cargo bench`: the same tables as `ferrite bench` (kernels, convolutions,
//! ResNet training steps).
//!
//! Pass `-- --quick` for a short run, `-- --profile` for the per-op profile
//! of each training step.

use ferrite::bench::{self, BenchConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let config = BenchConfig {
        quick: flag("--quick"),
        profile: flag("--profile"),
        ..BenchConfig::default()
    };
    println!(
        "{}\n",
        ferrite::provenance::Provenance::current().summary_line()
    );
    let peaks = bench::peaks(&config);
    let results = bench::run(&config, &peaks).expect("benchmarks run");
    print!("{}", bench::format_table(&results, &peaks));
    let steps = bench::run_training_steps(&config).expect("training steps run");
    print!("\n{}", bench::format_steps(&steps, &peaks));
    for step in &steps {
        if let Some(profile) = &step.profile {
            print!("\nper-op profile of one {} step:\n\n{profile}", step.model);
        }
    }
}

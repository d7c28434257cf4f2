//! `cargo bench`: the same kernel table as `ferrite bench`.
//!
//! Pass `-- --quick` for a short run.

use ferrite::bench::{self, BenchConfig};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let config = BenchConfig {
        quick,
        ..BenchConfig::default()
    };
    let peaks = bench::peaks(&config);
    let results = bench::run(&config, &peaks).expect("benchmarks run");
    print!("{}", bench::format_table(&results, &peaks));
}

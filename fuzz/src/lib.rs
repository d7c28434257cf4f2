//! A small mutational fuzzer for ferrite's readers of untrusted bytes, on
//! stable Rust and without instrumentation.
//!
//! - [`targets`]: one target per reader (IDX raw and gzipped, MNIST
//!   folders, CIFAR-10/100, safetensors, training checkpoints, resuming a
//!   run, PLM state, run config, report JSON, loss specs, compare
//!   variants), each with checks on what the reader accepts;
//! - [`mutate`]: structure-aware mutations (header integers, numbers in
//!   text, gzip members, truncation, duplicated and deleted ranges);
//! - [`guard`]: the allocation guard (no single allocation over 1 GiB);
//! - [`engine`]: one execution under the guards, and the mutational loop;
//! - [`supervisor`]: campaigns, one worker process per target, so aborts,
//!   crashes and hangs are reported with their input;
//! - [`corpus`], [`seeds`], [`tiny`]: the committed seed corpus and
//!   regressions, and the small valid files ferrite writes for them.

pub mod corpus;
pub mod engine;
pub mod guard;
pub mod input;
pub mod mutate;
pub mod rng;
pub mod seeds;
pub mod supervisor;
pub mod targets;
pub mod tiny;

/// A scratch folder for this process (in `/dev/shm` when there is one:
/// the targets write every input to a file).
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("ferrite-fuzz-{}-{tag}", std::process::id()))
}

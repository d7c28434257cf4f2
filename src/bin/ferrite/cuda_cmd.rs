//! `ferrite cuda-compile` (write a prebuilt CUBIN bundle) and `ferrite
//! cuda-check` (load every kernel on a device and check its launch limits).

use ferrite::backend::cuda::check::check_launch_limits;
use ferrite::backend::cuda::compile::bundle::{write_bundle, BUNDLE_ENV};
use ferrite::backend::cuda::compile::nvrtc_version;
use ferrite::backend::cuda::device;
use std::path::Path;

/// Compiles every kernel family to a CUBIN for `arch` into `out`.
pub fn cuda_compile(arch: &str, out: &Path) -> Result<(), String> {
    let (major, minor) = nvrtc_version().map_err(|e| e.to_string())?;
    let written = write_bundle(out, arch).map_err(|e| e.to_string())?;
    let bytes: u64 = written
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    for path in &written {
        println!("{}", path.display());
    }
    println!(
        "wrote {} files ({:.1} KiB) for {arch} with NVRTC {major}.{minor}; use them with \
         {BUNDLE_ENV}={}",
        written.len(),
        bytes as f64 / 1024.0,
        out.display()
    );
    Ok(())
}

/// Loads every kernel family on CUDA device `ordinal` and checks every
/// launch configuration; prints the summary (or JSON). An error when the
/// check fails, so the exit status says it.
pub fn cuda_check(ordinal: usize, json: bool) -> Result<(), String> {
    let dev = device(ordinal).map_err(|e| e.to_string())?;
    let report = check_launch_limits(&dev);
    if json {
        let text = serde_json::to_string_pretty(&report.to_json()).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report.summary());
    }
    if report.passed() {
        Ok(())
    } else {
        Err("the launch-limit check failed (see the report)".into())
    }
}

/// The ordinal of a `--device` value naming a CUDA device (`cuda` or
/// `cuda:N`).
pub fn cuda_ordinal(device: &str) -> Result<usize, String> {
    match device.parse::<ferrite::Device>() {
        Ok(ferrite::Device::Cuda(n)) => Ok(n),
        Ok(ferrite::Device::Cpu) => Err("--device must be cuda or cuda:N here, not cpu".into()),
        Err(e) => Err(e.to_string()),
    }
}

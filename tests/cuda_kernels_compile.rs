//! The CUDA kernel sources compile with NVRTC and define exactly the kernels
//! the Rust side expects. NVRTC needs no GPU, so this runs on any machine
//! where `libnvrtc` can be loaded (see docs/CUDA.md for LD_LIBRARY_PATH);
//! without NVRTC the NVRTC tests print why they skip and pass.
//!
//! Run: `cargo test --features cuda --test cuda_kernels_compile`.
#![cfg(feature = "cuda")]

use ferrite::backend::cuda::compile::{self, FAMILIES};
use ferrite::backend::cuda::nvrtc_available;
use ferrite::ops::optim::cuda as optim;
use ferrite::ops::plm::cuda as plm;
use ferrite::ops::sigmoid_loss::cuda as sigmoid_loss;
use std::collections::BTreeSet;
use std::mem::size_of;

/// True when NVRTC can be loaded; otherwise prints the skip reason.
fn nvrtc_or_skip(test: &str) -> bool {
    let ok = nvrtc_available();
    if !ok {
        eprintln!(
            "{test}: SKIPPED, libnvrtc cannot be loaded (put the directory holding \
             libnvrtc.so.13 on LD_LIBRARY_PATH, see docs/CUDA.md)"
        );
    }
    ok
}

/// The kernel entry points declared in a PTX module.
fn ptx_entries(ptx: &str) -> BTreeSet<String> {
    ptx.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(".visible .entry ")?;
            Some(rest.split('(').next()?.trim().to_string())
        })
        .collect()
}

#[test]
fn every_family_compiles_for_sm_90_with_exactly_its_kernels() {
    if !nvrtc_or_skip("every_family_compiles_for_sm_90_with_exactly_its_kernels") {
        return;
    }
    let (major, minor) = compile::nvrtc_version().unwrap();
    eprintln!("NVRTC {major}.{minor}");
    let mut total = 0;
    for family in FAMILIES {
        let ptx = compile::compile_uncached(family, "sm_90")
            .unwrap_or_else(|e| panic!("kernels/{}.cu: {e}", family.name));
        assert!(
            ptx.contains(".target sm_90"),
            "{}: wrong target",
            family.name
        );
        let found = ptx_entries(&ptx);
        let expected: BTreeSet<String> = family.entry_points().into_iter().collect();
        let missing: Vec<_> = expected.difference(&found).collect();
        let unexpected: Vec<_> = found.difference(&expected).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "kernels/{}.cu: missing {missing:?}, not listed in compile.rs {unexpected:?}",
            family.name
        );
        total += found.len();
    }
    eprintln!("{total} kernels in {} families", FAMILIES.len());
}

#[test]
fn tensor_core_gemm_uses_mma_from_sm_80_only() {
    if !nvrtc_or_skip("tensor_core_gemm_uses_mma_from_sm_80_only") {
        return;
    }
    let gemm = compile::family("matmul").unwrap();
    let ptx = compile::compile_uncached(gemm, "sm_80").unwrap();
    for dtype in ["bf16", "f16"] {
        let instr = format!("mma.sync.aligned.m16n8k16.row.col.f32.{dtype}.{dtype}.f32");
        assert!(ptx.contains(&instr), "sm_80 PTX lacks {instr}");
    }
    // On older GPUs the mma path compiles to a trap (the launcher refuses
    // them), so the family still builds for every architecture.
    let old = compile::compile_uncached(gemm, "sm_75").unwrap();
    assert!(!old.contains("mma.sync"));
    assert!(old.contains("trap"));
    assert_eq!(ptx_entries(&old), ptx_entries(&ptx));
    assert_eq!(ptx_entries(&old).len(), gemm.entry_points().len());
}

#[test]
fn a_kernel_error_is_reported_with_the_compiler_log() {
    if !nvrtc_or_skip("a_kernel_error_is_reported_with_the_compiler_log") {
        return;
    }
    // The layout assertions are live: a wrong size fails the compilation
    // with the struct's name in the message.
    let broken = compile::KernelFamily::new(
        "broken",
        "struct P { long long a; int b; };\nstatic_assert(sizeof(P) == 12, \"P layout\");\n",
        false,
        Vec::new,
    );
    let err = compile::compile_uncached(&broken, "sm_90")
        .unwrap_err()
        .to_string();
    assert!(err.contains("kernels/broken.cu"), "{err}");
    assert!(err.contains("P layout"), "{err}");
}

#[test]
fn compiled_ptx_is_cached_on_disk() {
    if !nvrtc_or_skip("compiled_ptx_is_cached_on_disk") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrite-cuda-cache-{}", std::process::id()));
    let optim = compile::family("optim").unwrap();
    let options = compile::nvrtc_options(optim, "sm_90");
    let key = compile::cache_key(
        &optim.full_source(),
        &options,
        "sm_90",
        compile::nvrtc_version().unwrap(),
    );
    let path = compile::cache_path(&dir, "optim", "sm_90", key);
    let ptx = compile::compile_uncached(optim, "sm_90").unwrap();
    compile::write_cached(&path, key, &ptx).unwrap();
    assert_eq!(
        compile::read_cached(&path, key).as_deref(),
        Some(ptx.as_str())
    );
    // Compiling again gives the same PTX, so a cache hit is equivalent to a
    // compilation.
    assert_eq!(compile::compile_uncached(optim, "sm_90").unwrap(), ptx);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `static_assert(sizeof(NAME) == N, ...)` in the kernel sources, as
/// (NAME, N).
fn asserted_sizes() -> Vec<(String, usize)> {
    let mut sizes = Vec::new();
    for family in FAMILIES {
        for line in family.source.lines() {
            let Some(rest) = line.trim().strip_prefix("static_assert(sizeof(") else {
                continue;
            };
            let (name, rest) = rest.split_once(')').unwrap();
            let n = rest
                .trim_start_matches([' ', '='])
                .split(',')
                .next()
                .unwrap();
            sizes.push((name.to_string(), n.trim().parse().unwrap()));
        }
    }
    sizes
}

#[test]
fn rust_parameter_structs_have_the_kernel_sizes() {
    let rust = [
        (
            "ElementwiseParams",
            size_of::<ferrite::ops::elementwise::params::ElementwiseParams>(),
        ),
        (
            "RowParams",
            size_of::<ferrite::ops::reduce::params::RowParams>(),
        ),
        (
            "StridedReduceParams",
            size_of::<ferrite::ops::reduce::params::StridedReduceParams>(),
        ),
        (
            "GemmParams",
            size_of::<ferrite::ops::matmul::params::GemmParams>(),
        ),
        (
            "Im2colParams",
            size_of::<ferrite::ops::conv::params::Im2colParams>(),
        ),
        (
            "Pool2dParams",
            size_of::<ferrite::ops::pool::params::Pool2dParams>(),
        ),
        (
            "BatchNormParams",
            size_of::<ferrite::ops::norm::params::BatchNormParams>(),
        ),
        (
            "SigmoidLossParams",
            size_of::<sigmoid_loss::SigmoidLossParams>(),
        ),
        ("PlmMaskParams", size_of::<plm::PlmMaskParams>()),
        ("PlmHistogramParams", size_of::<plm::PlmHistogramParams>()),
        ("SgdParams", size_of::<optim::SgdParams>()),
        ("AdamParams", size_of::<optim::AdamParams>()),
        (
            "IndexCheckParams",
            size_of::<ferrite::ops::index::params::IndexCheckParams>(),
        ),
        (
            "IndexSelectParams",
            size_of::<ferrite::ops::index::params::IndexSelectParams>(),
        ),
        (
            "GatherParams",
            size_of::<ferrite::ops::index::params::GatherParams>(),
        ),
    ];
    let cuda = asserted_sizes();
    assert_eq!(
        cuda.len(),
        rust.len(),
        "every kernel struct has a Rust mirror: {cuda:?}"
    );
    for (name, size) in rust {
        let asserted = cuda.iter().find(|(n, _)| n == name).map(|&(_, s)| s);
        assert_eq!(
            asserted,
            Some(size),
            "{name}: kernel static_assert vs Rust size_of"
        );
    }
}

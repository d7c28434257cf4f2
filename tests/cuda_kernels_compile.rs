//! The CUDA kernel sources compile with NVRTC and define exactly the kernels
//! the Rust side expects. NVRTC needs no GPU, so this runs on any machine
//! where `libnvrtc` can be loaded (see docs/CUDA.md for LD_LIBRARY_PATH);
//! without NVRTC the NVRTC tests print why they skip and pass.
//!
//! Run: `cargo test --features cuda --test cuda_kernels_compile`.
#![cfg(feature = "cuda")]

use ferrite::backend::cuda::compile::{self, bundle, ImageFormat, FAMILIES};
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
    let path = compile::cache_path(&dir, "optim", "sm_90", key, ImageFormat::Ptx);
    let ptx = compile::compile_uncached(optim, "sm_90").unwrap();
    compile::write_cached(&path, key, ImageFormat::Ptx, ptx.as_bytes()).unwrap();
    assert_eq!(
        compile::read_cached(&path, key, ImageFormat::Ptx).as_deref(),
        Some(ptx.as_bytes())
    );
    // Compiling again gives the same PTX, so a cache hit is equivalent to a
    // compilation.
    assert_eq!(compile::compile_uncached(optim, "sm_90").unwrap(), ptx);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The names of the global functions (the kernels) in the symbol table of
/// an ELF64 image (a CUBIN), read without any CUDA tool: the section
/// headers locate `.symtab` and its string table.
fn elf_function_symbols(elf: &[u8]) -> BTreeSet<String> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF image");
    assert_eq!(elf[4], 2, "not ELF64");
    let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
    let section = |i: usize| shoff + i * shentsize;
    let mut names = BTreeSet::new();
    for i in 0..shnum {
        let sh = section(i);
        if u32_at(sh + 4) != 2 {
            continue; // not SHT_SYMTAB
        }
        let (off, size, link, entsize) = (
            u64_at(sh + 0x18),
            u64_at(sh + 0x20),
            u32_at(sh + 0x28),
            u64_at(sh + 0x38),
        );
        let strtab = u64_at(section(link) + 0x18);
        for sym in (off..off + size).step_by(entsize) {
            let (name, info) = (u32_at(sym), elf[sym + 4]);
            if info & 0xf == 2 && info >> 4 == 1 {
                // STT_FUNC, STB_GLOBAL: kernels (helpers are local)
                let start = strtab + name;
                let end = start + elf[start..].iter().position(|&b| b == 0).unwrap();
                names.insert(String::from_utf8_lossy(&elf[start..end]).into_owned());
            }
        }
    }
    names
}

#[test]
fn every_family_compiles_to_a_cubin_for_sm_90_with_exactly_its_kernels() {
    if !nvrtc_or_skip("every_family_compiles_to_a_cubin_for_sm_90_with_exactly_its_kernels") {
        return;
    }
    for family in FAMILIES {
        let cubin = compile::compile_cubin(family, "sm_90")
            .unwrap_or_else(|e| panic!("kernels/{}.cu: {e}", family.name));
        // ELF machine EM_CUDA (190) and the sm_90 flag in e_flags.
        assert_eq!(
            u16::from_le_bytes([cubin[0x12], cubin[0x13]]),
            190,
            "{}: not a CUDA ELF",
            family.name
        );
        let found = elf_function_symbols(&cubin);
        let expected: BTreeSet<String> = family.entry_points().into_iter().collect();
        let missing: Vec<_> = expected.difference(&found).collect();
        let unexpected: Vec<_> = found.difference(&expected).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "kernels/{}.cu: CUBIN lacks {missing:?}, has unlisted {unexpected:?}",
            family.name
        );
    }
    // The format rule: a CUBIN whenever NVRTC targets the GPU's own
    // architecture, which this NVRTC does for an H100/H200.
    let supported = compile::nvrtc_supported_archs().unwrap();
    let arch = compile::choose_arch((9, 0), &supported).unwrap();
    assert_eq!(arch, "sm_90");
    assert_eq!(
        compile::format_for((9, 0), &arch).unwrap(),
        ImageFormat::Cubin
    );
}

#[test]
fn a_cubin_bundle_holds_every_family_under_its_source_hash() {
    if !nvrtc_or_skip("a_cubin_bundle_holds_every_family_under_its_source_hash") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrite-cubin-bundle-{}", std::process::id()));
    let written = bundle::write_bundle(&dir, "sm_90").unwrap();
    assert_eq!(
        written.len(),
        FAMILIES.len() + 1,
        "one CUBIN per family + manifest"
    );
    for family in FAMILIES {
        let cubin = bundle::read_bundle(&dir, family, "sm_90")
            .unwrap()
            .unwrap_or_else(|| panic!("{} missing from the bundle", family.name));
        assert_eq!(cubin, compile::compile_cubin(family, "sm_90").unwrap());
        assert_eq!(bundle::read_bundle(&dir, family, "sm_80").unwrap(), None);
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["arch"], "sm_90");
    assert_eq!(
        manifest["families"].as_object().unwrap().len(),
        FAMILIES.len()
    );
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
            size_of::<ferrite::ops::pool::params::Pool2dKernelParams>(),
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

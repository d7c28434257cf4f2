//! The CUDA kernel sources and their compilation with NVRTC.
//!
//! Every `kernels/<family>.cu` file is embedded in the binary with
//! `include_str!`, prefixed with the shared `kernels/common.cuh`, and
//! compiled by NVRTC at first use for the GPU's architecture
//! (`--gpu-architecture=sm_XY`). No CUDA toolkit is needed at build time.
//!
//! The module handed to the driver is a **CUBIN** (machine code for the
//! GPU's architecture) whenever NVRTC knows the GPU: a CUBIN loads on any
//! driver of the same CUDA major version, whereas PTX only loads when the
//! driver is at least as new as the NVRTC that wrote it. PTX (JIT-compiled
//! by the driver) is the fallback for a GPU newer than NVRTC
//! ([`format_for`]).
//!
//! Where modules come from, in order:
//! - [`bundle`]: prebuilt CUBINs in the directory named by
//!   `FERRITE_CUDA_CUBIN_DIR`, keyed by (source hash, architecture);
//! - the process cache, keyed by [`cache_key`] and format;
//! - the disk cache ([`cache`]): one file per (family, architecture, key,
//!   format) under [`cache_dir`], written atomically and checked on
//!   reading. The disk cache is best effort: a directory that cannot be
//!   written only costs a recompile;
//! - [`nvrtc`]: a fresh compilation.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub mod bundle;
pub mod cache;
pub mod image;
pub mod names;
pub mod nvrtc;

pub use cache::{
    cache_dir, cache_dir_from, cache_key, cache_path, fnv1a64, read_cached, write_cached,
};
pub use image::{format_for, ImageFormat, ModuleImage, ModuleLoad, ModuleOrigin};
pub use nvrtc::{
    compile_cubin, compile_image, compile_uncached, nvrtc_supported_archs, nvrtc_version,
};

/// The prelude shared by every family (types, conversions, reductions).
pub const PRELUDE: &str = include_str!("../../../../kernels/common.cuh");

/// One `kernels/<name>.cu` source file and the kernels it defines.
pub struct KernelFamily {
    /// The family name, also the file name without `.cu`.
    pub name: &'static str,
    /// The CUDA C source (without the prelude).
    pub source: &'static str,
    /// Whether NVRTC may contract `a·b + c` into one fused multiply-add.
    /// Only the GEMM family allows it (it is where FMA throughput matters);
    /// elsewhere every operation rounds separately, as on the CPU.
    pub fmad: bool,
    /// The kernel entry points the source defines.
    entry_points: fn() -> Vec<String>,
}

impl KernelFamily {
    /// A family from its parts (the entries of [`FAMILIES`] are built this
    /// way; also useful to compile an experimental kernel with the same
    /// prelude and options).
    pub const fn new(
        name: &'static str,
        source: &'static str,
        fmad: bool,
        entry_points: fn() -> Vec<String>,
    ) -> Self {
        KernelFamily {
            name,
            source,
            fmad,
            entry_points,
        }
    }

    /// The names of the kernels this family defines.
    pub fn entry_points(&self) -> Vec<String> {
        (self.entry_points)()
    }

    /// True when this family defines a kernel called `entry`.
    pub fn has_entry(&self, entry: &str) -> bool {
        self.entry_points().iter().any(|e| e == entry)
    }

    /// The text NVRTC compiles: the prelude, then the family's source with
    /// line numbers (in compiler messages) counted from its own first line.
    pub fn full_source(&self) -> String {
        format!(
            "#line 1 \"common.cuh\"\n{PRELUDE}\n#line 1 \"{}.cu\"\n{}",
            self.name, self.source
        )
    }
}

/// Every kernel family, in the order of the docs.
pub static FAMILIES: &[KernelFamily] = &[
    KernelFamily {
        name: "elementwise",
        source: include_str!("../../../../kernels/elementwise.cu"),
        fmad: false,
        entry_points: names::elementwise,
    },
    KernelFamily {
        name: "reduce",
        source: include_str!("../../../../kernels/reduce.cu"),
        fmad: false,
        entry_points: names::reduce,
    },
    KernelFamily {
        name: "matmul",
        source: include_str!("../../../../kernels/matmul.cu"),
        fmad: true,
        entry_points: names::matmul,
    },
    KernelFamily {
        name: "conv",
        source: include_str!("../../../../kernels/conv.cu"),
        fmad: false,
        entry_points: names::conv,
    },
    KernelFamily {
        name: "pool",
        source: include_str!("../../../../kernels/pool.cu"),
        fmad: false,
        entry_points: names::pool,
    },
    KernelFamily {
        name: "norm",
        source: include_str!("../../../../kernels/norm.cu"),
        fmad: false,
        entry_points: names::norm,
    },
    KernelFamily {
        name: "sigmoid_loss",
        source: include_str!("../../../../kernels/sigmoid_loss.cu"),
        fmad: false,
        entry_points: names::sigmoid_loss,
    },
    KernelFamily {
        name: "plm",
        source: include_str!("../../../../kernels/plm.cu"),
        fmad: false,
        entry_points: names::plm,
    },
    KernelFamily {
        name: "optim",
        source: include_str!("../../../../kernels/optim.cu"),
        fmad: false,
        entry_points: names::optim,
    },
    KernelFamily {
        name: "index",
        source: include_str!("../../../../kernels/index.cu"),
        fmad: false,
        entry_points: names::index,
    },
];

/// The family called `name`.
pub fn family(name: &str) -> Result<&'static KernelFamily> {
    FAMILIES.iter().find(|f| f.name == name).ok_or_else(|| {
        Error::invalid(
            "cuda::compile::family",
            format!("no kernel family {name:?} (kernels/{name}.cu)"),
        )
    })
}

/// The NVRTC options for `family` on architecture `arch` (e.g. `"sm_90"`).
pub fn nvrtc_options(family: &KernelFamily, arch: &str) -> Vec<String> {
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    if !family.fmad {
        options.push("--fmad=false".to_string());
    }
    options
}

/// The NVRTC target for a GPU of compute capability `(major, minor)`, given
/// the targets NVRTC supports (as `10·major + minor`): the GPU's own when
/// supported, otherwise the newest older one (PTX runs on later GPUs
/// through the driver's JIT). An error when the GPU predates every
/// supported target.
pub fn choose_arch(capability: (i32, i32), supported: &[i32]) -> Result<String> {
    let wanted = capability.0 * 10 + capability.1;
    supported
        .iter()
        .copied()
        .filter(|&a| a <= wanted)
        .max()
        .map(|a| format!("sm_{a}"))
        .ok_or_else(|| {
            Error::invalid(
                "cuda::compile::choose_arch",
                format!(
                    "compute capability {}.{} is older than every NVRTC target {supported:?}",
                    capability.0, capability.1
                ),
            )
        })
}

/// The module of `family` for `arch` in `format`: from the process cache,
/// else from the disk cache, else compiled by NVRTC (and then stored in
/// both caches). Also says where it came from.
pub fn image(
    family: &KernelFamily,
    arch: &str,
    format: ImageFormat,
) -> Result<(Arc<ModuleImage>, ModuleOrigin)> {
    let options = nvrtc_options(family, arch);
    let key = cache_key(&family.full_source(), &options, arch, nvrtc_version()?);
    type ProcessCache = Mutex<HashMap<(u64, ImageFormat), Arc<ModuleImage>>>;
    static PROCESS_CACHE: OnceLock<ProcessCache> = OnceLock::new();
    let cache = PROCESS_CACHE.get_or_init(Default::default);
    if let Some(image) = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(key, format))
    {
        return Ok((image.clone(), ModuleOrigin::ProcessCache));
    }
    let path = cache_dir().map(|dir| cache_path(&dir, family.name, arch, key, format));
    let cached = path.as_deref().and_then(|p| read_cached(p, key, format));
    let (image, origin) = match cached {
        Some(bytes) => (ModuleImage { format, bytes }, ModuleOrigin::DiskCache),
        None => {
            let image = compile_image(family, arch, format)?;
            if let Some(path) = &path {
                // Best effort: an unwritable cache only costs a recompile.
                let _ = write_cached(path, key, format, &image.bytes);
            }
            (image, ModuleOrigin::Nvrtc)
        }
    };
    let image = Arc::new(image);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((key, format), image.clone());
    Ok((image, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_is_the_newest_supported_target_not_above_the_gpu() {
        let supported = [75, 80, 86, 89, 90, 100, 120];
        assert_eq!(choose_arch((9, 0), &supported).unwrap(), "sm_90");
        assert_eq!(choose_arch((8, 7), &supported).unwrap(), "sm_86");
        assert_eq!(choose_arch((12, 1), &supported).unwrap(), "sm_120");
        assert!(choose_arch((7, 0), &supported).is_err());
        assert!(choose_arch((9, 0), &[]).is_err());
    }

    #[test]
    fn options_select_the_architecture_and_fmad() {
        let gemm = family("matmul").unwrap();
        let norm = family("norm").unwrap();
        assert_eq!(
            nvrtc_options(gemm, "sm_90"),
            ["--gpu-architecture=sm_90", "--std=c++17"]
        );
        assert!(nvrtc_options(norm, "sm_80").contains(&"--fmad=false".to_string()));
        assert!(family("nope").is_err());
    }

    #[test]
    fn entry_points_are_unique_and_follow_the_naming_convention() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            let entries = f.entry_points();
            assert!(!entries.is_empty(), "{}", f.name);
            for e in entries {
                let dtypes = ["f32", "bf16", "f16", "u8", "i64"];
                // A kernel whose output type differs from its input type
                // ends in `<from>_to_<to>` (`gemm_fwd_bf16_to_f32`).
                let base = match e.rsplit_once("_to_") {
                    Some((head, to)) if dtypes.contains(&to) => head,
                    _ => e.as_str(),
                };
                let parts: Vec<&str> = base.rsplitn(3, '_').collect();
                let well_formed = matches!(parts.as_slice(), [dtype, kind, _op]
                        if dtypes.contains(dtype)
                            && ["fwd", "bwd", "step"].contains(kind))
                    || (e.starts_with("cast_") && e.contains("_to_"));
                assert!(
                    well_formed,
                    "{e} does not follow <op>_<fwd|bwd|step>_<dtype>[_to_<dtype>]"
                );
                assert!(seen.insert(e.clone()), "{e} defined twice");
            }
        }
        // Every family's source is embedded and mentions each of its kernels'
        // op names (the PTX check itself needs NVRTC: tests/cuda_kernels_compile.rs).
        for f in FAMILIES {
            assert!(f.full_source().contains(PRELUDE));
            assert!(f
                .full_source()
                .contains(&format!("#line 1 \"{}.cu\"", f.name)));
        }
    }
}

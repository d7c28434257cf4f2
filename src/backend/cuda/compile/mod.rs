//! The CUDA kernel sources and their compilation to PTX with NVRTC.
//!
//! Every `kernels/<family>.cu` file is embedded in the binary with
//! `include_str!`, prefixed with the shared `kernels/common.cuh`, and
//! compiled by NVRTC at first use for the GPU's architecture
//! (`--gpu-architecture=sm_XY`). No CUDA toolkit is needed at build time and
//! the PTX always matches the NVRTC (hence the driver) installed where the
//! program runs.
//!
//! Compiled PTX is cached twice:
//! - in the process, keyed by [`cache_key`];
//! - on disk, one file per (family, architecture, key) under
//!   [`cache_dir`], written atomically and checked on reading (its first
//!   line repeats the key). The key hashes the full source, the NVRTC
//!   options, the architecture and the NVRTC version, so an edited kernel
//!   or another NVRTC never reuses a stale file. The disk cache is best
//!   effort: a directory that cannot be written only costs a recompile.

use super::require_nvrtc;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub mod names;

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

/// 64-bit FNV-1a hash of `bytes`: a small, stable, dependency-free hash
/// for cache keys (not for security).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The cache key of a compilation: the hash of the full source, the
/// options, the architecture and the NVRTC version, each followed by a NUL
/// so that no two different inputs concatenate to the same bytes.
pub fn cache_key(source: &str, options: &[String], arch: &str, nvrtc_version: (i32, i32)) -> u64 {
    let mut bytes = Vec::with_capacity(source.len() + 256);
    bytes.extend_from_slice(b"ferrite-ptx-v1\0");
    bytes.extend_from_slice(source.as_bytes());
    bytes.push(0);
    for option in options {
        bytes.extend_from_slice(option.as_bytes());
        bytes.push(0);
    }
    bytes.extend_from_slice(arch.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(format!("{}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
    bytes.push(0);
    fnv1a64(&bytes)
}

/// The on-disk cache directory from the environment, looked up through
/// `env` (so the rule is testable): `FERRITE_CUDA_CACHE` if set (empty,
/// `0` or `off` disable the disk cache), else `$XDG_CACHE_HOME/ferrite/cuda`,
/// else `$HOME/.cache/ferrite/cuda`, else none. Relative
/// `XDG_CACHE_HOME`/`HOME` values are ignored.
pub fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(dir) = env("FERRITE_CUDA_CACHE") {
        return match dir.to_str() {
            Some("" | "0" | "off") => None,
            _ => Some(PathBuf::from(dir)),
        };
    }
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        return Some(xdg.join("ferrite").join("cuda"));
    }
    absolute("HOME").map(|home| home.join(".cache").join("ferrite").join("cuda"))
}

/// The on-disk cache directory of this process (see [`cache_dir_from`]).
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// The cache file of one compilation: `<dir>/<family>-<arch>-<key>.ptx`.
pub fn cache_path(dir: &Path, family: &str, arch: &str, key: u64) -> PathBuf {
    dir.join(format!("{family}-{arch}-{key:016x}.ptx"))
}

/// The first line of a cache file, which must match for the file to be used.
fn cache_header(key: u64) -> String {
    format!("// ferrite ptx cache {key:016x}\n")
}

/// The PTX stored in cache file `path` for `key`, if the file exists and
/// starts with the key's header.
pub fn read_cached(path: &Path, key: u64) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.strip_prefix(&cache_header(key)).map(str::to_string)
}

/// Stores `ptx` for `key` in `path`: written to a temporary file in the same
/// directory, then renamed, so a concurrent reader never sees half a file.
pub fn write_cached(path: &Path, key: u64, ptx: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{}{ptx}", cache_header(key)))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The version `(major, minor)` of the loaded NVRTC.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc(0)?;
    let (mut major, mut minor) = (0, 0);
    // Safety: NVRTC is loadable (checked above); the call writes two ints.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    check_nvrtc(status, "nvrtcVersion")?;
    Ok((major, minor))
}

/// The targets the loaded NVRTC can compile for, as `10·major + minor`.
pub fn nvrtc_supported_archs() -> Result<Vec<i32>> {
    require_nvrtc(0)?;
    let mut count = 0;
    // Safety: NVRTC is loadable; the first call writes one int, the second
    // fills exactly `count` ints.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut count) };
    check_nvrtc(status, "nvrtcGetNumSupportedArchs")?;
    let mut archs = vec![0; count.max(0) as usize];
    let status = unsafe { cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) };
    check_nvrtc(status, "nvrtcGetSupportedArchs")?;
    Ok(archs)
}

fn check_nvrtc(status: cudarc::nvrtc::sys::nvrtcResult, call: &str) -> Result<()> {
    if status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::invalid(
            "nvrtc",
            format!("{call} failed: {status:?}"),
        ))
    }
}

/// Compiles `family` for `arch` with NVRTC, bypassing every cache.
pub fn compile_uncached(family: &KernelFamily, arch: &str) -> Result<String> {
    require_nvrtc(0)?;
    let options = cudarc::nvrtc::CompileOptions {
        options: nvrtc_options(family, arch),
        name: Some(format!("{}.cu", family.name)),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(family.full_source(), options).map_err(|e| {
        let detail = match e {
            cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => {
                format!("{nvrtc:?}\n{}", log.to_string_lossy())
            }
            other => format!("{other:?}"),
        };
        Error::invalid(
            "nvrtc",
            format!(
                "compiling kernels/{}.cu for {arch} failed: {detail}",
                family.name
            ),
        )
    })?;
    Ok(ptx.to_src())
}

/// The PTX of `family` for `arch`: from the process cache, else from the
/// disk cache, else compiled by NVRTC (and then stored in both caches).
pub fn ptx(family: &KernelFamily, arch: &str) -> Result<Arc<str>> {
    let options = nvrtc_options(family, arch);
    let key = cache_key(&family.full_source(), &options, arch, nvrtc_version()?);
    static PROCESS_CACHE: OnceLock<Mutex<HashMap<u64, Arc<str>>>> = OnceLock::new();
    let cache = PROCESS_CACHE.get_or_init(Default::default);
    if let Some(ptx) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(ptx.clone());
    }
    let path = cache_dir().map(|dir| cache_path(&dir, family.name, arch, key));
    let ptx: Arc<str> = match path.as_deref().and_then(|p| read_cached(p, key)) {
        Some(ptx) => ptx.into(),
        None => {
            let ptx = compile_uncached(family, arch)?;
            if let Some(path) = &path {
                // Best effort: an unwritable cache only costs a recompile.
                let _ = write_cached(path, key, &ptx);
            }
            ptx.into()
        }
    };
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, ptx.clone());
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn cache_key_depends_on_every_input() {
        let opts = vec!["--gpu-architecture=sm_90".to_string()];
        let base = cache_key("src", &opts, "sm_90", (13, 0));
        assert_eq!(base, cache_key("src", &opts, "sm_90", (13, 0)));
        assert_ne!(base, cache_key("src ", &opts, "sm_90", (13, 0)));
        assert_ne!(base, cache_key("src", &[], "sm_90", (13, 0)));
        assert_ne!(base, cache_key("src", &opts, "sm_80", (13, 0)));
        assert_ne!(base, cache_key("src", &opts, "sm_90", (13, 2)));
        // Separators: moving a byte between fields changes the key.
        let split = vec!["ab".to_string(), "c".to_string()];
        let moved = vec!["a".to_string(), "bc".to_string()];
        assert_ne!(
            cache_key("s", &split, "sm_90", (13, 0)),
            cache_key("s", &moved, "sm_90", (13, 0))
        );
    }

    #[test]
    fn cache_dir_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            cache_dir_from(env(&[
                ("FERRITE_CUDA_CACHE", "/tmp/k"),
                ("HOME", "/home/u")
            ])),
            Some(PathBuf::from("/tmp/k"))
        );
        for off in ["", "0", "off"] {
            let pairs: &'static [(&str, &str)] = match off {
                "" => &[("FERRITE_CUDA_CACHE", ""), ("HOME", "/home/u")],
                "0" => &[("FERRITE_CUDA_CACHE", "0"), ("HOME", "/home/u")],
                _ => &[("FERRITE_CUDA_CACHE", "off"), ("HOME", "/home/u")],
            };
            assert_eq!(cache_dir_from(env(pairs)), None, "{off:?} disables");
        }
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "/xdg"), ("HOME", "/home/u")])),
            Some(PathBuf::from("/xdg/ferrite/cuda"))
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.cache/ferrite/cuda"))
        );
        assert_eq!(cache_dir_from(env(&[("HOME", "relative")])), None);
        assert_eq!(cache_dir_from(env(&[])), None);
    }

    #[test]
    fn cache_files_round_trip_and_reject_other_keys() {
        let dir = std::env::temp_dir().join(format!("ferrite-ptx-test-{}", std::process::id()));
        let path = cache_path(&dir, "matmul", "sm_90", 0xabc);
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            "matmul-sm_90-0000000000000abc.ptx"
        );
        assert_eq!(read_cached(&path, 0xabc), None, "missing file");
        write_cached(&path, 0xabc, ".version 8.0\n.entry k()").unwrap();
        assert_eq!(
            read_cached(&path, 0xabc).as_deref(),
            Some(".version 8.0\n.entry k()")
        );
        assert_eq!(read_cached(&path, 0xabd), None, "another key's header");
        std::fs::write(&path, "truncated").unwrap();
        assert_eq!(read_cached(&path, 0xabc), None, "a file without the header");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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

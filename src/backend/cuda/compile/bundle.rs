//! Prebuilt CUBIN bundles: a directory of
//! `<family>-<sourcehash>-<arch>.cubin` files, compiled ahead of time (by
//! `ferrite cuda-compile --arch sm_90 --out DIR`, or [`write_bundle`]) and
//! used at run time when [`BUNDLE_ENV`] names the directory and a file
//! matches both the family's source and the GPU's architecture. A GPU
//! machine then needs no NVRTC at all, and the modules are exactly the ones
//! that were tested elsewhere.
//!
//! The source hash covers the full source (prelude included) and every
//! NVRTC option except the target, so an edited kernel or changed option
//! never picks up a stale file; the target is in the name.

use super::cache::{fnv1a64, write_atomically};
use super::image::arch_capability;
use super::nvrtc::{compile_cubin, nvrtc_version};
use super::{nvrtc_options, KernelFamily, FAMILIES};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The environment variable naming the bundle directory.
pub const BUNDLE_ENV: &str = "FERRITE_CUDA_CUBIN_DIR";

/// The bundle directory of this process: [`BUNDLE_ENV`] when set and not
/// empty.
pub fn bundle_dir() -> Option<PathBuf> {
    std::env::var_os(BUNDLE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The hash of what a family's module depends on besides its target: the
/// full source and the NVRTC options other than `--gpu-architecture`.
pub fn source_hash(family: &KernelFamily) -> u64 {
    let mut bytes = b"ferrite-cubin-bundle-v1\0".to_vec();
    bytes.extend_from_slice(family.full_source().as_bytes());
    bytes.push(0);
    for option in nvrtc_options(family, "sm_00") {
        if !option.starts_with("--gpu-architecture=") {
            bytes.extend_from_slice(option.as_bytes());
            bytes.push(0);
        }
    }
    fnv1a64(&bytes)
}

/// The file name of `family`'s CUBIN for `arch` in a bundle.
pub fn bundle_file_name(family: &KernelFamily, arch: &str) -> String {
    format!("{}-{:016x}-{arch}.cubin", family.name, source_hash(family))
}

/// The CUBIN of `family` for `arch` in bundle directory `dir`: `None` when
/// the bundle has no file for this source and target, an error when the
/// file exists but cannot be read or is not an ELF image.
pub fn read_bundle(dir: &Path, family: &KernelFamily, arch: &str) -> Result<Option<Vec<u8>>> {
    let path = dir.join(bundle_file_name(family, arch));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::invalid(
                "cuda bundle",
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    if !bytes.starts_with(b"\x7fELF") {
        return Err(Error::invalid(
            "cuda bundle",
            format!("{} is not a CUBIN (no ELF header)", path.display()),
        ));
    }
    Ok(Some(bytes))
}

/// Compiles every kernel family to a CUBIN for `arch` (`"sm_XY"`) with the
/// loaded NVRTC and writes them into `dir` (created if needed), with a
/// `manifest.json` naming the NVRTC version, the target and the files.
/// Returns the paths written.
pub fn write_bundle(dir: &Path, arch: &str) -> Result<Vec<PathBuf>> {
    arch_capability(arch)?;
    let version = nvrtc_version()?;
    let io = |path: &Path, e: std::io::Error| {
        Error::invalid(
            "cuda bundle",
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let mut written = Vec::new();
    let mut files = serde_json::Map::new();
    for family in FAMILIES {
        let cubin = compile_cubin(family, arch)?;
        let name = bundle_file_name(family, arch);
        let path = dir.join(&name);
        write_atomically(&path, &cubin).map_err(|e| io(&path, e))?;
        files.insert(
            family.name.to_string(),
            serde_json::json!({ "file": name, "bytes": cubin.len() }),
        );
        written.push(path);
    }
    let manifest = serde_json::json!({
        "arch": arch,
        "nvrtc": format!("{}.{}", version.0, version.1),
        "families": files,
    });
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::invalid("cuda bundle", e.to_string()))?;
    write_atomically(&path, text.as_bytes()).map_err(|e| io(&path, e))?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::compile::family;

    #[test]
    fn file_names_carry_family_source_hash_and_target() {
        let gemm = family("matmul").unwrap();
        let name = bundle_file_name(gemm, "sm_90");
        assert!(name.starts_with("matmul-"), "{name}");
        assert!(name.ends_with("-sm_90.cubin"), "{name}");
        assert_eq!(name.len(), "matmul-".len() + 16 + "-sm_90.cubin".len());
        // Families differ in source and options, so in hash.
        let norm = family("norm").unwrap();
        assert_ne!(source_hash(gemm), source_hash(norm));
        // Another source with the same name: another hash.
        let edited = KernelFamily::new("matmul", "// edited\n", true, Vec::new);
        assert_ne!(source_hash(gemm), source_hash(&edited));
        // The fmad option is part of the hash.
        let no_fmad = KernelFamily::new("matmul", gemm.source, false, Vec::new);
        assert_ne!(source_hash(gemm), source_hash(&no_fmad));
    }

    #[test]
    fn bundle_files_are_found_only_when_they_match() {
        let dir = std::env::temp_dir().join(format!("ferrite-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let optim = family("optim").unwrap();
        assert_eq!(read_bundle(&dir, optim, "sm_90").unwrap(), None, "empty");
        let elf = b"\x7fELF fake cubin".to_vec();
        std::fs::write(dir.join(bundle_file_name(optim, "sm_90")), &elf).unwrap();
        assert_eq!(read_bundle(&dir, optim, "sm_90").unwrap(), Some(elf));
        assert_eq!(
            read_bundle(&dir, optim, "sm_80").unwrap(),
            None,
            "other target"
        );
        let edited = KernelFamily::new("optim", "// edited\n", false, Vec::new);
        assert_eq!(
            read_bundle(&dir, &edited, "sm_90").unwrap(),
            None,
            "other source"
        );
        std::fs::write(dir.join(bundle_file_name(optim, "sm_86")), "text").unwrap();
        let err = read_bundle(&dir, optim, "sm_86").unwrap_err().to_string();
        assert!(err.contains("not a CUBIN"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writing_a_bundle_checks_the_target_first() {
        let dir = std::env::temp_dir().join("ferrite-bundle-never-written");
        let err = write_bundle(&dir, "compute_90").unwrap_err().to_string();
        assert!(err.contains("sm_XY"), "{err}");
        assert!(!dir.exists());
    }
}

//! The on-disk cache of compiled modules: one file per (family,
//! architecture, key, format) under [`cache_dir`], written atomically and
//! checked on reading (its first line repeats the key). The key hashes the
//! full source, the NVRTC options, the architecture and the NVRTC version,
//! so an edited kernel or another NVRTC never reuses a stale file.

use super::image::ImageFormat;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

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

/// The cache file of one compilation:
/// `<dir>/<family>-<arch>-<key>.<ptx|cubin>`.
pub fn cache_path(dir: &Path, family: &str, arch: &str, key: u64, format: ImageFormat) -> PathBuf {
    dir.join(format!("{family}-{arch}-{key:016x}.{}", format.name()))
}

/// The first line of a cache file, which must match for the file to be used.
fn cache_header(key: u64, format: ImageFormat) -> String {
    format!("// ferrite {} cache {key:016x}\n", format.name())
}

/// The module stored in cache file `path` for `key` in `format`, if the
/// file exists and starts with the key's header.
pub fn read_cached(path: &Path, key: u64, format: ImageFormat) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    bytes
        .strip_prefix(cache_header(key, format).as_bytes())
        .map(<[u8]>::to_vec)
}

/// Stores `module` (in `format`) for `key` in `path`: written to a
/// temporary file in the same directory, then renamed, so a concurrent
/// reader never sees half a file.
pub fn write_cached(
    path: &Path,
    key: u64,
    format: ImageFormat,
    module: &[u8],
) -> std::io::Result<()> {
    let mut bytes = cache_header(key, format).into_bytes();
    bytes.extend_from_slice(module);
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename (creating the directory if needed).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
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
        let path = cache_path(&dir, "matmul", "sm_90", 0xabc, ImageFormat::Ptx);
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            "matmul-sm_90-0000000000000abc.ptx"
        );
        let ptx = ImageFormat::Ptx;
        assert_eq!(read_cached(&path, 0xabc, ptx), None, "missing file");
        write_cached(&path, 0xabc, ptx, b".version 8.0\n.entry k()").unwrap();
        assert_eq!(
            read_cached(&path, 0xabc, ptx).as_deref(),
            Some(&b".version 8.0\n.entry k()"[..])
        );
        assert_eq!(read_cached(&path, 0xabd, ptx), None, "another key's header");
        assert_eq!(
            read_cached(&path, 0xabc, ImageFormat::Cubin),
            None,
            "another format's header"
        );
        std::fs::write(&path, "truncated").unwrap();
        assert_eq!(
            read_cached(&path, 0xabc, ptx),
            None,
            "a file without the header"
        );
        // Binary modules (CUBIN) round-trip byte for byte.
        let cubin_path = cache_path(&dir, "matmul", "sm_90", 0xabc, ImageFormat::Cubin);
        assert!(cubin_path.to_str().unwrap().ends_with(".cubin"));
        let elf = [0x7f, b'E', b'L', b'F', 0, 1, 2, 0xff];
        write_cached(&cubin_path, 0xabc, ImageFormat::Cubin, &elf).unwrap();
        assert_eq!(
            read_cached(&cubin_path, 0xabc, ImageFormat::Cubin).as_deref(),
            Some(&elf[..])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

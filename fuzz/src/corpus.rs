//! The committed inputs: `corpus/<target>/<name>/` (valid seeds) and
//! `regressions/<target>/<name>/` (every reproducer found, with a
//! `NOTE.md`; one that also holds a file `OPEN` is a known failure whose
//! fix is pending: replays report it without failing).

use crate::input::{self, Input};
use crate::targets::Target;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The fuzz crate's folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `corpus/`.
pub fn corpus_dir() -> PathBuf {
    root().join("corpus")
}

/// `regressions/`.
pub fn regressions_dir() -> PathBuf {
    root().join("regressions")
}

/// The input folders under `dir/<target>/`, sorted by name, with their inputs.
pub fn inputs(dir: &Path, target: &Target) -> Vec<(PathBuf, Input)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join(target.name))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .filter_map(|d| input::load(&d, target.parts).ok().map(|i| (d, i)))
        .collect()
}

/// Whether a regression folder is marked `OPEN` (fix pending).
pub fn is_open(dir: &Path) -> bool {
    dir.join("OPEN").exists()
}

/// The `Signature:` line of a reproducer's `NOTE.md`.
pub fn signature(dir: &Path) -> Option<String> {
    let note = std::fs::read_to_string(dir.join("NOTE.md")).ok()?;
    note.lines()
        .find_map(|l| l.strip_prefix("Signature: "))
        .map(|s| s.trim().to_string())
}

/// The signatures of the reproducers under `dir/<target>/`.
pub fn signatures(dir: &Path, target: &Target) -> HashSet<String> {
    inputs(dir, target)
        .iter()
        .filter_map(|(d, _)| signature(d))
        .collect()
}

/// The signatures of `target`'s open regressions.
pub fn known_open(target: &Target) -> HashSet<String> {
    inputs(&regressions_dir(), target)
        .iter()
        .filter(|(d, _)| is_open(d))
        .filter_map(|(d, _)| signature(d))
        .collect()
}

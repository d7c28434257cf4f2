//! The fuzz targets: one per reader of untrusted bytes in ferrite.
//!
//! A target writes its input where the reader expects it (a scratch
//! folder), calls the reader as the library or CLI does, uses what it
//! returns as the trainer would, and checks what can be checked about an
//! accepted input (round trips, sizes, bounds): an input that is accepted
//! but invalid is a failure too, not only a panic.

mod binary;
mod text;

use crate::input::{Input, Part};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a target made of one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The reader accepted the input and every check on it held.
    Accepted,
    /// The reader rejected the input with this error.
    Rejected(String),
    /// The reader accepted an input it should have refused, or gave back
    /// something inconsistent: a stable short reason and the details.
    Invalid(&'static str, String),
}

impl Verdict {
    /// `Rejected` with the error's text, or the verdict of `check` on the value.
    pub fn of<T, E: std::fmt::Display>(
        result: Result<T, E>,
        check: impl FnOnce(T) -> Verdict,
    ) -> Verdict {
        match result {
            Ok(v) => check(v),
            Err(e) => Verdict::Rejected(e.to_string()),
        }
    }
}

/// A scratch folder private to one fuzzing thread.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates (or reuses) the scratch folder `dir`.
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, bytes).expect("writing to the scratch folder");
        path
    }
}

/// One fuzz target.
pub struct Target {
    /// Name on the command line and folder name of its corpus.
    pub name: &'static str,
    /// What it reads, in one line.
    pub about: &'static str,
    /// The files of its input.
    pub parts: &'static [Part],
    /// Tokens of the format, inserted by the mutator.
    pub dictionary: &'static [&'static str],
    /// Longest an execution may take before it counts as a hang.
    pub timeout: Duration,
    /// A whole-run target (seconds per thousand executions, not
    /// milliseconds): campaigns give it fewer executions.
    pub slow: bool,
    /// Runs the reader on an input.
    pub run: fn(&Scratch, &Input) -> Verdict,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every target, in the order campaigns run them.
pub fn all() -> &'static [Target] {
    &TARGETS
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

static TARGETS: [Target; 13] = [
    binary::IDX,
    binary::IDX_GZ,
    binary::MNIST,
    binary::CIFAR10,
    binary::CIFAR100,
    binary::SAFETENSORS,
    binary::CHECKPOINT,
    binary::RESUME,
    text::PLM_STATE,
    text::CONFIG,
    text::REPORT,
    text::LOSS_SPEC,
    text::VARIANT,
];

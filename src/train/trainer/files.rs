//! The files of a training run in its output folder: refusing to overwrite
//! a run, the JSONL log.

use crate::checkpoint::remove_stale_temp_files;
use crate::error::{Error, Result};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// The checkpoint written after every epoch (the latest one).
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The checkpoint of the epoch with the best monitored value.
pub const BEST_CHECKPOINT_FILE: &str = "best.safetensors";
/// One JSON object per finished epoch.
pub const LOG_FILE: &str = "log.jsonl";

/// An error when `dir` already holds a run's checkpoint: nothing written
/// before may be overwritten (resume it instead).
pub fn refuse_existing_run(op: &'static str, dir: &Path) -> Result<()> {
    for file in [CHECKPOINT_FILE, BEST_CHECKPOINT_FILE] {
        let path = dir.join(file);
        if path.exists() {
            return Err(Error::invalid(
                op,
                format!(
                    "{} already holds a run ({} exists): resume it, or choose another output folder",
                    dir.display(),
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Prepares `dir` for a new run: refuses an existing run, creates the
/// folder, removes temporary files of killed writers, starts an empty log.
pub(super) fn start_new_run(op: &'static str, dir: &Path) -> Result<()> {
    refuse_existing_run(op, dir)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating the output folder", e))?;
    remove_stale_temp_files(dir)?;
    crate::train::write_text(&dir.join(LOG_FILE), "")
}

/// Appends `record` as one line of the log in `dir`, synced to disk.
pub(super) fn append_log(dir: &Path, record: &Value) -> Result<()> {
    let path = dir.join(LOG_FILE);
    let io = |e: std::io::Error| Error::io(&path, "appending to the log", e);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    writeln!(f, "{record}").map_err(io)?;
    f.sync_data().map_err(io)
}

/// Keeps the log lines of epochs up to `epochs` (a process killed between
/// the log line and the checkpoint leaves one too many).
pub(super) fn truncate_log(dir: &Path, epochs: usize) -> Result<()> {
    let path = dir.join(LOG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&path, "reading the log", e)),
    };
    let mut kept = String::new();
    for line in text.lines() {
        let epoch = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["epoch"].as_u64());
        if epoch.is_some_and(|e| e as usize <= epochs) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    crate::train::write_text(&path, &kept)
}

//! Crash-safe file replacement.
//!
//! [`write_atomic`] writes into a fresh temporary file next to the target,
//! flushes it to disk (`fsync`), renames it over the target and then flushes
//! the directory entry (where the platform allows). A crash or an error at
//! any point leaves either the old file or the new one, never a mixture, and
//! an error removes the temporary file.

use crate::error::{Error, Result};
use std::cell::Cell;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static FAIL_AFTER: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Fault injection for tests: the next [`write_atomic`] on this thread fails
/// with an I/O error once `bytes` bytes have reached the temporary file, as
/// a full disk would. One-shot; `None` cancels a pending fault.
#[doc(hidden)]
pub fn inject_write_fault_after(bytes: Option<u64>) {
    FAIL_AFTER.with(|c| c.set(bytes));
}

/// The temporary file: removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A file writer that can be told to fail after a number of bytes.
struct FaultyFile {
    file: File,
    written: u64,
    fail_after: Option<u64>,
}

impl Write for FaultyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut buf = buf;
        if let Some(limit) = self.fail_after {
            let room = limit.saturating_sub(self.written);
            if room == 0 && !buf.is_empty() {
                return Err(io::Error::other(
                    "injected write fault (simulated full disk)",
                ));
            }
            buf = &buf[..buf.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn io_err(path: &Path, what: &str, e: io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

/// The writer's process id if `name` is a temporary file name of
/// [`write_atomic`] (`.<name>.tmp-<pid>-<n>`).
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (target, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, seq) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if target.is_empty() || !digits(pid) || !digits(seq) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may still be running. Only answers "no" where it
/// can tell for sure (Linux `/proc`); elsewhere every process counts as
/// alive, so nothing in use is ever removed.
fn process_may_be_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_fs = Path::new("/proc");
    if !proc_fs.join("self").exists() {
        return true;
    }
    proc_fs.join(pid.to_string()).exists()
}

/// Removes the temporary files that [`write_atomic`] left in `dir` when
/// its process was killed mid-write (`.<name>.tmp-<pid>-<n>`, one target
/// file's size each), and returns their paths. Only files of processes
/// known to be dead are removed (on Linux; elsewhere none), never those of
/// this process or of one still running. A missing `dir` is no error.
pub fn remove_stale_temp_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, "listing the folder", e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "listing the folder", e))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !is_file || process_may_be_alive(pid) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            // Another process cleaned it up first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "removing a stale temporary file", e)),
        }
    }
    removed.sort();
    Ok(removed)
}

/// Creates `.<name>.tmp-<pid>-<n>` in `dir`, a name no other writer uses.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..64 {
        let mut file_name = OsString::from(".");
        file_name.push(name);
        file_name.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join(file_name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

/// Replaces the file at `path` with the bytes that `write` produces, so
/// that readers (and a crash at any moment) see either the old file or the
/// complete new one.
///
/// The bytes go to a uniquely named temporary file in the same directory,
/// which is `fsync`ed and renamed over `path`; on Unix the directory is then
/// `fsync`ed too (best effort). If `write` or any I/O step fails, the
/// temporary file is removed and `path` is untouched. A `path` that is a
/// directory, or ends with a path separator, is refused before anything is
/// created. Errors are [`Error::Io`] naming `path` and the step that
/// failed, or whatever `write` returned.
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let fail_after = FAIL_AFTER.with(|c| c.take());
    // `Path::file_name` ignores a trailing separator or `.` ("dir/" and
    // "dir/." name "dir"), which would put the temporary file in the parent
    // of that directory.
    let shown = path.as_os_str().to_string_lossy();
    let names_a_directory = shown.ends_with(std::path::is_separator)
        || shown
            .strip_suffix('.')
            .is_some_and(|s| s.ends_with(std::path::is_separator));
    if names_a_directory || path.is_dir() {
        return Err(io_err(
            path,
            "cannot write a file here",
            io::Error::new(io::ErrorKind::IsADirectory, "the path is a directory"),
        ));
    }
    let Some(name) = path.file_name() else {
        return Err(io_err(
            path,
            "cannot write a file here",
            io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        ));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp_path, file) =
        create_temp(dir, name).map_err(|e| io_err(path, "creating a temporary file", e))?;
    let mut tmp = TempFile {
        path: tmp_path,
        keep: false,
    };
    let mut out = BufWriter::with_capacity(
        1 << 20,
        FaultyFile {
            file,
            written: 0,
            fail_after,
        },
    );
    write(&mut out)?;
    let what = format!("writing {}", tmp.path.display());
    let file = out
        .into_inner()
        .map_err(|e| io_err(path, &what, e.into_error()))?
        .file;
    file.sync_all().map_err(|e| io_err(path, &what, e))?;
    drop(file);
    fs::rename(&tmp.path, path)
        .map_err(|e| io_err(path, &format!("renaming {} over it", tmp.path.display()), e))?;
    tmp.keep = true;
    sync_dir(dir);
    Ok(())
}

/// Makes the rename durable: flushes the directory entry (Unix; errors are
/// ignored because some file systems refuse to `fsync` directories).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_file_names_are_recognised_exactly() {
        assert_eq!(
            temp_file_pid(".checkpoint.safetensors.tmp-123-4"),
            Some(123)
        );
        assert_eq!(temp_file_pid(".a.tmp-b.tmp-7-0"), Some(7));
        for name in [
            "checkpoint.safetensors.tmp-1-2",
            "..tmp-1-2",
            ".x.tmp-1-",
            ".x.tmp--2",
            ".x.tmp-1-2a",
            ".x.tmp-1",
            ".x.tmp-99999999999-0",
            ".log.jsonl",
        ] {
            assert_eq!(temp_file_pid(name), None, "{name}");
        }
    }
}

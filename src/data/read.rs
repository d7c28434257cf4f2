//! Reading whole files and streams into memory without aborting: buffers
//! grow with `try_reserve`, so a file too large for memory is an error,
//! not an abort of the process.

use crate::error::{Error, Result};
use std::io::{self, Read};
use std::path::Path;

/// Bytes read per step by [`read_up_to`].
const CHUNK: usize = 1 << 16;

/// An [`io::ErrorKind::OutOfMemory`] error for a buffer of `bytes` bytes.
pub(crate) fn alloc_error(bytes: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!("cannot allocate a buffer of {bytes} bytes"),
    )
}

/// Appends what `reader` yields to `out` until the end of the stream or
/// until `out` holds `limit` bytes, whichever comes first. The buffer grows
/// as data arrives (never by a size announced in the data), with
/// `try_reserve`.
pub(crate) fn read_up_to(reader: &mut dyn Read, out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let mut chunk = vec![0u8; CHUNK];
    while out.len() < limit {
        let want = CHUNK.min(limit - out.len());
        let n = match reader.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.try_reserve(n)
            .map_err(|_| alloc_error(out.len().saturating_add(n)))?;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// The whole content of the file at `path`; errors are [`Error::Io`] naming
/// the file (allocation failure included, as `OutOfMemory`).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let io = |e: io::Error| Error::io(path, "reading", e);
    let mut file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let len = usize::try_from(len).map_err(|_| io(alloc_error(usize::MAX)))?;
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| io(alloc_error(len)))?;
    read_up_to(&mut file, &mut out, usize::MAX).map_err(io)?;
    Ok(out)
}

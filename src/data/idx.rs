//! The IDX file format of MNIST and Fashion-MNIST, optionally gzipped.
//!
//! An IDX file is a big-endian header — two zero bytes, a type code (0x08
//! for unsigned bytes), the number of dimensions `d`, then `d` 32-bit sizes —
//! followed by the row-major data. Every field is validated: a wrong magic,
//! an unsupported type, a size product that overflows or a data section of
//! the wrong length is an [`Error::CorruptFile`] naming the file.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// A decoded IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes; names ending in `.gz` are gunzipped.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let io = |source| Error::Io {
        path: shown.clone(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::CorruptFile {
                path: shown.clone(),
                msg: format!("invalid gzip stream: {e}"),
            })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|msg| Error::CorruptFile { path: shown, msg })
}

/// Decodes IDX bytes (already decompressed); the error says what is wrong.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "file too short for an IDX header ({} bytes)",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad magic {:02x}{:02x}: not an IDX file",
            bytes[0], bytes[1]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "unsupported element type 0x{:02x} (only unsigned bytes, 0x08)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(format!(
            "header declares {ndim} dimensions but the file has {} bytes",
            bytes.len()
        ));
    }
    let shape: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("dimensions {shape:?} overflow"))?;
    let have = bytes.len() - header;
    if have != expected {
        return Err(format!("dimensions {shape:?} need {expected} data bytes, found {have} (truncated or padded file)"));
    }
    Ok(IdxArray {
        shape,
        data: bytes[header..].to_vec(),
    })
}

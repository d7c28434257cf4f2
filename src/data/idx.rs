//! The IDX file format of MNIST and Fashion-MNIST, optionally gzipped.
//!
//! An IDX file is a big-endian header — two zero bytes, a type code (0x08
//! for unsigned bytes), the number of dimensions `d`, then `d` 32-bit sizes —
//! followed by the row-major data. Every field is validated: a wrong magic,
//! an unsupported type, sizes whose non-zero values multiply past the
//! addressable range, or a data section of the wrong length is an
//! [`Error::CorruptFile`] naming the file.
//!
//! A gzipped file may hold several gzip members one after another (as
//! `cat a.gz b.gz` or `bgzip` write them); their contents are concatenated.
//! Bytes after the last member that do not start another member are an
//! error. Decompressed data is read only up to the size the header
//! announces (plus one byte, to detect padding), and buffers grow only as
//! data actually arrives, so neither a lying header nor a "gzip bomb" can
//! make the reader allocate more than the file really holds.

use super::read::{read_file, read_up_to};
use crate::error::{Error, Result};
use std::io::{self, Read};
use std::path::Path;

/// A decoded IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes; names ending in `.gz` are gunzipped
/// (every member of a multi-member file).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let raw = read_file(path)?;
    let parsed = if path.extension().is_some_and(|e| e == "gz") {
        parse_idx_gz(&raw)
    } else {
        parse_owned(raw)
    };
    parsed.map_err(|msg| Error::CorruptFile {
        path: path.display().to_string(),
        msg,
    })
}

/// The shape, header length and data length announced by the header at the
/// start of `bytes` (which needs to hold the header only).
fn parse_header(bytes: &[u8]) -> std::result::Result<(Vec<usize>, usize, usize), String> {
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
    let shape: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    // The non-zero sizes must multiply within range even when another size
    // is 0: strides and per-image sizes are products of them.
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| format!("dimensions {shape:?} overflow"))?;
    let expected = if shape.contains(&0) { 0 } else { nonzero };
    Ok((shape, header, expected))
}

fn length_error(shape: &[usize], expected: usize, have: &str) -> String {
    format!(
        "dimensions {shape:?} need {expected} data bytes, found {have} (truncated or padded file)"
    )
}

/// Decodes IDX bytes (already decompressed); the error says what is wrong.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    let (shape, header, expected) = parse_header(bytes)?;
    let have = bytes.len() - header;
    if have != expected {
        return Err(length_error(&shape, expected, &have.to_string()));
    }
    let mut data = Vec::new();
    data.try_reserve_exact(have)
        .map_err(|_| format!("cannot allocate {have} bytes for the data"))?;
    data.extend_from_slice(&bytes[header..]);
    Ok(IdxArray { shape, data })
}

/// [`parse_idx`] on a buffer it may keep: the data stays in place.
fn parse_owned(mut bytes: Vec<u8>) -> std::result::Result<IdxArray, String> {
    let (shape, header, expected) = parse_header(&bytes)?;
    let have = bytes.len() - header;
    if have != expected {
        return Err(length_error(&shape, expected, &have.to_string()));
    }
    bytes.drain(..header);
    Ok(IdxArray { shape, data: bytes })
}

/// Decodes gzipped IDX bytes: every gzip member, concatenated, must form
/// one IDX file, and nothing but gzip members may follow the first.
pub fn parse_idx_gz(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    let mut stream = GzMembers::new(bytes);
    let gz = |e: io::Error| match e.kind() {
        io::ErrorKind::OutOfMemory => e.to_string(),
        _ => format!("invalid gzip stream: {e}"),
    };
    let mut head = Vec::new();
    read_up_to(&mut stream, &mut head, 4).map_err(gz)?;
    if head.len() == 4 {
        let ndim = head[3] as usize;
        read_up_to(&mut stream, &mut head, 4 + 4 * ndim).map_err(gz)?;
    }
    let (shape, _, expected) = parse_header(&head)?;
    let mut data = Vec::new();
    read_up_to(&mut stream, &mut data, expected.saturating_add(1)).map_err(gz)?;
    if data.len() != expected {
        let have = if data.len() > expected {
            format!("more than {expected}")
        } else {
            data.len().to_string()
        };
        return Err(length_error(&shape, expected, &have));
    }
    // The rest of the stream must be empty and well formed, so that a
    // damaged trailer or trailing garbage is noticed.
    let mut extra = Vec::new();
    read_up_to(&mut stream, &mut extra, 1).map_err(gz)?;
    if !extra.is_empty() {
        return Err(length_error(
            &shape,
            expected,
            &format!("more than {expected}"),
        ));
    }
    Ok(IdxArray { shape, data })
}

/// The concatenated contents of the gzip members in a byte slice.
struct GzMembers<'a> {
    /// Compressed bytes not yet handed to a decoder.
    rest: &'a [u8],
    /// The decoder of the member being read.
    current: Option<flate2::bufread::GzDecoder<&'a [u8]>>,
    /// Members read to their end.
    finished: usize,
}

impl<'a> GzMembers<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        GzMembers {
            rest: bytes,
            current: None,
            finished: 0,
        }
    }
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Read for GzMembers<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(decoder) = &mut self.current {
                let member = self.finished + 1;
                let n = decoder
                    .read(buf)
                    .map_err(|e| invalid_data(format!("gzip member {member}: {e}")))?;
                if n > 0 {
                    return Ok(n);
                }
                let before = self.rest.len();
                let decoder = self.current.take().expect("a decoder is present");
                self.rest = decoder.into_inner();
                self.finished += 1;
                if self.rest.len() == before {
                    // Cannot happen (a member has a 10-byte header), but
                    // never loop without progress.
                    return Err(invalid_data(format!("gzip member {member} is empty")));
                }
            }
            if self.rest.is_empty() {
                if self.finished == 0 {
                    return Err(invalid_data("empty file, no gzip member".into()));
                }
                return Ok(0);
            }
            if !self.rest.starts_with(&[0x1f, 0x8b]) {
                return Err(invalid_data(if self.finished == 0 {
                    "not a gzip file (bad magic)".into()
                } else {
                    format!(
                        "{} bytes of trailing garbage after gzip member {}",
                        self.rest.len(),
                        self.finished
                    )
                }));
            }
            self.current = Some(flate2::bufread::GzDecoder::new(self.rest));
        }
    }
}

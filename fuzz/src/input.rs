//! Fuzz inputs: one or more files (the parts a target declares), stored
//! on disk as a folder holding those files under their real names, so a
//! reproducer of the MNIST target is a dataset folder the CLI can load.

use crate::mutate::Kind;
use std::io;
use std::path::Path;

/// One file of a target's input.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    /// File name the reader sees.
    pub file: &'static str,
    /// How it is mutated.
    pub kind: Kind,
}

/// The bytes of each part, in the target's order.
pub type Input = Vec<Vec<u8>>;

/// Reads an input folder (a missing part is empty).
pub fn load(dir: &Path, parts: &[Part]) -> io::Result<Input> {
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not an input folder", dir.display()),
        ));
    }
    parts
        .iter()
        .map(|p| match std::fs::read(dir.join(p.file)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        })
        .collect()
}

/// Writes `input` as a folder of its parts (created if needed).
pub fn save(dir: &Path, parts: &[Part], input: &Input) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (p, bytes) in parts.iter().zip(input) {
        std::fs::write(dir.join(p.file), bytes)?;
    }
    Ok(())
}

/// The input as one byte string (each part as a little-endian u64 length
/// and its bytes): what the worker leaves behind while an input runs.
pub fn to_bundle(input: &Input) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.iter().map(|p| p.len() + 8).sum());
    for part in input {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Reads [`to_bundle`]'s form back (`None` if it is cut short).
pub fn from_bundle(mut bytes: &[u8]) -> Option<Input> {
    let mut input = Vec::new();
    while !bytes.is_empty() {
        let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
        let part = bytes.get(8..8usize.checked_add(len)?)?;
        input.push(part.to_vec());
        bytes = &bytes[8 + len..];
    }
    Some(input)
}

/// A short stable name for an input: FNV-1a of its bundle, in hex.
pub fn hash(input: &Input) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in to_bundle(input) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_round_trip() {
        let input = vec![b"abc".to_vec(), Vec::new(), vec![0; 9]];
        assert_eq!(from_bundle(&to_bundle(&input)).unwrap(), input);
        assert!(from_bundle(&to_bundle(&input)[..5]).is_none());
    }
}

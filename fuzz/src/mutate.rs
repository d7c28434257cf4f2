//! Structure-aware mutations of one file's bytes.
//!
//! Besides generic byte flips, the mutator knows the three shapes ferrite's
//! inputs take: binary headers of fixed-width integers (IDX sizes, the
//! safetensors header length), numbers written as text (JSON fields, loss
//! settings) and gzip streams. Sizes and counts are set to the values that
//! break unchecked arithmetic: 0, −1, 2^31, 2^32, 2^40, 2^63 and their
//! neighbours.

use crate::rng::Rng;
use std::io::{Read, Write};

/// How a file is mutated besides the generic byte operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A binary file with a header of integers.
    Binary,
    /// Text (JSON, loss specs): numbers and tokens are replaced as text.
    Text,
    /// A gzip stream: also mutated inside (decompress, mutate, recompress).
    Gzip,
    /// A safetensors file: its JSON header is also mutated as text, with
    /// the length prefix kept consistent so the change reaches the parser.
    Safetensors,
}

/// Integers that break sizes and offsets.
pub const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    255,
    65_535,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    (1 << 32) + 1,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
    1 << 20,
];

/// The same values (and a few floats) as text.
pub const INTERESTING_TEXT: [&str; 22] = [
    "0",
    "-1",
    "1",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "1099511627776",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e308",
    "1e309",
    "-1e308",
    "1e-320",
    "0.5",
    "-0",
    "NaN",
    "inf",
    "1.5",
];

/// Applies one to `max_ops` random mutations to `data`. `dictionary`
/// holds tokens of the format (JSON keys, dtype names) and `donor` another
/// input of the same file for splicing.
pub fn mutate(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    kind: Kind,
    dictionary: &[&str],
    donor: Option<&[u8]>,
    max_ops: usize,
) {
    let ops = rng.small_len(max_ops);
    for _ in 0..ops {
        if kind == Kind::Gzip && rng.one_in(2) {
            gzip_op(rng, data, dictionary);
        } else if kind == Kind::Safetensors && !rng.one_in(4) {
            header_op(rng, data, dictionary, donor);
        } else {
            one_op(rng, data, kind, dictionary, donor);
        }
    }
}

fn one_op(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    kind: Kind,
    dictionary: &[&str],
    donor: Option<&[u8]>,
) {
    let text_bias = if kind == Kind::Text { 4 } else { 0 };
    match rng.below(12 + text_bias) {
        12 => replace_array(rng, data, dictionary),
        0 => flip_bit(rng, data),
        1 => set_byte(rng, data),
        2 | 3 => set_int(rng, data),
        4 => truncate(rng, data),
        5 => extend(rng, data),
        6 => duplicate_range(rng, data),
        7 => delete_range(rng, data),
        8 => splice(rng, data, donor),
        9 => insert_token(rng, data, dictionary),
        _ => replace_number(rng, data),
    }
}

/// Flips one bit.
fn flip_bit(rng: &mut Rng, data: &mut [u8]) {
    if !data.is_empty() {
        let i = rng.below(data.len());
        data[i] ^= 1 << rng.below(8);
    }
}

/// Sets one byte to a random or boundary value.
fn set_byte(rng: &mut Rng, data: &mut [u8]) {
    if !data.is_empty() {
        let i = rng.below(data.len());
        let random = rng.next_u64() as u8;
        data[i] = *rng.pick(&[0, 1, 0x7f, 0x80, 0xff, random]);
    }
}

/// Overwrites a 1-, 2-, 4- or 8-byte integer, big- or little-endian,
/// mostly at an aligned offset inside the first 64 bytes (the header).
fn set_int(rng: &mut Rng, data: &mut [u8]) {
    let width = *rng.pick(&[1usize, 2, 4, 4, 8, 8]);
    if data.len() < width {
        return;
    }
    let span = data.len() - width + 1;
    let at = if rng.one_in(4) {
        rng.below(span)
    } else {
        (rng.below(span.min(64)) / width) * width
    };
    let mut value = *rng.pick(&INTERESTING);
    if rng.one_in(4) {
        value = value.wrapping_add(rng.below(5) as u64).wrapping_sub(2);
    }
    let bytes = if rng.one_in(2) {
        value.to_be_bytes()[8 - width..].to_vec()
    } else {
        value.to_le_bytes()[..width].to_vec()
    };
    data[at..at + width].copy_from_slice(&bytes);
}

/// Cuts the file at a random point.
fn truncate(rng: &mut Rng, data: &mut Vec<u8>) {
    let at = rng.below(data.len() + 1);
    data.truncate(at);
}

/// Appends random bytes or a copy of the file's tail.
fn extend(rng: &mut Rng, data: &mut Vec<u8>) {
    let n = rng.small_len(256);
    if rng.one_in(2) && !data.is_empty() {
        let start = data.len().saturating_sub(n);
        let tail = data[start..].to_vec();
        data.extend_from_slice(&tail);
    } else {
        data.extend((0..n).map(|_| rng.next_u64() as u8));
    }
}

fn range(rng: &mut Rng, len: usize) -> (usize, usize) {
    let start = rng.below(len);
    let n = rng.small_len(len - start);
    (start, start + n)
}

/// Copies a range of the file to another position.
fn duplicate_range(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let (a, b) = range(rng, data.len());
    let copy = data[a..b].to_vec();
    let at = rng.below(data.len() + 1);
    data.splice(at..at, copy);
}

/// Removes a range of the file.
fn delete_range(rng: &mut Rng, data: &mut Vec<u8>) {
    if !data.is_empty() {
        let (a, b) = range(rng, data.len());
        data.drain(a..b);
    }
}

/// Keeps a prefix of `data` and continues with a suffix of `donor`.
fn splice(rng: &mut Rng, data: &mut Vec<u8>, donor: Option<&[u8]>) {
    if let Some(donor) = donor {
        let cut = rng.below(data.len() + 1);
        let from = rng.below(donor.len() + 1);
        data.truncate(cut);
        data.extend_from_slice(&donor[from..]);
    }
}

/// Inserts or overwrites with a token of the format (or a number).
fn insert_token(rng: &mut Rng, data: &mut Vec<u8>, dictionary: &[&str]) {
    let token = if dictionary.is_empty() || rng.one_in(3) {
        *rng.pick(&INTERESTING_TEXT)
    } else {
        *rng.pick(dictionary)
    };
    let at = rng.below(data.len() + 1);
    if rng.one_in(2) {
        data.splice(at..at, token.bytes());
    } else {
        let end = (at + token.len()).min(data.len());
        data.splice(at..end, token.bytes());
    }
}

/// Replaces a number written as text (a run of digits, with its sign,
/// fraction and exponent) by a boundary value or a neighbour.
fn replace_number(rng: &mut Rng, data: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !is_number_byte(data[i - 1])))
        .collect();
    if starts.is_empty() {
        return;
    }
    // Half the time a field's value (`"key": 12`, also inside a JSON string
    // as `\"key\":12` or `"key":"12"`) rather than an array element.
    let fields: Vec<usize> = starts
        .iter()
        .copied()
        .filter(|&i| {
            let before = data[..i]
                .iter()
                .rev()
                .find(|&&b| !matches!(b, b'"' | b'\\' | b' ' | b'-'));
            before == Some(&b':')
        })
        .collect();
    let pool = if !fields.is_empty() && rng.one_in(2) {
        &fields
    } else {
        &starts
    };
    let mut a = *rng.pick(pool);
    if a > 0 && data[a - 1] == b'-' {
        a -= 1;
    }
    let mut b = a + 1;
    while b < data.len() && is_number_byte(data[b]) {
        b += 1;
    }
    let replacement = match rng.below(4) {
        0 => {
            let old = std::str::from_utf8(&data[a..b]).unwrap_or("0");
            match old.parse::<i128>() {
                Ok(v) => (v + rng.below(3) as i128 - 1).to_string(),
                Err(_) => INTERESTING_TEXT[0].to_string(),
            }
        }
        1 => (rng.next_u64() >> rng.below(64)).to_string(),
        _ => rng.pick(&INTERESTING_TEXT).to_string(),
    };
    data.splice(a..b, replacement.into_bytes());
}

/// Arrays that break shapes, offsets and per-class lists.
pub const INTERESTING_ARRAYS: [&str; 9] = [
    "[]",
    "[0]",
    "[0,0]",
    "[1,0]",
    "[0,4294967296,4294967296]",
    "[4294967296,4294967296]",
    "[0,18446744073709551615,2]",
    "[18446744073709551615]",
    "[9223372036854775807,9223372036854775807]",
];

/// Replaces a whole JSON array without nested arrays (a shape, data
/// offsets, a list of counts) by a boundary array or a `[`-token of the
/// dictionary.
fn replace_array(rng: &mut Rng, data: &mut Vec<u8>, dictionary: &[&str]) {
    let opens: Vec<usize> = (0..data.len()).filter(|&i| data[i] == b'[').collect();
    if opens.is_empty() {
        return;
    }
    let a = *rng.pick(&opens);
    let Some(len) = data[a + 1..].iter().position(|&b| b == b']' || b == b'[') else {
        return;
    };
    let b = a + 1 + len;
    if data[b] != b']' {
        return;
    }
    let arrays: Vec<&str> = dictionary
        .iter()
        .copied()
        .filter(|t| t.starts_with('['))
        .collect();
    let token = if arrays.is_empty() || rng.one_in(2) {
        *rng.pick(&INTERESTING_ARRAYS)
    } else {
        *rng.pick(&arrays)
    };
    data.splice(a..=b, token.bytes());
}

fn is_number_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')
}

/// Gzip-aware operations: mutate the decompressed payload and recompress,
/// append a second member, or append garbage after the stream.
fn gzip_op(rng: &mut Rng, data: &mut Vec<u8>, dictionary: &[&str]) {
    let payload = gunzip_first(data);
    match (rng.below(4), payload) {
        (0 | 1, Some(mut inner)) => {
            one_op(rng, &mut inner, Kind::Binary, dictionary, None);
            *data = gzip(&inner);
        }
        (2, Some(inner)) => {
            // A second member: the payload split in two, or an extra copy.
            let cut = rng.below(inner.len() + 1);
            if rng.one_in(2) {
                let mut both = gzip(&inner[..cut]);
                both.extend(gzip(&inner[cut..]));
                *data = both;
            } else {
                let extra = gzip(&inner[cut..]);
                data.extend(extra);
            }
        }
        _ => {
            let n = rng.small_len(32);
            data.extend((0..n).map(|_| rng.next_u64() as u8));
        }
    }
}

/// Mutates the JSON header of a safetensors file (8-byte little-endian
/// length, then the header) as text, and mostly rewrites the length to
/// match.
fn header_op(rng: &mut Rng, data: &mut Vec<u8>, dictionary: &[&str], donor: Option<&[u8]>) {
    let declared = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let end = match declared.and_then(|n| usize::try_from(n).ok()?.checked_add(8)) {
        Some(end) if end <= data.len() => end,
        _ => return one_op(rng, data, Kind::Binary, dictionary, donor),
    };
    let mut header = data[8..end].to_vec();
    one_op(rng, &mut header, Kind::Text, dictionary, None);
    let length = if rng.one_in(8) {
        declared.unwrap_or(0)
    } else {
        header.len() as u64
    };
    let mut out = length.to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data[end..]);
    *data = out;
}

/// Compresses `bytes` as one gzip member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The payload of the first gzip member of `data`, if it decodes.
pub fn gunzip_first(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::bufread::GzDecoder::new(data)
        .take(1 << 24)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_deterministic_and_in_bounds() {
        let seed = b"{\"shape\":[2,3],\"n_bins\":10}".to_vec();
        let run = |s| {
            let mut rng = Rng::new(s);
            let mut out = Vec::new();
            for _ in 0..2000 {
                let mut d = seed.clone();
                mutate(&mut rng, &mut d, Kind::Text, &["shape"], Some(&seed), 8);
                out.push(d);
            }
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn numbers_are_replaced_as_text() {
        let mut rng = Rng::new(1);
        let mut seen_big = false;
        for _ in 0..200 {
            let mut d = b"[12,34]".to_vec();
            replace_number(&mut rng, &mut d);
            seen_big |= d.windows(10).any(|w| w == b"4294967296");
        }
        assert!(seen_big);
    }

    #[test]
    fn gzip_payload_round_trips() {
        let z = gzip(b"hello");
        assert_eq!(gunzip_first(&z).unwrap(), b"hello");
    }
}

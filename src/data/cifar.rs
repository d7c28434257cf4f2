//! CIFAR-10 and CIFAR-100 in their binary ("`-bin`") distribution.
//!
//! Each file is a sequence of fixed-size records: label byte(s) followed by
//! a 32×32 RGB image of 3072 bytes, stored as the 1024 red, then 1024 green,
//! then 1024 blue values, each plane row-major: already the CHW layout of
//! [`ImageDataset`].
//!
//! - CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` …
//!   `data_batch_5.bin` (training, 10,000 records each) and `test_batch.bin`;
//!   one label byte in `0..10`.
//! - CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin`; a coarse
//!   label byte in `0..20` (superclass), then a fine label byte in `0..100`.
//!
//! A file whose size is not a whole number of records, an empty file or a
//! label byte out of range is an [`Error::CorruptFile`] naming the file (and
//! the record); a missing file is an [`Error::Io`] naming it.

use super::dataset::{ImageDataset, Labels};
use super::read::{alloc_error, read_file};
use crate::error::{Error, Result};
use std::path::Path;

/// Side length of a CIFAR image.
pub const CIFAR_SIDE: usize = 32;
/// Bytes of one CIFAR image: 3 channels of 32×32.
pub const CIFAR_IMAGE_BYTES: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;

/// Which CIFAR-100 label a dataset keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Label {
    /// The 100 fine classes (the usual CIFAR-100 task).
    Fine,
    /// The 20 coarse superclasses.
    Coarse,
}

/// The record layout of one CIFAR variant: the range of each label byte
/// (in file order) and which one is kept.
struct RecordFormat {
    /// `(name, number of classes)` of each label byte.
    label_bytes: &'static [(&'static str, u32)],
    /// Index into `label_bytes` of the label that is kept.
    keep: usize,
}

impl RecordFormat {
    fn record_bytes(&self) -> usize {
        self.label_bytes.len() + CIFAR_IMAGE_BYTES
    }

    fn num_classes(&self) -> usize {
        self.label_bytes[self.keep].1 as usize
    }
}

const CIFAR10: RecordFormat = RecordFormat {
    label_bytes: &[("label", 10)],
    keep: 0,
};

const CIFAR100_LABELS: &[(&str, u32)] = &[("coarse label", 20), ("fine label", 100)];

fn cifar100_format(label: Cifar100Label) -> RecordFormat {
    RecordFormat {
        label_bytes: CIFAR100_LABELS,
        keep: match label {
            Cifar100Label::Coarse => 0,
            Cifar100Label::Fine => 1,
        },
    }
}

/// Appends the records of `path` to `images` and `labels`, checking the
/// file size and every label byte.
fn read_records(
    path: &Path,
    format: &RecordFormat,
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let shown = path.display().to_string();
    let bytes = read_file(path)?;
    let corrupt = |msg: String| Error::CorruptFile {
        path: shown.clone(),
        msg,
    };
    let record = format.record_bytes();
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(corrupt(format!(
            "{} bytes is not a positive whole number of {record}-byte records \
             ({} label byte(s) + {CIFAR_IMAGE_BYTES} pixels); truncated or padded file?",
            bytes.len(),
            format.label_bytes.len()
        )));
    }
    let records = bytes.len() / record;
    let oom = |n| Error::io(path, "reading", alloc_error(n));
    images
        .try_reserve(records * CIFAR_IMAGE_BYTES)
        .map_err(|_| oom(records * CIFAR_IMAGE_BYTES))?;
    labels.try_reserve(records).map_err(|_| oom(records * 4))?;
    for (r, rec) in bytes.chunks_exact(record).enumerate() {
        for (&(name, classes), &value) in format.label_bytes.iter().zip(rec) {
            if value as u32 >= classes {
                return Err(corrupt(format!(
                    "record {r}: {name} {value} is outside 0..{classes}"
                )));
            }
        }
        labels.push(rec[format.keep] as u32);
        images.extend_from_slice(&rec[format.label_bytes.len()..]);
    }
    Ok(())
}

/// Reads the files `paths` (in order) into one dataset named `name`.
fn read_files(paths: &[&Path], format: &RecordFormat, name: String) -> Result<ImageDataset> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        read_records(path, format, &mut images, &mut labels)?;
    }
    let dataset = ImageDataset {
        images,
        channels: 3,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
        num_classes: format.num_classes(),
        labels: Labels::Single(labels),
        name,
    };
    dataset.validate()?;
    Ok(dataset)
}

/// Reads one CIFAR-10 binary file (a `data_batch_*.bin` or
/// `test_batch.bin`) as a 10-class dataset named after the file.
pub fn read_cifar10_file(path: impl AsRef<Path>) -> Result<ImageDataset> {
    let path = path.as_ref();
    read_files(&[path], &CIFAR10, file_stem(path))
}

/// Reads one CIFAR-100 binary file (`train.bin` or `test.bin`), keeping
/// the fine (100 classes) or coarse (20 classes) label.
pub fn read_cifar100_file(path: impl AsRef<Path>, label: Cifar100Label) -> Result<ImageDataset> {
    let path = path.as_ref();
    read_files(&[path], &cifar100_format(label), file_stem(path))
}

/// Loads CIFAR-10 from `dir` (the `cifar-10-batches-bin` folder): the five
/// training batches concatenated in order as `"cifar10-train"` and the
/// test batch as `"cifar10-test"`.
pub fn load_cifar10(dir: impl AsRef<Path>) -> Result<(ImageDataset, ImageDataset)> {
    let dir = dir.as_ref();
    let train: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let train_refs: Vec<&Path> = train.iter().map(|p| p.as_path()).collect();
    let test = dir.join("test_batch.bin");
    Ok((
        read_files(&train_refs, &CIFAR10, "cifar10-train".into())?,
        read_files(&[&test], &CIFAR10, "cifar10-test".into())?,
    ))
}

/// Loads CIFAR-100 from `dir` (the `cifar-100-binary` folder):
/// `train.bin` as `"cifar100-train"` and `test.bin` as `"cifar100-test"`,
/// keeping the chosen label.
pub fn load_cifar100(
    dir: impl AsRef<Path>,
    label: Cifar100Label,
) -> Result<(ImageDataset, ImageDataset)> {
    let dir = dir.as_ref();
    let format = cifar100_format(label);
    Ok((
        read_files(&[&dir.join("train.bin")], &format, "cifar100-train".into())?,
        read_files(&[&dir.join("test.bin")], &format, "cifar100-test".into())?,
    ))
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cifar".into())
}

//! The CIFAR binary reader against files written here byte by byte, and damaged files.

use ferrite::data::cifar::{
    load_cifar10, load_cifar100, read_cifar100_file, read_cifar10_file, Cifar100Label,
};
use ferrite::data::Labels;
use ferrite::Error;
use std::path::{Path, PathBuf};

/// A fresh temporary folder for this test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ------------------------------------------------------------------ CIFAR

/// `n` CIFAR records: label byte(s) from `labels(r)`, then pixel `j` of
/// record `r` = `(r * 31 + j * 7) % 256`.
fn cifar_records(n: usize, labels: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..n {
        out.extend(labels(r));
        out.extend((0..3072).map(|j| ((r * 31 + j * 7) % 256) as u8));
    }
    out
}

fn pixel(r: usize, j: usize) -> u8 {
    ((r * 31 + j * 7) % 256) as u8
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn cifar10_files_are_read_record_by_record() {
    let dir = temp_dir("cifar10");
    for b in 1..=5 {
        let bytes = cifar_records(3, |r| vec![((b * 3 + r) % 10) as u8]);
        write(&dir, &format!("data_batch_{b}.bin"), &bytes);
    }
    write(
        &dir,
        "test_batch.bin",
        &cifar_records(4, |r| vec![9 - r as u8]),
    );
    let one = read_cifar10_file(dir.join("data_batch_2.bin")).unwrap();
    assert_eq!(
        (one.len(), one.channels, one.height, one.width),
        (3, 3, 32, 32)
    );
    assert_eq!((one.num_classes, one.name.as_str()), (10, "data_batch_2"));
    assert_eq!(one.labels, Labels::Single(vec![6, 7, 8]));
    // Pixels keep the file's plane order: red plane, then green, then blue.
    let image = one.image(1).unwrap();
    assert_eq!(image.len(), 3072);
    assert!(image.iter().enumerate().all(|(j, &p)| p == pixel(1, j)));

    let (train, test) = load_cifar10(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (15, 4));
    let expected: Vec<u32> = (1..=5)
        .flat_map(|b| (0..3).map(move |r| ((b * 3 + r) % 10) as u32))
        .collect();
    assert_eq!(train.labels, Labels::Single(expected));
    assert_eq!(test.labels, Labels::Single(vec![9, 8, 7, 6]));
    assert_eq!(
        train.image(7).unwrap(),
        one.image(1).unwrap(),
        "batch 3 follows batch 2"
    );
    assert_eq!(train.name, "cifar10-train");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cifar100_keeps_the_chosen_label() {
    let dir = temp_dir("cifar100");
    let labels = |r: usize| vec![(r % 20) as u8, (r * 13 % 100) as u8];
    write(&dir, "train.bin", &cifar_records(25, labels));
    write(&dir, "test.bin", &cifar_records(2, labels));
    let fine = read_cifar100_file(dir.join("train.bin"), Cifar100Label::Fine).unwrap();
    let coarse = read_cifar100_file(dir.join("train.bin"), Cifar100Label::Coarse).unwrap();
    assert_eq!((fine.num_classes, coarse.num_classes), (100, 20));
    assert_eq!(
        fine.labels,
        Labels::Single((0..25).map(|r| (r * 13 % 100) as u32).collect())
    );
    assert_eq!(
        coarse.labels,
        Labels::Single((0..25).map(|r| (r % 20) as u32).collect())
    );
    assert_eq!(fine.images, coarse.images);
    assert!(fine
        .image(24)
        .unwrap()
        .iter()
        .enumerate()
        .all(|(j, &p)| p == pixel(24, j)));
    let (train, test) = load_cifar100(&dir, Cifar100Label::Fine).unwrap();
    assert_eq!(
        (train.len(), test.len(), test.name.as_str()),
        (25, 2, "cifar100-test")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The error of reading `bytes` as a file named `name`, which must name it.
fn cifar_error(dir: &Path, name: &str, bytes: &[u8], cifar100: bool) -> String {
    let path = write(dir, name, bytes);
    let result = if cifar100 {
        read_cifar100_file(&path, Cifar100Label::Fine)
    } else {
        read_cifar10_file(&path)
    };
    let err = result.unwrap_err();
    assert!(matches!(err, Error::CorruptFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(name), "{text}");
    text
}

#[test]
fn damaged_cifar_files_are_clear_errors() {
    let dir = temp_dir("cifar-bad");
    let good = cifar_records(3, |r| vec![r as u8 + 4]);
    for cut in [0, 1, 3072, 3073 + 100, good.len() - 1] {
        let err = cifar_error(&dir, "cut.bin", &good[..cut], false);
        assert!(err.contains("3073-byte records"), "{err}");
    }
    let mut padded = good.clone();
    padded.push(0);
    cifar_error(&dir, "padded.bin", &padded, false);
    let mut bad_label = good.clone();
    bad_label[2 * 3073] = 10;
    let err = cifar_error(&dir, "label.bin", &bad_label, false);
    assert!(err.contains("record 2: label 10 is outside 0..10"), "{err}");
    // CIFAR-100: both label bytes are checked, whichever is kept.
    let good100 = cifar_records(2, |_| vec![19, 99]);
    let mut coarse = good100.clone();
    coarse[3074] = 20;
    let err = cifar_error(&dir, "coarse.bin", &coarse, true);
    assert!(err.contains("record 1: coarse label 20"), "{err}");
    let mut fine = good100.clone();
    fine[1] = 100;
    assert!(cifar_error(&dir, "fine.bin", &fine, true).contains("fine label 100"));
    // A CIFAR-10 file read as CIFAR-100 has the wrong record size.
    cifar_error(&dir, "cifar10-as-100.bin", &good, true);

    // Byte flips: a label flip is caught or changes only that label; a pixel
    // flip changes only that pixel (the format has no checksum).
    let original = read_cifar10_file(write(&dir, "good.bin", &good)).unwrap();
    for pos in (0..good.len()).step_by(97).chain([0, 3073, 6146]) {
        let mut flipped = good.clone();
        flipped[pos] ^= 0x5A;
        let path = write(&dir, "flipped.bin", &flipped);
        match read_cifar10_file(&path) {
            Ok(ds) => {
                assert_ne!(pos % 3073, 0, "a flipped label byte is >= 10");
                let (r, j) = (pos / 3073, pos % 3073 - 1);
                let mut expected = original.images.clone();
                expected[r * 3072 + j] ^= 0x5A;
                assert_eq!(ds.images, expected);
                assert_eq!(ds.labels, original.labels);
            }
            Err(e) => {
                assert_eq!(pos % 3073, 0, "only label flips fail: {e}");
                assert!(e.to_string().contains("flipped.bin"), "{e}");
            }
        }
    }
    // Missing files are I/O errors naming the file.
    std::fs::remove_file(dir.join("good.bin")).unwrap();
    let err = load_cifar10(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
    let err = load_cifar100(&dir, Cifar100Label::Coarse)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.bin"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

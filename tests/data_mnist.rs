//! The IDX reader and MNIST loader on the real files in `data/mnist`, and
//! on damaged copies: every truncation or byte flip is an error naming the
//! file, never a panic.

mod common;

use ferrite::data::idx::{parse_idx, read_idx};
use ferrite::data::{loader::epoch_batches, mnist};
use ferrite::Error;
use std::io::Write;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

#[test]
fn mnist_matches_its_known_facts() {
    let (train, test) = mnist::load(DIR).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.rows, train.cols), (28, 28));
    assert_eq!(&train.labels[..6], &[5, 0, 4, 1, 9, 2]);
    let count = |labels: &[u8]| {
        (0..10)
            .map(|d| labels.iter().filter(|&&l| l == d).count())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        count(&train.labels),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        count(&test.labels),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let (mean, std) = common::pixel_mean_std(&train.images);
    assert!((mean - 0.1307).abs() < 5e-5, "mean {mean}");
    assert!((std - 0.3081).abs() < 5e-5, "std {std}");
    // Batches are standardised tensors with i64 labels.
    let (x, y) = train.batch(&[0, 1], 0.1307, 0.3081).unwrap();
    assert_eq!((x.shape(), y.shape()), (&[2, 1, 28, 28][..], &[2, 1][..]));
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![5, 0]);
    assert!(train.batch(&[60_000], 0.0, 1.0).is_err());
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-idx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path
}

#[test]
fn damaged_files_are_clear_errors() {
    // A small valid IDX file: 3 images of 2x2.
    let mut good = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
    good.extend(0..12u8);
    let parsed = parse_idx(&good).unwrap();
    assert_eq!(parsed.shape, vec![3, 2, 2]);
    assert_eq!(parsed.data, (0..12).collect::<Vec<u8>>());
    for cut in 0..good.len() {
        let err = parse_idx(&good[..cut]).unwrap_err();
        assert!(!err.is_empty());
    }
    let mut padded = good.clone();
    padded.push(0);
    assert!(parse_idx(&padded)
        .unwrap_err()
        .contains("truncated or padded"));
    let mut wrong_type = good.clone();
    wrong_type[2] = 0x0D;
    assert!(parse_idx(&wrong_type)
        .unwrap_err()
        .contains("unsupported element type"));
    let mut huge = good.clone();
    huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse_idx(&huge).is_err());
    // Every single-byte flip either still parses consistently or errors.
    for i in 0..good.len() {
        let mut flipped = good.clone();
        flipped[i] ^= 0xA5;
        if let Ok(a) = parse_idx(&flipped) {
            assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
        }
    }
    // Through the file reader: the error names the file.
    let path = temp_file("bad-images-idx3-ubyte", &good[..10]);
    match read_idx(&path) {
        Err(Error::CorruptFile { path: p, msg }) => {
            assert!(p.contains("bad-images-idx3-ubyte"), "{p}");
            assert!(msg.contains("header"), "{msg}");
        }
        other => panic!("expected CorruptFile, got {other:?}"),
    }
    let real_gz = std::fs::read(format!("{DIR}/t10k-labels-idx1-ubyte.gz")).unwrap();
    for cut in [10, real_gz.len() / 2, real_gz.len() - 3] {
        let path = temp_file("cut-labels-idx1-ubyte.gz", &real_gz[..cut]);
        let err = read_idx(&path).unwrap_err().to_string();
        assert!(err.contains("cut-labels-idx1-ubyte.gz"), "{err}");
    }
    let missing = read_idx("/nonexistent/train-images-idx3-ubyte.gz")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("/nonexistent/train-images-idx3-ubyte.gz"),
        "{missing}"
    );
    assert!(mnist::load("/nonexistent").is_err());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn epoch_batches_are_a_seeded_permutation() {
    let a = epoch_batches(10, 4, 7, 0);
    assert_eq!(a.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
    let mut all: Vec<usize> = a.concat();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    assert_eq!(
        a,
        epoch_batches(10, 4, 7, 0),
        "same seed and epoch, same order"
    );
    assert_ne!(a, epoch_batches(10, 4, 7, 1), "epochs differ");
    assert_ne!(a, epoch_batches(10, 4, 8, 0), "seeds differ");
}

/// A valid four-file MNIST-like folder in `dir`: 3 train and 2 test images
/// of 2×2, gzipped when `gz`. Returns the file paths.
fn write_mini_mnist(dir: &std::path::Path, gz: bool) -> Vec<std::path::PathBuf> {
    let idx = |dims: &[u32], data: &[u8]| {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    };
    let files = [
        ("train-images-idx3-ubyte", idx(&[3, 2, 2], &[7; 12])),
        ("train-labels-idx1-ubyte", idx(&[3], &[1, 2, 3])),
        ("t10k-images-idx3-ubyte", idx(&[2, 2, 2], &[9; 8])),
        ("t10k-labels-idx1-ubyte", idx(&[2], &[4, 5])),
    ];
    files
        .iter()
        .map(|(name, raw)| {
            let (path, bytes) = if gz {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(raw).unwrap();
                (dir.join(format!("{name}.gz")), enc.finish().unwrap())
            } else {
                (dir.join(name), raw.clone())
            };
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

#[test]
fn every_damaged_mnist_file_is_an_error_naming_it() {
    for gz in [false, true] {
        let dir =
            std::env::temp_dir().join(format!("ferrite-mini-mnist-{gz}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let paths = write_mini_mnist(&dir, gz);
        let (train, test) = mnist::load(&dir).unwrap();
        assert_eq!(
            (train.labels.clone(), test.labels.clone()),
            (vec![1, 2, 3], vec![4, 5])
        );
        for path in &paths {
            let good = std::fs::read(path).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            let check = |bytes: &[u8], what: &str| {
                std::fs::write(path, bytes).unwrap();
                match mnist::load(&dir) {
                    // Bytes outside the data and the checked header fields
                    // (e.g. a gzip timestamp) or a still-valid label or
                    // pixel: the folder still loads consistently.
                    Ok((tr, te)) => {
                        assert_eq!(tr.images.len(), tr.len() * tr.rows * tr.cols, "{what}");
                        assert_eq!(te.images.len(), te.len() * te.rows * te.cols, "{what}");
                    }
                    Err(e) => {
                        let text = e.to_string();
                        assert!(text.contains(name), "{name} {what}: {text}");
                    }
                }
            };
            for cut in 0..good.len() {
                std::fs::write(path, &good[..cut]).unwrap();
                let err = mnist::load(&dir).unwrap_err().to_string();
                assert!(err.contains(name), "{name} cut at {cut}: {err}");
            }
            for i in 0..good.len() {
                for flip in [0x01, 0x80, 0xFF] {
                    let mut bad = good.clone();
                    bad[i] ^= flip;
                    check(&bad, &format!("flip {flip:#x} at {i}"));
                }
            }
            std::fs::write(path, &good).unwrap();
        }
        // A label out of 0..9 and inconsistent counts are caught.
        let labels = &paths[1];
        write_mini_mnist(&dir, gz);
        let mut raw = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 10, 3];
        if gz {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&raw).unwrap();
            raw = enc.finish().unwrap();
        }
        std::fs::write(labels, raw).unwrap();
        let err = mnist::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("train-labels-idx1-ubyte") && err.contains("label 10"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

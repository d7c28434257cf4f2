//! The in-memory dataset, MultiMNIST-LT, the CIFAR binary reader and
//! long-tail subsampling, checked against independently known facts: the
//! MNIST files themselves, the published imbalanced-CIFAR class sizes, a
//! Python reference of the class-size formula (`fixtures/gen_longtail.py`)
//! and CIFAR files written here byte by byte.

mod common;

use ferrite::data::cifar::{
    load_cifar10, load_cifar100, read_cifar100_file, read_cifar10_file, Cifar100Label,
};
use ferrite::data::longtail::{class_quotas, long_tail_indices, long_tail_subset};
use ferrite::data::mnist::{self, ImageSplit};
use ferrite::data::multimnist::{
    digit_probabilities, generate_balanced_test, generate_test, generate_train, MultiMnistConfig,
};
use ferrite::data::{ImageDataset, Labels};
use ferrite::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
const FASHION: &str = "/work/shared/data/fashion-mnist";

/// MNIST, loaded once for all the tests of this file.
fn mnist_splits() -> &'static (ImageSplit, ImageSplit) {
    static SPLITS: OnceLock<(ImageSplit, ImageSplit)> = OnceLock::new();
    SPLITS.get_or_init(|| mnist::load(MNIST).unwrap())
}

/// A fresh temporary folder for this test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------- dataset

#[test]
fn mnist_converts_to_a_single_label_dataset() {
    let (train, test) = mnist::load_dataset(MNIST, "mnist").unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.channels, train.height, train.width), (1, 28, 28));
    assert_eq!(
        (train.num_classes, train.name.as_str()),
        (10, "mnist-train")
    );
    assert!(!train.is_multi_label() && !train.is_empty());
    // The known MNIST class sizes.
    assert_eq!(
        train.positives_per_class(),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        test.positives_per_class(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // First training labels 5 0 4: one-hot targets.
    let mut row = [9.0f32; 10];
    train.target_row(0, &mut row).unwrap();
    assert_eq!(row, [0., 0., 0., 0., 0., 1., 0., 0., 0., 0.]);
    train.target_row(2, &mut row).unwrap();
    assert_eq!(row, [0., 0., 0., 0., 1., 0., 0., 0., 0., 0.]);
    assert!(train.target_row(60_000, &mut row).is_err());
    assert!(train.target_row(0, &mut [0.0; 9]).is_err());
    // A subset copies images and labels in the order asked.
    let sub = train.subset(&[2, 0, 2]).unwrap();
    assert_eq!(sub.labels, Labels::Single(vec![4, 5, 4]));
    assert_eq!(sub.image(0).unwrap(), train.image(2).unwrap());
    assert_eq!(sub.image(1).unwrap(), train.image(0).unwrap());
    assert_eq!(sub.len(), 3);
    assert!(train.subset(&[0, 60_000]).is_err());
}

fn tiny_multi() -> ImageDataset {
    ImageDataset {
        images: (0..3 * 2 * 2 * 2).map(|v| v as u8).collect(),
        channels: 2,
        height: 2,
        width: 2,
        num_classes: 3,
        labels: Labels::Multi {
            num_classes: 3,
            bits: vec![1, 0, 1, 0, 0, 0, 1, 1, 1],
        },
        name: "tiny".into(),
    }
}

#[test]
fn multi_hot_rows_and_validation() {
    let ds = tiny_multi();
    ds.validate().unwrap();
    assert!(ds.is_multi_label());
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.positives_per_class(), vec![2, 1, 2]);
    let mut row = [0.5f32; 3];
    ds.target_row(1, &mut row).unwrap();
    assert_eq!(row, [0.0, 0.0, 0.0]);
    ds.target_row(2, &mut row).unwrap();
    assert_eq!(row, [1.0, 1.0, 1.0]);
    let sub = ds.subset(&[2, 0]).unwrap();
    assert_eq!(
        sub.labels,
        Labels::Multi {
            num_classes: 3,
            bits: vec![1, 1, 1, 1, 0, 1]
        }
    );
    assert_eq!(sub.image(0).unwrap(), &[16, 17, 18, 19, 20, 21, 22, 23]);

    let broken = |f: &dyn Fn(&mut ImageDataset)| {
        let mut d = tiny_multi();
        f(&mut d);
        d.validate().unwrap_err().to_string()
    };
    assert!(broken(&|d| {
        d.images.pop();
    })
    .contains("image bytes"));
    assert!(broken(&|d| d.height = 0).contains("empty image shape"));
    assert!(broken(&|d| d.num_classes = 0).contains("0 classes"));
    assert!(broken(&|d| d.num_classes = 4).contains("3 classes"));
    let bit = broken(&|d| {
        if let Labels::Multi { bits, .. } = &mut d.labels {
            bits[4] = 2;
        }
    });
    assert!(bit.contains("label bit 1 of image 1 is 2"), "{bit}");
    let single = broken(&|d| d.labels = Labels::Single(vec![0, 3, 1]));
    assert!(single.contains("label 3 of image 1"), "{single}");
}

#[test]
fn fashion_mnist_matches_its_known_facts() {
    if !Path::new(FASHION)
        .join("train-labels-idx1-ubyte.gz")
        .exists()
    {
        eprintln!("skipped: Fashion-MNIST not found at {FASHION}");
        return;
    }
    let (train, test) = mnist::load_dataset(FASHION, "fashion-mnist").unwrap();
    assert_eq!(train.positives_per_class(), vec![6000; 10]);
    assert_eq!(test.positives_per_class(), vec![1000; 10]);
    let (mean, std) = common::pixel_mean_std(&train.images);
    assert!((mean - 0.2860).abs() < 5e-5, "mean {mean}");
    assert!((std - 0.3530).abs() < 5e-5, "std {std}");
    // A long-tailed Fashion-MNIST (balanced source: n_max = 6000).
    let lt = long_tail_subset(&train, 100.0, None, 3).unwrap();
    assert_eq!(
        lt.positives_per_class(),
        class_quotas(10, 100.0, 6000).unwrap()
    );
    assert_eq!(lt.positives_per_class()[9], 60);
}

// ---------------------------------------------------------- MultiMNIST-LT

fn small_config(seed: u64) -> MultiMnistConfig {
    MultiMnistConfig {
        train_size: 3000,
        test_size: 1500,
        seed,
        ..MultiMnistConfig::default()
    }
}

/// Each distinct 28×28 picture of a split and the labels it carries there.
fn picture_labels(split: &ImageSplit) -> HashMap<&[u8], Vec<u8>> {
    let mut map: HashMap<&[u8], Vec<u8>> = HashMap::new();
    for (picture, &label) in split.images.chunks_exact(28 * 28).zip(&split.labels) {
        map.entry(picture).or_default().push(label);
    }
    map
}

/// Decomposes a generated dataset into its cells: for each image, the digit
/// in each occupied cell, found by looking the cell's pixels up among the
/// source pictures. Panics when a cell is neither black nor a source
/// picture of a single class, or when the label differs from the digits.
fn placed_digits(ds: &ImageDataset, source: &HashMap<&[u8], Vec<u8>>) -> Vec<Vec<u8>> {
    assert_eq!((ds.channels, ds.height, ds.width), (1, 56, 56));
    let Labels::Multi { num_classes, bits } = &ds.labels else {
        panic!("MultiMNIST labels must be multi-hot");
    };
    assert_eq!(*num_classes, 10);
    (0..ds.len())
        .map(|i| {
            let image = ds.image(i).unwrap();
            let mut digits = Vec::new();
            for cell in 0..4 {
                let (top, left) = ((cell / 2) * 28, (cell % 2) * 28);
                let pixels: Vec<u8> = (0..28)
                    .flat_map(|r| image[(top + r) * 56 + left..(top + r) * 56 + left + 28].to_vec())
                    .collect();
                if pixels.iter().all(|&p| p == 0) {
                    continue;
                }
                let labels = source
                    .get(&pixels[..])
                    .unwrap_or_else(|| panic!("image {i} cell {cell} is not a source picture"));
                assert!(
                    labels.iter().all(|&l| l == labels[0]),
                    "ambiguous picture {labels:?}"
                );
                digits.push(labels[0]);
            }
            let mut expected = [0u8; 10];
            for &d in &digits {
                expected[d as usize] = 1;
            }
            assert_eq!(&bits[i * 10..(i + 1) * 10], &expected, "image {i}");
            digits
        })
        .collect()
}

/// Asserts that `counts` follow `probabilities`: every class within 4.5
/// binomial standard deviations of its expectation.
fn assert_follows(counts: &[usize], probabilities: &[f64], what: &str) {
    let total: usize = counts.iter().sum();
    for (c, (&got, &p)) in counts.iter().zip(probabilities).enumerate() {
        let expected = total as f64 * p;
        let sd = (total as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (got as f64 - expected).abs() <= 4.5 * sd,
            "{what}: class {c}: {got} vs expected {expected:.1} ± {sd:.1} (counts {counts:?})"
        );
    }
}

#[test]
fn multimnist_cells_hold_source_digits_with_the_long_tail() {
    let (train_split, _) = mnist_splits();
    let cfg = small_config(5);
    let train = generate_train(&cfg, train_split).unwrap();
    assert_eq!(train.len(), 3000);
    assert_eq!(train.name, "multimnist-lt-train");
    let digits = placed_digits(&train, &picture_labels(train_split));

    // Digits per image: uniform on 1..=4.
    let mut per_image = [0usize; 5];
    for d in &digits {
        per_image[d.len()] += 1;
    }
    assert_eq!(per_image[0], 0, "every image holds a digit");
    assert_follows(&per_image[1..], &[0.25; 4], "digits per image");

    // Classes: P(c) ∝ 100^(-c/9), against the Python reference values.
    let fixture = common::fixture("longtail.json");
    let reference = fixture["digit_probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["imbalance_factor"].as_f64() == Some(100.0))
        .unwrap();
    let p100 = common::values(&serde_json::json!({"data": reference["p"]}));
    common::assert_close(
        "P(c), IF 100",
        &digit_probabilities(100.0),
        &p100,
        1e-15,
        1e-12,
    );
    let mut per_class = [0usize; 10];
    for &d in digits.iter().flatten() {
        per_class[d as usize] += 1;
    }
    assert_follows(&per_class, &p100, "digit classes");
    assert!(per_class[0] > 30 * per_class[9].max(1), "{per_class:?}");
    assert!(
        per_class[9] > 0,
        "the rarest digit still occurs: {per_class:?}"
    );
    // The multi-hot labels count images, not digits.
    let positives = train.positives_per_class();
    for c in 0..10 {
        assert!(positives[c] <= per_class[c]);
    }
}

#[test]
fn multimnist_test_sets_draw_from_the_test_split() {
    let (train_split, test_split) = mnist_splits();
    let cfg = small_config(5);
    let test_pictures = picture_labels(test_split);
    let test = generate_test(&cfg, test_split).unwrap();
    assert_eq!(test.len(), 1500);
    let digits = placed_digits(&test, &test_pictures);
    let mut per_class = [0usize; 10];
    for &d in digits.iter().flatten() {
        per_class[d as usize] += 1;
    }
    assert_follows(&per_class, &digit_probabilities(100.0), "test classes");
    // None of its pictures is a training picture.
    let train_pictures = picture_labels(train_split);
    let image = test.image(0).unwrap();
    let cells_in_train = (0..test.len())
        .flat_map(|i| {
            let image = test.image(i).unwrap();
            (0..4).map(move |cell| {
                let (top, left) = ((cell / 2) * 28, (cell % 2) * 28);
                (0..28)
                    .flat_map(|r| image[(top + r) * 56 + left..(top + r) * 56 + left + 28].to_vec())
                    .collect::<Vec<u8>>()
            })
        })
        .filter(|cell| train_pictures.contains_key(&cell[..]))
        .count();
    assert_eq!(cells_in_train, 0);
    assert!(image.iter().any(|&p| p > 0));

    // The balanced test set: every digit equally likely, own stream.
    let balanced = generate_balanced_test(&cfg, test_split).unwrap();
    let digits = placed_digits(&balanced, &test_pictures);
    let mut per_class = [0usize; 10];
    for &d in digits.iter().flatten() {
        per_class[d as usize] += 1;
    }
    assert_follows(&per_class, &[0.1; 10], "balanced test classes");
    assert_ne!(balanced.images, test.images);
}

#[test]
fn multimnist_is_deterministic_for_a_seed() {
    let (train_split, _) = mnist_splits();
    let cfg = MultiMnistConfig {
        train_size: 500,
        ..small_config(42)
    };
    let a = generate_train(&cfg, train_split).unwrap();
    // Same bytes whatever the number of threads.
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = one_thread.install(|| generate_train(&cfg, train_split).unwrap());
    assert_eq!(a, b);
    let other = generate_train(
        &MultiMnistConfig {
            seed: 43,
            ..cfg.clone()
        },
        train_split,
    )
    .unwrap();
    assert_ne!(a.images, other.images);
    assert_ne!(a.labels, other.labels);
    // A prefix of a larger set is the smaller set: image i depends only on
    // (seed, split, i).
    let larger = generate_train(
        &MultiMnistConfig {
            train_size: 600,
            ..cfg.clone()
        },
        train_split,
    )
    .unwrap();
    assert_eq!(
        larger.subset(&(0..500).collect::<Vec<_>>()).unwrap().images,
        a.images
    );
}

#[test]
fn multimnist_full_size_test_split() {
    // The reference test split at full size (10,000 images).
    let (_, test_split) = mnist_splits();
    let cfg = MultiMnistConfig::default();
    let test = generate_test(&cfg, test_split).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.images.len(), 10_000 * 56 * 56);
    let positives = test.positives_per_class();
    assert!(
        positives.windows(2).filter(|w| w[0] > w[1]).count() >= 8,
        "{positives:?}"
    );
    assert_eq!(cfg.train_size, 60_000);
}

#[test]
fn multimnist_rejects_bad_configurations() {
    let (train_split, _) = mnist_splits();
    let base = small_config(0);
    let cases: Vec<(MultiMnistConfig, &str)> = vec![
        (
            MultiMnistConfig {
                grid: 0,
                ..base.clone()
            },
            "must be positive",
        ),
        (
            MultiMnistConfig {
                min_digits: 0,
                ..base.clone()
            },
            "min_digits",
        ),
        (
            MultiMnistConfig {
                min_digits: 3,
                max_digits: 2,
                ..base.clone()
            },
            "min_digits",
        ),
        (
            MultiMnistConfig {
                max_digits: 5,
                ..base.clone()
            },
            "grid² = 4",
        ),
        (
            MultiMnistConfig {
                imbalance_factor: 0.5,
                ..base.clone()
            },
            "imbalance_factor",
        ),
        (
            MultiMnistConfig {
                imbalance_factor: f64::NAN,
                ..base.clone()
            },
            "imbalance_factor",
        ),
        (
            MultiMnistConfig {
                train_size: 0,
                ..base.clone()
            },
            "train_size",
        ),
        (
            MultiMnistConfig {
                cell: 32,
                ..base.clone()
            },
            "cells are 32x32",
        ),
        (
            MultiMnistConfig {
                grid: usize::MAX,
                ..base.clone()
            },
            "too large",
        ),
    ];
    for (cfg, needle) in cases {
        let err = generate_train(&cfg, train_split).unwrap_err().to_string();
        assert!(err.contains(needle), "{cfg:?}: {err}");
    }
    // A source without some digit cannot supply it.
    let no_nines = ImageSplit {
        images: train_split.images[..100 * 784].to_vec(),
        labels: train_split.labels[..100]
            .iter()
            .map(|&l| l.min(8))
            .collect(),
        rows: 28,
        cols: 28,
    };
    let err = generate_train(&base, &no_nines).unwrap_err().to_string();
    assert!(err.contains("no image of digit 9"), "{err}");
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

// -------------------------------------------------------------- long tail

#[test]
fn class_quotas_match_the_reference_formula() {
    let fixture = common::fixture("longtail.json");
    let cases = fixture["quotas"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let c = case["num_classes"].as_u64().unwrap() as usize;
        let n_max = case["n_max"].as_u64().unwrap() as usize;
        let f = case["imbalance_factor"].as_f64().unwrap();
        let expected: Vec<usize> = case["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            class_quotas(c, f, n_max).unwrap(),
            expected,
            "C={c} n_max={n_max} IF={f}"
        );
    }
    // The published totals of CIFAR-10-LT and CIFAR-100-LT training sets.
    let total = |c, f, n| class_quotas(c, f, n).unwrap().iter().sum::<usize>();
    assert_eq!(
        [
            total(10, 100.0, 5000),
            total(10, 50.0, 5000),
            total(10, 10.0, 5000)
        ],
        [12406, 13996, 20431]
    );
    assert_eq!(
        [
            total(100, 100.0, 500),
            total(100, 50.0, 500),
            total(100, 10.0, 500)
        ],
        [10847, 12608, 19573]
    );
    assert_eq!(class_quotas(1, 100.0, 9).unwrap(), vec![9]);
    assert!(class_quotas(0, 100.0, 9).is_err());
    assert!(class_quotas(10, 0.99, 9).is_err());
    assert!(class_quotas(10, f64::INFINITY, 9).is_err());
}

#[test]
fn long_tail_indices_keep_exact_class_counts() {
    // Class c has 7 + c samples, interleaved; the smallest class (7) sets n_max.
    let mut labels = Vec::new();
    for round in 0..16 {
        for c in 0..10u32 {
            if round < 7 + c as usize {
                labels.push(c);
            }
        }
    }
    let kept = long_tail_indices(&labels, 10, 10.0, None, 1).unwrap();
    let mut counts = [0usize; 10];
    for &i in &kept {
        counts[labels[i] as usize] += 1;
    }
    // floor(7 · 10^(-c/9)) from the Python reference: 7 5 4 3 2 1 1 1 0 0.
    assert_eq!(counts, [7, 5, 4, 3, 2, 1, 1, 1, 0, 0]);
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    assert_eq!(kept, long_tail_indices(&labels, 10, 10.0, None, 1).unwrap());
    let others: Vec<Vec<usize>> = (2..6)
        .map(|s| long_tail_indices(&labels, 10, 10.0, None, s).unwrap())
        .collect();
    assert!(
        others.iter().any(|o| *o != kept),
        "seeds choose different members"
    );
    // An explicit n_max larger than a class is refused, naming the class.
    let err = long_tail_indices(&labels, 10, 1.0, Some(8), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("class 0 has 7 samples but its quota is 8"),
        "{err}"
    );
    assert!(long_tail_indices(&labels, 9, 10.0, None, 1)
        .unwrap_err()
        .to_string()
        .contains("label 9"));
    assert!(long_tail_indices(&labels, 10, 10.0, Some(0), 1).is_err());
    assert!(long_tail_indices(&labels, 10, -3.0, None, 1).is_err());
}

#[test]
fn long_tail_subset_of_mnist() {
    let (train, _) = mnist_splits();
    let ds = ImageDataset::from_split(train, "mnist-train").unwrap();
    let lt = long_tail_subset(&ds, 100.0, Some(5000), 0).unwrap();
    assert_eq!(
        lt.positives_per_class(),
        vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    );
    assert_eq!(lt.name, "mnist-train-lt100");
    lt.validate().unwrap();
    // Each kept image is the dataset's image with its label.
    let indices = long_tail_indices(
        &train.labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        10,
        100.0,
        Some(5000),
        0,
    )
    .unwrap();
    let Labels::Single(labels) = &lt.labels else {
        panic!()
    };
    for (k, &i) in indices.iter().enumerate().step_by(101) {
        assert_eq!(lt.image(k).unwrap(), ds.image(i).unwrap());
        assert_eq!(labels[k], train.labels[i] as u32);
    }
    // Default n_max: the smallest class (digit 5, 5421 images).
    let default = long_tail_subset(&ds, 100.0, None, 0).unwrap();
    assert_eq!(default.positives_per_class()[0], 5421);
    assert!(long_tail_subset(&tiny_multi(), 10.0, None, 0).is_err());
}

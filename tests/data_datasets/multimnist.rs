//! MultiMNIST-LT: cells hold source digits, test splits, determinism, bad configurations.

use super::helpers::mnist_splits;
use crate::common;
use ferrite::data::mnist::ImageSplit;
use ferrite::data::multimnist::{
    digit_probabilities, generate_balanced_test, generate_test, generate_train, MultiMnistConfig,
};
use ferrite::data::{ImageDataset, Labels};
use std::collections::HashMap;

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

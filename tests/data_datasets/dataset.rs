//! The in-memory dataset: MNIST conversion, multi-hot rows, Fashion-MNIST facts.

use super::helpers::{tiny_multi, MNIST};
use crate::common;
use ferrite::data::longtail::{class_quotas, long_tail_subset};
use ferrite::data::mnist;
use ferrite::data::{ImageDataset, Labels};
use std::path::Path;

const FASHION: &str = "/work/shared/data/fashion-mnist";

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

//! Long-tail subsampling: class quotas against the Python reference, exact class counts.

use super::helpers::{mnist_splits, tiny_multi};
use crate::common;
use ferrite::data::longtail::{class_quotas, long_tail_indices, long_tail_subset};
use ferrite::data::{ImageDataset, Labels};

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

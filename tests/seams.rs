//! The pieces fit without glue: the loader's labels go straight into
//! `cross_entropy` and `accuracy`, comparisons sum into counts, and the
//! `rand` that creation functions take is ferrite's own re-export.

use ferrite::data::loader::{DataLoader, LoaderConfig};
use ferrite::data::{ImageDataset, Labels};
use ferrite::loss::{cross_entropy, CrossEntropyOptions};
use ferrite::metrics::accuracy;
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::KeepDim;
use ferrite::{DType, Tensor};

#[test]
fn comparisons_sum_into_exact_i64_counts() {
    let a = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
    let mask = a.gt(&Tensor::scalar(2.5f32)).unwrap();
    assert_eq!(mask.dtype(), DType::U8);
    let total = mask.sum_all().unwrap();
    assert_eq!(
        (total.dtype(), total.to_scalar::<i64>().unwrap()),
        (DType::I64, 4)
    );
    let per_row = mask.sum(&[1], KeepDim::No).unwrap();
    assert_eq!(per_row.to_vec::<i64>().unwrap(), vec![1, 3]);
    let per_column = mask.t().unwrap().sum(&[0], KeepDim::Yes).unwrap();
    assert_eq!(per_column.shape(), &[1, 2]);
    assert_eq!(per_column.to_vec::<i64>().unwrap(), vec![1, 3]);
    let big = Tensor::from_vec(vec![i64::MAX, 1], &[2]).unwrap();
    assert!(
        big.sum_all().is_err(),
        "an overflowing sum is an error, not a wrapped count"
    );
    assert!(!mask.sum_all().unwrap().requires_grad());
}

#[test]
fn loader_labels_feed_cross_entropy_and_accuracy() {
    let (n, classes) = (12usize, 3usize);
    let images: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % classes as u32).collect();
    let ds = ImageDataset {
        images,
        channels: 1,
        height: 2,
        width: 2,
        num_classes: classes,
        labels: Labels::Single(labels),
        name: "seams".into(),
    };
    let config = LoaderConfig::training(5, 0);
    let mut loader = DataLoader::new(&ds, config).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let w = Tensor::randn(&[4, classes], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    for batch in loader.epoch(0) {
        let batch = batch.unwrap();
        let labels = batch
            .labels
            .as_ref()
            .expect("single-label batches carry labels");
        let logits = batch.x.flatten(1, -1).unwrap().matmul(&w).unwrap();
        let loss = cross_entropy(&logits, labels, &CrossEntropyOptions::default()).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        let acc = accuracy(&logits, labels).unwrap();
        let predicted = logits
            .argmax(1, KeepDim::No)
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        let want = predicted
            .iter()
            .zip(labels.to_vec::<i64>().unwrap())
            .filter(|(p, l)| **p == *l)
            .count() as f64
            / batch.len() as f64;
        assert_eq!(acc, want);
    }
}

#[test]
fn accuracy_refuses_what_it_cannot_score() {
    let logits = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let float_labels = Tensor::zeros(&[2], DType::F32).unwrap();
    assert!(accuracy(&logits, &float_labels).is_err());
    let short = Tensor::from_vec(vec![0i64], &[1]).unwrap();
    assert!(accuracy(&logits, &short).is_err());
    let empty = Tensor::zeros(&[0, 3], DType::F32).unwrap();
    assert!(accuracy(&empty, &Tensor::from_vec(Vec::<i64>::new(), &[0]).unwrap()).is_err());
}

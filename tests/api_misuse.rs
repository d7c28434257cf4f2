//! Misuses of the library API are clear errors: invalid hyper-parameters and
//! layer sizes, inconsistent arguments, and messages that show what was
//! given (an index of `usize::MAX` as itself, a padding that overflows as
//! such).

use ferrite::checkpoint::save_state_dict;
use ferrite::data::mnist::ImageSplit;
use ferrite::data::{ImageDataset, Labels};
use ferrite::nn::{BatchNorm2d, Bias, Conv2d};
use ferrite::ops::Conv2dParams;
use ferrite::optim::{ParamGroup, Sgd, SgdConfig};
use ferrite::train::evaluation::Evaluation;
use ferrite::{DType, Error, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

#[track_caller]
fn message<T>(r: ferrite::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn randn_needs_a_finite_mean_and_a_non_negative_std() {
    let mut rng = StdRng::seed_from_u64(0);
    for (mean, std) in [
        (0.0, -1.0),
        (0.0, f64::NAN),
        (f64::INFINITY, 1.0),
        (0.0, f64::INFINITY),
    ] {
        let err = message(Tensor::randn(&[3], mean, std, DType::F32, &mut rng));
        assert!(err.contains("randn") && err.contains("std"), "{err}");
    }
    let c = Tensor::randn(&[3], 2.0, 0.0, DType::F64, &mut rng).unwrap();
    assert_eq!(c.to_vec::<f64>().unwrap(), vec![2.0; 3]);
}

#[test]
fn sgd_momentum_and_dampening_are_in_the_unit_interval() {
    let p = Tensor::zeros(&[2], DType::F32)
        .unwrap()
        .requires_grad_(true);
    let sgd = |momentum, dampening| {
        let groups = vec![ParamGroup::new(vec![p.clone()], 0.1, 0.0)];
        Sgd::new(
            groups,
            SgdConfig {
                momentum,
                dampening,
                nesterov: false,
            },
        )
    };
    for m in [2.0, -0.1, f64::NAN, f64::INFINITY] {
        assert!(message(sgd(m, 0.0)).contains("momentum must be in [0, 1]"));
    }
    assert!(message(sgd(0.9, 1.5)).contains("dampening must be in [0, 1]"));
    assert!(sgd(0.9, 0.0).is_ok() && sgd(1.0, 0.0).is_ok());
}

#[test]
fn layers_need_positive_sizes() {
    let mut rng = StdRng::seed_from_u64(0);
    let p = Conv2dParams::default();
    for (i, o, k) in [(3, 8, 0), (0, 8, 3), (3, 0, 3)] {
        let err = message(Conv2d::new(i, o, k, p, Bias::Yes, &mut rng));
        assert!(
            err.contains("Conv2d::new") && err.contains("must be positive"),
            "{err}"
        );
    }
    assert!(Conv2d::new(3, 8, 1, p, Bias::Yes, &mut rng).is_ok());
    assert!(message(BatchNorm2d::new(0)).contains("channels must be positive"));
    assert!(BatchNorm2d::new(1).is_ok());
}

#[test]
fn split_batches_need_a_positive_std() {
    let split = ImageSplit {
        images: vec![7; 2 * 4],
        labels: vec![1, 2],
        rows: 2,
        cols: 2,
    };
    for (mean, std) in [
        (0.0, 0.0),
        (0.0, -1.0),
        (0.0, f32::NAN),
        (f32::INFINITY, 1.0),
    ] {
        let err = message(split.batch(&[0, 1], mean, std));
        assert!(err.contains("ImageSplit::batch"), "{err}");
    }
    let (x, _) = split.batch(&[1], 0.0, 1.0).unwrap();
    assert!(x.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
    let err = message(split.batch(&[usize::MAX], 0.0, 1.0));
    assert!(err.contains("18446744073709551615"), "{err}");
}

#[test]
fn evaluation_needs_one_training_count_per_class() {
    let scores = [0.9f32, 0.1, 0.2, 0.8];
    let targets = [1u8, 0, 0, 1];
    for counts in [&[5usize][..], &[5, 1, 1][..], &[][..]] {
        let err = message(Evaluation::new(&scores, &targets, None, 2, counts, 0.5));
        assert!(err.contains("train_positives has"), "{err}");
    }
    assert!(Evaluation::new(&scores, &targets, None, 2, &[5, 1], 0.5).is_ok());
}

fn dataset(channels: usize, height: usize, width: usize) -> ImageDataset {
    ImageDataset {
        images: vec![0; 2 * 4],
        channels,
        height,
        width,
        num_classes: 2,
        labels: Labels::Single(vec![0, 1]),
        name: "tiny".into(),
    }
}

#[test]
fn image_sizes_are_checked_and_big_indices_shown_as_given() {
    let ok = dataset(1, 2, 2);
    assert_eq!(ok.image_size().unwrap(), 4);
    let huge = dataset(1 << 30, 1 << 30, 1 << 30);
    assert!(message(huge.image_size()).contains("too large"));
    assert!(huge.image(0).is_none());
    assert!(huge.validate().is_err());
    assert!(ok.image(usize::MAX).is_none());

    let err = ok.subset(&[0, usize::MAX]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("index 18446744073709551615"), "{text}");
    assert!(!text.contains("-1"), "{text}");
    // Indices that fit in i64 keep the structured error.
    assert!(matches!(
        ok.subset(&[5]),
        Err(Error::IndexOutOfRange {
            index: 5,
            size: 2,
            ..
        })
    ));
    let mut row = [0.0f32; 2];
    assert!(message(ok.target_row(usize::MAX, &mut row)).contains("18446744073709551615"));
}

#[test]
fn conv_with_an_overflowing_padding_blames_the_padding() {
    let x = Tensor::zeros(&[1, 1, 4, 4], DType::F32).unwrap();
    let w = Tensor::zeros(&[1, 1, 3, 3], DType::F32).unwrap();
    let err = message(x.conv2d(&w, None, Conv2dParams::default().padding(usize::MAX / 2)));
    assert!(
        err.contains("padding") && err.contains("overflows"),
        "{err}"
    );
    assert!(!err.contains("kernel"), "{err}");
    // A kernel that really is larger keeps its message.
    let big = Tensor::zeros(&[1, 1, 9, 9], DType::F32).unwrap();
    let err = message(x.conv2d(&big, None, Conv2dParams::default()));
    assert!(err.contains("larger than the padded input"), "{err}");
}

#[test]
fn saving_to_a_directory_path_is_refused_without_temp_files() {
    let root = std::env::temp_dir().join(format!("ferrite-misuse-{}", std::process::id()));
    let dir = root.join("target-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let t = vec![("w".to_string(), Tensor::zeros(&[2], DType::F32).unwrap())];
    let meta = BTreeMap::new();
    let slash = format!("{}/", root.join("missing").display());
    let dot = format!("{}/.", dir.display());
    for path in [
        dir.display().to_string(),
        format!("{}/", dir.display()),
        slash,
        dot,
    ] {
        let err = message(save_state_dict(&path, &t, &meta));
        assert!(err.contains("directory"), "{path}: {err}");
    }
    // Nothing was created next to the directory nor inside it.
    let names = |d: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&root), vec!["target-dir".to_string()]);
    assert!(names(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&root);
}

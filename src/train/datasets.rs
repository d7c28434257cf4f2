//! Building a run's training and test sets from its [`DataConfig`].

use super::config::{DataConfig, DatasetKind, TestSet};
use crate::data::cifar::{load_cifar10, load_cifar100, Cifar100Label};
use crate::data::longtail::long_tail_subset;
use crate::data::mnist;
use crate::data::multimnist::{
    generate_balanced_test, generate_test, generate_train, MultiMnistConfig,
};
use crate::data::ImageDataset;
use crate::error::Result;

/// The datasets of a run and what the trainer derives from them.
#[derive(Clone, Debug)]
pub struct RunData {
    /// Training set (long-tailed for the `-lt` kinds).
    pub train: ImageDataset,
    /// Test set the run is evaluated on (MultiMNIST-LT's balanced one with
    /// [`TestSet::Balanced`]).
    pub test: ImageDataset,
    /// MultiMNIST-LT's balanced test set, scored as well, with
    /// [`TestSet::Both`].
    pub test_balanced: Option<ImageDataset>,
    /// Positives (images) of each class in the training set.
    pub train_positives: Vec<usize>,
    /// Per-channel pixel mean of the training set, on the [0, 1] scale.
    pub mean: Vec<f32>,
    /// Per-channel pixel standard deviation of the training set.
    pub std: Vec<f32>,
}

/// Reads or generates the datasets of `config`. Long-tailed kinds keep a
/// balanced test set (MultiMNIST-LT's test set follows the same skewed
/// class distribution, as its protocol specifies).
pub fn load_datasets(config: &DataConfig) -> Result<RunData> {
    let dir = &config.dir;
    let if_ = config.imbalance_factor;
    let mut test_balanced = None;
    let (train, test) = match config.kind {
        DatasetKind::MultiMnistLt => {
            let (mnist_train, mnist_test) = mnist::load(dir)?;
            let defaults = MultiMnistConfig::default();
            let cfg = MultiMnistConfig {
                imbalance_factor: if_,
                train_size: nonzero(config.train_size, defaults.train_size),
                test_size: nonzero(config.test_size, defaults.test_size),
                seed: config.seed,
                ..defaults
            };
            (
                generate_train(&cfg, &mnist_train)?,
                match config.test_set {
                    TestSet::Imbalanced => generate_test(&cfg, &mnist_test)?,
                    TestSet::Balanced => generate_balanced_test(&cfg, &mnist_test)?,
                    TestSet::Both => {
                        test_balanced = Some(generate_balanced_test(&cfg, &mnist_test)?);
                        generate_test(&cfg, &mnist_test)?
                    }
                },
            )
        }
        DatasetKind::Mnist => mnist::load_dataset(dir, "mnist")?,
        DatasetKind::FashionMnist => mnist::load_dataset(dir, "fashion-mnist")?,
        DatasetKind::FashionMnistLt => {
            let (train, test) = mnist::load_dataset(dir, "fashion-mnist")?;
            (long_tail_subset(&train, if_, None, config.seed)?, test)
        }
        DatasetKind::Cifar10 => load_cifar10(dir)?,
        DatasetKind::Cifar10Lt => {
            let (train, test) = load_cifar10(dir)?;
            (long_tail_subset(&train, if_, None, config.seed)?, test)
        }
        DatasetKind::Cifar100 => load_cifar100(dir, Cifar100Label::Fine)?,
        DatasetKind::Cifar100Lt => {
            let (train, test) = load_cifar100(dir, Cifar100Label::Fine)?;
            (long_tail_subset(&train, if_, None, config.seed)?, test)
        }
    };
    let (mean, std) = channel_stats(&train);
    Ok(RunData {
        train_positives: train.positives_per_class(),
        train,
        test,
        test_balanced,
        mean,
        std,
    })
}

fn nonzero(v: usize, default: usize) -> usize {
    if v == 0 {
        default
    } else {
        v
    }
}

/// Per-channel mean and standard deviation of the pixels of `data`, on
/// the [0, 1] scale (accumulated in f64; a constant channel gets std 1).
pub fn channel_stats(data: &ImageDataset) -> (Vec<f32>, Vec<f32>) {
    let plane = data.height * data.width;
    let mut sum = vec![0f64; data.channels];
    let mut sq = vec![0f64; data.channels];
    for image in data.images.chunks(data.channels * plane.max(1)) {
        for (c, px) in image.chunks(plane.max(1)).enumerate() {
            let (s, q) = px.iter().fold((0u64, 0u64), |(s, q), &p| {
                (s + p as u64, q + (p as u64) * (p as u64))
            });
            sum[c] += s as f64;
            sq[c] += q as f64;
        }
    }
    let n = (data.len() * plane).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n / 255.0).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let var = q / n / (255.0 * 255.0) - m * m;
            if var > 1e-12 {
                var.sqrt() as f32
            } else {
                1.0
            }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

const FASHION: [&str; 10] = [
    "T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot",
];
const CIFAR10: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Display names of the classes of `kind` (class numbers where no names
/// are known).
pub fn class_names(kind: DatasetKind, num_classes: usize) -> Vec<String> {
    let table: Option<&[&str]> = match kind {
        DatasetKind::FashionMnist | DatasetKind::FashionMnistLt => Some(&FASHION),
        DatasetKind::Cifar10 | DatasetKind::Cifar10Lt => Some(&CIFAR10),
        _ => None,
    };
    (0..num_classes)
        .map(|c| match table {
            Some(t) if c < t.len() => t[c].to_string(),
            _ => c.to_string(),
        })
        .collect()
}

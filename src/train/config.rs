//! What a training run is: dataset, model, objective, optimizer, schedule
//! and loop settings, with string names for every choice (the CLI's values)
//! and a JSON form stored in every checkpoint, so `eval` and `--resume`
//! rebuild exactly the run that wrote it.

use super::loss_spec::LossSpec;
use crate::error::{Error, Result};
use crate::named::named_enum;
use crate::Precision;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

pub(crate) mod legacy;
mod validate;

pub use validate::{
    MAX_BATCH_SIZE, MAX_CROP_PADDING, MAX_EPOCHS, MAX_GENERATED_SIZE, MAX_PLM_BINS,
};

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid("TrainConfig", msg)
}

/// Which data a run trains and evaluates on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// Multi-label MultiMNIST-LT built from MNIST (`ferrite::data::multimnist`).
    MultiMnistLt,
    /// MNIST, single-label, balanced.
    Mnist,
    /// Fashion-MNIST, single-label, balanced.
    FashionMnist,
    /// Fashion-MNIST with a long-tailed training set (test set balanced).
    FashionMnistLt,
    /// CIFAR-10 from its binary files.
    Cifar10,
    /// CIFAR-10 with a long-tailed training set.
    Cifar10Lt,
    /// CIFAR-100 (fine labels) from its binary files.
    Cifar100,
    /// CIFAR-100 with a long-tailed training set.
    Cifar100Lt,
}

named_enum!(
    DatasetKind,
    "TrainConfig",
    "dataset",
    [
        (MultiMnistLt, "multimnist-lt"),
        (Mnist, "mnist"),
        (FashionMnist, "fashion-mnist"),
        (FashionMnistLt, "fashion-mnist-lt"),
        (Cifar10, "cifar10"),
        (Cifar10Lt, "cifar10-lt"),
        (Cifar100, "cifar100"),
        (Cifar100Lt, "cifar100-lt"),
    ]
);

impl DatasetKind {
    /// Whether the training set is subsampled to a long tail.
    pub fn is_long_tailed(self) -> bool {
        matches!(
            self,
            DatasetKind::MultiMnistLt
                | DatasetKind::FashionMnistLt
                | DatasetKind::Cifar10Lt
                | DatasetKind::Cifar100Lt
        )
    }

    /// Whether the labels are sets (multi-hot) rather than one class.
    pub fn is_multi_label(self) -> bool {
        self == DatasetKind::MultiMnistLt
    }

    /// The default data folder, relative to the working directory.
    pub fn default_dir(self) -> &'static str {
        match self {
            DatasetKind::MultiMnistLt | DatasetKind::Mnist => "data/mnist",
            DatasetKind::FashionMnist | DatasetKind::FashionMnistLt => "data/fashion-mnist",
            DatasetKind::Cifar10 | DatasetKind::Cifar10Lt => "data/cifar-10-batches-bin",
            DatasetKind::Cifar100 | DatasetKind::Cifar100Lt => "data/cifar-100-binary",
        }
    }
}

/// Which test sets a MultiMNIST-LT run is scored on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TestSet {
    /// The test set drawn like the training set: MultiMNIST-LT's with the
    /// training imbalance; every other dataset's own test set.
    #[default]
    Imbalanced,
    /// MultiMNIST-LT's balanced test set: every digit equally likely.
    Balanced,
    /// Both: the imbalanced one as `test`, the balanced one as
    /// `test_balanced`, every metric reported on each.
    Both,
}

named_enum!(
    TestSet,
    "TrainConfig",
    "test set",
    [
        (Imbalanced, "imbalanced"),
        (Balanced, "balanced"),
        (Both, "both")
    ]
);

/// The dataset of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Which dataset.
    pub kind: DatasetKind,
    /// Folder holding the source files (IDX or CIFAR binary).
    pub dir: PathBuf,
    /// Imbalance factor of the long tail (largest / smallest class).
    pub imbalance_factor: f64,
    /// Training-set size for generated data (MultiMNIST-LT); 0 = default.
    pub train_size: usize,
    /// Test-set size for generated data; 0 = default.
    pub test_size: usize,
    /// Seed of the data generation / subsampling (separate from the
    /// training seed so seeds of a comparison share one dataset).
    pub seed: u64,
    /// Random-crop padding for augmentation (0 = none).
    pub crop_padding: usize,
    /// Random horizontal flips (off for digits).
    pub hflip: bool,
    /// The test sets (MultiMNIST-LT only; runs saved before it existed
    /// read as `imbalanced`).
    #[serde(default)]
    pub test_set: TestSet,
}

impl DataConfig {
    /// Defaults for `kind`: its usual folder, IF = 100, CIFAR augmentation
    /// (pad 4 + flip) for CIFAR and none for digits and clothes, and both
    /// test sets for MultiMNIST-LT.
    pub fn new(kind: DatasetKind) -> Self {
        let cifar = matches!(
            kind,
            DatasetKind::Cifar10
                | DatasetKind::Cifar10Lt
                | DatasetKind::Cifar100
                | DatasetKind::Cifar100Lt
        );
        DataConfig {
            kind,
            dir: PathBuf::from(kind.default_dir()),
            imbalance_factor: 100.0,
            train_size: 0,
            test_size: 0,
            seed: 0,
            crop_padding: if cifar { 4 } else { 0 },
            hflip: cifar,
            test_set: if kind == DatasetKind::MultiMnistLt {
                TestSet::Both
            } else {
                TestSet::Imbalanced
            },
        }
    }
}

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// SGD, with optional (Nesterov) momentum (`sgd`).
    Sgd,
    /// Adam with L2 weight decay added to the gradient (`adam`).
    Adam,
    /// AdamW: Adam with decoupled weight decay (`adamw`).
    AdamW,
}

named_enum!(
    OptimizerKind,
    "TrainConfig",
    "optimizer",
    [(Sgd, "sgd"), (Adam, "adam"), (AdamW, "adamw")]
);

/// Learning-rate schedule shape (applied after the optional warm-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Cosine annealing to 0 over the run.
    Cosine,
    /// × `gamma` at each milestone.
    MultiStep,
}

named_enum!(
    ScheduleKind,
    "TrainConfig",
    "schedule",
    [
        (Constant, "constant"),
        (Cosine, "cosine"),
        (MultiStep, "multistep")
    ]
);

/// Optimizer and schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// Base learning rate, before warm-up and schedule.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD: use Nesterov momentum.
    pub nesterov: bool,
    /// Weight-decay coefficient (L2 for SGD and Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// No weight decay on batch-norm parameters and biases.
    pub no_decay_norm_bias: bool,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Schedule after the warm-up.
    pub schedule: ScheduleKind,
    /// Epochs of linear warm-up from lr/10 (0 = none).
    pub warmup_epochs: usize,
    /// Milestones (epochs) of the multistep schedule.
    pub milestones: Vec<usize>,
    /// Factor of the multistep schedule.
    pub gamma: f64,
}

impl Default for OptimConfig {
    /// Adam, lr 1e-3, no decay, constant rate.
    fn default() -> Self {
        OptimConfig {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            no_decay_norm_bias: true,
            clip_grad_norm: None,
            schedule: ScheduleKind::Constant,
            warmup_epochs: 0,
            milestones: Vec::new(),
            gamma: 0.1,
        }
    }
}

/// A whole training run.
///
/// Stored as JSON in `config.json` and in every checkpoint (serde, unknown
/// keys refused); [`TrainConfig::from_json_str`] errors name the key.
///
/// ```
/// use ferrite::train::{DataConfig, DatasetKind, TrainConfig};
///
/// let data = DataConfig::new(DatasetKind::Mnist);
/// let mut config = TrainConfig::new(data, "resnet8", "focal(gamma=1)".parse()?);
/// config.epochs = 3;
/// let text = config.to_json().to_string();
/// let back = TrainConfig::from_json_str(&text)?;
/// assert_eq!(back.loss, config.loss);
/// assert_eq!(back.epochs, 3);
/// // A misspelt key is refused, by name.
/// let err = TrainConfig::from_json_str(&text.replace("\"epochs\"", "\"epoch\"")).unwrap_err();
/// assert!(err.to_string().contains("epoch"), "{err}");
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset, its folder and augmentation.
    pub data: DataConfig,
    /// Model name, see [`crate::train::model::MODEL_NAMES`].
    pub model: String,
    /// Stem override: `"cifar"` (3×3, stride 1) or `"imagenet"` (7×7
    /// stride 2 + max-pool); `None` keeps the model's own.
    pub stem: Option<String>,
    /// Objective and its hyper-parameters, e.g. `plm+focal(gamma=2)`.
    pub loss: LossSpec,
    /// Optimizer and learning-rate schedule.
    pub optim: OptimConfig,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per training batch.
    pub batch_size: usize,
    /// Seed of initialisation, shuffling, augmentation and PLM masks.
    pub seed: u64,
    /// Decision threshold of the multi-label metrics.
    pub threshold: f64,
    /// Precision of the products inside convolutions and linear layers:
    /// f32, or bf16 inputs with f32 accumulation (see [`crate::autocast`]).
    /// Runs saved before mixed precision existed read as f32.
    #[serde(default)]
    pub precision: Precision,
    /// Data-parallel runs: batch norm normalises with the statistics of the
    /// whole global batch, synchronised over the ranks (see
    /// [`Trainer::sync_batch_norm`](crate::train::Trainer::sync_batch_norm)),
    /// instead of each rank's slice. Training such a run needs a
    /// data-parallel job; evaluating its checkpoint does not. Left out of
    /// the JSON when off, and runs saved before it existed read as off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_batch_norm: bool,
}

impl TrainConfig {
    /// A run of `loss` on `data` with the model `model` and defaults
    /// elsewhere (Adam 1e-3, 10 epochs, batch 128, seed 0, threshold 0.5).
    pub fn new(data: DataConfig, model: &str, loss: LossSpec) -> Self {
        TrainConfig {
            data,
            model: model.to_string(),
            stem: None,
            loss,
            optim: OptimConfig::default(),
            epochs: 10,
            batch_size: 128,
            seed: 0,
            threshold: 0.5,
            precision: Precision::F32,
            sync_batch_norm: false,
        }
    }

    /// The JSON form (stored in checkpoints and `config.json`).
    pub fn to_json(&self) -> Value {
        // Serialising plain data to a `Value` cannot fail (string keys, no
        // maps with other keys).
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads the JSON form written by [`TrainConfig::to_json`] (or by
    /// earlier versions) and validates it; a missing, unknown or mistyped
    /// key, or a value out of range, is an error naming the key.
    pub fn from_json(v: &Value) -> Result<Self> {
        let config: TrainConfig = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            bad(format!("config key `{path}`: {}", e.into_inner()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// [`TrainConfig::from_json`] from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("the configuration is not JSON: {e}")))?;
        Self::from_json(&v)
    }
}

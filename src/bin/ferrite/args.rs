//! Command-line options of `ferrite train` / `compare` and their mapping
//! onto a [`TrainConfig`].

use clap::Args;
use ferrite::train::config::{DataConfig, DatasetKind, OptimizerKind, ScheduleKind, TrainConfig};
use ferrite::train::LossSpec;
use std::path::PathBuf;

/// Everything that defines a run except the loss (shared by `train` and
/// `compare`).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Dataset: multimnist-lt, mnist, fashion-mnist, fashion-mnist-lt, cifar10, cifar10-lt, cifar100, cifar100-lt
    #[arg(long, default_value = "multimnist-lt")]
    pub dataset: String,
    /// Folder with the dataset's files (default: data/mnist, data/fashion-mnist, data/cifar-10-batches-bin, ...)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Imbalance factor of the long-tailed datasets (largest / smallest class)
    #[arg(long, default_value_t = 100.0)]
    pub imbalance_factor: f64,
    /// Training images of MultiMNIST-LT; 0 = the protocol's 60000
    #[arg(long, default_value_t = 0)]
    pub train_size: usize,
    /// Test images of MultiMNIST-LT; 0 = the protocol's 10000
    #[arg(long, default_value_t = 0)]
    pub test_size: usize,
    /// Seed of data generation and long-tail subsampling
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,
    /// Random-crop padding in pixels (default: 4 for CIFAR, 0 otherwise)
    #[arg(long)]
    pub crop_padding: Option<usize>,
    /// Random horizontal flips (default: on for CIFAR, off otherwise)
    #[arg(long)]
    pub hflip: Option<bool>,
    /// MultiMNIST-LT's test sets: imbalanced (drawn like the training set),
    /// balanced (every digit equally likely) or both (default; every
    /// metric reported on each)
    #[arg(long)]
    pub test_set: Option<String>,

    /// Model: resnet8/14/20/32/44/56/110 (CIFAR style), resnet18-cifar, resnet18/34/50
    #[arg(long, default_value = "resnet8")]
    pub model: String,
    /// Stem override: cifar (3x3 stride 1) or imagenet (7x7 stride 2 + max-pool)
    #[arg(long)]
    pub stem: Option<String>,

    /// Optimizer: sgd, adam, adamw
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// Base learning rate
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum (SGD)
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (not applied to batch-norm parameters and biases)
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value
    #[arg(long)]
    pub clip_grad_norm: Option<f64>,
    /// Learning-rate schedule: constant, cosine, multistep
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// Epochs of linear warm-up from lr/10
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Milestones of the multistep schedule, e.g. 160,180
    #[arg(long, value_delimiter = ',')]
    pub milestones: Vec<usize>,
    /// Factor of the multistep schedule
    #[arg(long, default_value_t = 0.1)]
    pub lr_gamma: f64,

    /// Epochs
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Images per batch
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Precision of convolutions and linear layers: f32, or bf16 (bf16
    /// inputs on tensor cores, f32 accumulation and f32 master weights)
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Decision threshold of the multi-label metrics
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// With --distributed: batch norm normalises with the statistics of
    /// the whole global batch, synchronised over the ranks (SyncBatchNorm),
    /// instead of each rank's slice; one small all-gather per batch-norm
    /// layer in forward and one all-reduce in backward. Recorded in the
    /// run's configuration
    #[arg(long)]
    pub sync_batch_norm: bool,
}

impl RunArgs {
    /// The configuration these options describe, with `loss` and `seed`.
    pub fn to_config(&self, loss: LossSpec, seed: u64) -> ferrite::Result<TrainConfig> {
        let kind: DatasetKind = self.dataset.parse()?;
        let mut data = DataConfig::new(kind);
        if let Some(dir) = &self.data_dir {
            data.dir = dir.clone();
        }
        data.imbalance_factor = self.imbalance_factor;
        data.train_size = self.train_size;
        data.test_size = self.test_size;
        data.seed = self.data_seed;
        if let Some(p) = self.crop_padding {
            data.crop_padding = p;
        }
        if let Some(f) = self.hflip {
            data.hflip = f;
        }
        if let Some(t) = &self.test_set {
            data.test_set = t.parse()?;
        }
        let mut c = TrainConfig::new(data, &self.model, loss);
        c.stem = self.stem.clone();
        c.seed = seed;
        c.epochs = self.epochs;
        c.batch_size = self.batch_size;
        c.threshold = self.threshold;
        c.precision = self.precision.parse()?;
        c.sync_batch_norm = self.sync_batch_norm;
        let o = &mut c.optim;
        o.kind = self.optimizer.parse::<OptimizerKind>()?;
        o.lr = self.lr;
        o.momentum = self.momentum;
        o.nesterov = self.nesterov;
        o.weight_decay = self.weight_decay;
        o.clip_grad_norm = self.clip_grad_norm;
        o.schedule = self.schedule.parse::<ScheduleKind>()?;
        o.warmup_epochs = self.warmup_epochs;
        o.milestones = self.milestones.clone();
        o.gamma = self.lr_gamma;
        c.validate()?;
        Ok(c)
    }
}

/// The options in `given` (as `--name`s typed on the command line) that
/// would have no effect on a run of `config`, each with the reason: the
/// command refuses them rather than silently ignoring them.
pub fn without_effect(given: &[String], config: &TrainConfig) -> Vec<String> {
    let kind = config.data.kind;
    let optimizer = config.optim.kind;
    let schedule = config.optim.schedule;
    given
        .iter()
        .filter_map(|option| {
            let why = match option.as_str() {
                "--train-size" | "--test-size" if kind != DatasetKind::MultiMnistLt => format!(
                    "only multimnist-lt is generated; {kind} has fixed training and test sets"
                ),
                "--imbalance-factor" | "--data-seed" if !kind.is_long_tailed() => format!(
                    "{kind} is balanced (the long-tailed datasets are multimnist-lt, fashion-mnist-lt, cifar10-lt and cifar100-lt)"
                ),
                "--momentum" if optimizer != OptimizerKind::Sgd => {
                    format!("momentum is SGD's; {optimizer} has its own moments")
                }
                "--milestones" | "--lr-gamma" if schedule != ScheduleKind::MultiStep => {
                    format!("they belong to --schedule multistep, not {schedule}")
                }
                "--threshold" if !kind.is_multi_label() => format!(
                    "the threshold applies to multi-label metrics; {kind} is single-label (top-1)"
                ),
                _ => return None,
            };
            Some(format!("{option} has no effect: {why}"))
        })
        .collect()
}

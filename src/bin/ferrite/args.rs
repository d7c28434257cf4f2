//! Command-line options of `ferrite train` / `compare` and their mapping
//! onto a [`TrainConfig`].

use clap::Args;
use ferrite::train::config::{
    parse_divergence, parse_rhat_init, DataConfig, DatasetKind, LossKind, OptimizerKind,
    ScheduleKind, TrainConfig,
};
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

    /// Focal loss gamma
    #[arg(long, default_value_t = 2.0)]
    pub focal_gamma: f64,
    /// Focal loss alpha (none by default)
    #[arg(long)]
    pub focal_alpha: Option<f64>,
    /// Class-balanced beta (effective number of samples)
    #[arg(long, default_value_t = 0.999)]
    pub cb_beta: f64,
    /// ASL gamma for positives
    #[arg(long, default_value_t = 0.0)]
    pub asl_gamma_pos: f64,
    /// ASL gamma for negatives
    #[arg(long, default_value_t = 4.0)]
    pub asl_gamma_neg: f64,
    /// ASL probability clip for negatives
    #[arg(long, default_value_t = 0.05)]
    pub asl_clip: f64,

    /// PLM change rate lambda of the per-epoch update (0 keeps the target ratio fixed)
    #[arg(long, default_value_t = 0.01)]
    pub plm_lambda: f64,
    /// PLM histogram bins
    #[arg(long, default_value_t = 10)]
    pub plm_bins: usize,
    /// PLM initial target ratio: ratio (r̂ = r) or balanced (r̂ = 1)
    #[arg(long, default_value = "ratio")]
    pub plm_init: String,
    /// PLM divergence: pred-gt (KL(predicted || ground truth)) or gt-pred
    #[arg(long, default_value = "pred-gt")]
    pub plm_divergence: String,
    /// Standardise the PLM divergences across classes (true/false)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub plm_standardize: bool,
}

impl RunArgs {
    /// The configuration these options describe, with `loss` and `seed`.
    pub fn to_config(&self, loss: LossKind, seed: u64) -> ferrite::Result<TrainConfig> {
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
        let mut c = TrainConfig::new(data, &self.model, loss);
        c.stem = self.stem.clone();
        c.seed = seed;
        c.epochs = self.epochs;
        c.batch_size = self.batch_size;
        c.threshold = self.threshold;
        c.precision = self.precision.parse()?;
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
        let l = &mut c.loss;
        l.focal_gamma = self.focal_gamma;
        l.focal_alpha = self.focal_alpha;
        l.cb_beta = self.cb_beta;
        l.asl_gamma_pos = self.asl_gamma_pos;
        l.asl_gamma_neg = self.asl_gamma_neg;
        l.asl_clip = self.asl_clip;
        l.plm.lambda = self.plm_lambda;
        l.plm.n_bins = self.plm_bins;
        l.plm.init = parse_rhat_init(&self.plm_init)?;
        l.plm.divergence = parse_divergence(&self.plm_divergence)?;
        l.plm.standardize = self.plm_standardize;
        c.validate()?;
        Ok(c)
    }
}

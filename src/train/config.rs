//! What a training run is: dataset, model, objective, optimizer, schedule
//! and loop settings, with string names for every choice (the CLI's values)
//! and a JSON form stored in every checkpoint, so `eval` and `--resume`
//! rebuild exactly the run that wrote it.

use crate::error::{Error, Result};
use crate::plm::{Divergence, PlmConfig, RhatInit};
use crate::Precision;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::str::FromStr;

mod validate;

pub use validate::{
    MAX_BATCH_SIZE, MAX_CROP_PADDING, MAX_EPOCHS, MAX_GENERATED_SIZE, MAX_PLM_BINS,
};

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid("TrainConfig", msg)
}

/// Implements `FromStr` and `name()` for a fieldless enum from one table
/// of `(variant, "name")` pairs, so parsing and printing never disagree.
macro_rules! named_enum {
    ($ty:ident, $what:literal, [$(($var:ident, $name:literal)),+ $(,)?]) => {
        impl $ty {
            /// Every accepted name, in order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
            /// The name used on the command line and in JSON.
            pub fn name(self) -> &'static str {
                match self { $($ty::$var => $name),+ }
            }
        }
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s { $($name => Ok($ty::$var),)+
                    _ => Err(bad(format!(
                        "unknown {} `{s}` (expected one of: {})", $what, Self::NAMES.join(", ")))),
                }
            }
        }
    };
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

/// The dataset of a run.
#[derive(Clone, Debug, PartialEq)]
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
}

impl DataConfig {
    /// Defaults for `kind`: its usual folder, IF = 100, CIFAR augmentation
    /// (pad 4 + flip) for CIFAR and none for digits and clothes.
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
        }
    }
}

/// The training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Binary cross-entropy with logits, one sigmoid per class.
    Bce,
    /// Sigmoid focal loss.
    Focal,
    /// BCE with class-balanced weights (effective number of samples).
    Cb,
    /// Asymmetric loss.
    Asl,
    /// Partial Label Masking over BCE.
    Plm,
    /// Partial Label Masking over focal loss.
    PlmFocal,
    /// Partial Label Masking over class-balanced BCE.
    PlmCb,
    /// Softmax cross-entropy (single-label data only).
    Ce,
}

named_enum!(
    LossKind,
    "loss",
    [
        (Bce, "bce"),
        (Focal, "focal"),
        (Cb, "cb"),
        (Asl, "asl"),
        (Plm, "plm"),
        (PlmFocal, "plm+focal"),
        (PlmCb, "plm+cb"),
        (Ce, "ce"),
    ]
);

impl LossKind {
    /// Whether Partial Label Masking is applied.
    pub fn uses_plm(self) -> bool {
        matches!(self, LossKind::Plm | LossKind::PlmFocal | LossKind::PlmCb)
    }
}

/// The objective and its parameters.
#[derive(Clone, Debug)]
pub struct LossConfig {
    /// Which loss.
    pub kind: LossKind,
    /// Focal γ.
    pub focal_gamma: f64,
    /// Focal α (None: no α weighting).
    pub focal_alpha: Option<f64>,
    /// Class-balanced β.
    pub cb_beta: f64,
    /// ASL γ for positives.
    pub asl_gamma_pos: f64,
    /// ASL γ for negatives.
    pub asl_gamma_neg: f64,
    /// ASL probability clip (shift) for negatives.
    pub asl_clip: f64,
    /// PLM settings (its seed is derived from the run's seed).
    pub plm: PlmConfig,
}

impl LossConfig {
    /// Defaults for `kind`: focal γ = 2 without α, β = 0.999, ASL (0, 4,
    /// 0.05), PLM's recommended defaults.
    pub fn new(kind: LossKind) -> Self {
        LossConfig {
            kind,
            focal_gamma: 2.0,
            focal_alpha: None,
            cb_beta: 0.999,
            asl_gamma_pos: 0.0,
            asl_gamma_neg: 4.0,
            asl_clip: 0.05,
            plm: PlmConfig::default(),
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
    "schedule",
    [
        (Constant, "constant"),
        (Cosine, "cosine"),
        (MultiStep, "multistep")
    ]
);

/// Optimizer and schedule.
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Dataset, its folder and augmentation.
    pub data: DataConfig,
    /// Model name, see [`crate::train::model::MODEL_NAMES`].
    pub model: String,
    /// Stem override: `"cifar"` (3×3, stride 1) or `"imagenet"` (7×7
    /// stride 2 + max-pool); `None` keeps the model's own.
    pub stem: Option<String>,
    /// Objective and its hyper-parameters.
    pub loss: LossConfig,
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
    pub precision: Precision,
}

impl TrainConfig {
    /// A run of `loss` on `data` with the model `model` and defaults
    /// elsewhere (Adam 1e-3, 10 epochs, batch 128, seed 0, threshold 0.5).
    pub fn new(data: DataConfig, model: &str, loss: LossKind) -> Self {
        TrainConfig {
            data,
            model: model.to_string(),
            stem: None,
            loss: LossConfig::new(loss),
            optim: OptimConfig::default(),
            epochs: 10,
            batch_size: 128,
            seed: 0,
            threshold: 0.5,
            precision: Precision::F32,
        }
    }

    /// The JSON form (stored in checkpoints and `config.json`).
    pub fn to_json(&self) -> Value {
        let d = &self.data;
        let l = &self.loss;
        let o = &self.optim;
        json!({
            "data": {
                "kind": d.kind.name(), "dir": d.dir.display().to_string(),
                "imbalance_factor": d.imbalance_factor, "train_size": d.train_size,
                "test_size": d.test_size, "seed": d.seed,
                "crop_padding": d.crop_padding, "hflip": d.hflip,
            },
            "model": self.model, "stem": self.stem,
            "loss": {
                "kind": l.kind.name(), "focal_gamma": l.focal_gamma, "focal_alpha": l.focal_alpha,
                "cb_beta": l.cb_beta, "asl_gamma_pos": l.asl_gamma_pos,
                "asl_gamma_neg": l.asl_gamma_neg, "asl_clip": l.asl_clip,
                "plm": {
                    "lambda": l.plm.lambda, "n_bins": l.plm.n_bins,
                    "init": rhat_init_name(l.plm.init),
                    "divergence": divergence_name(l.plm.divergence),
                    "standardize": l.plm.standardize,
                },
            },
            "optim": {
                "kind": o.kind.name(), "lr": o.lr, "momentum": o.momentum, "nesterov": o.nesterov,
                "weight_decay": o.weight_decay, "no_decay_norm_bias": o.no_decay_norm_bias,
                "clip_grad_norm": o.clip_grad_norm, "schedule": o.schedule.name(),
                "warmup_epochs": o.warmup_epochs, "milestones": o.milestones, "gamma": o.gamma,
            },
            "epochs": self.epochs, "batch_size": self.batch_size,
            "seed": self.seed, "threshold": self.threshold,
            "precision": self.precision.to_string(),
        })
    }

    /// Reads the JSON form written by [`TrainConfig::to_json`]; a missing
    /// or mistyped field is an error naming it.
    pub fn from_json(v: &Value) -> Result<Self> {
        let r = Reader(v, "");
        let d = r.obj("data")?;
        let l = r.obj("loss")?;
        let p = l.obj("plm")?;
        let o = r.obj("optim")?;
        let plm = PlmConfig {
            lambda: p.f64("lambda")?,
            n_bins: p.usize("n_bins")?,
            init: parse_rhat_init(&p.str("init")?)?,
            divergence: parse_divergence(&p.str("divergence")?)?,
            standardize: p.bool("standardize")?,
            ..PlmConfig::default()
        };
        let config = TrainConfig {
            data: DataConfig {
                kind: d.str("kind")?.parse()?,
                dir: PathBuf::from(d.str("dir")?),
                imbalance_factor: d.f64("imbalance_factor")?,
                train_size: d.usize("train_size")?,
                test_size: d.usize("test_size")?,
                seed: d.u64("seed")?,
                crop_padding: d.usize("crop_padding")?,
                hflip: d.bool("hflip")?,
            },
            model: r.str("model")?,
            stem: r.opt_str("stem")?,
            loss: LossConfig {
                kind: l.str("kind")?.parse()?,
                focal_gamma: l.f64("focal_gamma")?,
                focal_alpha: l.opt_f64("focal_alpha")?,
                cb_beta: l.f64("cb_beta")?,
                asl_gamma_pos: l.f64("asl_gamma_pos")?,
                asl_gamma_neg: l.f64("asl_gamma_neg")?,
                asl_clip: l.f64("asl_clip")?,
                plm,
            },
            optim: OptimConfig {
                kind: o.str("kind")?.parse()?,
                lr: o.f64("lr")?,
                momentum: o.f64("momentum")?,
                nesterov: o.bool("nesterov")?,
                weight_decay: o.f64("weight_decay")?,
                no_decay_norm_bias: o.bool("no_decay_norm_bias")?,
                clip_grad_norm: o.opt_f64("clip_grad_norm")?,
                schedule: o.str("schedule")?.parse()?,
                warmup_epochs: o.usize("warmup_epochs")?,
                milestones: o.usize_list("milestones")?,
                gamma: o.f64("gamma")?,
            },
            epochs: r.usize("epochs")?,
            batch_size: r.usize("batch_size")?,
            seed: r.u64("seed")?,
            threshold: r.f64("threshold")?,
            // Runs saved before mixed precision existed trained in f32.
            precision: match v.get("precision") {
                None => Precision::F32,
                Some(_) => r.str("precision")?.parse()?,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// `"ratio"` or `"balanced"`.
pub fn rhat_init_name(init: RhatInit) -> &'static str {
    match init {
        RhatInit::Ratio => "ratio",
        RhatInit::Balanced => "balanced",
    }
}

/// Parses `"ratio"` (r̂ = r) or `"balanced"` (r̂ = 1).
pub fn parse_rhat_init(s: &str) -> Result<RhatInit> {
    match s {
        "ratio" => Ok(RhatInit::Ratio),
        "balanced" => Ok(RhatInit::Balanced),
        _ => Err(bad(format!(
            "unknown PLM initial ratio `{s}` (expected ratio or balanced)"
        ))),
    }
}

/// `"pred-gt"` (KL(predicted ‖ ground truth), the default) or `"gt-pred"`.
pub fn divergence_name(d: Divergence) -> &'static str {
    match d {
        Divergence::PredVsTruth => "pred-gt",
        Divergence::TruthVsPred => "gt-pred",
    }
}

/// Parses a divergence name (see [`divergence_name`]).
pub fn parse_divergence(s: &str) -> Result<Divergence> {
    match s {
        "pred-gt" => Ok(Divergence::PredVsTruth),
        "gt-pred" => Ok(Divergence::TruthVsPred),
        _ => Err(bad(format!(
            "unknown PLM divergence `{s}` (expected pred-gt or gt-pred)"
        ))),
    }
}

/// Typed field access into a JSON object with errors naming the field.
struct Reader<'a>(&'a Value, &'a str);

impl<'a> Reader<'a> {
    fn field(&self, name: &str) -> Result<&'a Value> {
        self.0
            .as_object()
            .and_then(|m: &Map<String, Value>| m.get(name))
            .ok_or_else(|| bad(format!("config field `{}{name}` is missing", self.1)))
    }
    fn wrong(&self, name: &str, what: &str) -> Error {
        bad(format!("config field `{}{name}` is not {what}", self.1))
    }
    fn obj(&self, name: &'a str) -> Result<Reader<'a>> {
        let v = self.field(name)?;
        if v.is_object() {
            Ok(Reader(v, name))
        } else {
            Err(self.wrong(name, "an object"))
        }
    }
    fn str(&self, name: &str) -> Result<String> {
        self.field(name)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.wrong(name, "a string"))
    }
    fn opt_str(&self, name: &str) -> Result<Option<String>> {
        match self.field(name)? {
            Value::Null => Ok(None),
            v => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.wrong(name, "a string or null")),
        }
    }
    fn f64(&self, name: &str) -> Result<f64> {
        self.field(name)?
            .as_f64()
            .ok_or_else(|| self.wrong(name, "a number"))
    }
    fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        match self.field(name)? {
            Value::Null => Ok(None),
            v => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(name, "a number or null")),
        }
    }
    fn u64(&self, name: &str) -> Result<u64> {
        self.field(name)?
            .as_u64()
            .ok_or_else(|| self.wrong(name, "a whole number"))
    }
    fn usize(&self, name: &str) -> Result<usize> {
        usize::try_from(self.u64(name)?).map_err(|_| self.wrong(name, "a size of this machine"))
    }
    fn bool(&self, name: &str) -> Result<bool> {
        self.field(name)?
            .as_bool()
            .ok_or_else(|| self.wrong(name, "true or false"))
    }
    fn usize_list(&self, name: &str) -> Result<Vec<usize>> {
        self.field(name)?
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_u64().and_then(|x| usize::try_from(x).ok()))
                    .collect()
            })
            .ok_or_else(|| self.wrong(name, "a list of whole numbers"))
    }
}

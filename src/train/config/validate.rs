//! [`TrainConfig::validate`]: every setting of a run checked in one place,
//! before any data is loaded or anything is trained — for options from the
//! command line and for configurations read back from checkpoints alike.
//! Messages name the setting's key in the saved configuration and its
//! command-line option.

use super::{bad, DatasetKind, OptimizerKind, ScheduleKind, TestSet, TrainConfig};
use crate::error::Result;

/// Most epochs a run may have.
pub const MAX_EPOCHS: usize = 1_000_000;
/// Largest batch size (the loader's limit).
pub use crate::data::loader::MAX_BATCH_SIZE;
/// Largest generated training or test set: 300,000 MultiMNIST-LT images of
/// 56 × 56 bytes are 0.94 GB, so no buffer of a run exceeds 1 GiB (five
/// times MNIST's 60,000 digits, each image holding up to four of them).
pub const MAX_GENERATED_SIZE: usize = 300_000;
/// Largest random-crop padding, in pixels.
pub const MAX_CROP_PADDING: usize = 64;
/// Most PLM histogram bins (the objective's limit).
pub use crate::plm::MAX_BINS as MAX_PLM_BINS;

/// `Ok` if `v` is a finite number > 0.
fn positive(what: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(format!("{what} must be a positive number, got {v}")))
    }
}

/// `Ok` if `v` is a finite number ≥ 0.
fn non_negative(what: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(format!("{what} must be a finite number >= 0, got {v}")))
    }
}

/// `Ok` if `1 <= v <= max`.
fn count(what: &str, v: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err(bad(format!("{what} must be between 1 and {max}, got {v}")))
    }
}

impl TrainConfig {
    /// Checks every setting and their combination; the message names the
    /// offending setting (and its command-line option).
    pub fn validate(&self) -> Result<()> {
        self.validate_loop()?;
        self.validate_optim()?;
        self.validate_data()?;
        self.validate_loss()
    }

    fn validate_loop(&self) -> Result<()> {
        count("`epochs` (--epochs)", self.epochs, MAX_EPOCHS)?;
        count(
            "`batch_size` (--batch-size)",
            self.batch_size,
            MAX_BATCH_SIZE,
        )?;
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(bad(format!(
                "`threshold` (--threshold) must be in (0, 1), got {}",
                self.threshold
            )));
        }
        if let Some(stem) = &self.stem {
            if stem != "cifar" && stem != "imagenet" {
                return Err(bad(format!(
                    "`stem` (--stem): unknown stem `{stem}` (expected cifar or imagenet)"
                )));
            }
        }
        crate::train::model::model_config(&self.model, self.stem.as_deref(), 1, 1)?;
        Ok(())
    }

    fn validate_optim(&self) -> Result<()> {
        let o = &self.optim;
        positive("`optim.lr` (--lr)", o.lr)?;
        non_negative("`optim.weight_decay` (--weight-decay)", o.weight_decay)?;
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(bad(format!(
                "`optim.momentum` (--momentum) must be in [0, 1), got {}",
                o.momentum
            )));
        }
        if o.nesterov && (o.kind != OptimizerKind::Sgd || o.momentum == 0.0) {
            return Err(bad(
                "`optim.nesterov` (--nesterov) needs --optimizer sgd and a momentum > 0",
            ));
        }
        if let Some(c) = o.clip_grad_norm {
            positive("`optim.clip_grad_norm` (--clip-grad-norm)", c)?;
        }
        positive("`optim.gamma` (--lr-gamma)", o.gamma)?;
        // Milestones matter only to the multistep schedule. Milestones or a
        // warm-up beyond the run are legal (as in PyTorch): a recipe
        // shortened with --epochs keeps its schedule, and they never fire.
        if o.schedule == ScheduleKind::MultiStep {
            if o.milestones.is_empty() {
                return Err(bad(
                    "`optim.milestones`: the multistep schedule needs --milestones (e.g. --milestones 160,180)",
                ));
            }
            if o.milestones.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(format!(
                    "`optim.milestones` (--milestones) must be increasing, got {:?}",
                    o.milestones
                )));
            }
            if o.milestones.contains(&0) {
                return Err(bad(
                    "`optim.milestones` (--milestones) count epochs from 1, got 0",
                ));
            }
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<()> {
        let d = &self.data;
        positive(
            "`data.imbalance_factor` (--imbalance-factor)",
            d.imbalance_factor,
        )?;
        if d.imbalance_factor < 1.0 {
            return Err(bad(format!(
                "`data.imbalance_factor` (--imbalance-factor) must be >= 1, got {}",
                d.imbalance_factor
            )));
        }
        for (what, n) in [
            ("`data.train_size` (--train-size)", d.train_size),
            ("`data.test_size` (--test-size)", d.test_size),
        ] {
            if n > MAX_GENERATED_SIZE {
                return Err(bad(format!(
                    "{what} must be at most {MAX_GENERATED_SIZE}, got {n}"
                )));
            }
        }
        if d.crop_padding > MAX_CROP_PADDING {
            return Err(bad(format!(
                "`data.crop_padding` (--crop-padding) must be at most {MAX_CROP_PADDING}, got {}",
                d.crop_padding
            )));
        }
        if d.test_set != TestSet::Imbalanced && d.kind != DatasetKind::MultiMnistLt {
            return Err(bad(format!(
                "`data.test_set` (--test-set): only multimnist-lt has a balanced test set; {} has its own",
                d.kind.name()
            )));
        }
        if self.loss.is_cross_entropy() && d.kind.is_multi_label() {
            return Err(bad(format!(
                "`loss` (--loss): `ce` (softmax cross-entropy) needs single-label data; `{}` is multi-label",
                d.kind.name()
            )));
        }
        Ok(())
    }

    /// The loss checks itself ([`crate::train::LossSpec::validate`]).
    fn validate_loss(&self) -> Result<()> {
        self.loss
            .validate()
            .map_err(|e| bad(format!("`loss` (--loss): {}", plain(e))))
    }
}

/// The message of an invalid-argument error without its op prefix.
fn plain(e: crate::error::Error) -> String {
    match e {
        crate::error::Error::InvalidArgument { msg, .. } => msg,
        other => other.to_string(),
    }
}

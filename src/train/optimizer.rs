//! The optimizer and learning-rate schedule of a run.

use super::config::{OptimConfig, OptimizerKind, ScheduleKind};
use crate::autograd::GradStore;
use crate::checkpoint::{CheckpointOptimizer, OptimizerState};
use crate::error::Result;
use crate::nn::{self, Module};
use crate::optim::{
    Adam, AdamConfig, ConstantLr, CosineAnnealing, LinearWarmup, LrSchedule, MultiStepLr,
    Optimizer, ParamGroup, SequentialLr, Sgd, SgdConfig,
};

/// SGD or Adam(W), behind one type so a run can hold either.
pub enum RunOptimizer {
    /// SGD, with optional (Nesterov) momentum.
    Sgd(Sgd),
    /// Adam, or AdamW with decoupled weight decay.
    Adam(Adam),
}

impl RunOptimizer {
    /// The optimizer of `config` over the parameters of `model`. With
    /// `no_decay_norm_bias`, one-dimensional parameters (batch-norm scales
    /// and shifts, biases) form a second group without weight decay.
    pub fn new(config: &OptimConfig, model: &dyn Module) -> Result<Self> {
        let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
        for (_, p) in nn::named_parameters(model) {
            if config.no_decay_norm_bias && p.shape().len() <= 1 {
                no_decay.push(p);
            } else {
                decay.push(p);
            }
        }
        let mut groups = vec![ParamGroup::new(decay, config.lr, config.weight_decay)];
        if !no_decay.is_empty() {
            groups.push(ParamGroup::new(no_decay, config.lr, 0.0));
        }
        Ok(match config.kind {
            OptimizerKind::Sgd => RunOptimizer::Sgd(Sgd::new(
                groups,
                SgdConfig {
                    momentum: config.momentum,
                    dampening: 0.0,
                    nesterov: config.nesterov,
                },
            )?),
            OptimizerKind::Adam => RunOptimizer::Adam(Adam::new(groups, AdamConfig::default())?),
            OptimizerKind::AdamW => RunOptimizer::Adam(Adam::new(groups, AdamConfig::adamw())?),
        })
    }

    fn inner(&self) -> &dyn Optimizer {
        match self {
            RunOptimizer::Sgd(o) => o,
            RunOptimizer::Adam(o) => o,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Optimizer {
        match self {
            RunOptimizer::Sgd(o) => o,
            RunOptimizer::Adam(o) => o,
        }
    }
}

impl Optimizer for RunOptimizer {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.inner_mut().step(grads)
    }
    fn groups(&self) -> &[ParamGroup] {
        self.inner().groups()
    }
    fn set_lr(&mut self, group: usize, lr: f64) {
        self.inner_mut().set_lr(group, lr)
    }
    fn lr(&self, group: usize) -> f64 {
        self.inner().lr(group)
    }
    fn steps(&self) -> u64 {
        self.inner().steps()
    }
}

impl CheckpointOptimizer for RunOptimizer {
    fn checkpoint_state(&self) -> Result<OptimizerState> {
        match self {
            RunOptimizer::Sgd(o) => o.checkpoint_state(),
            RunOptimizer::Adam(o) => o.checkpoint_state(),
        }
    }
    fn restore_checkpoint_state(&mut self, state: &OptimizerState) -> Result<()> {
        match self {
            RunOptimizer::Sgd(o) => o.restore_checkpoint_state(state),
            RunOptimizer::Adam(o) => o.restore_checkpoint_state(state),
        }
    }
}

/// The schedule of `config` over `epochs` epochs: an optional linear
/// warm-up from a tenth of the rate, then constant, cosine (to 0 at the
/// last epoch) or multistep.
pub fn build_schedule(config: &OptimConfig, epochs: usize) -> Box<dyn LrSchedule> {
    let warmup = config.warmup_epochs.min(epochs);
    let rest = epochs - warmup;
    let main: Box<dyn LrSchedule> = match config.schedule {
        ScheduleKind::Constant => Box::new(ConstantLr),
        ScheduleKind::Cosine => Box::new(CosineAnnealing {
            t_max: rest.max(1),
            eta_min: 0.0,
        }),
        ScheduleKind::MultiStep => Box::new(MultiStepLr {
            milestones: config
                .milestones
                .iter()
                .map(|&m| m.saturating_sub(warmup))
                .collect(),
            gamma: config.gamma,
        }),
    };
    if warmup == 0 {
        return main;
    }
    Box::new(SequentialLr {
        schedules: vec![
            Box::new(LinearWarmup {
                start_factor: 0.1,
                end_factor: 1.0,
                total_iters: warmup,
            }),
            main,
        ],
        milestones: vec![warmup],
    })
}

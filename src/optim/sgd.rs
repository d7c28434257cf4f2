//! Stochastic gradient descent with momentum, dampening, Nesterov momentum
//! and (L2) weight decay, as `torch.optim.SGD`.

use super::{check_groups, check_state, for_each_update, Optimizer, ParamGroup};
use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::ops::optim::SgdStep;
use crate::tensor::Tensor;

/// Momentum settings shared by all groups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor μ in `[0, 1]` (0: plain SGD, no momentum buffer).
    pub momentum: f64,
    /// Dampening τ in `[0, 1]`: after the first step, the gradient enters
    /// the momentum buffer scaled by `1 − τ`.
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and zero dampening).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
        }
    }
}

/// SGD; see [`SgdStep`] for the update rule.
///
/// ```
/// use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
/// use ferrite::{DType, Tensor};
/// let w = Tensor::ones(&[2], DType::F32)?.requires_grad_(true);
/// let config = SgdConfig { momentum: 0.9, ..SgdConfig::default() };
/// let mut opt = Sgd::new(vec![ParamGroup::new(vec![w.clone()], 0.5, 0.0)], config)?;
/// let loss = w.sum_all()?; // gradient 1 everywhere
/// opt.step(&loss.backward()?)?;
/// assert_eq!(w.to_vec::<f32>()?, vec![0.5, 0.5]); // w − lr·g on the first step
/// # Ok::<(), ferrite::Error>(())
/// ```
pub struct Sgd {
    groups: Vec<ParamGroup>,
    current_lr: Vec<f64>,
    config: SgdConfig,
    /// One momentum buffer per parameter (group-major order), created on
    /// the parameter's first update.
    buffers: Vec<Option<Tensor>>,
    steps: u64,
}

impl Sgd {
    /// An optimizer over `groups`.
    pub fn new(groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Self> {
        check_groups("Sgd::new", &groups)?;
        if !(0.0..=1.0).contains(&config.momentum) {
            return Err(Error::invalid(
                "Sgd::new",
                format!("momentum must be in [0, 1], got {}", config.momentum),
            ));
        }
        if !(0.0..=1.0).contains(&config.dampening) {
            return Err(Error::invalid(
                "Sgd::new",
                format!("dampening must be in [0, 1], got {}", config.dampening),
            ));
        }
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::invalid(
                "Sgd::new",
                "Nesterov momentum needs momentum > 0 and zero dampening",
            ));
        }
        let n = groups.iter().map(|g| g.params.len()).sum();
        Ok(Sgd {
            current_lr: groups.iter().map(|g| g.lr).collect(),
            groups,
            config,
            buffers: vec![None; n],
            steps: 0,
        })
    }

    /// The momentum buffers, one per parameter in group order (for checkpoints).
    pub fn momentum_buffers(&self) -> &[Option<Tensor>] {
        &self.buffers
    }

    /// Restores momentum buffers (e.g. from a checkpoint) and the step count.
    pub fn load_state(&mut self, buffers: Vec<Option<Tensor>>, steps: u64) -> Result<()> {
        let entries: Vec<Vec<&Tensor>> = buffers.iter().map(|b| b.iter().collect()).collect();
        check_state("Sgd::load_state", &self.groups, &entries)?;
        self.buffers = buffers;
        self.steps = steps;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (config, lrs, buffers) = (&self.config, &self.current_lr, &mut self.buffers);
        for_each_update(&self.groups, grads, |gi, slot, p, grad| {
            let first_step = buffers[slot].is_none();
            if config.momentum != 0.0 && first_step {
                buffers[slot] = Some(p.zeros_like()?);
            }
            let h = SgdStep {
                lr: lrs[gi],
                momentum: config.momentum,
                dampening: config.dampening,
                nesterov: config.nesterov,
                weight_decay: self.groups[gi].weight_decay,
                first_step,
            };
            p.sgd_update_(grad, buffers[slot].as_ref(), &h)
        })?;
        self.steps += 1;
        Ok(())
    }

    fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    fn set_lr(&mut self, group: usize, lr: f64) {
        self.current_lr[group] = lr;
    }

    fn lr(&self, group: usize) -> f64 {
        self.current_lr[group]
    }

    fn steps(&self) -> u64 {
        self.steps
    }
}

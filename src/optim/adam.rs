//! Adam (`torch.optim.Adam`, L2 weight decay) and AdamW
//! (`torch.optim.AdamW`, decoupled weight decay).

use super::{check_groups, check_state, for_each_update, Optimizer, ParamGroup};
use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::ops::optim::AdamStep;
use crate::tensor::Tensor;

/// Moment settings shared by all groups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Decay rate of the first moment (gradient mean), in `[0, 1)`; default 0.9.
    pub beta1: f64,
    /// Decay rate of the second moment (squared gradient), in `[0, 1)`; default 0.999.
    pub beta2: f64,
    /// Added to the denominator `√v̂` for numerical stability, `>= 0`; default 1e-8.
    pub eps: f64,
    /// AdamW: decay the weights directly instead of adding `wd·p` to the gradient.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled_weight_decay: false,
        }
    }
}

impl AdamConfig {
    /// AdamW's defaults (decoupled decay).
    pub fn adamw() -> Self {
        AdamConfig {
            decoupled_weight_decay: true,
            ..Self::default()
        }
    }
}

/// Adam / AdamW; see [`AdamStep`] for the update rule.
///
/// ```
/// use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
/// use ferrite::{DType, Tensor};
/// // Minimise (w − 3)² from w = 0.
/// let w = Tensor::zeros(&[1], DType::F32)?.requires_grad_(true);
/// let mut opt = Adam::new(vec![ParamGroup::new(vec![w.clone()], 0.1, 0.0)], AdamConfig::default())?;
/// for _ in 0..200 {
///     let loss = w.sub_scalar(3.0)?.square()?.sum_all()?;
///     opt.step(&loss.backward()?)?;
/// }
/// assert!((w.to_vec::<f32>()?[0] - 3.0).abs() < 0.05);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub struct Adam {
    groups: Vec<ParamGroup>,
    current_lr: Vec<f64>,
    config: AdamConfig,
    /// First and second moments per parameter (group order), created on
    /// the parameter's first update, with its own step count.
    state: Vec<Option<(Tensor, Tensor, u64)>>,
    steps: u64,
}

impl Adam {
    /// An optimizer over `groups`.
    pub fn new(groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Self> {
        check_groups("Adam::new", &groups)?;
        let ok = (0.0..1.0).contains(&config.beta1)
            && (0.0..1.0).contains(&config.beta2)
            && config.eps >= 0.0;
        if !ok {
            return Err(Error::invalid(
                "Adam::new",
                format!("invalid betas/eps {config:?}"),
            ));
        }
        let n = groups.iter().map(|g| g.params.len()).sum();
        Ok(Adam {
            current_lr: groups.iter().map(|g| g.lr).collect(),
            groups,
            config,
            state: vec![None; n],
            steps: 0,
        })
    }

    /// Per-parameter `(m, v, step)` in group order (for checkpoints).
    pub fn moments(&self) -> &[Option<(Tensor, Tensor, u64)>] {
        &self.state
    }

    /// Restores moments (e.g. from a checkpoint) and the step count.
    pub fn load_state(
        &mut self,
        state: Vec<Option<(Tensor, Tensor, u64)>>,
        steps: u64,
    ) -> Result<()> {
        let entries: Vec<Vec<&Tensor>> = state
            .iter()
            .map(|s| s.iter().flat_map(|(m, v, _)| [m, v]).collect())
            .collect();
        check_state("Adam::load_state", &self.groups, &entries)?;
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (config, lrs, state) = (&self.config, &self.current_lr, &mut self.state);
        for_each_update(&self.groups, grads, |gi, slot, p, grad| {
            if state[slot].is_none() {
                state[slot] = Some((p.zeros_like()?, p.zeros_like()?, 0));
            }
            let (m, v, step) = state[slot].as_mut().expect("just created");
            *step += 1;
            let h = AdamStep {
                lr: lrs[gi],
                beta1: config.beta1,
                beta2: config.beta2,
                eps: config.eps,
                weight_decay: self.groups[gi].weight_decay,
                decoupled: config.decoupled_weight_decay,
                step: *step,
            };
            p.adam_update_(grad, m, v, &h)
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

//! Optimizers, learning-rate schedules and gradient clipping.
//!
//! An optimizer owns parameter groups (each with its own learning rate and
//! weight decay, e.g. no decay on batch-norm and bias parameters) and the
//! per-parameter state (momentum, moments). `step(&grads)` reads the
//! gradients of a backward pass from the [`GradStore`] and updates every
//! parameter in place with one fused pass; parameters without a gradient
//! are skipped, as in PyTorch.
//!
//! Schedules give the learning rate of each epoch in closed form from a
//! group's base rate; `Optimizer::apply_schedule` sets every group's rate.

mod adam;
mod clip;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, clip_grad_norm_};
pub use schedule::{
    ConstantLr, CosineAnnealing, LinearWarmup, LrSchedule, MultiStepLr, SequentialLr, StepLr,
};
pub use sgd::{Sgd, SgdConfig};

use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Parameters that share a learning rate and a weight decay.
///
/// ```
/// use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
/// use ferrite::{DType, Tensor};
/// let weight = Tensor::ones(&[4, 4], DType::F32)?.requires_grad_(true);
/// let bias = Tensor::zeros(&[4], DType::F32)?.requires_grad_(true);
/// // Weight decay on the weights only, as is usual.
/// let opt = Adam::new(
///     vec![ParamGroup::new(vec![weight], 1e-3, 1e-4), ParamGroup::new(vec![bias], 1e-3, 0.0)],
///     AdamConfig::default(),
/// )?;
/// assert_eq!(opt.groups().len(), 2);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ParamGroup {
    /// The parameters (leaf tensors that require a gradient).
    pub params: Vec<Tensor>,
    /// Base learning rate (schedules scale it).
    pub lr: f64,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group with the given parameters, learning rate and weight decay.
    pub fn new(params: Vec<Tensor>, lr: f64, weight_decay: f64) -> Self {
        ParamGroup {
            params,
            lr,
            weight_decay,
        }
    }
}

/// What every optimizer offers to training loops.
pub trait Optimizer {
    /// Updates every parameter that has a gradient in `grads`, in place.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The parameter groups.
    fn groups(&self) -> &[ParamGroup];
    /// Sets the current learning rate of group `group` (its base rate in
    /// [`ParamGroup::lr`] is unchanged).
    fn set_lr(&mut self, group: usize, lr: f64);
    /// The current learning rate of group `group`.
    fn lr(&self, group: usize) -> f64;
    /// Steps taken so far.
    fn steps(&self) -> u64;

    /// Sets every group's rate to what `schedule` gives for `epoch` from
    /// the group's base rate.
    fn apply_schedule(&mut self, schedule: &dyn LrSchedule, epoch: usize) {
        let bases: Vec<f64> = self.groups().iter().map(|g| g.lr).collect();
        for (i, base) in bases.into_iter().enumerate() {
            self.set_lr(i, schedule.lr_at(base, epoch));
        }
    }
}

/// Calls `f(group_index, slot, param, grad)` for every parameter that has
/// a gradient in `grads`, inside `no_grad`; `slot` numbers the parameters
/// of all groups in order (the index of their optimizer state).
fn for_each_update(
    groups: &[ParamGroup],
    grads: &GradStore,
    mut f: impl FnMut(usize, usize, &Tensor, &Tensor) -> Result<()>,
) -> Result<()> {
    crate::autograd::no_grad(|| {
        let slots = groups
            .iter()
            .enumerate()
            .flat_map(|(gi, g)| g.params.iter().map(move |p| (gi, p)));
        for (slot, (gi, p)) in slots.enumerate() {
            if let Some(grad) = grads.get(p) {
                f(gi, slot, p, grad)?;
            }
        }
        Ok(())
    })
}

/// Checks restored per-parameter state: one entry per parameter (in group
/// order), each tensor of an entry with its parameter's shape and dtype.
fn check_state(op: &'static str, groups: &[ParamGroup], state: &[Vec<&Tensor>]) -> Result<()> {
    let params: Vec<&Tensor> = groups.iter().flat_map(|g| &g.params).collect();
    if state.len() != params.len() {
        return Err(Error::invalid(
            op,
            format!(
                "state for {} parameters, optimizer has {}",
                state.len(),
                params.len()
            ),
        ));
    }
    for (entry, p) in state.iter().zip(&params) {
        for t in entry {
            if t.shape() != p.shape() {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: p.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
            p.check_same(op, t)?;
        }
    }
    Ok(())
}

/// Validates a group list: positive finite rates, non-negative decay,
/// parameters that are float leaves requiring a gradient, none repeated.
fn check_groups(op: &'static str, groups: &[ParamGroup]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (i, g) in groups.iter().enumerate() {
        let valid = |v: f64| v.is_finite() && v >= 0.0;
        if !valid(g.lr) || !valid(g.weight_decay) {
            return Err(Error::invalid(
                op,
                format!(
                    "group {i}: invalid lr {} or weight decay {}",
                    g.lr, g.weight_decay
                ),
            ));
        }
        for p in &g.params {
            if !p.requires_grad() || !p.dtype().is_float() {
                return Err(Error::invalid(
                    op,
                    format!("group {i}: {p:?} is not a float tensor that requires a gradient"),
                ));
            }
            if !seen.insert(p.id()) {
                return Err(Error::invalid(
                    op,
                    format!("group {i}: parameter {p:?} appears twice"),
                ));
            }
        }
    }
    Ok(())
}

//! Learning-rate schedules in closed form: the rate of epoch `e` for a
//! group whose base rate is `base`. They match PyTorch's schedulers stepped
//! once per epoch (`lr_at(base, e)` is the rate after `e` calls of
//! `scheduler.step()`).

/// A learning rate as a function of the epoch.
///
/// ```
/// use ferrite::optim::{LrSchedule, Optimizer, ParamGroup, Sgd, SgdConfig, StepLr};
/// use ferrite::{DType, Tensor};
/// let w = Tensor::zeros(&[1], DType::F32)?.requires_grad_(true);
/// let mut opt = Sgd::new(vec![ParamGroup::new(vec![w], 0.1, 0.0)], SgdConfig::default())?;
/// let schedule = StepLr { step_size: 2, gamma: 0.5 };
/// for epoch in 0..5 {
///     opt.apply_schedule(&schedule, epoch); // at the start of each epoch
///     // ... train the epoch ...
/// }
/// assert_eq!(opt.lr(0), 0.1 * 0.25); // epoch 4: two halvings
/// assert_eq!(opt.groups()[0].lr, 0.1); // the base rate is kept
/// # Ok::<(), ferrite::Error>(())
/// ```
pub trait LrSchedule: Send + Sync {
    /// The learning rate of epoch `epoch` (0-based) for base rate `base`.
    fn lr_at(&self, base: f64, epoch: usize) -> f64;
}

/// The base rate, always.
///
/// ```
/// use ferrite::optim::{ConstantLr, LrSchedule};
/// assert_eq!(ConstantLr.lr_at(0.1, 99), 0.1);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ConstantLr;

impl LrSchedule for ConstantLr {
    fn lr_at(&self, base: f64, _epoch: usize) -> f64 {
        base
    }
}

/// `base · γ^⌊e / step_size⌋` (`torch.optim.lr_scheduler.StepLR`).
///
/// ```
/// use ferrite::optim::{LrSchedule, StepLr};
/// let s = StepLr { step_size: 30, gamma: 0.1 };
/// assert_eq!(s.lr_at(1.0, 29), 1.0);
/// assert!((s.lr_at(1.0, 30) - 0.1).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct StepLr {
    /// Epochs between decays (0 is treated as 1).
    pub step_size: usize,
    /// Factor the rate is multiplied by at each decay.
    pub gamma: f64,
}

impl LrSchedule for StepLr {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        base * self.gamma.powi((epoch / self.step_size.max(1)) as i32)
    }
}

/// `base · γ^(number of milestones ≤ e)` (`MultiStepLR`).
///
/// ```
/// use ferrite::optim::{LrSchedule, MultiStepLr};
/// let s = MultiStepLr { milestones: vec![10, 15], gamma: 0.1 };
/// let lrs: Vec<f64> = [0, 10, 15].iter().map(|&e| s.lr_at(1.0, e)).collect();
/// assert!((lrs[1] - 0.1).abs() < 1e-12 && (lrs[2] - 0.01).abs() < 1e-12);
/// ```
#[derive(Clone, Debug)]
pub struct MultiStepLr {
    /// Epochs at which the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// Factor the rate is multiplied by at each milestone.
    pub gamma: f64,
}

impl LrSchedule for MultiStepLr {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| m <= epoch).count();
        base * self.gamma.powi(passed as i32)
    }
}

/// `η_min + (base − η_min)(1 + cos(π e / T_max)) / 2` (`CosineAnnealingLR`).
///
/// ```
/// use ferrite::optim::{CosineAnnealing, LrSchedule};
/// let s = CosineAnnealing { t_max: 10, eta_min: 0.0 };
/// assert_eq!(s.lr_at(0.1, 0), 0.1);
/// assert!((s.lr_at(0.1, 5) - 0.05).abs() < 1e-12); // half-way: half the rate
/// assert!(s.lr_at(0.1, 10).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CosineAnnealing {
    /// Epochs of the half cosine, from `base` down to `eta_min` (0 is treated as 1).
    pub t_max: usize,
    /// Lowest learning rate, reached at epoch `t_max`.
    pub eta_min: f64,
}

impl LrSchedule for CosineAnnealing {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let phase = std::f64::consts::PI * epoch as f64 / self.t_max.max(1) as f64;
        self.eta_min + (base - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }
}

/// Linear ramp of the factor from `start_factor` to `end_factor` over
/// `total_iters` epochs, then constant (`LinearLR`, used for warm-up).
///
/// ```
/// use ferrite::optim::{LinearWarmup, LrSchedule};
/// let s = LinearWarmup { start_factor: 0.1, end_factor: 1.0, total_iters: 3 };
/// assert!((s.lr_at(1.0, 0) - 0.1).abs() < 1e-12);
/// assert!((s.lr_at(1.0, 3) - 1.0).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LinearWarmup {
    /// Factor of the base rate at epoch 0.
    pub start_factor: f64,
    /// Factor of the base rate from epoch `total_iters` on.
    pub end_factor: f64,
    /// Epochs the ramp lasts.
    pub total_iters: usize,
}

impl LrSchedule for LinearWarmup {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let t = epoch.min(self.total_iters) as f64 / self.total_iters.max(1) as f64;
        base * (self.start_factor + (self.end_factor - self.start_factor) * t)
    }
}

/// Schedules one after another (`SequentialLR`): schedule `i` runs from
/// milestone `i − 1` (0 for the first) and sees epochs counted from there.
///
/// ```
/// use ferrite::optim::{CosineAnnealing, LinearWarmup, LrSchedule, SequentialLr};
/// // Two epochs of warm-up, then a cosine over the next ten.
/// let s = SequentialLr {
///     schedules: vec![
///         Box::new(LinearWarmup { start_factor: 0.5, end_factor: 1.0, total_iters: 2 }),
///         Box::new(CosineAnnealing { t_max: 10, eta_min: 0.0 }),
///     ],
///     milestones: vec![2],
/// };
/// assert_eq!(s.lr_at(0.2, 0), 0.1);
/// assert_eq!(s.lr_at(0.2, 2), 0.2); // the cosine's epoch 0
/// assert!(s.lr_at(0.2, 12).abs() < 1e-12);
/// ```
pub struct SequentialLr {
    /// The schedules, in the order they run.
    pub schedules: Vec<Box<dyn LrSchedule>>,
    /// One fewer than `schedules`, increasing.
    pub milestones: Vec<usize>,
}

impl LrSchedule for SequentialLr {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let segment = self.milestones.iter().filter(|&&m| m <= epoch).count();
        let start = if segment == 0 {
            0
        } else {
            self.milestones[segment - 1]
        };
        match self.schedules.get(segment).or(self.schedules.last()) {
            Some(s) => s.lr_at(base, epoch - start),
            None => base,
        }
    }
}

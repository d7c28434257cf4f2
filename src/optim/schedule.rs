//! Learning-rate schedules in closed form: the rate of epoch `e` for a
//! group whose base rate is `base`. They match PyTorch's schedulers stepped
//! once per epoch (`lr_at(base, e)` is the rate after `e` calls of
//! `scheduler.step()`).

/// A learning rate as a function of the epoch.
pub trait LrSchedule: Send + Sync {
    /// The learning rate of epoch `epoch` (0-based) for base rate `base`.
    fn lr_at(&self, base: f64, epoch: usize) -> f64;
}

/// The base rate, always.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConstantLr;

impl LrSchedule for ConstantLr {
    fn lr_at(&self, base: f64, _epoch: usize) -> f64 {
        base
    }
}

/// `base · γ^⌊e / step_size⌋` (`torch.optim.lr_scheduler.StepLR`).
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

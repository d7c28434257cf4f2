//! [`ElementLoss`]: the per-element multi-label losses as one value, so
//! that a configuration can name the loss to train with (the text form is
//! read by [`crate::train::LossSpec`], the one loss grammar).

use super::sigmoid::{check_asl, check_focal};
use super::{asymmetric_loss, bce_with_logits, sigmoid_focal_loss, AslOptions, Reduction};
use crate::error::Result;
use crate::tensor::Tensor;

/// One of the per-element sigmoid losses with its hyper-parameters.
///
/// [`ElementLoss::name`] writes it in the grammar of
/// [`crate::train::LossSpec`]: `"bce"`, `"focal(gamma=2,alpha=0.25)"`
/// (`alpha=none` for no α), `"asl(gamma_pos=0,gamma_neg=4,clip=0.05)"`.
///
/// ```
/// use ferrite::loss::{ElementLoss, Reduction};
/// use ferrite::Tensor;
/// let loss = ElementLoss::Focal { gamma: 2.0, alpha: Some(0.25) };
/// assert_eq!(loss.name(), "focal(gamma=2,alpha=0.25)");
/// let logits = Tensor::from_vec(vec![0.5f32, -1.0], &[1, 2])?;
/// let y = Tensor::from_vec(vec![1.0f32, 0.0], &[1, 2])?;
/// assert_eq!(loss.compute(&logits, &y, None, Reduction::None)?.shape(), &[1, 2]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ElementLoss {
    /// [`bce_with_logits`].
    Bce,
    /// [`sigmoid_focal_loss`] with these `gamma` and `alpha`.
    Focal {
        /// Focusing exponent γ, finite and ≥ 0 (0: no down-weighting of easy elements).
        gamma: f64,
        /// Weight α in [0, 1] of the positives (1 − α for negatives); `None`: no weighting.
        alpha: Option<f64>,
    },
    /// [`asymmetric_loss`] with these options.
    Asl(AslOptions),
}

impl ElementLoss {
    /// Evaluates the loss (see the function each variant names).
    pub fn compute(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weight: Option<&Tensor>,
        reduction: Reduction,
    ) -> Result<Tensor> {
        match self {
            ElementLoss::Bce => bce_with_logits(logits, targets, weight, reduction),
            ElementLoss::Focal { gamma, alpha } => {
                sigmoid_focal_loss(logits, targets, *gamma, *alpha, weight, reduction)
            }
            ElementLoss::Asl(opts) => asymmetric_loss(logits, targets, opts, weight, reduction),
        }
    }

    /// Checks the hyper-parameters with the loss's own rules (focal: γ
    /// finite and ≥ 0, α in [0, 1]; ASL: both γ finite and ≥ 0, clip in
    /// [0, 1)).
    pub fn validate(&self) -> Result<()> {
        match self {
            ElementLoss::Bce => Ok(()),
            ElementLoss::Focal { gamma, alpha } => check_focal(*gamma, *alpha),
            ElementLoss::Asl(opts) => check_asl(opts),
        }
    }

    /// The loss and its hyper-parameters, in the grammar of
    /// [`crate::train::LossSpec`].
    pub fn name(&self) -> String {
        match self {
            ElementLoss::Bce => "bce".to_string(),
            ElementLoss::Focal { gamma, alpha } => match alpha {
                Some(a) => format!("focal(gamma={gamma},alpha={a})"),
                None => format!("focal(gamma={gamma},alpha=none)"),
            },
            ElementLoss::Asl(o) => format!(
                "asl(gamma_pos={},gamma_neg={},clip={})",
                o.gamma_pos, o.gamma_neg, o.clip
            ),
        }
    }
}

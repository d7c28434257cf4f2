//! The multi-label losses: one independent sigmoid per logit.
//!
//! All take `logits` (any shape, f32 or f64; half types are computed in
//! f32), `targets` of the same shape and dtype with values in [0, 1], an
//! optional `weight` that broadcasts against the logits (typically a `[C]`
//! per-class vector for `[B, C]` logits) and multiplies each element's
//! loss, and a [`Reduction`]. `Mean` divides the weighted sum by the number
//! of logits (`B·C`), whatever the weights; over zero logits it is NaN, as
//! `Tensor::mean`. Gradients flow to the logits only.

use super::fused::SigmoidLoss;
use super::Reduction;
use crate::error::{Error, Result};
use crate::ops::sigmoid_loss::Formula;
use crate::tensor::Tensor;

const FOCAL: &str = "sigmoid_focal_loss";
const ASL: &str = "asymmetric_loss";

/// Binary cross-entropy on logits, `ℓ = −y·ln σ(z) − (1 − y)·ln(1 − σ(z))`,
/// in the fused stable form `max(z, 0) − z·y + ln(1 + e^{−|z|})`; gradient
/// `σ(z) − y`. Matches `torch.nn.functional.binary_cross_entropy_with_logits`.
///
/// Errors: non-float logits, targets or weight of another dtype, targets
/// of another shape or weight that does not broadcast to the logits'
/// shape (`ShapeMismatch` naming the loss and both shapes), targets
/// outside [0, 1], targets or weight that require a gradient.
///
/// ```
/// use ferrite::loss::{bce_with_logits, Reduction};
/// use ferrite::Tensor;
/// let logits = Tensor::from_vec(vec![0.0f32, 2.0], &[1, 2])?.requires_grad_(true);
/// let targets = Tensor::from_vec(vec![1.0f32, 0.0], &[1, 2])?;
/// let loss = bce_with_logits(&logits, &targets, None, Reduction::Mean)?;
/// let grads = loss.backward()?;
/// // dℓ/dz = (σ(z) − y) / 2 for the mean over two elements.
/// let g = grads.get(&logits).unwrap().to_vec::<f32>()?;
/// assert!((g[0] + 0.25).abs() < 1e-6);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    SigmoidLoss {
        op: "bce_with_logits",
        formula: Formula::Bce,
        logits,
        targets,
        weight,
        pos_weight: None,
        reduction,
    }
    .run()
}

/// [`bce_with_logits`] with the positive term scaled by `pos_weight`
/// (broadcast against the logits, typically `[C]` = negatives/positives per
/// class): `ℓ = −w₊·y·ln σ(z) − (1 − y)·ln(1 − σ(z))`, gradient
/// `(1 − y)·σ(z) − w₊·y·(1 − σ(z))`. PyTorch's `pos_weight` argument.
///
/// Errors: those of [`bce_with_logits`], with `pos_weight` checked as
/// `weight`.
///
/// ```
/// use ferrite::loss::{bce_with_logits, bce_with_logits_pos_weight, Reduction};
/// use ferrite::Tensor;
/// let logits = Tensor::from_vec(vec![0.0f32, 0.0], &[1, 2])?;
/// let y = Tensor::from_vec(vec![1.0f32, 1.0], &[1, 2])?;
/// let plain = bce_with_logits(&logits, &y, None, Reduction::None)?.to_vec::<f32>()?;
/// // Positives of class 1 count three times.
/// let pw = Tensor::from_vec(vec![1.0f32, 3.0], &[2])?;
/// let weighted = bce_with_logits_pos_weight(&logits, &y, &pw, None, Reduction::None)?.to_vec::<f32>()?;
/// assert!((weighted[0] - plain[0]).abs() < 1e-6 && (weighted[1] - 3.0 * plain[1]).abs() < 1e-5);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn bce_with_logits_pos_weight(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    SigmoidLoss {
        op: "bce_with_logits",
        formula: Formula::Bce,
        logits,
        targets,
        weight,
        pos_weight: Some(pos_weight),
        reduction,
    }
    .run()
}

/// Sigmoid focal loss (Lin et al. 2017), `−α_t·(1 − p_t)^γ·ln p_t` with
/// `p = σ(z)`, `p_t = p·y + (1 − p)·(1 − y)` and `α_t = α·y + (1 − α)·(1 − y)`
/// (`alpha: None` leaves `α_t = 1`). As torchvision's `sigmoid_focal_loss`,
/// `−ln p_t` is the binary cross-entropy, so soft targets are accepted; with
/// `γ = 0` and no α the loss is [`bce_with_logits`].
///
/// Errors: those of [`bce_with_logits`]; `gamma` negative or not finite,
/// `alpha` outside [0, 1].
///
/// ```
/// use ferrite::loss::{bce_with_logits, sigmoid_focal_loss, Reduction};
/// use ferrite::Tensor;
/// let logits = Tensor::from_vec(vec![3.0f32, -0.5], &[1, 2])?;
/// let y = Tensor::from_vec(vec![1.0f32, 1.0], &[1, 2])?;
/// let bce = bce_with_logits(&logits, &y, None, Reduction::None)?.to_vec::<f32>()?;
/// // γ = 0 without α is BCE; γ = 2 down-weights the easy element most.
/// let same = sigmoid_focal_loss(&logits, &y, 0.0, None, None, Reduction::None)?.to_vec::<f32>()?;
/// assert!((same[0] - bce[0]).abs() < 1e-6);
/// let focal = sigmoid_focal_loss(&logits, &y, 2.0, None, None, Reduction::None)?.to_vec::<f32>()?;
/// assert!(focal[0] / bce[0] < 0.01 && focal[1] / bce[1] > 0.3);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn sigmoid_focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    gamma: f64,
    alpha: Option<f64>,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    check_focal(gamma, alpha)?;
    SigmoidLoss {
        op: FOCAL,
        formula: Formula::Focal { gamma, alpha },
        logits,
        targets,
        weight,
        pos_weight: None,
        reduction,
    }
    .run()
}

/// Hyper-parameters of [`asymmetric_loss`]. `Default` is the paper's
/// multi-label setting: `gamma_pos = 0`, `gamma_neg = 4`, `clip = 0.05`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AslOptions {
    /// Focusing exponent of the positive term (≥ 0).
    pub gamma_pos: f64,
    /// Focusing exponent of the negative term (≥ 0).
    pub gamma_neg: f64,
    /// Probability margin shifted off negatives, in [0, 1).
    pub clip: f64,
}

impl Default for AslOptions {
    fn default() -> Self {
        AslOptions {
            gamma_pos: 0.0,
            gamma_neg: 4.0,
            clip: 0.05,
        }
    }
}

/// Asymmetric loss (Ridnik et al. 2021, ASL). With `p = σ(z)`, positives
/// cost `ℓ₊ = −(1 − p)^γ₊·ln p` and negatives `ℓ₋ = −p_m^γ₋·ln(1 − p_m)`
/// with the shifted probability `p_m = max(p − clip, 0)`, so easy negatives
/// (`p ≤ clip`) cost nothing. A target `y` gives `y·ℓ₊ + (1 − y)·ℓ₋`
/// (the paper's loss for 0/1 targets, linear in between). With both
/// exponents and `clip` at 0 the loss is [`bce_with_logits`]. Unlike the
/// paper's code, `ln p` is not clamped at 1e-8: very negative logits of
/// positives keep their large, exact loss.
///
/// Errors: those of [`bce_with_logits`]; an exponent negative or not
/// finite, `clip` outside [0, 1).
///
/// ```
/// use ferrite::loss::{asymmetric_loss, bce_with_logits, AslOptions, Reduction};
/// use ferrite::Tensor;
/// let logits = Tensor::from_vec(vec![-4.0f32, 1.0], &[1, 2])?;
/// let y = Tensor::from_vec(vec![0.0f32, 0.0], &[1, 2])?;
/// let asl = asymmetric_loss(&logits, &y, &AslOptions::default(), None, Reduction::None)?;
/// let asl = asl.to_vec::<f32>()?;
/// // An easy negative (p ≈ 0.018 < clip 0.05) costs nothing.
/// assert_eq!(asl[0], 0.0);
/// let bce = bce_with_logits(&logits, &y, None, Reduction::None)?.to_vec::<f32>()?;
/// assert!(asl[1] < bce[1]);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn asymmetric_loss(
    logits: &Tensor,
    targets: &Tensor,
    opts: &AslOptions,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    check_asl(opts)?;
    SigmoidLoss {
        op: ASL,
        formula: Formula::Asl {
            gamma_pos: opts.gamma_pos,
            gamma_neg: opts.gamma_neg,
            clip: opts.clip,
        },
        logits,
        targets,
        weight,
        pos_weight: None,
        reduction,
    }
    .run()
}

/// Errors unless `gamma` ≥ 0 is finite and `alpha`, if any, is in [0, 1].
pub(super) fn check_focal(gamma: f64, alpha: Option<f64>) -> Result<()> {
    check_gamma(FOCAL, "gamma", gamma)?;
    match alpha {
        Some(a) if !(0.0..=1.0).contains(&a) => Err(Error::invalid(
            FOCAL,
            format!("alpha must be in [0, 1], got {a}"),
        )),
        _ => Ok(()),
    }
}

/// Errors unless both exponents are finite and ≥ 0 and `clip` is in [0, 1).
pub(super) fn check_asl(opts: &AslOptions) -> Result<()> {
    check_gamma(ASL, "gamma_pos", opts.gamma_pos)?;
    check_gamma(ASL, "gamma_neg", opts.gamma_neg)?;
    if !(0.0..1.0).contains(&opts.clip) {
        return Err(Error::invalid(
            ASL,
            format!("clip must be in [0, 1), got {}", opts.clip),
        ));
    }
    Ok(())
}

/// Errors unless the focusing exponent `name` is finite and ≥ 0.
fn check_gamma(op: &'static str, name: &str, gamma: f64) -> Result<()> {
    if gamma >= 0.0 && gamma.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("{name} must be finite and ≥ 0, got {gamma}"),
        ))
    }
}

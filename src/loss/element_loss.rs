//! [`ElementLoss`]: the per-element multi-label losses as one value, so
//! that a configuration can name the loss to train with.

use super::sigmoid::{check_asl, check_focal};
use super::{asymmetric_loss, bce_with_logits, sigmoid_focal_loss, AslOptions, Reduction};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::str::FromStr;

/// One of the per-element sigmoid losses with its hyper-parameters.
///
/// Names round-trip through [`ElementLoss::name`] and [`str::parse`]:
/// `"bce"`, `"focal(gamma=2,alpha=0.25)"` (`alpha=none` for no α),
/// `"asl(gamma_pos=0,gamma_neg=4,clip=0.05)"`. When parsing, the
/// parentheses and any key may be left out: `"focal"` is γ = 2, α = 0.25
/// (Lin et al.'s defaults) and `"asl"` is [`AslOptions::default`].
///
/// ```
/// use ferrite::loss::{ElementLoss, Reduction};
/// use ferrite::Tensor;
/// let loss: ElementLoss = "focal(gamma=2,alpha=0.25)".parse()?;
/// assert_eq!(loss.name().parse::<ElementLoss>()?, loss);
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

    /// The loss and its hyper-parameters, in the form [`str::parse`] reads.
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

const OP: &str = "ElementLoss::from_str";

impl FromStr for ElementLoss {
    type Err = Error;

    /// Reads a name written by [`ElementLoss::name`] (see the type's docs);
    /// unknown losses or keys, malformed numbers and invalid
    /// hyper-parameters are errors.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let (kind, params) = match s.split_once('(') {
            Some((kind, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(|| {
                    Error::invalid(OP, format!("missing ')' at the end of {s:?}"))
                })?;
                (kind.trim(), parse_params(inner)?)
            }
            None => (s, Vec::new()),
        };
        match kind {
            "bce" => {
                if let Some((k, _)) = params.first() {
                    return Err(Error::invalid(
                        OP,
                        format!("bce takes no parameter, got {k:?}"),
                    ));
                }
                Ok(ElementLoss::Bce)
            }
            "focal" => {
                let (mut gamma, mut alpha) = (2.0, Some(0.25));
                for (k, v) in params {
                    match k {
                        "gamma" => gamma = number(k, v)?,
                        "alpha" if v == "none" => alpha = None,
                        "alpha" => alpha = Some(number(k, v)?),
                        _ => return Err(unknown_key("focal", k)),
                    }
                }
                check_focal(gamma, alpha)?;
                Ok(ElementLoss::Focal { gamma, alpha })
            }
            "asl" => {
                let mut o = AslOptions::default();
                for (k, v) in params {
                    match k {
                        "gamma_pos" => o.gamma_pos = number(k, v)?,
                        "gamma_neg" => o.gamma_neg = number(k, v)?,
                        "clip" => o.clip = number(k, v)?,
                        _ => return Err(unknown_key("asl", k)),
                    }
                }
                check_asl(&o)?;
                Ok(ElementLoss::Asl(o))
            }
            _ => Err(Error::invalid(
                OP,
                format!("unknown loss {kind:?} (expected bce, focal or asl)"),
            )),
        }
    }
}

/// Splits `key=value,key=value` (spaces allowed; empty is no parameter).
fn parse_params(inner: &str) -> Result<Vec<(&str, &str)>> {
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| Error::invalid(OP, format!("expected key=value, got {p:?}")))
        })
        .collect()
}

/// The number `v` given for key `k`.
fn number(k: &str, v: &str) -> Result<f64> {
    v.parse()
        .map_err(|_| Error::invalid(OP, format!("{k} must be a number, got {v:?}")))
}

/// The error for a key that loss `loss` does not take.
fn unknown_key(loss: &str, k: &str) -> Error {
    Error::invalid(OP, format!("unknown parameter {k:?} for {loss}"))
}

//! KL divergences between a class's predicted-probability distribution and
//! its ground-truth distribution, in both directions.
//!
//! Both arguments are histograms over the same bins, normalised to sum to 1.
//! The ground truth of positives is a point mass on the last bin, that of
//! negatives a point mass on bin 0, so the zeros of the ground truth need a
//! guard: ε = `f64::EPSILON` stands in for them.

use crate::error::{Error, Result};

/// The ε that replaces zero probabilities inside the logarithms
/// (f64 machine epsilon, 2.220446049250313e-16).
pub const EPS: f64 = f64::EPSILON;

/// Which KL divergence measures how far predictions are from the labels;
/// named `pred-gt` and `gt-pred` (PLM state saved by ferrite 0.1 spelled
/// them `pred_vs_truth` and `truth_vs_pred`, still read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// KL(predicted ‖ truth) (default; the reference implementation's
    /// order), see [`kl_pred_vs_truth`].
    PredVsTruth,
    /// KL(truth ‖ predicted), see [`kl_truth_vs_pred`].
    TruthVsPred,
}

impl Divergence {
    /// The divergence of this variant between a normalised predicted
    /// histogram `pred` and a normalised ground-truth histogram `truth`.
    pub fn between(self, pred: &[f64], truth: &[f64]) -> Result<f64> {
        match self {
            Divergence::PredVsTruth => kl_pred_vs_truth(pred, truth),
            Divergence::TruthVsPred => kl_truth_vs_pred(truth, pred),
        }
    }
}

crate::named::named_enum!(
    Divergence,
    "PlmConfig",
    "PLM divergence",
    [
        (PredVsTruth, "pred-gt", "pred_vs_truth"),
        (TruthVsPred, "gt-pred", "truth_vs_pred"),
    ]
);

/// Divides counts by their total; `None` for an empty histogram (total 0),
/// which has no distribution. The total is summed exactly (in `u128`), so
/// counts near `u64::MAX` neither overflow nor wrap.
pub fn normalize(counts: &[u64]) -> Option<Vec<f64>> {
    let total: u128 = counts.iter().map(|&n| u128::from(n)).sum();
    if total == 0 {
        return None;
    }
    let total = total as f64;
    Some(counts.iter().map(|&n| n as f64 / total).collect())
}

fn check_lengths(op: &'static str, a: &[f64], b: &[f64]) -> Result<()> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: vec![a.len()],
            rhs: vec![b.len()],
        });
    }
    Ok(())
}

/// Variant R, KL(P ‖ G) as the reference implementation computes it:
/// `Σ_b P[b] · ln(P[b] / q(G[b]) + ε)` with `q(x) = x` for `x > 0`, else ε;
/// bins with `P[b] = 0` contribute 0.
///
/// Against a point-mass G this is about `ln(1/ε) ≈ 36.04` times the mass of
/// P outside G's bin. Perfect predictions give `ln(1 + ε)`, not 0.
pub fn kl_pred_vs_truth(pred: &[f64], truth: &[f64]) -> Result<f64> {
    check_lengths("kl_pred_vs_truth", pred, truth)?;
    Ok(pred
        .iter()
        .zip(truth)
        .filter(|(&p, _)| p > 0.0)
        .map(|(&p, &g)| {
            let q = if g > 0.0 { g } else { EPS };
            p * (p / q + EPS).ln()
        })
        .sum())
}

/// Variant P, KL(G ‖ P) = `Σ_b G[b] · ln(G[b] / max(P[b], ε))`; bins with
/// `G[b] = 0` contribute 0.
///
/// Against a point-mass G on bin `k` this is `−ln max(P[k], ε)`.
pub fn kl_truth_vs_pred(truth: &[f64], pred: &[f64]) -> Result<f64> {
    check_lengths("kl_truth_vs_pred", truth, pred)?;
    Ok(truth
        .iter()
        .zip(pred)
        .filter(|(&g, _)| g > 0.0)
        .map(|(&g, &p)| g * (g / p.max(EPS)).ln())
        .sum())
}

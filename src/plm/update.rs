//! The end-of-epoch update of the target ratios `rhat`:
//! divergences per class → standardisation across classes →
//! `Δ = D̃pos − D̃neg` → `rhat ← clamp(rhat · exp(λ · Δ))`.

use super::config::PlmConfig;
use super::divergence::{normalize, Divergence, EPS};
use super::histogram::Histograms;
use crate::error::{Error, Result};

/// What one end-of-epoch update computed, per class. Skipped classes (see
/// [`PlmEpochUpdate::skipped`]) have NaN divergences, 0 standardised
/// divergences and `Δ = 0`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlmEpochUpdate {
    /// Index of the epoch that just ended (0 for the first).
    pub epoch: u64,
    /// Divergence of the positives' predictions from their labels.
    pub d_pos: Vec<f64>,
    /// Divergence of the negatives' predictions from their labels.
    pub d_neg: Vec<f64>,
    /// `d_pos` standardised across classes (equal to `d_pos` when
    /// standardisation is off).
    pub d_pos_std: Vec<f64>,
    /// `d_neg` standardised across classes (equal to `d_neg` when
    /// standardisation is off).
    pub d_neg_std: Vec<f64>,
    /// `Δ = d_pos_std − d_neg_std`; positive for under-predicted classes.
    pub delta: Vec<f64>,
    /// The target ratios after the update.
    pub rhat: Vec<f64>,
    /// Classes left out of the update: those with no positives or no
    /// negatives in the training set, and those whose positive or negative
    /// histogram was empty this epoch.
    pub skipped: Vec<usize>,
}

/// Standardises the included entries of `values` across classes:
/// `(D − mean) / (std + ε)` with the population std (divide by the number
/// of included classes). Excluded entries, and every entry when the included
/// values are all equal (e.g. a single class), give 0.
pub fn standardize(values: &[f64], include: &[bool]) -> Result<Vec<f64>> {
    if values.len() != include.len() {
        return Err(Error::ShapeMismatch {
            op: "standardize",
            lhs: vec![values.len()],
            rhs: vec![include.len()],
        });
    }
    let kept: Vec<f64> = values
        .iter()
        .zip(include)
        .filter(|(_, &inc)| inc)
        .map(|(&v, _)| v)
        .collect();
    if let Some(bad) = kept.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "standardize",
            format!("values must be finite, got {bad}"),
        ));
    }
    let all_equal = kept.windows(2).all(|w| w[0] == w[1]);
    if all_equal {
        return Ok(vec![0.0; values.len()]);
    }
    let n = kept.len() as f64;
    let mean = kept.iter().sum::<f64>() / n;
    let std = (kept.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(values
        .iter()
        .zip(include)
        .map(|(&v, &inc)| if inc { (v - mean) / (std + EPS) } else { 0.0 })
        .collect())
}

/// One multiplicative step `rhat · exp(λ · Δ)`, clamped to `[lo, hi]`.
pub fn step_rhat(rhat: f64, delta: f64, lambda: f64, lo: f64, hi: f64) -> f64 {
    (rhat * (lambda * delta).exp()).clamp(lo, hi)
}

/// The divergences of one class's positives and negatives from their labels,
/// or `None` when either prediction histogram is empty.
fn class_divergences(
    hist: &Histograms,
    class: usize,
    divergence: Divergence,
) -> Result<Option<(f64, f64)>> {
    let n_bins = hist.n_bins();
    let (Some(pos), Some(neg)) = (
        normalize(&hist.pos_pred_column(class)),
        normalize(&hist.neg_pred_column(class)),
    ) else {
        return Ok(None);
    };
    // The label histograms are point masses: positives at 1, negatives at 0.
    let mut pos_truth = vec![0.0; n_bins];
    pos_truth[n_bins - 1] = 1.0;
    let mut neg_truth = vec![0.0; n_bins];
    neg_truth[0] = 1.0;
    Ok(Some((
        divergence.between(&pos, &pos_truth)?,
        divergence.between(&neg, &neg_truth)?,
    )))
}

/// Computes the update of `rhat` from one epoch's histograms.
///
/// `eligible[c]` is false for classes that never take part (no positives or
/// no negatives in the training set); `bounds[c]` is the clamp interval of
/// class c. Classes with an empty positive or negative histogram are
/// skipped too: `Δ = 0`, and they are left out of the mean and std.
pub fn epoch_update(
    hist: &Histograms,
    rhat: &[f64],
    eligible: &[bool],
    bounds: &[(f64, f64)],
    config: &PlmConfig,
    epoch: u64,
) -> Result<PlmEpochUpdate> {
    let c = hist.num_classes();
    if rhat.len() != c || eligible.len() != c || bounds.len() != c {
        return Err(Error::invalid(
            "epoch_update",
            format!(
                "{c} classes in the histograms but {} rhat, {} eligibility flags, {} bounds",
                rhat.len(),
                eligible.len(),
                bounds.len()
            ),
        ));
    }
    let mut d_pos = vec![f64::NAN; c];
    let mut d_neg = vec![f64::NAN; c];
    let mut include = vec![false; c];
    for class in (0..c).filter(|&k| eligible[k]) {
        if let Some((dp, dn)) = class_divergences(hist, class, config.divergence)? {
            d_pos[class] = dp;
            d_neg[class] = dn;
            include[class] = true;
        }
    }
    let (d_pos_std, d_neg_std) = if config.standardize {
        (
            standardize(&d_pos, &include)?,
            standardize(&d_neg, &include)?,
        )
    } else {
        let raw = |d: &[f64]| -> Vec<f64> {
            d.iter()
                .zip(&include)
                .map(|(&v, &inc)| if inc { v } else { 0.0 })
                .collect()
        };
        (raw(&d_pos), raw(&d_neg))
    };
    let delta: Vec<f64> = d_pos_std
        .iter()
        .zip(&d_neg_std)
        .map(|(p, n)| p - n)
        .collect();
    let new_rhat = (0..c)
        .map(|k| {
            if include[k] {
                step_rhat(rhat[k], delta[k], config.lambda, bounds[k].0, bounds[k].1)
            } else {
                rhat[k]
            }
        })
        .collect();
    Ok(PlmEpochUpdate {
        epoch,
        d_pos,
        d_neg,
        d_pos_std,
        d_neg_std,
        delta,
        rhat: new_rhat,
        skipped: (0..c).filter(|&k| !include[k]).collect(),
    })
}

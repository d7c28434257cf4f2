//! Class-balanced weights by effective number of samples (Cui et al. 2019).

use crate::error::{Error, Result};

/// Per-class weights `w_c = (1 − β)/(1 − β^{n_c})` for class counts `n_c`,
/// scaled so that `Σ_c w_c = C` (the number of classes).
///
/// `1/w_c` is the *effective number* of samples of class `c`,
/// `(1 − β^{n})/(1 − β)`, which grows from 1 at `n = 1` towards `1/(1 − β)`:
/// `β = 0` gives equal weights, `β → 1` weights close to inverse frequency.
/// Computed as `expm1(ln β)/expm1(n·ln β)`, accurate for β close to 1.
///
/// A class with `n_c = 0` is treated as `n_c = 1` (effective number 1, the
/// largest weight), so an unseen class gets a finite weight rather than an
/// infinite one. An empty `counts` gives an empty vector.
///
/// Errors: `beta` outside [0, 1) (NaN included).
///
/// ```
/// use ferrite::loss::class_balanced_weights;
/// let w = class_balanced_weights(&[1000, 100, 10], 0.999)?;
/// assert!(w[0] < w[1] && w[1] < w[2]); // rarer classes weigh more
/// assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-9); // normalised to the class count
/// assert_eq!(class_balanced_weights(&[5, 500], 0.0)?, [1.0, 1.0]);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn class_balanced_weights(counts: &[usize], beta: f64) -> Result<Vec<f64>> {
    check_class_balanced_beta(beta)?;
    // ln 0 = −∞ makes both expm1 terms −1: β = 0 needs no special case.
    let ln_beta = beta.ln();
    let raw: Vec<f64> = counts
        .iter()
        .map(|&n| ln_beta.exp_m1() / (n.max(1) as f64 * ln_beta).exp_m1())
        .collect();
    // Every raw weight is at least 1 − β > 0, so the sum is positive.
    let scale = counts.len() as f64 / raw.iter().sum::<f64>();
    Ok(raw.iter().map(|w| w * scale).collect())
}

/// Errors unless `beta` is in [0, 1) (NaN excluded): the rule of
/// [`class_balanced_weights`].
pub(crate) fn check_class_balanced_beta(beta: f64) -> Result<()> {
    if (0.0..1.0).contains(&beta) {
        Ok(())
    } else {
        Err(Error::invalid(
            "class_balanced_weights",
            format!("beta must be in [0, 1), got {beta}"),
        ))
    }
}

//! Average precision: a threshold-free ranking metric for one class.

use super::validate;
use crate::error::{Error, Result};

/// Average precision of one class, as scikit-learn's
/// `average_precision_score` defines it: `AP = Σ_k (R_k − R_{k−1}) · P_k`,
/// the step-wise area under the precision-recall curve, with one point per
/// *distinct* score (tied scores enter together, as one threshold), taken
/// from the highest score down, and `R_0 = 0`. No interpolation.
///
/// A class with no positive target has no recall to speak of: its AP is
/// 0.0, as scikit-learn returns (with a warning). Errors on a length
/// mismatch, empty input, NaN scores or targets other than 0/1.
///
/// ```
/// use ferrite::metrics::average_precision;
/// // Both positives ranked first: AP = 1.
/// assert_eq!(average_precision(&[0.9, 0.8, 0.3], &[1, 1, 0])?, 1.0);
/// // Ranked second and third: (1/2 + 2/3) / 2.
/// let ap = average_precision(&[0.9, 0.8, 0.3], &[0, 1, 1])?;
/// assert!((ap - 7.0 / 12.0).abs() < 1e-12);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn average_precision(scores: &[f32], targets: &[u8]) -> Result<f64> {
    const OP: &str = "average_precision";
    if scores.is_empty() {
        return Err(Error::bad_shape(OP, "scores is empty: nothing to rank"));
    }
    validate::no_nan(OP, scores, 1)?;
    validate::binary(OP, targets, scores.len())?;
    let pairs = scores.iter().zip(targets).map(|(&s, &t)| (s, t == 1));
    Ok(ap_unchecked(pairs.collect()))
}

/// Average precision of `(score, is_positive)` pairs with no NaN score.
pub(crate) fn ap_unchecked(mut pairs: Vec<(f32, bool)>) -> f64 {
    let positives = pairs.iter().filter(|p| p.1).count();
    if positives == 0 {
        return 0.0;
    }
    // Highest score first; equal scores end up adjacent (0.0 and -0.0 too).
    pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let (mut seen, mut tp, mut ap) = (0usize, 0usize, 0.0f64);
    let mut rest = &pairs[..];
    while let Some(&(score, _)) = rest.first() {
        // One threshold: every sample scoring exactly `score`.
        let tied = rest.iter().take_while(|p| p.0 == score).count();
        let new_tp = rest[..tied].iter().filter(|p| p.1).count();
        seen += tied;
        tp += new_tp;
        if new_tp > 0 {
            let recall_step = new_tp as f64 / positives as f64;
            let precision = tp as f64 / seen as f64;
            ap += recall_step * precision;
        }
        rest = &rest[tied..];
    }
    ap
}

//! Per-class confusion counts at a decision threshold, and the rates built
//! from them.

use super::{harmonic_mean, ratio, validate};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// The binary confusion counts of one class over an evaluation set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    /// Predicted positive and truly positive.
    pub tp: u64,
    /// Predicted positive but truly negative.
    pub fp: u64,
    /// Predicted negative but truly positive.
    pub fn_: u64,
    /// Predicted negative and truly negative.
    pub tn: u64,
}

impl ClassCounts {
    /// Precision `TP / (TP + FP)`, 0 when the class is never predicted.
    pub fn precision(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fp) as f64)
    }

    /// Recall `TP / (TP + FN)`, 0 when the class has no positives.
    pub fn recall(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fn_) as f64)
    }

    /// F1, the harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        harmonic_mean(self.precision(), self.recall())
    }

    /// The number of true positives in the evaluation set, `TP + FN`.
    pub fn support(&self) -> u64 {
        self.tp + self.fn_
    }

    /// The counts as a JSON object `{"tp", "fp", "fn", "tn"}`.
    pub fn to_json(&self) -> Value {
        json!({"tp": self.tp, "fp": self.fp, "fn": self.fn_, "tn": self.tn})
    }
}

/// Counts TP/FP/FN/TN for each of `num_classes` classes: sample `i` is
/// predicted positive for class `c` iff `scores[i·C + c] >= threshold`.
///
/// `scores` is row-major `n × num_classes` (probabilities with a threshold
/// such as 0.5, or logits with 0.0); `targets` has the same layout with 0/1
/// entries. Errors on length mismatches, `num_classes == 0`, NaN scores or
/// threshold, and targets other than 0/1.
///
/// ```
/// use ferrite::metrics::class_counts;
/// // Two samples, two classes; probabilities scored at 0.5.
/// let scores = [0.9f32, 0.2, 0.6, 0.7];
/// let targets = [1u8, 0, 0, 1];
/// let c = class_counts(&scores, &targets, 2, 0.5)?;
/// assert_eq!((c[0].tp, c[0].fp, c[0].fn_, c[0].tn), (1, 1, 0, 0));
/// assert_eq!((c[0].precision(), c[0].recall()), (0.5, 1.0));
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn class_counts(
    scores: &[f32],
    targets: &[u8],
    num_classes: usize,
    threshold: f64,
) -> Result<Vec<ClassCounts>> {
    const OP: &str = "class_counts";
    validate::score_rows(OP, scores, num_classes)?;
    validate::binary(OP, targets, scores.len())?;
    validate::threshold(OP, threshold)?;
    Ok(counts_unchecked(scores, targets, num_classes, threshold))
}

/// [`class_counts`] on inputs that have already been validated.
pub(crate) fn counts_unchecked(
    scores: &[f32],
    targets: &[u8],
    num_classes: usize,
    threshold: f64,
) -> Vec<ClassCounts> {
    let mut counts = vec![ClassCounts::default(); num_classes];
    let rows = scores
        .chunks_exact(num_classes)
        .zip(targets.chunks_exact(num_classes));
    for (row_scores, row_targets) in rows {
        for ((count, &s), &t) in counts.iter_mut().zip(row_scores).zip(row_targets) {
            match (f64::from(s) >= threshold, t == 1) {
                (true, true) => count.tp += 1,
                (true, false) => count.fp += 1,
                (false, true) => count.fn_ += 1,
                (false, false) => count.tn += 1,
            }
        }
    }
    counts
}

/// Converts 0.0/1.0 float targets (as fed to a BCE loss) into the 0/1 bytes
/// the metrics take; any other value is an error naming its position.
pub fn binary_targets(targets: &[f32]) -> Result<Vec<u8>> {
    targets
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if t == 0.0 {
                Ok(0)
            } else if t == 1.0 {
                Ok(1)
            } else {
                Err(Error::invalid(
                    "binary_targets",
                    format!("target {i} is {t}, expected 0 or 1"),
                ))
            }
        })
        .collect()
}

//! Input checks shared by the metric functions.

use crate::error::{Error, Result};

/// Checks that `scores` is a non-empty row-major `n × num_classes` matrix
/// without NaN and returns `n`.
pub(crate) fn score_rows(op: &'static str, scores: &[f32], num_classes: usize) -> Result<usize> {
    if num_classes == 0 {
        return Err(Error::invalid(op, "num_classes must be at least 1"));
    }
    if scores.is_empty() {
        return Err(Error::bad_shape(op, "scores is empty: nothing to evaluate"));
    }
    if !scores.len().is_multiple_of(num_classes) {
        return Err(Error::bad_shape(
            op,
            format!(
                "scores has {} values, not a multiple of num_classes = {num_classes}",
                scores.len()
            ),
        ));
    }
    no_nan(op, scores, num_classes)?;
    Ok(scores.len() / num_classes)
}

/// Rejects NaN scores, naming the first one by (row, column).
pub(crate) fn no_nan(op: &'static str, scores: &[f32], num_classes: usize) -> Result<()> {
    match scores.iter().position(|s| s.is_nan()) {
        Some(i) => Err(Error::invalid(
            op,
            format!(
                "score at row {}, class {} is NaN",
                i / num_classes,
                i % num_classes
            ),
        )),
        None => Ok(()),
    }
}

/// Checks that `targets` has `expected` entries, each 0 or 1.
pub(crate) fn binary(op: &'static str, targets: &[u8], expected: usize) -> Result<()> {
    if targets.len() != expected {
        return Err(Error::bad_shape(
            op,
            format!(
                "targets has {} values but scores has {expected}",
                targets.len()
            ),
        ));
    }
    match targets.iter().position(|&t| t > 1) {
        Some(i) => Err(Error::invalid(
            op,
            format!("target {i} is {}, expected 0 or 1", targets[i]),
        )),
        None => Ok(()),
    }
}

/// Rejects a NaN threshold.
pub(crate) fn threshold(op: &'static str, threshold: f64) -> Result<()> {
    if threshold.is_nan() {
        Err(Error::invalid(op, "threshold is NaN"))
    } else {
        Ok(())
    }
}

//! The single-label report: top-1 accuracy, per-class accuracy, the
//! confusion matrix, and mean accuracy over many / medium / few-shot classes.

use super::groups::{groups_by_count, FrequencyGroups, FEW_SHOT_BELOW, MANY_SHOT_ABOVE};
use super::{mean, ratio, validate};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Single-label classification metrics over an evaluation set.
#[derive(Clone, Debug, PartialEq)]
pub struct SingleLabelReport {
    /// The number of evaluated samples.
    pub num_samples: usize,
    /// The fraction of samples whose argmax prediction is their label.
    pub top1: f64,
    /// Per class: the fraction of its evaluation samples predicted correctly
    /// (its recall); `None` for a class absent from the evaluation set.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// The mean of the per-class accuracies of the classes present in the
    /// evaluation set (scikit-learn's `balanced_accuracy_score`).
    pub balanced_accuracy: f64,
    /// Mean per-class accuracy over the many-shot classes (more than
    /// [`MANY_SHOT_ABOVE`] training samples); `None` if the group has no
    /// class present in the evaluation set.
    pub many: Option<f64>,
    /// The same over medium-shot classes (`FEW_SHOT_BELOW..=MANY_SHOT_ABOVE`).
    pub medium: Option<f64>,
    /// The same over few-shot classes (fewer than [`FEW_SHOT_BELOW`]).
    pub few: Option<f64>,
    /// The groups used for `many` (head), `medium` and `few` (tail).
    pub groups: FrequencyGroups,
    /// The row-major `C × C` confusion matrix: entry `(t, p)` counts samples
    /// of true class `t` predicted as `p`.
    pub confusion: Vec<u64>,
    /// The number of classes `C`.
    pub num_classes: usize,
}

/// Evaluates row-major `n × num_classes` `scores` against class `labels`.
/// The prediction is the argmax of each row (the first maximum on ties).
/// `train_counts[c]` is the number of training samples of class `c`; it
/// sorts classes into many / medium / few-shot groups (> 100, 20..=100,
/// < 20).
///
/// Errors on length mismatches, `num_classes == 0`, an empty evaluation set,
/// NaN scores and labels `>= num_classes`.
///
/// ```
/// use ferrite::metrics::single_label_report;
/// // Three samples, two classes (logits or probabilities), labels 0, 1, 1.
/// let scores = [2.0f32, 0.1, 0.3, 0.9, 0.8, 0.2];
/// let r = single_label_report(&scores, &[0, 1, 1], 2, &[500, 5])?;
/// assert!((r.top1 - 2.0 / 3.0).abs() < 1e-12);
/// assert_eq!(r.per_class_accuracy, [Some(1.0), Some(0.5)]);
/// assert_eq!(r.balanced_accuracy, 0.75);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn single_label_report(
    scores: &[f32],
    labels: &[u32],
    num_classes: usize,
    train_counts: &[usize],
) -> Result<SingleLabelReport> {
    const OP: &str = "single_label_report";
    let n = validate::score_rows(OP, scores, num_classes)?;
    if labels.len() != n {
        return Err(Error::bad_shape(
            OP,
            format!(
                "scores has {n} rows of {num_classes} classes but labels has {} entries",
                labels.len()
            ),
        ));
    }
    if train_counts.len() != num_classes {
        return Err(Error::bad_shape(
            OP,
            format!(
                "train_counts has {} entries, expected num_classes = {num_classes}",
                train_counts.len()
            ),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
        return Err(Error::IndexOutOfRange {
            op: OP,
            index: i64::from(bad),
            size: num_classes,
        });
    }

    let mut confusion = vec![0u64; num_classes * num_classes];
    for (row, &label) in scores.chunks_exact(num_classes).zip(labels) {
        confusion[label as usize * num_classes + argmax(row)] += 1;
    }
    let correct: u64 = (0..num_classes)
        .map(|c| confusion[c * num_classes + c])
        .sum();
    let per_class_accuracy: Vec<Option<f64>> = confusion
        .chunks_exact(num_classes)
        .enumerate()
        .map(|(c, row)| {
            let support: u64 = row.iter().sum();
            (support > 0).then(|| row[c] as f64 / support as f64)
        })
        .collect();
    let group_mean =
        |classes: &[usize]| mean(classes.iter().filter_map(|&c| per_class_accuracy[c]));
    let groups = groups_by_count(train_counts, MANY_SHOT_ABOVE, FEW_SHOT_BELOW)?;

    Ok(SingleLabelReport {
        num_samples: n,
        top1: ratio(correct as f64, n as f64),
        balanced_accuracy: mean(per_class_accuracy.iter().flatten().copied()).unwrap_or(0.0),
        many: group_mean(&groups.head),
        medium: group_mean(&groups.medium),
        few: group_mean(&groups.tail),
        per_class_accuracy,
        groups,
        confusion,
        num_classes,
    })
}

impl SingleLabelReport {
    /// The report as a JSON object; absent values (`None`) become `null` and
    /// the confusion matrix a `C × C` array of rows.
    pub fn to_json(&self) -> Value {
        let rows: Vec<&[u64]> = self.confusion.chunks_exact(self.num_classes).collect();
        json!({
            "num_samples": self.num_samples,
            "top1": self.top1,
            "balanced_accuracy": self.balanced_accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "many": self.many,
            "medium": self.medium,
            "few": self.few,
            "groups": self.groups.to_json(),
            "confusion": rows,
        })
    }
}

/// The index of the largest value of a non-empty, NaN-free row; the first
/// one on ties.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

//! Evaluation metrics for multi-label and single-label classification.
//!
//! Metrics read plain slices rather than tensors, so evaluation needs no
//! autograd graph: scores are row-major `n × C` (`n` samples, `C` classes),
//! multi-label targets are 0/1 bytes of the same layout, single-label targets
//! are class indices. Every sum is accumulated in `f64` (counts in `u64`).
//!
//! - [`counts`]: per-class TP/FP/FN/TN at a threshold, and P/R/F1 from them.
//! - [`ranking`]: average precision (the area under the step-wise
//!   precision-recall curve, as scikit-learn defines it).
//! - [`multilabel`]: the full multi-label report (per-class, macro, micro,
//!   mAP, subset accuracy).
//! - [`groups`]: head / medium / tail class groups by training frequency.
//! - [`summary`]: macro metrics over one group of classes.
//! - [`single_label`]: top-1, per-class accuracy, confusion matrix and the
//!   many / medium / few-shot split.
//! - [`accuracy()`]: top-1 accuracy of one batch, from its logits and
//!   labels as tensors (on any device), for training loops.
//!
//! Conventions: a ratio whose denominator is 0 is 0 (precision of a class
//! never predicted, recall of a class with no positives), and an F1 whose
//! precision and recall are both 0 is 0, as scikit-learn's
//! `zero_division=0`.

mod accuracy;
pub mod counts;
pub mod groups;
pub mod multilabel;
pub mod ranking;
pub mod single_label;
pub mod summary;
mod validate;

pub use accuracy::accuracy;
pub use counts::{binary_targets, class_counts, ClassCounts};
pub use groups::{
    groups_by_count, groups_by_thirds, most_frequent, rarest, FrequencyGroups, FEW_SHOT_BELOW,
    MANY_SHOT_ABOVE,
};
pub use multilabel::{multilabel_report, ClassMetrics, MultiLabelReport};
pub use ranking::average_precision;
pub use single_label::{single_label_report, SingleLabelReport};
pub use summary::{summarize, GroupSummary};

/// `num / den`, or 0 when `den` is 0 (scikit-learn's `zero_division=0`).
pub(crate) fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The harmonic mean `2·p·r / (p + r)` of two non-negative rates, or 0 when
/// both are 0.
pub(crate) fn harmonic_mean(p: f64, r: f64) -> f64 {
    ratio(2.0 * p * r, p + r)
}

/// The mean of `values`, or `None` when there are none.
pub(crate) fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

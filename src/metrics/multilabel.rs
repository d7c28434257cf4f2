//! The multi-label report: per-class, macro ("per-class", COCO), micro
//! ("overall"), mAP and exact-match accuracy.

use super::counts::{counts_unchecked, ClassCounts};
use super::ranking::ap_unchecked;
use super::{harmonic_mean, mean, ratio, validate};
use crate::error::Result;
use serde_json::{json, Value};

/// The metrics of one class at the report's threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassMetrics {
    /// `TP / (TP + FP)`, 0 when the class is never predicted.
    pub precision: f64,
    /// `TP / (TP + FN)`, 0 when the class has no positives.
    pub recall: f64,
    /// `2·P·R / (P + R)`, 0 when both are 0.
    pub f1: f64,
    /// Threshold-free average precision (see [`average_precision`]); 0 when
    /// the class has no positives.
    ///
    /// [`average_precision`]: super::average_precision
    pub average_precision: f64,
    /// Positives of this class in the evaluation set (`TP + FN`).
    pub support: u64,
    /// The confusion counts these rates come from.
    pub counts: ClassCounts,
}

impl ClassMetrics {
    /// The metrics as a JSON object (rates, support and counts).
    pub fn to_json(&self) -> Value {
        json!({
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "average_precision": self.average_precision,
            "support": self.support,
            "counts": self.counts.to_json(),
        })
    }
}

/// Every multi-label metric of an evaluation set at one threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiLabelReport {
    /// One entry per class, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// Macro precision CP: the mean over classes of `P_c`.
    pub cp: f64,
    /// Macro recall CR: the mean over classes of `R_c`.
    pub cr: f64,
    /// CF1 = `2·CP·CR / (CP + CR)` (the COCO convention; not the mean of F1).
    pub cf1: f64,
    /// Micro precision OP = `ΣTP / Σ(TP + FP)`.
    pub op: f64,
    /// Micro recall OR = `ΣTP / Σ(TP + FN)`.
    pub or: f64,
    /// OF1, the harmonic mean of OP and OR.
    pub of1: f64,
    /// scikit-learn's macro F1: the mean over classes of `F1_c`.
    pub macro_f1: f64,
    /// scikit-learn's micro F1 `2ΣTP / (2ΣTP + ΣFP + ΣFN)`; equal to
    /// [`of1`](Self::of1) up to rounding.
    pub micro_f1: f64,
    /// Mean average precision over the classes with at least one positive in
    /// the evaluation set (0 when no class has one).
    pub map: f64,
    /// How many classes entered [`map`](Self::map).
    pub map_classes: usize,
    /// Exact-match (0-1, subset) accuracy: the fraction of samples whose whole
    /// thresholded prediction vector equals the target vector.
    pub subset_accuracy: f64,
    /// The decision threshold: predicted positive iff `score >= threshold`.
    pub threshold: f64,
    /// The number of evaluated samples.
    pub num_samples: usize,
}

/// Evaluates row-major `n × num_classes` `scores` against 0/1 `targets` of
/// the same layout, predicting class `c` positive for a sample iff its score
/// is `>= threshold` (use 0.5 on probabilities, 0.0 on logits).
///
/// Errors on length mismatches, `num_classes == 0`, an empty evaluation set,
/// NaN scores or threshold, and targets other than 0/1.
///
/// ```
/// use ferrite::metrics::multilabel_report;
/// let scores = [0.9f32, 0.1, 0.8, 0.7, 0.2, 0.4];
/// let targets = [1u8, 0, 1, 1, 0, 0];
/// let r = multilabel_report(&scores, &targets, 2, 0.5)?; // 3 samples × 2 classes
/// assert_eq!(r.per_class[0].precision, 1.0);
/// assert_eq!(r.per_class[1].recall, 1.0);
/// assert!((0.0..=1.0).contains(&r.map));
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn multilabel_report(
    scores: &[f32],
    targets: &[u8],
    num_classes: usize,
    threshold: f64,
) -> Result<MultiLabelReport> {
    const OP: &str = "multilabel_report";
    let n = validate::score_rows(OP, scores, num_classes)?;
    validate::binary(OP, targets, scores.len())?;
    validate::threshold(OP, threshold)?;

    let counts = counts_unchecked(scores, targets, num_classes, threshold);
    let per_class: Vec<ClassMetrics> = counts
        .iter()
        .enumerate()
        .map(|(c, counts)| ClassMetrics {
            precision: counts.precision(),
            recall: counts.recall(),
            f1: counts.f1(),
            average_precision: column_ap(scores, targets, num_classes, c),
            support: counts.support(),
            counts: *counts,
        })
        .collect();

    let class_mean = |f: fn(&ClassMetrics) -> f64| mean(per_class.iter().map(f)).unwrap_or(0.0);
    let (cp, cr) = (class_mean(|m| m.precision), class_mean(|m| m.recall));
    let macro_f1 = class_mean(|m| m.f1);

    let total = counts
        .iter()
        .fold(ClassCounts::default(), |acc, c| ClassCounts {
            tp: acc.tp + c.tp,
            fp: acc.fp + c.fp,
            fn_: acc.fn_ + c.fn_,
            tn: acc.tn + c.tn,
        });
    let (op, or) = (total.precision(), total.recall());
    let tp2 = 2.0 * total.tp as f64;
    let micro_f1 = ratio(tp2, tp2 + (total.fp + total.fn_) as f64);

    let with_positives = per_class.iter().filter(|m| m.support > 0);
    let map = mean(with_positives.clone().map(|m| m.average_precision)).unwrap_or(0.0);

    Ok(MultiLabelReport {
        cp,
        cr,
        cf1: harmonic_mean(cp, cr),
        op,
        or,
        of1: harmonic_mean(op, or),
        macro_f1,
        micro_f1,
        map,
        map_classes: with_positives.count(),
        subset_accuracy: exact_matches(scores, targets, num_classes, threshold) as f64 / n as f64,
        threshold,
        num_samples: n,
        per_class,
    })
}

impl MultiLabelReport {
    /// The report as a JSON object: every aggregate, plus `per_class`, an
    /// array of [`ClassMetrics::to_json`] objects.
    pub fn to_json(&self) -> Value {
        json!({
            "threshold": self.threshold,
            "num_samples": self.num_samples,
            "cp": self.cp,
            "cr": self.cr,
            "cf1": self.cf1,
            "op": self.op,
            "or": self.or,
            "of1": self.of1,
            "macro_f1": self.macro_f1,
            "micro_f1": self.micro_f1,
            "map": self.map,
            "map_classes": self.map_classes,
            "subset_accuracy": self.subset_accuracy,
            "per_class": self.per_class.iter().map(ClassMetrics::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Average precision of column `c` of the validated `n × num_classes` inputs.
fn column_ap(scores: &[f32], targets: &[u8], num_classes: usize, c: usize) -> f64 {
    let column = scores
        .iter()
        .zip(targets)
        .skip(c)
        .step_by(num_classes)
        .map(|(&s, &t)| (s, t == 1));
    ap_unchecked(column.collect())
}

/// The number of rows whose thresholded predictions all equal their targets.
fn exact_matches(scores: &[f32], targets: &[u8], num_classes: usize, threshold: f64) -> usize {
    scores
        .chunks_exact(num_classes)
        .zip(targets.chunks_exact(num_classes))
        .filter(|(s, t)| {
            s.iter()
                .zip(t.iter())
                .all(|(&s, &t)| (f64::from(s) >= threshold) == (t == 1))
        })
        .count()
}

//! Turning a model's scores on an evaluation set into the metrics a run
//! reports: per-class precision / recall / F1 / AP and one flat summary
//! (name → value) that logs, tables and comparisons share.

use crate::error::{Error, Result};
use crate::metrics::{
    groups_by_thirds, most_frequent, multilabel_report, rarest, single_label_report, summarize,
    MultiLabelReport, SingleLabelReport,
};
use serde_json::{json, Map, Value};

/// How many of the rarest / most frequent classes the summary singles out.
pub const EXTREME_CLASSES: usize = 3;

/// The metrics of one evaluation.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Per-class precision, recall and F1 (thresholded sigmoids for
    /// multi-label data, the arg-max class for single-label data), average
    /// precision from the scores, and the macro/micro aggregates.
    pub report: MultiLabelReport,
    /// Top-1 and many/medium/few accuracy (single-label data only).
    pub single: Option<SingleLabelReport>,
    /// Named scalar metrics, in a fixed order (see [`Evaluation::summary`]).
    pub summary: Vec<(String, f64)>,
}

impl Evaluation {
    /// Computes the metrics of `scores` (`n × C`, in [0, 1]) against
    /// `targets` (`n × C` multi-hot / one-hot bytes); `labels` are the class
    /// indices for single-label data. `train_positives` (one count per
    /// class, `num_classes` of them) orders classes by training frequency
    /// for the group metrics.
    ///
    /// Summary keys, multi-label: `macro_f1`, `micro_f1`, `subset_accuracy`,
    /// `map`, `cp`, `cr`, `cf1`, `op`, `or`, `of1`, `rare3_recall`,
    /// `frequent3_precision`, `head_f1`, `medium_f1`, `tail_f1`.
    /// Single-label: `top1`, `many`, `medium`, `few`, `balanced_accuracy`,
    /// `macro_f1`, `map`, `rare3_recall`, `frequent3_precision`.
    pub fn new(
        scores: &[f32],
        targets: &[u8],
        labels: Option<&[u32]>,
        num_classes: usize,
        train_positives: &[usize],
        threshold: f64,
    ) -> Result<Self> {
        if train_positives.len() != num_classes {
            return Err(Error::invalid(
                "Evaluation::new",
                format!(
                    "train_positives has {} counts for {num_classes} classes",
                    train_positives.len()
                ),
            ));
        }
        let scored = multilabel_report(scores, targets, num_classes, threshold)?;
        let k = EXTREME_CLASSES.min(num_classes);
        let rare = rarest(train_positives, k);
        let frequent = most_frequent(train_positives, k);
        let mut summary = Vec::new();
        let (report, single) = match labels {
            None => {
                let groups = groups_by_thirds(train_positives);
                for (name, v) in [
                    ("macro_f1", scored.macro_f1),
                    ("micro_f1", scored.micro_f1),
                    ("subset_accuracy", scored.subset_accuracy),
                    ("map", scored.map),
                    ("cp", scored.cp),
                    ("cr", scored.cr),
                    ("cf1", scored.cf1),
                    ("op", scored.op),
                    ("or", scored.or),
                    ("of1", scored.of1),
                ] {
                    summary.push((name.to_string(), v));
                }
                for (name, group) in [
                    ("head_f1", &groups.head),
                    ("medium_f1", &groups.medium),
                    ("tail_f1", &groups.tail),
                ] {
                    if !group.is_empty() {
                        summary.push((name.to_string(), summarize(&scored, group)?.f1));
                    }
                }
                (scored, None)
            }
            Some(labels) => {
                let single = single_label_report(scores, labels, num_classes, train_positives)?;
                // Per-class precision/recall of the arg-max prediction: the
                // one-hot prediction scored at 0.5.
                let predicted = argmax_one_hot(scores, num_classes);
                let mut report = multilabel_report(&predicted, targets, num_classes, 0.5)?;
                for (c, m) in report.per_class.iter_mut().enumerate() {
                    m.average_precision = scored.per_class[c].average_precision;
                }
                report.map = scored.map;
                summary.push(("top1".to_string(), single.top1));
                for (name, v) in [
                    ("many", single.many),
                    ("medium", single.medium),
                    ("few", single.few),
                ] {
                    if let Some(v) = v {
                        summary.push((name.to_string(), v));
                    }
                }
                summary.push(("balanced_accuracy".to_string(), single.balanced_accuracy));
                summary.push(("macro_f1".to_string(), report.macro_f1));
                summary.push(("map".to_string(), report.map));
                (report, Some(single))
            }
        };
        let mean_of = |classes: &[usize], f: fn(&crate::metrics::ClassMetrics) -> f64| {
            classes
                .iter()
                .map(|&c| f(&report.per_class[c]))
                .sum::<f64>()
                / classes.len().max(1) as f64
        };
        summary.push(("rare3_recall".to_string(), mean_of(&rare, |m| m.recall)));
        summary.push((
            "frequent3_precision".to_string(),
            mean_of(&frequent, |m| m.precision),
        ));
        Ok(Evaluation {
            report,
            single,
            summary,
        })
    }

    /// The value of summary metric `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        summary_value(&self.summary, name)
    }

    /// The summary as a JSON object (keys in summary order).
    pub fn summary_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.summary {
            m.insert(k.clone(), json!(v));
        }
        Value::Object(m)
    }
}

/// The value named `name` in a summary list.
pub fn summary_value(summary: &[(String, f64)], name: &str) -> Option<f64> {
    summary.iter().find(|(k, _)| k == name).map(|&(_, v)| v)
}

/// One-hot rows of each row's first maximum.
fn argmax_one_hot(scores: &[f32], num_classes: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; scores.len()];
    for (row, dst) in scores.chunks(num_classes).zip(out.chunks_mut(num_classes)) {
        let mut best = 0;
        for (c, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = c;
            }
        }
        dst[best] = 1.0;
    }
    out
}

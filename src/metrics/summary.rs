//! Macro metrics over one group of classes (e.g. the 10 rarest classes).

use super::multilabel::{ClassMetrics, MultiLabelReport};
use super::{harmonic_mean, mean};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Macro-averaged metrics over a group of classes of a [`MultiLabelReport`].
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSummary {
    /// The number of classes in the group.
    pub num_classes: usize,
    /// The mean of `P_c` over the group.
    pub precision: f64,
    /// The mean of `R_c` over the group.
    pub recall: f64,
    /// The mean of `F1_c` over the group (scikit-learn's macro F1).
    pub f1: f64,
    /// The harmonic mean of [`precision`](Self::precision) and
    /// [`recall`](Self::recall) (the COCO-style CF1 of the group).
    pub cf1: f64,
    /// The mean average precision over the group's classes that have at least
    /// one positive in the evaluation set (0 when none has).
    pub map: f64,
}

impl GroupSummary {
    /// The summary as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "num_classes": self.num_classes,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "cf1": self.cf1,
            "map": self.map,
        })
    }
}

/// Averages the per-class metrics of `report` over `classes`.
///
/// Errors when `classes` is empty, names a class outside the report, or
/// names a class twice (which would weigh it double).
///
/// ```
/// use ferrite::metrics::{multilabel_report, summarize};
/// let scores = [0.9f32, 0.1, 0.8, 0.7, 0.2, 0.4];
/// let r = multilabel_report(&scores, &[1, 0, 1, 1, 0, 0], 2, 0.5)?;
/// let class0 = summarize(&r, &[0])?;
/// assert_eq!((class0.precision, class0.recall), (1.0, 1.0));
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn summarize(report: &MultiLabelReport, classes: &[usize]) -> Result<GroupSummary> {
    const OP: &str = "summarize";
    if classes.is_empty() {
        return Err(Error::invalid(OP, "the group of classes is empty"));
    }
    let num = report.per_class.len();
    let mut seen = vec![false; num];
    for &c in classes {
        if c >= num {
            return Err(Error::index_out_of_range(OP, c, num));
        }
        if std::mem::replace(&mut seen[c], true) {
            return Err(Error::invalid(OP, format!("class {c} is listed twice")));
        }
    }
    let members = || classes.iter().map(|&c| &report.per_class[c]);
    let avg = |f: fn(&ClassMetrics) -> f64| mean(members().map(f)).unwrap_or(0.0);
    let (precision, recall) = (avg(|m| m.precision), avg(|m| m.recall));
    let with_positives = members().filter(|m| m.support > 0);
    Ok(GroupSummary {
        num_classes: classes.len(),
        precision,
        recall,
        f1: avg(|m| m.f1),
        cf1: harmonic_mean(precision, recall),
        map: mean(with_positives.map(|m| m.average_precision)).unwrap_or(0.0),
    })
}

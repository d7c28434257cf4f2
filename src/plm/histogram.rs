//! Per-class histograms of predicted probabilities, split by label, counted
//! over one epoch of training batches.

use crate::error::{Error, Result};
use crate::ops::plm::HostCounts;

/// The bin of a probability (the host kernel of the PLM op family).
pub use crate::ops::plm::cpu::bin_index;

/// The four histograms of PLM for `C` classes and `n_bins` bins, stored
/// `[bin][class]` (row-major, `bin · C + class`).
///
/// - `pos_pred` / `neg_pred`: bins of the predicted probabilities of the
///   elements labelled 1 / 0.
/// - `pos_truth` / `neg_truth`: histograms of the label values themselves;
///   every positive falls into the last bin and every negative into bin 0,
///   so only the per-class label counts are stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Histograms {
    n_bins: usize,
    num_classes: usize,
    pos_pred: Vec<u64>,
    neg_pred: Vec<u64>,
    pos_labels: Vec<u64>,
    neg_labels: Vec<u64>,
    discarded: u64,
}

/// The most cells (`n_bins × C`) one histogram may have: 2^24, 128 MiB of
/// counts. Sizes come from configurations and saved states, so they are
/// bounded before anything is allocated.
pub const MAX_CELLS: usize = 1 << 24;

/// The cell count `n_bins × num_classes`, checked: both at least 1, the
/// product at most [`MAX_CELLS`].
fn cell_count(op: &'static str, n_bins: usize, num_classes: usize) -> Result<usize> {
    if n_bins == 0 || num_classes == 0 {
        return Err(Error::invalid(
            op,
            format!("need n_bins >= 1 and num_classes >= 1, got {n_bins} and {num_classes}"),
        ));
    }
    n_bins
        .checked_mul(num_classes)
        .filter(|&cells| cells <= MAX_CELLS)
        .ok_or_else(|| {
            Error::invalid(
                op,
                format!(
                    "{n_bins} bins x {num_classes} classes exceed the {MAX_CELLS} histogram cells allowed"
                ),
            )
        })
}

/// `n` zero counts; failing to allocate them is an error, not an abort.
fn zero_counts(op: &'static str, n: usize) -> Result<Vec<u64>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::invalid(op, format!("cannot allocate {n} histogram counts")))?;
    v.resize(n, 0);
    Ok(v)
}

/// The error of a count that would pass `u64::MAX`.
fn count_overflow(op: &'static str) -> Error {
    Error::invalid(
        op,
        "histogram counts would exceed u64::MAX; reset the histograms (end the epoch) sooner",
    )
}

impl Histograms {
    /// Empty histograms (`n_bins ≥ 1`, `num_classes ≥ 1`, at most
    /// [`MAX_CELLS`] cells).
    pub fn new(n_bins: usize, num_classes: usize) -> Result<Self> {
        const OP: &str = "Histograms::new";
        let cells = cell_count(OP, n_bins, num_classes)?;
        Ok(Histograms {
            n_bins,
            num_classes,
            pos_pred: zero_counts(OP, cells)?,
            neg_pred: zero_counts(OP, cells)?,
            pos_labels: zero_counts(OP, num_classes)?,
            neg_labels: zero_counts(OP, num_classes)?,
            discarded: 0,
        })
    }

    /// Rebuilds histograms from saved counts, checking every length and
    /// that the counts agree with each other as [`Histograms::add`] keeps
    /// them: per class, the binned predictions of positives (negatives)
    /// number at most its positive (negative) labels; the labels that were
    /// not binned number exactly `discarded`; and all labels together fit
    /// in a `u64`.
    pub fn from_counts(
        n_bins: usize,
        num_classes: usize,
        pos_pred: Vec<u64>,
        neg_pred: Vec<u64>,
        pos_labels: Vec<u64>,
        neg_labels: Vec<u64>,
        discarded: u64,
    ) -> Result<Self> {
        const OP: &str = "Histograms::from_counts";
        let cells = cell_count(OP, n_bins, num_classes)?;
        for (name, len, want) in [
            ("pos_pred", pos_pred.len(), cells),
            ("neg_pred", neg_pred.len(), cells),
            ("pos_labels", pos_labels.len(), num_classes),
            ("neg_labels", neg_labels.len(), num_classes),
        ] {
            if len != want {
                return Err(Error::invalid(
                    OP,
                    format!("{name} has {len} counts, expected {want} ({n_bins} bins x {num_classes} classes)"),
                ));
            }
        }
        // u128 sums cannot overflow: fewer than 2^64 terms below 2^64 each.
        let total: u128 = pos_labels
            .iter()
            .chain(&neg_labels)
            .map(|&n| u128::from(n))
            .sum();
        if total > u128::from(u64::MAX) {
            return Err(Error::invalid(
                OP,
                format!("{total} labels in all exceed u64::MAX"),
            ));
        }
        let mut unbinned: u128 = 0;
        for (kind, pred, labels) in [
            ("positive", &pos_pred, &pos_labels),
            ("negative", &neg_pred, &neg_labels),
        ] {
            for (class, &count) in labels.iter().enumerate() {
                let binned: u128 = pred
                    .iter()
                    .skip(class)
                    .step_by(num_classes)
                    .map(|&n| u128::from(n))
                    .sum();
                if binned > u128::from(count) {
                    return Err(Error::invalid(
                        OP,
                        format!("class {class} has {binned} binned {kind} predictions but only {count} {kind} labels"),
                    ));
                }
                unbinned += u128::from(count) - binned;
            }
        }
        if unbinned != u128::from(discarded) {
            return Err(Error::invalid(
                OP,
                format!(
                    "{unbinned} labels have no binned prediction, but discarded is {discarded}"
                ),
            ));
        }
        Ok(Histograms {
            n_bins,
            num_classes,
            pos_pred,
            neg_pred,
            pos_labels,
            neg_labels,
            discarded,
        })
    }

    /// Number of labels counted since the last reset (every other count is
    /// at most this).
    fn total(&self) -> u128 {
        self.pos_labels
            .iter()
            .chain(&self.neg_labels)
            .map(|&n| u128::from(n))
            .sum()
    }

    /// Number of bins.
    pub fn n_bins(&self) -> usize {
        self.n_bins
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Adds one batch: `probabilities` and `labels` are row-major `[B, C]`.
    /// Every element's label is counted; its probability is binned unless it
    /// is NaN or outside [0, 1], in which case it is counted as discarded.
    ///
    /// Errors, with nothing counted, when the shapes disagree or when the
    /// counts since the last reset would pass `u64::MAX`.
    pub fn add(&mut self, probabilities: &[f64], labels: &[bool]) -> Result<()> {
        const OP: &str = "Histograms::add";
        let c = self.num_classes;
        if probabilities.len() != labels.len() || !labels.len().is_multiple_of(c) {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} probabilities and {} labels do not form [B, {c}] batches",
                    probabilities.len(),
                    labels.len()
                ),
            ));
        }
        // Every count is at most the number of labels counted, so checking
        // that total here makes every increment below safe.
        if self.total() + labels.len() as u128 > u128::from(u64::MAX) {
            return Err(count_overflow(OP));
        }
        for (e, (&p, &positive)) in probabilities.iter().zip(labels).enumerate() {
            let class = e % c;
            let (pred, label_count) = if positive {
                (&mut self.pos_pred, &mut self.pos_labels)
            } else {
                (&mut self.neg_pred, &mut self.neg_labels)
            };
            label_count[class] += 1;
            match bin_index(p, self.n_bins) {
                Some(b) => pred[b * c + class] += 1,
                None => self.discarded += 1,
            }
        }
        Ok(())
    }

    /// Adds counts accumulated elsewhere (on a device) with the same
    /// layout. Errors, with nothing added, when a count would pass
    /// `u64::MAX` or the lengths differ.
    pub(crate) fn merge(&mut self, other: &HostCounts) -> Result<()> {
        const OP: &str = "Histograms::merge";
        let before = self.total();
        let pairs = [
            (&mut self.pos_pred, &other.pos_pred),
            (&mut self.neg_pred, &other.neg_pred),
            (&mut self.pos_labels, &other.pos_labels),
            (&mut self.neg_labels, &other.neg_labels),
        ];
        if pairs.iter().any(|(a, b)| a.len() != b.len()) {
            return Err(Error::invalid(OP, "histograms of different sizes"));
        }
        let added: u128 = other
            .pos_labels
            .iter()
            .chain(&other.neg_labels)
            .map(|&n| u128::from(n))
            .sum();
        // Every count is at most the number of labels counted.
        if before + added > u128::from(u64::MAX) {
            return Err(count_overflow(OP));
        }
        for (a, b) in pairs {
            for (x, &y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.discarded += other.discarded;
        Ok(())
    }

    /// Predicted-probability counts of positives, `[bin][class]` flat.
    pub fn pos_pred(&self) -> &[u64] {
        &self.pos_pred
    }

    /// Predicted-probability counts of negatives, `[bin][class]` flat.
    pub fn neg_pred(&self) -> &[u64] {
        &self.neg_pred
    }

    /// Number of positive labels per class.
    pub fn pos_labels(&self) -> &[u64] {
        &self.pos_labels
    }

    /// Number of negative labels per class.
    pub fn neg_labels(&self) -> &[u64] {
        &self.neg_labels
    }

    /// Histogram of positive label values, `[bin][class]` flat: each
    /// class's count in the last bin, zeros elsewhere.
    pub fn pos_truth(&self) -> Vec<u64> {
        self.point_masses(&self.pos_labels, self.n_bins - 1)
    }

    /// Histogram of negative label values, `[bin][class]` flat: each
    /// class's count in bin 0, zeros elsewhere.
    pub fn neg_truth(&self) -> Vec<u64> {
        self.point_masses(&self.neg_labels, 0)
    }

    fn point_masses(&self, counts: &[u64], bin: usize) -> Vec<u64> {
        let c = self.num_classes;
        let mut out = vec![0; self.n_bins * c];
        out[bin * c..(bin + 1) * c].copy_from_slice(counts);
        out
    }

    /// The positive-prediction counts of `class` (`class < C`), bin by bin.
    pub(crate) fn pos_pred_column(&self, class: usize) -> Vec<u64> {
        self.column(&self.pos_pred, class)
    }

    /// The negative-prediction counts of `class` (`class < C`), bin by bin.
    pub(crate) fn neg_pred_column(&self, class: usize) -> Vec<u64> {
        self.column(&self.neg_pred, class)
    }

    fn column(&self, flat: &[u64], class: usize) -> Vec<u64> {
        debug_assert!(class < self.num_classes);
        flat.iter()
            .skip(class)
            .step_by(self.num_classes)
            .copied()
            .collect()
    }

    /// Probabilities left out because they were NaN or outside [0, 1].
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// True when nothing has been counted since the last reset.
    pub fn is_empty(&self) -> bool {
        self.discarded == 0
            && self.pos_labels.iter().all(|&n| n == 0)
            && self.neg_labels.iter().all(|&n| n == 0)
    }

    /// Sets every count back to zero.
    pub fn reset(&mut self) {
        for v in [
            &mut self.pos_pred,
            &mut self.neg_pred,
            &mut self.pos_labels,
            &mut self.neg_labels,
        ] {
            v.fill(0);
        }
        self.discarded = 0;
    }
}

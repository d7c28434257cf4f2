//! Per-class histograms of predicted probabilities, split by label, counted
//! over one epoch of training batches.

use crate::error::{Error, Result};

/// The bin of probability `p` among `n_bins` equal-width bins over [0, 1]:
/// `min(⌊p · n_bins⌋, n_bins − 1)`, so that 1 falls into the last bin.
/// `None` for NaN and for values outside [0, 1] (or `n_bins = 0`).
pub fn bin_index(p: f64, n_bins: usize) -> Option<usize> {
    if n_bins == 0 || !(0.0..=1.0).contains(&p) {
        return None;
    }
    Some(((p * n_bins as f64) as usize).min(n_bins - 1))
}

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

impl Histograms {
    /// Empty histograms (`n_bins ≥ 1`, `num_classes ≥ 1`).
    pub fn new(n_bins: usize, num_classes: usize) -> Result<Self> {
        if n_bins == 0 || num_classes == 0 {
            return Err(Error::invalid(
                "Histograms::new",
                format!("need n_bins >= 1 and num_classes >= 1, got {n_bins} and {num_classes}"),
            ));
        }
        let cells = n_bins * num_classes;
        Ok(Histograms {
            n_bins,
            num_classes,
            pos_pred: vec![0; cells],
            neg_pred: vec![0; cells],
            pos_labels: vec![0; num_classes],
            neg_labels: vec![0; num_classes],
            discarded: 0,
        })
    }

    /// Rebuilds histograms from saved counts, checking every length.
    pub fn from_counts(
        n_bins: usize,
        num_classes: usize,
        pos_pred: Vec<u64>,
        neg_pred: Vec<u64>,
        pos_labels: Vec<u64>,
        neg_labels: Vec<u64>,
        discarded: u64,
    ) -> Result<Self> {
        let empty = Histograms::new(n_bins, num_classes)?;
        let cells = n_bins * num_classes;
        for (name, len, want) in [
            ("pos_pred", pos_pred.len(), cells),
            ("neg_pred", neg_pred.len(), cells),
            ("pos_labels", pos_labels.len(), num_classes),
            ("neg_labels", neg_labels.len(), num_classes),
        ] {
            if len != want {
                return Err(Error::invalid(
                    "Histograms::from_counts",
                    format!("{name} has {len} counts, expected {want} ({n_bins} bins x {num_classes} classes)"),
                ));
            }
        }
        Ok(Histograms {
            pos_pred,
            neg_pred,
            pos_labels,
            neg_labels,
            discarded,
            ..empty
        })
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
    pub fn add(&mut self, probabilities: &[f64], labels: &[bool]) -> Result<()> {
        let c = self.num_classes;
        if probabilities.len() != labels.len() || !labels.len().is_multiple_of(c) {
            return Err(Error::invalid(
                "Histograms::add",
                format!(
                    "{} probabilities and {} labels do not form [B, {c}] batches",
                    probabilities.len(),
                    labels.len()
                ),
            ));
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

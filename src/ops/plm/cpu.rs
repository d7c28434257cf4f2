//! CPU kernels of PLM: the mask of one batch from its labels and the
//! per-class keep probabilities, the labels of 0/1 targets, and the
//! histogram counts of one batch.

use super::philox::uniform_block;
use super::HistogramLayout;
use crate::error::{Error, Result};

/// The 0/1 mask of one batch: element `e` (row-major in `[B, C]`, class
/// `e mod C`) is kept when its uniform `u` (from
/// [`uniform_block`]`(seed, batch, e / 4)`) satisfies `u < keep`, where
/// `keep` is `keep_pos` or `keep_neg` of its class according to its label.
///
/// Every element of every mask is a function of `(seed, batch, e)` only.
pub fn draw_mask(
    seed: u64,
    batch: u64,
    labels: &[bool],
    keep_pos: &[f64],
    keep_neg: &[f64],
) -> Result<Vec<bool>> {
    draw_mask_at(seed, batch, 0, labels, keep_pos, keep_neg)
}

/// The elements `first..first + labels.len()` of mask number `batch` of a
/// larger `[B, C]` batch whose elements from `first` on have `labels`:
/// bit for bit that part of [`draw_mask`] of the whole batch (a rank's
/// slice of a global batch in data-parallel training passes its first
/// row times `C`). `first` must be a multiple of `C` (a row boundary), and
/// `first + labels.len()` must fit in a u64.
pub fn draw_mask_at(
    seed: u64,
    batch: u64,
    first: u64,
    labels: &[bool],
    keep_pos: &[f64],
    keep_neg: &[f64],
) -> Result<Vec<bool>> {
    let c = keep_pos.len();
    if c == 0 || keep_neg.len() != c || !labels.len().is_multiple_of(c) {
        return Err(Error::invalid(
            "draw_mask",
            format!(
                "{} labels with {} keep_pos and {} keep_neg values do not form [B, C] batches",
                labels.len(),
                keep_pos.len(),
                keep_neg.len()
            ),
        ));
    }
    if !first.is_multiple_of(c as u64) {
        return Err(Error::invalid(
            "draw_mask",
            format!("the first element {first} is not at the start of a row of {c} classes"),
        ));
    }
    if first.checked_add(labels.len() as u64).is_none() {
        return Err(Error::invalid(
            "draw_mask",
            format!(
                "{} labels from element {first} reach past element {}",
                labels.len(),
                u64::MAX
            ),
        ));
    }
    let mut mask = Vec::with_capacity(labels.len());
    let mut block = u64::MAX;
    let mut u = [0.0; 4];
    for (i, &positive) in labels.iter().enumerate() {
        let e = first + i as u64;
        if e / 4 != block {
            block = e / 4;
            u = uniform_block(seed, batch, block);
        }
        let class = i % c;
        let keep = if positive {
            keep_pos[class]
        } else {
            keep_neg[class]
        };
        mask.push(u[(e % 4) as usize] < keep);
    }
    Ok(mask)
}

/// The labels of row-major `[B, C]` targets (`classes = C`): true for 1,
/// false for 0, and an error naming `op` and the position of the first
/// other value.
pub fn labels(op: &'static str, targets: &[f64], classes: usize) -> Result<Vec<bool>> {
    targets
        .iter()
        .enumerate()
        .map(|(e, &v)| {
            if v == 0.0 || v == 1.0 {
                Ok(v == 1.0)
            } else {
                Err(super::bad_target(op, e, classes, v))
            }
        })
        .collect()
}

/// The bin of probability `p` among `n_bins` equal-width bins over [0, 1]:
/// `min(⌊p · n_bins⌋, n_bins − 1)`, so that 1 falls into the last bin.
/// `None` for NaN and for values outside [0, 1] (or `n_bins = 0`).
pub fn bin_index(p: f64, n_bins: usize) -> Option<usize> {
    if n_bins == 0 || !(0.0..=1.0).contains(&p) {
        return None;
    }
    Some(((p * n_bins as f64) as usize).min(n_bins - 1))
}

/// Adds one batch (`probabilities` and `labels`, row-major `[B, C]`) to the
/// counts `counts`, laid out as `h` says; the counts wrap like the device's
/// u64 atomics (the host merge checks for overflow).
pub(super) fn count(
    h: &HistogramLayout,
    counts: &mut [i64],
    probabilities: &[f64],
    labels: &[bool],
) {
    let c = h.classes;
    for (e, (&p, &positive)) in probabilities.iter().zip(labels).enumerate() {
        let class = e % c;
        let (pred, label) = if positive {
            (h.pos_pred(), h.pos_labels())
        } else {
            (h.neg_pred(), h.neg_labels())
        };
        let bump = |v: &mut i64| *v = v.wrapping_add(1);
        bump(&mut counts[label + class]);
        match bin_index(p, h.n_bins) {
            Some(b) => bump(&mut counts[pred + b * c + class]),
            None => bump(&mut counts[h.discarded()]),
        }
    }
}

//! Long-tailed subsets of balanced single-label datasets.
//!
//! The standard protocol for "imbalanced CIFAR" (Cui et al. 2019, Cao et al.
//! 2019) keeps, of class `c` among `C`, the first
//!
//! ```text
//! n_c = floor(n_max · IF^(-c/(C-1)))
//! ```
//!
//! images of a random order, where `IF = n_0 / n_{C-1}` is the imbalance
//! factor: class 0 keeps `n_max` images and the last class `n_max / IF`.
//! The power is evaluated as `(1/IF)^(c/(C-1))` in `f64` and the product
//! truncated toward zero, the same floating-point steps as the reference
//! Python code, so the class sizes match the published ones (CIFAR-10 with
//! `n_max = 5000`, `IF = 100`: 5000, 2997, 1796, 1077, 645, 387, 232, 139,
//! 83, 50).

use super::dataset::{ImageDataset, Labels};
use super::rng::SplitMix64;
use crate::error::{Error, Result};

/// Purpose tag of the per-class shuffle streams (see [`super::rng`]).
const LONG_TAIL_STREAM: u64 = 0x4C54; // "LT"

/// The class sizes `n_c = floor(n_max · (1/IF)^(c/(C-1)))` for
/// `c = 0..num_classes`; a single class keeps `n_max`.
pub fn class_quotas(num_classes: usize, imbalance_factor: f64, n_max: usize) -> Result<Vec<usize>> {
    const OP: &str = "class_quotas";
    if num_classes == 0 {
        return Err(Error::invalid(OP, "num_classes must be positive"));
    }
    if !(imbalance_factor.is_finite() && imbalance_factor >= 1.0) {
        return Err(Error::invalid(
            OP,
            format!("imbalance factor must be a finite number >= 1, got {imbalance_factor}"),
        ));
    }
    if num_classes == 1 {
        return Ok(vec![n_max]);
    }
    let ratio = 1.0 / imbalance_factor;
    let last = (num_classes - 1) as f64;
    Ok((0..num_classes)
        .map(|c| (n_max as f64 * ratio.powf(c as f64 / last)).floor() as usize)
        .collect())
}

/// Indices of a long-tailed subset of a single-label dataset.
///
/// `n_max` is `max_per_class` when given, otherwise the size of the
/// smallest class, so that every class can supply its quota
/// ([`class_quotas`]). Within class `c`, the dataset's indices of that class
/// are shuffled by the stream `(seed, "LT", c)` of [`SplitMix64`] and the
/// first `n_c` are kept. The result is sorted ascending (the dataset's
/// order), and is the same for the same inputs and seed.
///
/// Errors: a label outside `0..num_classes`, an invalid imbalance factor, a
/// class with fewer images than its quota, or a subset that would be empty.
pub fn long_tail_indices(
    labels: &[u32],
    num_classes: usize,
    imbalance_factor: f64,
    max_per_class: Option<usize>,
    seed: u64,
) -> Result<Vec<usize>> {
    const OP: &str = "long_tail_indices";
    if num_classes == 0 {
        return Err(Error::invalid(OP, "num_classes must be positive"));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class
            .get_mut(l as usize)
            .ok_or_else(|| {
                Error::invalid(
                    OP,
                    format!("label {l} of sample {i} is outside 0..{num_classes}"),
                )
            })?
            .push(i);
    }
    let smallest = by_class.iter().map(Vec::len).min().unwrap_or(0);
    let n_max = max_per_class.unwrap_or(smallest);
    let quotas = class_quotas(num_classes, imbalance_factor, n_max)?;
    if quotas.iter().all(|&q| q == 0) {
        return Err(Error::invalid(
            OP,
            format!(
                "n_max = {n_max} keeps no sample (class sizes {:?})",
                sizes(&by_class)
            ),
        ));
    }
    // Every quota is checked against its class before anything is
    // reserved, so the total is at most the number of samples.
    for (c, (members, &quota)) in by_class.iter().zip(&quotas).enumerate() {
        if members.len() < quota {
            return Err(Error::invalid(
                OP,
                format!(
                    "class {c} has {} samples but its quota is {quota} (n_max = {n_max}, IF = {imbalance_factor})",
                    members.len()
                ),
            ));
        }
    }
    let mut kept = Vec::with_capacity(quotas.iter().sum());
    for (c, (mut members, &quota)) in by_class.into_iter().zip(&quotas).enumerate() {
        SplitMix64::stream(seed, &[LONG_TAIL_STREAM, c as u64]).shuffle(&mut members);
        kept.extend_from_slice(&members[..quota]);
    }
    kept.sort_unstable();
    Ok(kept)
}

fn sizes(by_class: &[Vec<usize>]) -> Vec<usize> {
    by_class.iter().map(Vec::len).collect()
}

/// The long-tailed subset of a single-label dataset ([`long_tail_indices`]
/// applied with [`ImageDataset::subset`]), named `"{name}-lt{IF}"`.
pub fn long_tail_subset(
    dataset: &ImageDataset,
    imbalance_factor: f64,
    max_per_class: Option<usize>,
    seed: u64,
) -> Result<ImageDataset> {
    let Labels::Single(labels) = &dataset.labels else {
        return Err(Error::invalid(
            "long_tail_subset",
            format!(
                "dataset '{}' is multi-label; long-tail subsampling needs one label per image",
                dataset.name
            ),
        ));
    };
    let indices = long_tail_indices(
        labels,
        dataset.num_classes,
        imbalance_factor,
        max_per_class,
        seed,
    )?;
    let mut subset = dataset.subset(&indices)?;
    subset.name = format!("{}-lt{imbalance_factor}", dataset.name);
    Ok(subset)
}

//! Groups of classes by *training* frequency (head / medium / tail), used to
//! report how a model does on frequent versus rare classes.
//!
//! Every function here ranks classes the same way: by training count, and
//! among equal counts the lower class index counts as the more frequent one
//! (long-tailed datasets number their classes from the head). So with ties,
//! [`rarest`] picks higher indices first and [`most_frequent`] lower ones.

use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Single-label "many-shot" classes have more than this many training
/// samples (the usual CIFAR-LT / ImageNet-LT split).
pub const MANY_SHOT_ABOVE: usize = 100;
/// Single-label "few-shot" classes have fewer than this many training
/// samples; classes in between are "medium-shot".
pub const FEW_SHOT_BELOW: usize = 20;

/// A partition of the classes into three frequency groups. Each list holds
/// class indices in increasing order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrequencyGroups {
    /// The most frequent classes (single-label: "many-shot").
    pub head: Vec<usize>,
    /// The classes in between ("medium-shot").
    pub medium: Vec<usize>,
    /// The rarest classes (single-label: "few-shot").
    pub tail: Vec<usize>,
}

impl FrequencyGroups {
    /// The groups as a JSON object `{"head", "medium", "tail"}` of index arrays.
    pub fn to_json(&self) -> Value {
        json!({"head": self.head, "medium": self.medium, "tail": self.tail})
    }
}

/// Class indices from most to least frequent: by count descending, ties by
/// class index ascending.
fn by_frequency(counts: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    // A stable sort keeps the lower index first among equal counts.
    order.sort_by(|&a, &b| counts[b].cmp(&counts[a]));
    order
}

/// Sorts a list of class indices into increasing order.
fn sorted(mut classes: Vec<usize>) -> Vec<usize> {
    classes.sort_unstable();
    classes
}

/// Multi-label head / medium / tail: the classes ranked from most to least
/// frequent (see the module docs for ties) and cut into thirds at ranks
/// `⌊C/3⌋` and `⌊2C/3⌋`. When `C` is not a multiple of 3 the extra classes
/// go to the tail and then the medium group: `C = 10` gives 3 / 3 / 4 and
/// `C = 80` gives 26 / 27 / 27.
///
/// ```
/// use ferrite::metrics::groups_by_thirds;
/// let g = groups_by_thirds(&[5, 500, 50, 1, 90, 300]);
/// assert_eq!((g.head.len(), g.medium.len(), g.tail.len()), (2, 2, 2));
/// assert!(g.head.contains(&1) && g.tail.contains(&3));
/// ```
pub fn groups_by_thirds(train_positives: &[usize]) -> FrequencyGroups {
    let order = by_frequency(train_positives);
    let c = order.len();
    let (first, second) = (c / 3, 2 * c / 3);
    FrequencyGroups {
        head: sorted(order[..first].to_vec()),
        medium: sorted(order[first..second].to_vec()),
        tail: sorted(order[second..].to_vec()),
    }
}

/// Single-label many / medium / few-shot groups by absolute training count:
/// head ("many") holds classes with `count > many_above`, tail ("few") those
/// with `count < few_below`, medium the rest. The usual split is
/// `(MANY_SHOT_ABOVE, FEW_SHOT_BELOW)` = (100, 20), i.e. medium = 20..=100.
///
/// Errors when `few_below > many_above + 1`, where a class could be both
/// many- and few-shot.
pub fn groups_by_count(
    train_counts: &[usize],
    many_above: usize,
    few_below: usize,
) -> Result<FrequencyGroups> {
    if few_below > many_above.saturating_add(1) {
        return Err(Error::invalid(
            "groups_by_count",
            format!("few_below = {few_below} overlaps many_above = {many_above}"),
        ));
    }
    let mut groups = FrequencyGroups::default();
    for (class, &count) in train_counts.iter().enumerate() {
        let group = if count > many_above {
            &mut groups.head
        } else if count < few_below {
            &mut groups.tail
        } else {
            &mut groups.medium
        };
        group.push(class);
    }
    Ok(groups)
}

/// The `k` classes with the fewest training positives, rarest first (all
/// classes when `k` exceeds their number). Ties: see the module docs.
pub fn rarest(train_positives: &[usize], k: usize) -> Vec<usize> {
    by_frequency(train_positives)
        .into_iter()
        .rev()
        .take(k)
        .collect()
}

/// The `k` classes with the most training positives, most frequent first
/// (all classes when `k` exceeds their number). Ties: see the module docs.
pub fn most_frequent(train_positives: &[usize], k: usize) -> Vec<usize> {
    by_frequency(train_positives).into_iter().take(k).collect()
}

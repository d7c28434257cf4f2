//! Frequency groups on known class sizes: edges, thirds, ties and summaries.

use super::helpers::{hand_example, TOL};
use crate::common::assert_close;
use ferrite::metrics::{
    groups_by_count, groups_by_thirds, most_frequent, multilabel_report, rarest, summarize,
    FrequencyGroups, FEW_SHOT_BELOW, MANY_SHOT_ABOVE,
};
use ferrite::Error;

// --------------------------------------------------------------- groups

/// CIFAR-100-LT with imbalance factor 100: `n_c = ⌊500 · 100^(−c/99)⌋`.
fn cifar100_lt() -> Vec<usize> {
    (0..100)
        .map(|c| (500.0 * 100f64.powf(-(c as f64) / 99.0)).floor() as usize)
        .collect()
}

#[test]
fn cifar100_lt_many_medium_few() {
    let counts = cifar100_lt();
    // The published size of CIFAR-100-LT (IF 100), and its endpoints.
    assert_eq!(counts.iter().sum::<usize>(), 10847);
    assert_eq!((counts[0], counts[99]), (500, 5));
    // Around the cuts: class 34 has 102 images, 35 has 98; 69 has 20, 70 has 19.
    assert_eq!(&counts[34..36], &[102, 98]);
    assert_eq!(&counts[69..71], &[20, 19]);
    let g = groups_by_count(&counts, MANY_SHOT_ABOVE, FEW_SHOT_BELOW).unwrap();
    assert_eq!((g.head.len(), g.medium.len(), g.tail.len()), (35, 35, 30));
    assert_eq!(g.head, (0..35).collect::<Vec<_>>());
    assert_eq!(g.medium, (35..70).collect::<Vec<_>>());
    assert_eq!(g.tail, (70..100).collect::<Vec<_>>());
}

#[test]
fn groups_by_count_edges() {
    // Medium is inclusive at both ends: 100 and 20 are medium.
    let g = groups_by_count(&[101, 100, 20, 19, 0], 100, 20).unwrap();
    assert_eq!(
        g,
        FrequencyGroups {
            head: vec![0],
            medium: vec![1, 2],
            tail: vec![3, 4]
        }
    );
    // No medium band at all is allowed (few_below = many_above + 1).
    let g = groups_by_count(&[5, 6, 7], 5, 6).unwrap();
    assert_eq!((g.head, g.medium, g.tail), (vec![1, 2], vec![], vec![0]));
    assert!(matches!(
        groups_by_count(&[5], 5, 7),
        Err(Error::InvalidArgument {
            op: "groups_by_count",
            ..
        })
    ));
}

#[test]
fn groups_by_thirds_sizes_and_ties() {
    // Ten classes: thirds of 3, 3 and 4 (the remainder goes to the tail).
    let counts = [50, 5, 40, 1, 30, 9, 20, 7, 60, 3];
    let g = groups_by_thirds(&counts);
    // Ranked: 8(60) 0(50) 2(40) | 4(30) 6(20) 5(9) | 7(7) 1(5) 9(3) 3(1).
    assert_eq!(g.head, vec![0, 2, 8]);
    assert_eq!(g.medium, vec![4, 5, 6]);
    assert_eq!(g.tail, vec![1, 3, 7, 9]);
    // 80 classes (COCO): 26 / 27 / 27.
    let g = groups_by_thirds(&(0..80).collect::<Vec<_>>());
    assert_eq!((g.head.len(), g.medium.len(), g.tail.len()), (26, 27, 27));
    assert_eq!(g.head, (54..80).collect::<Vec<_>>());
    // Equal counts: lower index counts as more frequent.
    let g = groups_by_thirds(&[4; 6]);
    assert_eq!(
        (g.head, g.medium, g.tail),
        (vec![0, 1], vec![2, 3], vec![4, 5])
    );
    // Degenerate sizes.
    assert_eq!(groups_by_thirds(&[]), FrequencyGroups::default());
    let g = groups_by_thirds(&[7, 8]);
    assert_eq!((g.head, g.medium, g.tail), (vec![], vec![1], vec![0]));
}

#[test]
fn rarest_and_most_frequent() {
    let counts = [10, 3, 7, 3, 12, 3];
    // Ties among the three 3s: the higher index is the rarer one.
    assert_eq!(rarest(&counts, 2), vec![5, 3]);
    assert_eq!(rarest(&counts, 4), vec![5, 3, 1, 2]);
    assert_eq!(most_frequent(&counts, 3), vec![4, 0, 2]);
    assert_eq!(most_frequent(&[1, 1, 1], 2), vec![0, 1]);
    assert_eq!(rarest(&counts, 100).len(), 6);
    assert!(most_frequent(&counts, 0).is_empty());
    // The tail third and the rarest classes agree.
    let g = groups_by_thirds(&counts);
    let mut rare = rarest(&counts, g.tail.len());
    rare.sort_unstable();
    assert_eq!(rare, g.tail);
}

#[test]
fn summarize_a_group() {
    let (scores, targets) = hand_example();
    let r = multilabel_report(&scores, &targets, 3, 0.5).unwrap();
    // Classes 0 and 2: P (1, 0), R (2/3, 0), F1 (0.8, 0), AP (11/12, —).
    let s = summarize(&r, &[2, 0]).unwrap();
    assert_eq!(s.num_classes, 2);
    assert_close("P", &[s.precision], &[0.5], TOL, 0.0);
    assert_close("R", &[s.recall], &[1.0 / 3.0], TOL, 0.0);
    assert_close("F1", &[s.f1], &[0.4], TOL, 0.0);
    assert_close("CF1", &[s.cf1], &[0.4], TOL, 0.0); // 2·½·⅓/(½+⅓) = 0.4 too
    assert_close("mAP", &[s.map], &[11.0 / 12.0], TOL, 0.0);
    // Over every class it reproduces the report's macro numbers.
    let all = summarize(&r, &[0, 1, 2]).unwrap();
    assert_eq!((all.precision, all.recall, all.cf1), (r.cp, r.cr, r.cf1));
    assert_eq!((all.f1, all.map), (r.macro_f1, r.map));
    // The rarest-10 use case: here, the single rarest class (2, by its count).
    let tail = summarize(&r, &rarest(&[40, 30, 1], 1)).unwrap();
    assert_eq!(
        (tail.precision, tail.recall, tail.f1, tail.map),
        (0.0, 0.0, 0.0, 0.0)
    );

    assert!(matches!(
        summarize(&r, &[]),
        Err(Error::InvalidArgument {
            op: "summarize",
            ..
        })
    ));
    assert!(matches!(
        summarize(&r, &[0, 3]),
        Err(Error::IndexOutOfRange {
            op: "summarize",
            index: 3,
            size: 3
        })
    ));
    assert!(matches!(
        summarize(&r, &[1, 1]),
        Err(Error::InvalidArgument {
            op: "summarize",
            ..
        })
    ));
}

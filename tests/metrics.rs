//! Evaluation metrics: parity with scikit-learn (`tests/fixtures/metrics.json`,
//! made offline by `tests/fixtures/gen_metrics.py`), small examples worked
//! out by hand, frequency groups on known class sizes, and error cases.

mod common;
use common::{assert_close, fixture};
use ferrite::metrics::{
    average_precision, binary_targets, class_counts, groups_by_count, groups_by_thirds,
    most_frequent, multilabel_report, rarest, single_label_report, summarize, ClassCounts,
    FrequencyGroups, FEW_SHOT_BELOW, MANY_SHOT_ABOVE,
};
use ferrite::Error;
use serde_json::Value;

const TOL: f64 = 1e-12;

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn close(name: &str, got: f64, expected: &Value) {
    assert_close(name, &[got], &[expected.as_f64().unwrap()], TOL, TOL);
}

// ---------------------------------------------------------------- parity

#[test]
fn multilabel_report_matches_sklearn() {
    let root = fixture("metrics.json");
    let cases = root["multilabel"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let c = case["num_classes"].as_u64().unwrap() as usize;
        let n = case["n"].as_u64().unwrap() as usize;
        let scores = f32s(&case["scores"]);
        let targets: Vec<u8> = u64s(&case["targets"]).iter().map(|&t| t as u8).collect();
        let threshold = case["threshold"].as_f64().unwrap();
        let r = multilabel_report(&scores, &targets, c, threshold).unwrap();

        assert_eq!(r.num_samples, n, "{name}");
        assert_eq!(r.per_class.len(), c, "{name}");
        let per = |f: fn(&ferrite::metrics::ClassMetrics) -> f64| -> Vec<f64> {
            r.per_class.iter().map(f).collect()
        };
        let tag = |what: &str| format!("{name}: {what}");
        assert_close(
            &tag("precision"),
            &per(|m| m.precision),
            &f64s(&case["precision"]),
            TOL,
            TOL,
        );
        assert_close(
            &tag("recall"),
            &per(|m| m.recall),
            &f64s(&case["recall"]),
            TOL,
            TOL,
        );
        assert_close(&tag("f1"), &per(|m| m.f1), &f64s(&case["f1"]), TOL, TOL);
        assert_close(
            &tag("average_precision"),
            &per(|m| m.average_precision),
            &f64s(&case["average_precision"]),
            TOL,
            TOL,
        );
        let support: Vec<u64> = r.per_class.iter().map(|m| m.support).collect();
        assert_eq!(support, u64s(&case["support"]), "{name}: support");
        for m in &r.per_class {
            let k = m.counts;
            assert_eq!((k.tp + k.fp + k.fn_ + k.tn) as usize, n, "{name}: counts");
        }

        close(&tag("cp"), r.cp, &case["cp"]);
        close(&tag("cr"), r.cr, &case["cr"]);
        close(&tag("cf1"), r.cf1, &case["cf1"]);
        // CP and CR are sklearn's macro precision and recall; CF1 is not its macro F1.
        close(&tag("cp = macro P"), r.cp, &case["macro"]["precision"]);
        close(&tag("cr = macro R"), r.cr, &case["macro"]["recall"]);
        close(&tag("macro_f1"), r.macro_f1, &case["macro"]["f1"]);
        close(&tag("op"), r.op, &case["micro"]["precision"]);
        close(&tag("or"), r.or, &case["micro"]["recall"]);
        close(&tag("of1"), r.of1, &case["micro"]["f1"]);
        close(&tag("micro_f1"), r.micro_f1, &case["micro"]["f1"]);
        close(&tag("map"), r.map, &case["map"]);
        assert_eq!(
            r.map_classes as u64,
            case["map_classes"].as_u64().unwrap(),
            "{name}: map_classes"
        );
        close(
            &tag("subset_accuracy"),
            r.subset_accuracy,
            &case["subset_accuracy"],
        );
        assert_eq!(r.threshold, threshold);

        // The standalone functions agree with the report.
        let counts = class_counts(&scores, &targets, c, threshold).unwrap();
        let from_report: Vec<ClassCounts> = r.per_class.iter().map(|m| m.counts).collect();
        assert_eq!(counts, from_report, "{name}: class_counts");
        for (k, m) in r.per_class.iter().enumerate() {
            let col_s: Vec<f32> = scores.iter().skip(k).step_by(c).copied().collect();
            let col_t: Vec<u8> = targets.iter().skip(k).step_by(c).copied().collect();
            let ap = average_precision(&col_s, &col_t).unwrap();
            assert_eq!(ap, m.average_precision, "{name}: class {k} AP");
        }
    }
}

#[test]
fn average_precision_matches_sklearn() {
    let root = fixture("metrics.json");
    let cases = root["average_precision"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let scores = f32s(&case["scores"]);
        let targets: Vec<u8> = u64s(&case["targets"]).iter().map(|&t| t as u8).collect();
        let ap = average_precision(&scores, &targets).unwrap();
        close(name, ap, &case["ap"]);
    }
}

#[test]
fn single_label_report_matches_sklearn() {
    let root = fixture("metrics.json");
    let cases = root["single_label"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let c = case["num_classes"].as_u64().unwrap() as usize;
        let scores = f32s(&case["scores"]);
        let labels: Vec<u32> = u64s(&case["labels"]).iter().map(|&l| l as u32).collect();
        let train: Vec<usize> = u64s(&case["train_counts"])
            .iter()
            .map(|&t| t as usize)
            .collect();
        let r = single_label_report(&scores, &labels, c, &train).unwrap();

        assert_eq!(r.num_samples, labels.len(), "{name}");
        close(&format!("{name}: top1"), r.top1, &case["top1"]);
        close(
            &format!("{name}: balanced"),
            r.balanced_accuracy,
            &case["balanced_accuracy"],
        );
        let confusion: Vec<u64> = case["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(u64s)
            .collect();
        assert_eq!(r.confusion, confusion, "{name}: confusion");
        let expected = case["per_class_accuracy"].as_array().unwrap();
        for (k, (got, want)) in r.per_class_accuracy.iter().zip(expected).enumerate() {
            match (got, want.as_f64()) {
                (Some(g), Some(w)) => {
                    assert_close(&format!("{name}: class {k}"), &[*g], &[w], TOL, TOL)
                }
                (None, None) => {}
                _ => panic!("{name}: class {k}: got {got:?}, expected {want}"),
            }
        }
        for (group, got) in [("many", r.many), ("medium", r.medium), ("few", r.few)] {
            match (got, case[group].as_f64()) {
                (Some(g), Some(_)) => close(&format!("{name}: {group}"), g, &case[group]),
                (None, None) => {}
                _ => panic!("{name}: {group}: got {got:?}, expected {}", case[group]),
            }
        }
    }
}

// ----------------------------------------------------- worked by hand

/// 4 samples × 3 classes at threshold 0.5.
///
/// ```text
/// scores            targets   predicted
/// 0.9  0.2  0.5     1 0 0     1 0 1
/// 0.6  0.7  0.1     1 1 0     1 1 0
/// 0.3  0.8  0.4     0 1 0     0 1 0
/// 0.2  0.1  0.49    1 0 0     0 0 0
/// ```
/// Class 0: TP 2, FP 0, FN 1 → P 1, R 2/3, F1 0.8.
/// Class 1: TP 2, FP 0, FN 0 → P 1, R 1, F1 1.
/// Class 2: TP 0, FP 1, FN 0 → P 0, R 0 (no positives), F1 0.
fn hand_example() -> (Vec<f32>, Vec<u8>) {
    let scores = vec![
        0.9, 0.2, 0.5, //
        0.6, 0.7, 0.1, //
        0.3, 0.8, 0.4, //
        0.2, 0.1, 0.49,
    ];
    let targets = vec![
        1, 0, 0, //
        1, 1, 0, //
        0, 1, 0, //
        1, 0, 0,
    ];
    (scores, targets)
}

#[test]
fn multilabel_report_by_hand() {
    let (scores, targets) = hand_example();
    let r = multilabel_report(&scores, &targets, 3, 0.5).unwrap();
    let c0 = ClassCounts {
        tp: 2,
        fp: 0,
        fn_: 1,
        tn: 1,
    };
    let c1 = ClassCounts {
        tp: 2,
        fp: 0,
        fn_: 0,
        tn: 2,
    };
    let c2 = ClassCounts {
        tp: 0,
        fp: 1,
        fn_: 0,
        tn: 3,
    };
    assert_eq!(r.per_class[0].counts, c0);
    assert_eq!(r.per_class[1].counts, c1);
    assert_eq!(r.per_class[2].counts, c2);
    let got = |f: fn(&ferrite::metrics::ClassMetrics) -> f64| -> Vec<f64> {
        r.per_class.iter().map(f).collect()
    };
    assert_close("P", &got(|m| m.precision), &[1.0, 1.0, 0.0], TOL, 0.0);
    assert_close("R", &got(|m| m.recall), &[2.0 / 3.0, 1.0, 0.0], TOL, 0.0);
    assert_close("F1", &got(|m| m.f1), &[0.8, 1.0, 0.0], TOL, 0.0);
    // Class 0 ranking: 0.9(+) 0.6(+) 0.3(−) 0.2(+) → AP = (1 + 1 + 3/4) / 3.
    // Class 1 ranking: 0.8(+) 0.7(+) … → AP = 1. Class 2: no positives → 0.
    assert_close(
        "AP",
        &got(|m| m.average_precision),
        &[11.0 / 12.0, 1.0, 0.0],
        TOL,
        0.0,
    );
    assert_eq!(r.per_class[2].support, 0);

    // Macro: CP = 2/3, CR = 5/9, CF1 = 2·(2/3)(5/9)/(2/3 + 5/9) = 20/33;
    // macro-F1 = (0.8 + 1 + 0)/3 = 0.6, a different number.
    assert_close("CP", &[r.cp], &[2.0 / 3.0], TOL, 0.0);
    assert_close("CR", &[r.cr], &[5.0 / 9.0], TOL, 0.0);
    assert_close("CF1", &[r.cf1], &[20.0 / 33.0], TOL, 0.0);
    assert_close("macro F1", &[r.macro_f1], &[0.6], TOL, 0.0);
    // Micro: ΣTP 4, ΣFP 1, ΣFN 1 → OP = OR = OF1 = 0.8.
    assert_close(
        "micro",
        &[r.op, r.or, r.of1, r.micro_f1],
        &[0.8; 4],
        TOL,
        0.0,
    );
    // mAP over the two classes with positives.
    assert_eq!(r.map_classes, 2);
    assert_close("mAP", &[r.map], &[(11.0 / 12.0 + 1.0) / 2.0], TOL, 0.0);
    // Rows 1 and 2 match exactly; row 0 has a false positive, row 3 a miss.
    assert_close("subset", &[r.subset_accuracy], &[0.5], TOL, 0.0);
}

#[test]
fn threshold_is_inclusive_and_may_be_infinite() {
    let scores = [0.5f32, 0.25];
    let targets = [1u8, 0];
    let at = class_counts(&scores, &targets, 1, 0.5).unwrap()[0];
    assert_eq!(
        at,
        ClassCounts {
            tp: 1,
            fp: 0,
            fn_: 0,
            tn: 1
        }
    );
    let above = class_counts(&scores, &targets, 1, 0.5000001).unwrap()[0];
    assert_eq!(
        above,
        ClassCounts {
            tp: 0,
            fp: 0,
            fn_: 1,
            tn: 1
        }
    );
    let none = multilabel_report(&scores, &targets, 1, f64::INFINITY).unwrap();
    assert_eq!((none.op, none.or, none.of1), (0.0, 0.0, 0.0));
    let all = multilabel_report(&scores, &targets, 1, f64::NEG_INFINITY).unwrap();
    assert_eq!((all.op, all.or), (0.5, 1.0));
}

#[test]
fn no_class_with_positives_gives_zero_map() {
    let r = multilabel_report(&[0.1, 0.9, 0.7, 0.2], &[0, 0, 0, 0], 2, 0.5).unwrap();
    assert_eq!((r.map, r.map_classes), (0.0, 0));
    assert_eq!(
        (r.cp, r.cr, r.cf1, r.of1, r.micro_f1),
        (0.0, 0.0, 0.0, 0.0, 0.0)
    );
    assert_eq!(r.subset_accuracy, 0.0); // both rows predict one false positive
}

#[test]
fn average_precision_by_hand() {
    // 0.9(+) 0.8(−) 0.7(+) 0.6(−): AP = ½·1 + ½·⅔ = 5/6.
    let ap = average_precision(&[0.6, 0.9, 0.7, 0.8], &[0, 1, 1, 0]).unwrap();
    assert_close("interleaved", &[ap], &[5.0 / 6.0], TOL, 0.0);
    // Ties enter together: {0.5: +, −} then 0.1(+) → ½·½ + ½·⅔ = 7/12.
    let ap = average_precision(&[0.5, 0.5, 0.1], &[1, 0, 1]).unwrap();
    assert_close("tied", &[ap], &[7.0 / 12.0], TOL, 0.0);
    // Infinities rank like any value: {+∞: −, +} → ⅓·½; 2(+) → ⅓·⅔;
    // −∞(+) → ⅓·¾. Total 23/36.
    let inf = f32::INFINITY;
    let ap = average_precision(&[inf, -inf, 2.0, inf], &[0, 1, 1, 1]).unwrap();
    assert_close("infinite", &[ap], &[23.0 / 36.0], TOL, 0.0);
    // The only positive ranked last: recall 1 at precision ⅓. No positive at
    // all: 0, as scikit-learn returns.
    let ap = average_precision(&[0.9, 0.8, 0.1], &[0, 0, 1]).unwrap();
    assert_close("last", &[ap], &[1.0 / 3.0], TOL, 0.0);
    assert_eq!(average_precision(&[0.3, 0.2], &[0, 0]).unwrap(), 0.0);
}

#[test]
fn single_label_report_by_hand() {
    // 5 samples, 3 classes. Row 1 ties classes 0 and 2 → argmax 0.
    let scores = [
        2.0, 1.0, 0.0, // label 0, pred 0
        1.0, 0.0, 1.0, // label 2, pred 0 (first max)
        0.0, 3.0, 1.0, // label 1, pred 1
        0.0, 1.0, 2.0, // label 2, pred 2
        0.0, 5.0, 4.0, // label 0, pred 1
    ];
    let labels = [0, 2, 1, 2, 0];
    // Class 0 many-shot, 1 medium, 2 few.
    let r = single_label_report(&scores, &labels, 3, &[101, 20, 19]).unwrap();
    assert_eq!(r.confusion, vec![1, 1, 0, 0, 1, 0, 1, 0, 1]);
    assert_close("top1", &[r.top1], &[3.0 / 5.0], TOL, 0.0);
    assert_eq!(r.per_class_accuracy, vec![Some(0.5), Some(1.0), Some(0.5)]);
    assert_close("balanced", &[r.balanced_accuracy], &[2.0 / 3.0], TOL, 0.0);
    assert_eq!((r.many, r.medium, r.few), (Some(0.5), Some(1.0), Some(0.5)));
    assert_eq!(r.groups.head, vec![0]);

    // Class 1 absent from the labels: its accuracy is None, not NaN, and the
    // medium group (class 1 only) has no value.
    let r = single_label_report(&scores[..6], &[0, 2], 3, &[101, 20, 19]).unwrap();
    assert_eq!(r.per_class_accuracy, vec![Some(1.0), None, Some(0.0)]);
    assert_eq!((r.many, r.medium, r.few), (Some(1.0), None, Some(0.0)));
    assert_close("balanced", &[r.balanced_accuracy], &[0.5], TOL, 0.0);
}

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

// ------------------------------------------------------------------ JSON

#[test]
fn reports_serialise_to_json() {
    let (scores, targets) = hand_example();
    let r = multilabel_report(&scores, &targets, 3, 0.5).unwrap();
    let j = r.to_json();
    assert_eq!(j["cf1"].as_f64().unwrap(), r.cf1);
    assert_eq!(j["threshold"].as_f64().unwrap(), 0.5);
    assert_eq!(j["num_samples"], 4);
    assert_eq!(j["per_class"].as_array().unwrap().len(), 3);
    assert_eq!(j["per_class"][0]["counts"]["fn"], 1);
    assert_eq!(j["per_class"][2]["support"], 0);
    // Every field is a real number (a NaN would have become null) and the
    // text parses back.
    let text = serde_json::to_string(&j).unwrap();
    assert!(!text.contains("null"), "{text}");
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_close(
        "map",
        &[parsed["map"].as_f64().unwrap()],
        &[r.map],
        TOL,
        TOL,
    );

    let s = summarize(&r, &[0, 1]).unwrap().to_json();
    assert_eq!(s["num_classes"], 2);
    assert_eq!(s["precision"].as_f64().unwrap(), 1.0);

    let sl = single_label_report(&[1.0, 0.0, 0.0, 1.0], &[0, 0], 2, &[200, 10]).unwrap();
    let j = sl.to_json();
    assert_eq!(j["per_class_accuracy"], serde_json::json!([0.5, null]));
    assert_eq!(j["few"], Value::Null);
    assert_eq!(j["many"].as_f64().unwrap(), 0.5);
    assert_eq!(j["confusion"], serde_json::json!([[1, 1], [0, 0]]));
    assert_eq!(j["groups"]["tail"], serde_json::json!([1]));
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_inputs_are_errors() {
    let (scores, targets) = hand_example();
    let bad_shape = |e: Error| matches!(e, Error::BadShape { .. });
    let invalid = |e: Error| matches!(e, Error::InvalidArgument { .. });

    // Multi-label.
    assert!(invalid(
        multilabel_report(&scores, &targets, 0, 0.5).unwrap_err()
    ));
    assert!(bad_shape(
        multilabel_report(&scores, &targets, 5, 0.5).unwrap_err()
    ));
    assert!(bad_shape(
        multilabel_report(&scores, &targets[..11], 3, 0.5).unwrap_err()
    ));
    assert!(bad_shape(multilabel_report(&[], &[], 3, 0.5).unwrap_err()));
    assert!(invalid(
        multilabel_report(&scores, &targets, 3, f64::NAN).unwrap_err()
    ));
    let mut nan_scores = scores.clone();
    nan_scores[7] = f32::NAN;
    let e = multilabel_report(&nan_scores, &targets, 3, 0.5).unwrap_err();
    assert!(e.to_string().contains("row 2, class 1"), "{e}");
    let mut two = targets.clone();
    two[4] = 2;
    let e = multilabel_report(&scores, &two, 3, 0.5).unwrap_err();
    assert!(invalid(e));
    assert!(invalid(
        class_counts(&scores, &targets, 3, f64::NAN).unwrap_err()
    ));
    assert!(bad_shape(
        class_counts(&scores, &targets[1..], 3, 0.5).unwrap_err()
    ));

    // Average precision.
    assert!(bad_shape(average_precision(&[0.1, 0.2], &[1]).unwrap_err()));
    assert!(bad_shape(average_precision(&[], &[]).unwrap_err()));
    assert!(invalid(average_precision(&[f32::NAN], &[1]).unwrap_err()));
    assert!(invalid(average_precision(&[0.3], &[3]).unwrap_err()));

    // Single-label.
    let s = [0.1f32, 0.9, 0.5, 0.5];
    assert!(invalid(
        single_label_report(&s, &[0, 1], 0, &[]).unwrap_err()
    ));
    assert!(bad_shape(
        single_label_report(&s, &[0], 2, &[1, 1]).unwrap_err()
    ));
    assert!(bad_shape(
        single_label_report(&s, &[0, 1], 2, &[1]).unwrap_err()
    ));
    assert!(bad_shape(
        single_label_report(&s[..3], &[0], 2, &[1, 1]).unwrap_err()
    ));
    assert!(matches!(
        single_label_report(&s, &[0, 2], 2, &[1, 1]).unwrap_err(),
        Error::IndexOutOfRange {
            op: "single_label_report",
            index: 2,
            size: 2
        }
    ));
    assert!(invalid(
        single_label_report(&[f32::NAN, 0.0], &[0], 2, &[1, 1]).unwrap_err()
    ));

    // Float targets.
    assert_eq!(binary_targets(&[0.0, 1.0, -0.0]).unwrap(), vec![0, 1, 0]);
    let e = binary_targets(&[1.0, 0.5]).unwrap_err();
    assert!(e.to_string().contains("target 1 is 0.5"), "{e}");
}

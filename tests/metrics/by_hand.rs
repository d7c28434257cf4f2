//! Small examples worked out by hand, and the reports' JSON form.

use super::helpers::{hand_example, TOL};
use crate::common::assert_close;
use ferrite::metrics::{
    average_precision, class_counts, multilabel_report, single_label_report, summarize, ClassCounts,
};
use serde_json::Value;

// ----------------------------------------------------- worked by hand

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

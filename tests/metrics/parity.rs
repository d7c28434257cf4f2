//! Parity with scikit-learn (`tests/fixtures/metrics.json`).

use super::helpers::TOL;
use crate::common::{assert_close, fixture};
use ferrite::metrics::{
    average_precision, class_counts, multilabel_report, single_label_report, ClassCounts,
};
use serde_json::Value;

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

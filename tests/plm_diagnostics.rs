//! What a PLM run records per epoch in `log.jsonl`: the λ used, r̂ and its
//! geometric mean, Δ and the divergences, keep probabilities and coverage,
//! with the right shapes and the identities that tie them together.

use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
use ferrite::train::run::{Quiet, Run, LOG_FILE};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-plmdiag-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny(loss: &str, epochs: usize) -> TrainConfig {
    let mut data = DataConfig::new(DatasetKind::MultiMnistLt);
    data.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    data.train_size = 256;
    data.test_size = 64;
    let mut config = TrainConfig::new(data, "resnet8", loss.parse().unwrap());
    config.stem = Some("imagenet".into());
    config.epochs = epochs;
    config.batch_size = 64;
    config.seed = 5;
    config
}

fn log(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn every_epoch_records_what_plm_did() {
    let dir = scratch("standardized");
    Run::new(tiny("plm(lambda=0.5)", 3), &dir)
        .unwrap()
        .run(&mut Quiet)
        .unwrap();
    let records = log(&dir);
    assert_eq!(records.len(), 3);
    let classes = 10;
    let mut coverage_pos = vec![0.0; classes];
    let mut geomeans = Vec::new();
    for r in &records {
        let p = &r["plm"];
        assert_eq!(p["lambda"].as_f64(), Some(0.5));
        for key in [
            "rhat",
            "ratio",
            "delta",
            "d_pos",
            "d_neg",
            "keep_pos",
            "keep_neg",
            "coverage_pos",
            "coverage_neg",
        ] {
            assert_eq!(floats(&p[key]).len(), classes, "{key}");
        }
        let (keep_pos, keep_neg) = (floats(&p["keep_pos"]), floats(&p["keep_neg"]));
        for (kp, kn) in keep_pos.iter().zip(&keep_neg) {
            // Exactly one side is thinned (or neither).
            assert!((0.0..=1.0).contains(kp) && (0.0..=1.0).contains(kn));
            assert!(*kp == 1.0 || *kn == 1.0, "{kp} {kn}");
        }
        for (c, k) in coverage_pos.iter_mut().zip(&keep_pos) {
            *c += k;
        }
        assert_eq!(floats(&p["coverage_pos"]), coverage_pos);
        // Δ is standardised: it sums to ~0, so r̂'s geometric mean stays.
        let delta_sum: f64 = floats(&p["delta"]).iter().sum();
        assert!(delta_sum.abs() < 1e-9, "{delta_sum}");
        geomeans.push(p["rhat_geomean"].as_f64().unwrap());
        assert_eq!(floats(&p["hist_pos_pred"]).len(), 10 * classes);
    }
    // The first epoch starts from r̂ = r (nothing masked).
    assert!(floats(&records[0]["plm"]["keep_pos"])
        .iter()
        .all(|&k| k == 1.0));
    let first = geomeans[0];
    for g in &geomeans {
        assert!((g - first).abs() < 1e-9 * first, "{geomeans:?}");
    }
    // r̂ really moved.
    assert_ne!(records[0]["plm"]["rhat"], records[2]["plm"]["rhat"]);
    // The report says which λ, and draws r̂/r per class over the epochs.
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("PLM's λ = 0.5 (fixed)"), "{report}");
    // ... and each class's coverage, the log's last values.
    assert!(report.contains("coverage + | coverage − |"), "{report}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let coverage_neg = floats(&records[2]["plm"]["coverage_neg"]);
    for row in json["per_class"].as_array().unwrap() {
        let c = row["class"].as_u64().unwrap() as usize;
        assert_eq!(row["plm_coverage"]["pos"].as_f64(), Some(coverage_pos[c]));
        assert_eq!(row["plm_coverage"]["neg"].as_f64(), Some(coverage_neg[c]));
    }
    let chart = std::fs::read_to_string(dir.join("plm_rhat.svg")).unwrap();
    assert!(chart.contains("λ = 0.5") && chart.contains("log10(r̂ / r)"));
    assert_eq!(chart.matches("<polyline").count(), classes);
    assert_eq!(chart.matches("class=\"marker\"").count(), classes * (3 + 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn runs_without_plm_draw_no_rhat_chart() {
    let dir = scratch("bce");
    Run::new(tiny("bce", 1), &dir)
        .unwrap()
        .run(&mut Quiet)
        .unwrap();
    assert!(dir.join("learning_curve.svg").exists());
    assert!(!dir.join("plm_rhat.svg").exists());
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(!report.contains("PLM's λ"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auto_lambda_is_recorded_as_the_value_used_and_survives_a_resume() {
    let dir = scratch("auto");
    let mut run = Run::new(tiny("plm", 4), &dir).unwrap();
    run.train_epoch(&mut Quiet).unwrap();
    drop(run);
    let mut resumed = Run::resume(&dir).unwrap();
    resumed.train_epoch(&mut Quiet).unwrap();
    let summary = resumed.run(&mut Quiet).unwrap();
    assert!(summary
        .markdown()
        .contains("PLM's λ = 0.25 (auto: 1/epochs)"));
    let records = log(&dir);
    assert_eq!(records.len(), 4);
    for r in &records {
        assert_eq!(r["plm"]["lambda"].as_f64(), Some(0.25));
    }
    // The coverage kept counting across the resume.
    let cov = floats(&records[1]["plm"]["coverage_neg"]);
    assert!(cov.iter().all(|&c| c > 1.0 && c <= 2.0), "{cov:?}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(config["loss"]
        .as_str()
        .unwrap()
        .starts_with("plm(lambda=auto,"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn multimnist_runs_are_scored_on_both_test_sets_by_default() {
    let dir = scratch("both");
    let config = tiny("plm(lambda=0.5)", 1);
    assert_eq!(config.data.test_set, ferrite::train::TestSet::Both);
    let summary = Run::new(config, &dir).unwrap().run(&mut Quiet).unwrap();
    // The log has one section per test set, each with every metric.
    let record = &log(&dir)[0];
    let (a, b) = (&record["test"], &record["test_balanced"]);
    assert_eq!(
        a.as_object().unwrap().keys().collect::<Vec<_>>(),
        b.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    assert_ne!(a["macro_f1"], b["macro_f1"]);
    // So do the report and its summary.
    assert_eq!(summary.other_sets.len(), 1);
    assert_eq!(
        summary.get("test_balanced.macro_f1"),
        b["macro_f1"].as_f64()
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## On `test_balanced`"), "{md}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let back = ferrite::train::report::RunSummary::from_json(&json, "report.json").unwrap();
    assert_eq!(
        back.get("test_balanced.macro_f1"),
        summary.get("test_balanced.macro_f1")
    );
    // The balanced set: every digit about equally often (64 images of 1–4
    // digits: ~16 of each), where the imbalanced one has few of the rarest.
    let support = |s: &ferrite::train::report::RunSummary| -> Vec<u64> {
        s.rows.iter().map(|r| r.test_support).collect()
    };
    let balanced = support(&summary.other_sets[0].1);
    let imbalanced = support(&summary);
    assert!(
        balanced.iter().all(|&n| (5..=35).contains(&n)),
        "{balanced:?}"
    );
    assert!(
        imbalanced[9] < balanced[9],
        "{imbalanced:?} vs {balanced:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

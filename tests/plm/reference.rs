//! Epoch-update parity with the numpy reference, and the pure functions by hand.

use super::helpers::{is_invalid, mat};
use crate::common::{assert_close, fixture};
use ferrite::plm::{
    keep_probabilities, kl_pred_vs_truth, kl_truth_vs_pred, normalize, one_hot, standardize,
    Divergence, Plm, PlmConfig, EPS,
};
use ferrite::{DType, Error};

// ----- parity with a numpy reference --------------------------------------

#[test]
fn epoch_update_matches_the_numpy_reference() {
    let fx = fixture("plm.json");
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect()
        };
        let rows = |v: &serde_json::Value| -> Vec<Vec<f64>> {
            v.as_array().unwrap().iter().map(floats).collect()
        };
        let p = rows(&case["probabilities"]);
        let y = rows(&case["labels"]);
        let (b, c) = (p.len(), p[0].len());
        let divergence = match case["divergence"].as_str().unwrap() {
            "pred_vs_truth" => Divergence::PredVsTruth,
            _ => Divergence::TruthVsPred,
        };
        let cfg = PlmConfig {
            lambda: case["lambda"].as_f64().unwrap(),
            n_bins: case["n_bins"].as_u64().unwrap() as usize,
            divergence,
            standardize: case["standardize"].as_bool().unwrap(),
            ..PlmConfig::default()
        };
        let mut plm = Plm::new(cfg, &vec![1; c], 2).unwrap();
        plm.set_rhat(&floats(&case["rhat"])).unwrap();
        plm.observe(&mat(p.concat(), b, c), &mat(y.concat(), b, c))
            .unwrap();
        let as_counts = |v: &serde_json::Value| -> Vec<u64> {
            rows(v).concat().iter().map(|&x| x as u64).collect()
        };
        assert_eq!(
            plm.histograms().pos_pred(),
            &as_counts(&case["pos_pred"])[..],
            "{name}"
        );
        assert_eq!(
            plm.histograms().neg_pred(),
            &as_counts(&case["neg_pred"])[..],
            "{name}"
        );
        let u = plm.end_epoch().unwrap();
        let skipped: Vec<usize> = case["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(u.skipped, skipped, "{name}");
        assert_close(
            &format!("{name} d_pos"),
            &u.d_pos,
            &floats(&case["d_pos"]),
            1e-12,
            1e-12,
        );
        assert_close(
            &format!("{name} d_neg"),
            &u.d_neg,
            &floats(&case["d_neg"]),
            1e-12,
            1e-12,
        );
        assert_close(
            &format!("{name} delta"),
            &u.delta,
            &floats(&case["delta"]),
            1e-11,
            1e-11,
        );
        assert_close(
            &format!("{name} rhat"),
            &u.rhat,
            &floats(&case["rhat_after"]),
            0.0,
            1e-12,
        );
    }
}

// ----- pure functions ------------------------------------------------------

#[test]
fn divergence_functions_on_hand_computed_cases() {
    assert_eq!(normalize(&[0, 0, 0]), None);
    assert_eq!(normalize(&[1, 3, 0]), Some(vec![0.25, 0.75, 0.0]));
    let truth = [0.0, 0.0, 1.0];
    // Variant P: −ln max(P_last, ε).
    let d = kl_truth_vs_pred(&truth, &[0.5, 0.25, 0.25]).unwrap();
    assert!((d - 4f64.ln()).abs() < 1e-15);
    let d = kl_truth_vs_pred(&truth, &[0.5, 0.5, 0.0]).unwrap();
    assert!((d + EPS.ln()).abs() < 1e-12, "{d}");
    // Variant R: Σ P ln(P / q(G) + ε).
    let d = kl_pred_vs_truth(&[0.5, 0.0, 0.5], &truth).unwrap();
    let want = 0.5 * (0.5 / EPS + EPS).ln() + 0.5 * (0.5 + EPS).ln();
    assert!((d - want).abs() < 1e-13, "{d} vs {want}");
    assert!(is_invalid(kl_pred_vs_truth(&[1.0], &truth)));
    assert!(is_invalid(kl_truth_vs_pred(&[], &[])));
    assert_eq!(
        Divergence::TruthVsPred
            .between(&[0.5, 0.25, 0.25], &truth)
            .unwrap(),
        4f64.ln()
    );
}

#[test]
fn standardize_population_std_and_guards() {
    let s = standardize(&[1.0, 2.0, 3.0, 4.0], &[true; 4]).unwrap();
    let std = 1.25f64.sqrt();
    assert_close(
        "standardize",
        &s,
        &[-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std],
        1e-12,
        0.0,
    );
    // Excluded entries give 0 and do not enter the mean and std.
    let s = standardize(&[1.0, 99.0, 3.0], &[true, false, true]).unwrap();
    assert_close("excluded", &s, &[-1.0, 0.0, 1.0], 1e-12, 0.0);
    // Zero spread (all equal, or a single class) gives zeros.
    assert_eq!(standardize(&[5.0; 3], &[true; 3]).unwrap(), vec![0.0; 3]);
    assert_eq!(standardize(&[5.0], &[true]).unwrap(), vec![0.0]);
    assert!(is_invalid(standardize(&[1.0], &[true, true])));
}

#[test]
fn keep_probabilities_in_each_branch() {
    assert_eq!(keep_probabilities(4.0, 0.5), (0.125, 1.0));
    assert_eq!(keep_probabilities(0.25, 1.0), (1.0, 0.25));
    assert_eq!(keep_probabilities(2.0, 2.0), (1.0, 1.0));
    // The expected kept ratio r · keep_pos / keep_neg is rhat.
    for (r, rhat) in [(4.0, 0.5), (0.0101, 1.2), (0.3, 0.3), (7.0, 9.0)] {
        let (kp, kn) = keep_probabilities(r, rhat);
        assert!((r * kp / kn - rhat).abs() < 1e-12 * rhat);
    }
}

#[test]
fn one_hot_targets() {
    let t = one_hot(&[2, 0, 1], 3).unwrap();
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(
        t.to_vec2::<f32>().unwrap(),
        vec![
            vec![0.0, 0.0, 1.0],
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0]
        ]
    );
    assert!(matches!(
        one_hot(&[0, 3], 3),
        Err(Error::IndexOutOfRange {
            index: 3,
            size: 3,
            ..
        })
    ));
    assert!(is_invalid(one_hot(&[0], 0)));
    assert_eq!(one_hot(&[], 4).unwrap().shape(), &[0, 4]);
}

//! Guards for degenerate classes and histograms, and rejected configurations and inputs.

use super::helpers::{config, is_invalid, labels_4x, masking_plm, mat, update_from};
use crate::common;
use crate::common::{assert_close, randn};
use ferrite::plm::{
    apply_mask, standardize, Divergence, Histograms, Plm, PlmConfig, RhatInit, EPS,
};
use ferrite::{DType, Error, Tensor};

// ----- guards ---------------------------------------------------------------

#[test]
fn classes_without_positives_or_negatives_are_never_masked_or_updated() {
    // Class 0 has no positives, class 2 no negatives in the training set;
    // start balanced so that every eligible class is masked. The observed
    // batch has both labels for class 0, which still takes no part.
    let mut plm = Plm::new(
        PlmConfig {
            init: RhatInit::Balanced,
            lambda: 0.5,
            ..PlmConfig::default()
        },
        &[0, 10, 100, 60],
        100,
    )
    .unwrap();
    assert_eq!(plm.eligible(), &[false, true, false, true]);
    assert_close(
        "r",
        plm.ratios(),
        &[1.0 / 100.0, 10.0 / 90.0, 100.0, 1.5],
        0.0,
        1e-15,
    );
    assert_close("rhat", plm.rhat(), &[0.01, 1.0, 100.0, 1.0], 0.0, 1e-15);
    let (kp, kn) = plm.keep_probabilities();
    assert_eq!((kp[0], kn[0], kp[2], kn[2]), (1.0, 1.0, 1.0, 1.0));
    let y = mat(
        (0..200 * 4)
            .map(|e| match e % 4 {
                2 => 1.0,
                _ => (e % 3 == 0) as u8 as f64,
            })
            .collect(),
        200,
        4,
    );
    let mask = plm.sample_mask(&y).unwrap().to_vec::<f64>().unwrap();
    assert!(mask
        .iter()
        .enumerate()
        .all(|(e, &g)| e % 2 == 1 || g == 1.0));
    assert!(mask
        .iter()
        .enumerate()
        .any(|(e, &g)| e % 4 == 1 && g == 0.0));
    plm.observe(&common::uniform(&[200, 4], 0.0, 1.0, 30), &y)
        .unwrap();
    let u = plm.end_epoch().unwrap();
    assert_eq!(u.skipped, vec![0, 2]);
    assert_eq!((u.delta[0], u.delta[2]), (0.0, 0.0));
    assert!(u.d_pos[0].is_nan() && u.d_neg[0].is_nan() && u.d_neg[2].is_nan());
    assert_eq!((u.rhat[0], u.rhat[2]), (0.01, 100.0));
}

#[test]
fn empty_histogram_column_is_skipped_and_left_out_of_the_statistics() {
    let mut plm = Plm::new(config(0.1, Divergence::PredVsTruth), &[5, 5, 5, 5], 10).unwrap();
    // Class 1's positives all have invalid predictions this epoch.
    let pos = vec![
        vec![0.35, 0.95],
        vec![f64::NAN, 2.0],
        vec![0.85, 0.95],
        vec![0.15, 0.55],
    ];
    let neg = vec![
        vec![0.05, 0.45],
        vec![0.05, 0.05],
        vec![0.65, 0.05],
        vec![0.05, 0.05],
    ];
    let u = update_from(&mut plm, &pos, &neg);
    assert_eq!(u.skipped, vec![1]);
    assert_eq!(u.delta[1], 0.0);
    assert_eq!(u.rhat[1], 1.0);
    let keep = [true, false, true, true];
    assert_eq!(u.d_pos_std, standardize(&u.d_pos, &keep).unwrap());
    assert_eq!(u.d_neg_std, standardize(&u.d_neg, &keep).unwrap());
    assert!(u.delta.iter().sum::<f64>().abs() < 1e-12);
    assert!(u.rhat.iter().all(|r| r.is_finite()));
}

#[test]
fn single_class_and_zero_spread_give_no_update() {
    let mut plm = Plm::new(config(0.5, Divergence::PredVsTruth), &[3], 10).unwrap();
    let u = update_from(&mut plm, &[vec![0.05, 0.15]], &[vec![0.95, 0.75]]);
    assert!(u.d_pos[0] > 10.0 && u.d_neg[0] > 10.0);
    assert_eq!(u.delta, vec![0.0]);
    assert_eq!(plm.rhat(), &[3.0 / 7.0]);
    // Identical classes: zero spread, no update.
    let mut plm = Plm::new(config(0.5, Divergence::TruthVsPred), &[3, 3], 10).unwrap();
    let u = update_from(
        &mut plm,
        &[vec![0.05, 0.95], vec![0.05, 0.95]],
        &[vec![0.55, 0.05], vec![0.55, 0.05]],
    );
    assert_eq!(u.delta, vec![0.0, 0.0]);
}

#[test]
fn rhat_is_clamped_and_unstandardised_updates_use_raw_divergences() {
    let cfg = PlmConfig {
        lambda: 1.0,
        standardize: false,
        rhat_min: 0.2,
        rhat_max: 5.0,
        ..PlmConfig::default()
    };
    let mut plm = Plm::new(cfg, &[5, 5], 10).unwrap();
    // Class 0 badly under-predicted, class 1 badly over-predicted.
    let u = update_from(
        &mut plm,
        &[vec![0.05, 0.05], vec![0.95, 0.95]],
        &[vec![0.05, 0.05], vec![0.95, 0.95]],
    );
    assert_eq!(u.d_pos_std, u.d_pos);
    assert_close("delta", &u.delta, &[-EPS.ln(), EPS.ln()], 1e-9, 0.0);
    assert_eq!(u.rhat, vec![5.0, 0.2]);
    let (kp, kn) = plm.keep_probabilities();
    assert_eq!((kp[0], kn[0]), (1.0, 0.2));
    assert_eq!((kp[1], kn[1]), (0.2, 1.0));
}

// ----- errors -----------------------------------------------------------------

#[test]
fn bad_configurations_and_label_counts_are_rejected() {
    let bad = [
        PlmConfig {
            n_bins: 0,
            ..PlmConfig::default()
        },
        PlmConfig {
            n_bins: 1,
            ..PlmConfig::default()
        },
        PlmConfig {
            lambda: f64::NAN,
            ..PlmConfig::default()
        },
        PlmConfig {
            lambda: -0.1,
            ..PlmConfig::default()
        },
        PlmConfig {
            rhat_min: 0.0,
            ..PlmConfig::default()
        },
        PlmConfig {
            rhat_min: 2.0,
            rhat_max: 1.0,
            ..PlmConfig::default()
        },
        PlmConfig {
            rhat_max: f64::INFINITY,
            ..PlmConfig::default()
        },
    ];
    for cfg in bad {
        assert!(
            matches!(
                Plm::new(cfg, &[1, 2], 4),
                Err(Error::InvalidArgument { .. })
            ),
            "{cfg:?}"
        );
    }
    let ok = PlmConfig::default();
    assert!(is_invalid(Plm::new(ok, &[], 4)));
    assert!(is_invalid(Plm::new(ok, &[1], 0)));
    assert!(is_invalid(Plm::new(ok, &[5, 1], 4)));
    assert!(Plm::new(ok, &[0, 4], 4).is_ok());
}

#[test]
fn bad_targets_losses_and_rhat_are_rejected_without_drawing_a_mask() {
    let mut plm = masking_plm();
    let y = labels_4x(3, 60);
    let loss = randn(&[3, 4], 61);
    for (what, targets) in [
        ("value 0.5", mat(vec![0.5; 12], 3, 4)),
        ("value 2", mat(vec![2.0; 12], 3, 4)),
        ("NaN", mat(vec![f64::NAN; 12], 3, 4)),
        ("wrong C", mat(vec![0.0; 9], 3, 3)),
        ("1-D", Tensor::from_vec(vec![0.0f64; 4], &[4]).unwrap()),
    ] {
        assert!(is_invalid(plm.sample_mask(&targets)), "{what}");
        assert!(
            is_invalid(plm.observe(&targets.zeros_like().unwrap(), &targets)),
            "{what}"
        );
    }
    assert!(is_invalid(plm.masked_loss(&randn(&[3, 3], 62), &y)));
    assert!(is_invalid(
        plm.masked_loss(&loss.to_dtype(DType::I64).unwrap(), &y)
    ));
    let empty = Tensor::zeros(&[0, 4], DType::F64).unwrap();
    assert!(is_invalid(plm.masked_loss(&empty, &empty)));
    assert!(is_invalid(plm.observe(&randn(&[2, 4], 63), &y)));
    assert!(is_invalid(plm.observe(&y.to_dtype(DType::U8).unwrap(), &y)));
    assert!(is_invalid(apply_mask(&loss, &mat(vec![1.0; 4], 1, 4))));
    assert_eq!(plm.batches_drawn(), 0, "a failed call drew a mask");
    assert!(plm.histograms().is_empty());
    // Integer and byte targets are accepted.
    assert!(plm
        .masked_loss(&loss, &y.to_dtype(DType::U8).unwrap())
        .is_ok());
    assert!(plm.sample_mask(&y.to_dtype(DType::I64).unwrap()).is_ok());

    let rhat = plm.rhat().to_vec();
    assert!(is_invalid(plm.set_rhat(&[1.0; 3])));
    assert!(is_invalid(plm.set_rhat(&[1.0, f64::NAN, 1.0, 1.0])));
    assert!(is_invalid(plm.set_rhat(&[1.0, 0.0, 1.0, 1.0])));
    assert!(is_invalid(plm.set_rhat(&[1.0, 1e7, 1.0, 1.0])));
    assert_eq!(plm.rhat(), &rhat[..]);
    assert!(is_invalid(Histograms::new(0, 3)));
    assert!(is_invalid(
        Histograms::new(3, 1).unwrap().add(&[0.5, 0.5], &[true])
    ));
}

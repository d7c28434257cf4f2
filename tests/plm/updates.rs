//! Histograms, divergences and r-hat updates (oracles 5-10), and oracle 11 end to end.

use super::helpers::{bce, config, labels_4x, masking_plm, mat, update_from};
use crate::common;
use crate::common::{assert_close, randn, rng};
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use ferrite::plm::{bin_index, Divergence, Histograms, Plm, PlmConfig, EPS};
use ferrite::{DType, Tensor};
use rand::Rng;
use std::f64::consts::LN_2;

// ----- oracle 5: histogram binning --------------------------------------

#[test]
fn oracle5_histogram_binning() {
    let y = mat(vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.0], 3, 2);
    let p = mat(vec![0.0, 0.9, 0.5, 0.2, 0.7, 0.8], 3, 2);
    let mut plm = Plm::new(
        PlmConfig {
            n_bins: 3,
            ..PlmConfig::default()
        },
        &[1, 1],
        2,
    )
    .unwrap();
    plm.observe(&p, &y).unwrap();
    let h = plm.histograms();
    // [bin][class], flattened row by row.
    assert_eq!(h.pos_pred(), &[0, 0, 1, 0, 1, 1]);
    assert_eq!(h.neg_pred(), &[1, 1, 0, 0, 0, 1]);
    assert_eq!(h.pos_truth(), vec![0, 0, 0, 0, 2, 1]);
    assert_eq!(h.neg_truth(), vec![1, 2, 0, 0, 0, 0]);
    assert_eq!(h.discarded(), 0);
}

#[test]
fn bin_index_edges_and_out_of_range_values() {
    assert_eq!(bin_index(0.0, 10), Some(0));
    assert_eq!(bin_index(0.099, 10), Some(0));
    assert_eq!(bin_index(0.1, 10), Some(1));
    assert_eq!(bin_index(0.95, 10), Some(9));
    assert_eq!(bin_index(1.0, 10), Some(9));
    assert_eq!(bin_index(-1e-12, 10), None);
    assert_eq!(bin_index(1.0 + 1e-12, 10), None);
    assert_eq!(bin_index(f64::NAN, 10), None);
    assert_eq!(bin_index(f64::INFINITY, 10), None);
    // Out-of-range and NaN predictions are discarded, labels still counted.
    let mut h = Histograms::new(4, 2).unwrap();
    h.add(&[f64::NAN, 0.3, 1.5, -0.1], &[true, false, false, true])
        .unwrap();
    assert_eq!(h.pos_pred().iter().sum::<u64>(), 0);
    assert_eq!(h.neg_pred(), &[0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(h.discarded(), 3);
    assert_eq!(h.pos_labels(), &[1, 1]);
    assert_eq!(h.neg_labels(), &[1, 1]);
}

// ----- oracles 6-8: divergences and updates -----------------------------

#[test]
fn oracle6_divergences_and_update_direction() {
    let neg01 = vec![0.01, 0.02, 0.03, 0.04, 0.05, 0.06];
    let pos = vec![
        vec![0.05, 0.15, 0.35, 0.95],
        vec![0.95, 0.96, 0.97, 0.99],
        vec![0.91, 0.92, 0.93, 0.94],
    ];
    let neg = vec![neg01.clone(), neg01, vec![0.5, 0.6, 0.7, 0.05, 0.02, 0.01]];
    let expected = [
        (
            Divergence::PredVsTruth,
            [25.646446, 0.0, 0.0],
            [0.0, 0.0, 16.779373],
        ),
        (
            Divergence::TruthVsPred,
            [1.386294, 0.0, 0.0],
            [0.0, 0.0, LN_2],
        ),
    ];
    for (variant, d_pos, d_neg) in expected {
        // N = 10 with 2, 5 and 8 positives: r = rhat = (0.25, 1, 4).
        let mut plm = Plm::new(config(0.01, variant), &[2, 5, 8], 10).unwrap();
        assert_close("rhat0", plm.rhat(), &[0.25, 1.0, 4.0], 0.0, 1e-15);
        let u = update_from(&mut plm, &pos, &neg);
        assert_close("d_pos", &u.d_pos, &d_pos, 1e-6, 0.0);
        assert_close("d_neg", &u.d_neg, &d_neg, 1e-6, 0.0);
        let s = std::f64::consts::SQRT_2;
        assert_close(
            "d_pos_std",
            &u.d_pos_std,
            &[s, -s / 2.0, -s / 2.0],
            1e-6,
            0.0,
        );
        assert_close(
            "d_neg_std",
            &u.d_neg_std,
            &[-s / 2.0, -s / 2.0, s],
            1e-6,
            0.0,
        );
        assert_close("delta", &u.delta, &[2.121320, 0.0, -2.121320], 1e-6, 0.0);
        assert_close("rhat", &u.rhat, &[0.25535995, 1.0, 3.91604086], 1e-8, 0.0);
        assert_eq!(plm.rhat(), &u.rhat[..]);
        assert!((u.rhat.iter().product::<f64>() - 1.0).abs() < 1e-12);
        assert!(u.skipped.is_empty());
    }
}

#[test]
fn oracle7_variant_sensitivity() {
    // Fractions (0.5, 0.75, 1.0) of the positives in the top bin, the rest
    // in bin 0; every negative in bin 0.
    let pos = vec![
        vec![0.95, 0.95, 0.05, 0.05],
        vec![0.95, 0.95, 0.95, 0.05],
        vec![0.95, 0.95, 0.95, 0.95],
    ];
    let neg = vec![vec![0.02, 0.03, 0.04, 0.05]; 3];
    let cases = [
        (
            Divergence::PredVsTruth,
            [17.328680, 8.448578, 0.0],
            [1.234784, -0.020331, -1.214453],
        ),
        (
            Divergence::TruthVsPred,
            [LN_2, 0.287682, 0.0],
            [1.287933, -0.138080, -1.149853],
        ),
    ];
    for (variant, d_pos, delta) in cases {
        let mut plm = Plm::new(config(0.01, variant), &[2, 5, 8], 10).unwrap();
        let u = update_from(&mut plm, &pos, &neg);
        assert_close("d_pos", &u.d_pos, &d_pos, 1e-6, 0.0);
        assert_eq!(u.d_neg_std, vec![0.0; 3], "{variant:?}");
        assert_close("delta", &u.delta, &delta, 1e-6, 0.0);
    }
}

#[test]
fn oracle8_perfect_predictions_give_no_update() {
    let pos = vec![vec![0.97, 0.99], vec![0.91, 0.95], vec![0.999, 1.0]];
    let neg = vec![vec![0.0, 0.02], vec![0.05, 0.09], vec![0.01, 0.03]];
    for (variant, d) in [
        (Divergence::PredVsTruth, (1.0 + EPS).ln()),
        (Divergence::TruthVsPred, 0.0),
    ] {
        let mut plm = Plm::new(config(0.01, variant), &[2, 5, 8], 10).unwrap();
        let before = plm.rhat().to_vec();
        let u = update_from(&mut plm, &pos, &neg);
        assert_eq!(u.d_pos, vec![d; 3]);
        assert_eq!(u.d_neg, vec![d; 3]);
        assert_eq!(u.delta, vec![0.0; 3]);
        assert_eq!(plm.rhat(), &before[..]);
    }
}

#[test]
fn oracle9_deltas_sum_to_zero_and_the_product_of_rhat_is_kept() {
    let (b, c) = (400, 7);
    for variant in [Divergence::PredVsTruth, Divergence::TruthVsPred] {
        let mut plm = Plm::new(
            config(0.05, variant),
            &[30, 90, 200, 350, 500, 640, 900],
            1000,
        )
        .unwrap();
        let p = common::uniform(&[b, c], 0.0, 1.0, 11);
        let y = mat(
            common::uniform(&[b, c], 0.0, 1.0, 12)
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .map(|&u| (u < 0.4) as u8 as f64)
                .collect(),
            b,
            c,
        );
        for _ in 0..3 {
            plm.observe(&p.square().unwrap(), &y).unwrap();
            let before: f64 = plm.rhat().iter().product();
            let u = plm.end_epoch().unwrap();
            assert!(u.delta.iter().sum::<f64>().abs() < 1e-12, "{:?}", u.delta);
            assert!(u.delta.iter().any(|d| d.abs() > 0.1));
            let after: f64 = u.rhat.iter().product();
            assert!((after / before - 1.0).abs() < 1e-12, "{before} -> {after}");
        }
    }
}

#[test]
fn oracle10_hygiene_reset_read_only_masks_and_fresh_draws() {
    let mut plm = masking_plm();
    let y = labels_4x(64, 21);
    let p = common::uniform(&[64, 4], 0.0, 1.0, 22);
    plm.observe(&p, &y).unwrap();
    let counted = plm.histograms().clone();
    // Drawing masks, computing losses and reading keep probabilities leave
    // the histograms alone (validation code never calls observe).
    let m1 = plm.sample_mask(&y).unwrap().to_vec::<f64>().unwrap();
    let m2 = plm.sample_mask(&y).unwrap().to_vec::<f64>().unwrap();
    plm.masked_loss(&bce(&p, &y), &y).unwrap();
    let _ = plm.keep_probabilities();
    assert_eq!(plm.histograms(), &counted);
    // Two visits of the same batch get independent masks.
    assert_ne!(m1, m2);
    let differ = m1.iter().zip(&m2).filter(|(a, b)| a != b).count();
    assert!(differ >= 5, "only {differ} of {} elements differ", m1.len());
    assert_eq!(plm.batches_drawn(), 3);
    // The update resets the histograms.
    assert!(!plm.histograms().is_empty());
    plm.end_epoch().unwrap();
    assert!(plm.histograms().is_empty());
    assert_eq!(plm.histograms().pos_pred().iter().sum::<u64>(), 0);
    assert_eq!(plm.epochs(), 1);
    // An epoch with no observation changes nothing.
    let rhat = plm.rhat().to_vec();
    let u = plm.end_epoch().unwrap();
    assert_eq!(u.skipped, vec![0, 1, 2, 3]);
    assert_eq!(plm.rhat(), &rhat[..]);
}

// ----- oracle 11: end to end --------------------------------------------

const BLOB_CLASSES: usize = 4;

struct Blobs {
    x: Tensor,
    y: Tensor,
    labels: Vec<f64>,
}

/// `n` samples with independent labels of prevalence `pi[c]`; features
/// `x = Σ_c y_c · 3 e_c + N(0, I)` (one feature per class).
fn blobs(n: usize, pi: &[f64; BLOB_CLASSES], seed: u64) -> Blobs {
    let c = BLOB_CLASSES;
    let mut r = rng(seed);
    let labels: Vec<f64> = (0..n * c)
        .map(|e| (r.random::<f64>() < pi[e % c]) as u8 as f64)
        .collect();
    let noise = randn(&[n, c], seed + 1).to_vec::<f64>().unwrap();
    let x: Vec<f64> = noise
        .iter()
        .zip(&labels)
        .map(|(z, y)| z + 3.0 * y)
        .collect();
    Blobs {
        x: mat(x, n, c),
        y: mat(labels.clone(), n, c),
        labels,
    }
}

/// Trains a linear model with Adam for `epochs` epochs (mini-batches of
/// 100), with PLM when given; returns the per-epoch rhat of class 0 and
/// the final predictions on `test`.
fn train_linear(
    train: &Blobs,
    test: &Blobs,
    mut plm: Option<&mut Plm>,
    epochs: usize,
) -> (Vec<f64>, Vec<f64>) {
    let c = BLOB_CLASSES;
    let w = randn(&[c, c], 40)
        .mul_scalar(0.1)
        .unwrap()
        .requires_grad_(true);
    let bias = Tensor::zeros(&[c], DType::F64)
        .unwrap()
        .requires_grad_(true);
    let mut opt = Adam::new(
        vec![ParamGroup::new(vec![w.clone(), bias.clone()], 0.05, 0.0)],
        AdamConfig::default(),
    )
    .unwrap();
    let n = train.x.shape()[0];
    let batch = 100;
    let mut rhat_tail = Vec::new();
    for _ in 0..epochs {
        for start in (0..n).step_by(batch) {
            let x = train.x.narrow(0, start, batch).unwrap();
            let y = train.y.narrow(0, start, batch).unwrap();
            let z = x.linear(&w, Some(&bias)).unwrap();
            let loss = match plm.as_deref_mut() {
                Some(plm) => {
                    plm.observe(&z.sigmoid().unwrap(), &y).unwrap();
                    plm.masked_loss(&bce(&z, &y), &y).unwrap()
                }
                None => bce(&z, &y).mean_all().unwrap(),
            };
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        if let Some(plm) = plm.as_deref_mut() {
            rhat_tail.push(plm.end_epoch().unwrap().rhat[0]);
        }
    }
    let p = ferrite::no_grad(|| test.x.linear(&w, Some(&bias)).unwrap().sigmoid().unwrap());
    (rhat_tail, p.to_vec::<f64>().unwrap())
}

/// (recall, precision) of class `k` at threshold 0.5.
fn recall_precision(p: &[f64], labels: &[f64], k: usize) -> (f64, f64) {
    let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
    let class_k = p.iter().zip(labels).skip(k).step_by(BLOB_CLASSES);
    for (&pe, &ye) in class_k {
        match (pe >= 0.5, ye == 1.0) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
            _ => {}
        }
    }
    (tp / (tp + fneg), tp / (tp + fp).max(1.0))
}

#[test]
fn oracle11_plm_raises_tail_recall_on_gaussian_blobs() {
    // Class 0 is the tail (r ≈ 0.01), class 3 the head (r ≈ 1).
    let pi = [0.01, 0.2, 0.35, 0.5];
    let n = 5000;
    let train = blobs(n, &pi, 100);
    let test = blobs(20_000, &pi, 200);
    let positives: Vec<usize> = (0..BLOB_CLASSES)
        .map(|k| {
            train
                .labels
                .iter()
                .skip(k)
                .step_by(BLOB_CLASSES)
                .filter(|&&v| v == 1.0)
                .count()
        })
        .collect();
    // λ = 0.3 (instead of 0.01) so that the effect shows within 10 epochs.
    let mut plm = Plm::new(config(0.3, Divergence::PredVsTruth), &positives, n).unwrap();
    let r_tail = plm.ratios()[0];
    assert!((0.005..0.02).contains(&r_tail), "r_tail {r_tail}");
    let epochs = 10;
    let (rhat_tail, p_plm) = train_linear(&train, &test, Some(&mut plm), epochs);
    let (_, p_bce) = train_linear(&train, &test, None, epochs);

    // The tail's rhat rises epoch over epoch while its positives sit low
    // (the first epochs); the masked negatives then get over-predicted and
    // the update settles, far above the starting ratio.
    let mut previous = r_tail;
    for (epoch, &r) in rhat_tail.iter().take(3).enumerate() {
        assert!(r > previous, "epoch {epoch}: rhat {r} after {previous}");
        previous = r;
    }
    assert!(rhat_tail[epochs - 1] > 5.0 * r_tail, "{rhat_tail:?}");
    let (recall_plm, _) = recall_precision(&p_plm, &test.labels, 0);
    let (recall_bce, _) = recall_precision(&p_bce, &test.labels, 0);
    assert!(
        recall_plm > recall_bce + 0.3,
        "tail recall: PLM {recall_plm}, BCE {recall_bce}"
    );
    let (_, precision_plm) = recall_precision(&p_plm, &test.labels, 3);
    let (_, precision_bce) = recall_precision(&p_bce, &test.labels, 3);
    assert!(
        precision_plm >= precision_bce - 0.01,
        "head precision: PLM {precision_plm}, BCE {precision_bce}"
    );
}

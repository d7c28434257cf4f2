//! Partial Label Masking: the Philox generator against the Random123
//! known answers, the method's test oracles (kept ratio, unbiasedness,
//! fixed points, histograms, divergences and updates with independently
//! known values), parity with a numpy reference (`fixtures/gen_plm.py`),
//! guards, checkpoint state and errors.

mod common;

use common::{assert_close, check_grad, fixture, randn, rng};
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use ferrite::plm::{
    apply_mask, bin_index, keep_probabilities, kl_pred_vs_truth, kl_truth_vs_pred, mask_uniform,
    normalize, one_hot, philox4x32_10, standardize, Divergence, Histograms, Plm, PlmConfig,
    RhatInit, EPS,
};
use ferrite::{DType, Error, Tensor};
use rand::Rng;
use std::f64::consts::LN_2;

// ----- helpers ----------------------------------------------------------

/// Elementwise binary cross-entropy on logits, `softplus(z) − y·z`, composed
/// from tensor ops (independent of the crate's loss module).
fn bce(z: &Tensor, y: &Tensor) -> Tensor {
    z.softplus().unwrap().sub(&y.mul(z).unwrap()).unwrap()
}

/// An f64 `[rows, cols]` tensor.
fn mat(data: Vec<f64>, rows: usize, cols: usize) -> Tensor {
    Tensor::from_vec(data, &[rows, cols]).unwrap()
}

/// Column-major class lists → row-major `[B, C]` data: `cols[c][i]`.
fn from_columns(cols: &[Vec<f64>]) -> Vec<f64> {
    let b = cols[0].len();
    (0..b)
        .flat_map(|i| cols.iter().map(move |col| col[i]))
        .collect()
}

fn config(lambda: f64, divergence: Divergence) -> PlmConfig {
    PlmConfig {
        lambda,
        divergence,
        ..PlmConfig::default()
    }
}

fn is_invalid<T>(r: ferrite::Result<T>) -> bool {
    matches!(
        r,
        Err(Error::InvalidArgument { .. })
            | Err(Error::BadShape { .. })
            | Err(Error::ShapeMismatch { .. })
            | Err(Error::UnsupportedDType { .. })
            | Err(Error::IndexOutOfRange { .. })
    )
}

// ----- Philox4x32-10 ----------------------------------------------------

/// The three `philox4x32 10` lines of Random123's `tests/kat_vectors`.
#[test]
fn philox_matches_random123_known_answers() {
    let kats: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (counter, key, expected) in kats {
        assert_eq!(
            philox4x32_10(counter, key),
            expected,
            "counter {counter:x?}"
        );
    }
}

/// The uniform of element e of mask t is `(word >> 8)·2^-24` of word
/// `e mod 4` of Philox(counter = (e/4, 0, t, 0), key = (seed lo, seed hi)),
/// and the mask keeps an element when it is below the keep probability.
#[test]
fn masks_follow_the_documented_philox_stream() {
    let seed = 0x1234_5678_9abc_def0u64;
    let mut plm = Plm::new(
        PlmConfig {
            seed,
            init: RhatInit::Balanced,
            ..PlmConfig::default()
        },
        &[10, 70, 50],
        100,
    )
    .unwrap();
    let (kp, kn) = plm.keep_probabilities();
    let (b, c) = (7, 3);
    let y: Vec<f64> = (0..b * c)
        .map(|e| ((e * 5 + 1) % 3 == 0) as u8 as f64)
        .collect();
    let targets = mat(y.clone(), b, c);
    for t in 0..3u64 {
        let mask = plm.sample_mask(&targets).unwrap().to_vec::<f64>().unwrap();
        for e in 0..b * c {
            let words = philox4x32_10(
                [(e / 4) as u32, 0, t as u32, 0],
                [seed as u32, (seed >> 32) as u32],
            );
            let u = (words[e % 4] >> 8) as f64 / 16_777_216.0;
            assert_eq!(u, mask_uniform(seed, t, e as u64));
            let keep = if y[e] == 1.0 { kp[e % c] } else { kn[e % c] };
            assert_eq!(mask[e], (u < keep) as u8 as f64, "batch {t} element {e}");
        }
    }
    assert_eq!(plm.batches_drawn(), 3);
}

// ----- oracle 1: no masking at the start ---------------------------------

#[test]
fn oracle1_rhat_equal_to_r_gives_the_mean_loss_bit_for_bit() {
    let (b, c) = (16, 5);
    for dtype in [DType::F32, DType::F64] {
        let mut plm = Plm::new(PlmConfig::default(), &[3, 40, 500, 999, 1], 1000).unwrap();
        assert!(plm.rhat().iter().zip(plm.ratios()).all(|(a, r)| a == r));
        let z = randn(&[b, c], 1)
            .mul_scalar(3.0)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .requires_grad_(true);
        let labels: Vec<f64> = common::uniform(&[b, c], 0.0, 1.0, 2)
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|&u| (u < 0.3) as u8 as f64)
            .collect();
        let y = mat(labels, b, c).to_dtype(dtype).unwrap();
        let base = bce(&z, &y).mean_all().unwrap();
        let masked = plm.masked_loss(&bce(&z, &y), &y).unwrap();
        let (base_v, masked_v) = (
            base.to_f64_vec().unwrap()[0],
            masked.to_f64_vec().unwrap()[0],
        );
        assert_eq!(base_v.to_bits(), masked_v.to_bits(), "{dtype:?}");
        let gb = base
            .backward()
            .unwrap()
            .get(&z)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let gm = masked
            .backward()
            .unwrap()
            .get(&z)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        assert_eq!(gb, gm, "{dtype:?} gradients");
    }
}

// ----- oracle 2: the kept ratio equals the target ----------------------

#[test]
fn oracle2_kept_ratio_equals_rhat_over_a_million_samples() {
    let n = 1_000_000usize;
    let c = 3;
    // Class 0: 4 of every 5 samples; class 1: 1 of 100; class 2: 1 of 2.
    let label = |i: usize, k: usize| match k {
        0 => !i.is_multiple_of(5),
        1 => i.is_multiple_of(100),
        _ => i.is_multiple_of(2),
    };
    let mut plm = Plm::new(PlmConfig::default(), &[800_000, 10_000, 500_000], n).unwrap();
    assert_close(
        "r",
        plm.ratios(),
        &[4.0, 10_000.0 / 990_000.0, 1.0],
        0.0,
        1e-15,
    );
    let rhat = [0.5, 1.2, 1.0];
    plm.set_rhat(&rhat).unwrap();
    let (kp, kn) = plm.keep_probabilities();
    assert_close("keep_pos", &kp, &[0.125, 1.0, 1.0], 0.0, 1e-15);
    assert_close("keep_neg", &kn, &[1.0, 0.0084175, 1.0], 0.0, 1e-5);

    let chunk = 50_000;
    let mut kept = [[0u64; 2]; 3]; // [class][neg, pos]
    let mut total = [[0u64; 2]; 3];
    for start in (0..n).step_by(chunk) {
        let y: Vec<u8> = (start..start + chunk)
            .flat_map(|i| (0..c).map(move |k| label(i, k) as u8))
            .collect();
        let targets = Tensor::from_vec(y.clone(), &[chunk, c]).unwrap();
        let mask = plm.sample_mask(&targets).unwrap();
        assert_eq!(mask.dtype(), DType::U8);
        for (e, (&g, &l)) in mask.to_vec::<u8>().unwrap().iter().zip(&y).enumerate() {
            total[e % c][l as usize] += 1;
            kept[e % c][l as usize] += g as u64;
        }
    }
    assert_eq!(total[0][1], 800_000);
    assert_eq!(total[1][1], 10_000);
    for k in 0..c {
        let ratio = kept[k][1] as f64 / kept[k][0] as f64;
        assert!(
            (ratio - rhat[k]).abs() <= 0.05 * rhat[k],
            "class {k}: kept ratio {ratio}, target {}",
            rhat[k]
        );
    }
    // Positives of classes 1 and 2 and negatives of classes 0 and 2 are
    // never masked.
    assert_eq!(kept[1][1], total[1][1]);
    assert_eq!(kept[2][1], total[2][1]);
    assert_eq!(kept[0][0], total[0][0]);
    assert_eq!(kept[2][0], total[2][0]);
}

// ----- oracle 3: unbiasedness and zero gradients ------------------------

/// A PLM state with keep probabilities well inside (0, 1) for several
/// classes, for 4 classes.
fn masking_plm() -> Plm {
    let mut plm = Plm::new(PlmConfig::default(), &[100, 20, 600, 300], 1000).unwrap();
    // r = (0.111, 0.0204, 1.5, 0.4286): mask negatives of 0 and 1,
    // positives of 2; class 3 unmasked.
    plm.set_rhat(&[0.3, 0.05, 0.6, 300.0 / 700.0]).unwrap();
    plm
}

fn labels_4x(b: usize, seed: u64) -> Tensor {
    let u = common::uniform(&[b, 4], 0.0, 1.0, seed)
        .to_vec::<f64>()
        .unwrap();
    mat(u.iter().map(|&v| (v < 0.5) as u8 as f64).collect(), b, 4)
}

#[test]
fn oracle3_averaged_masked_loss_converges_to_the_weighted_loss() {
    let (b, c) = (8, 4);
    let mut plm = masking_plm();
    let (kp, kn) = plm.keep_probabilities();
    let z = randn(&[b, c], 3);
    let y = labels_4x(b, 4);
    let l = bce(&z, &y).to_vec::<f64>().unwrap();
    let yv = y.to_vec::<f64>().unwrap();
    let bc = (b * c) as f64;
    let keep: Vec<f64> = (0..b * c)
        .map(|e| if yv[e] == 1.0 { kp[e % c] } else { kn[e % c] })
        .collect();
    let expected: f64 = keep.iter().zip(&l).map(|(k, l)| k * l).sum::<f64>() / bc;
    let sigma = (keep
        .iter()
        .zip(&l)
        .map(|(k, l)| k * (1.0 - k) * l * l)
        .sum::<f64>())
    .sqrt()
        / bc;
    assert!(sigma > 0.0);
    let elementwise = bce(&z, &y);
    for k_draws in [100usize, 10_000] {
        let mean: f64 = (0..k_draws)
            .map(|_| {
                plm.masked_loss(&elementwise, &y)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            })
            .sum::<f64>()
            / k_draws as f64;
        let bound = 4.5 * sigma / (k_draws as f64).sqrt();
        assert!(
            (mean - expected).abs() < bound,
            "K = {k_draws}: mean {mean}, expected {expected}, bound {bound}"
        );
    }
    // The unmasked loss is far from the weighted one at K = 10000's precision.
    let plain: f64 = l.iter().sum::<f64>() / bc;
    assert!((plain - expected).abs() > 10.0 * sigma / 100.0);
}

#[test]
fn oracle3_masked_elements_have_exactly_zero_gradient() {
    let (b, c) = (6, 4);
    let mut plm = masking_plm();
    let z = randn(&[b, c], 5).requires_grad_(true);
    let y = labels_4x(b, 6);
    // A clone draws the same mask as the original's next call.
    let mask = plm.clone().sample_mask(&y).unwrap();
    let g = mask.to_vec::<f64>().unwrap();
    assert!(g.contains(&0.0) && g.contains(&1.0), "mask {g:?}");
    let loss = plm.masked_loss(&bce(&z, &y), &y).unwrap();
    let grad = loss
        .backward()
        .unwrap()
        .get(&z)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let (zv, yv) = (z.to_vec::<f64>().unwrap(), y.to_vec::<f64>().unwrap());
    for e in 0..b * c {
        let p = 1.0 / (1.0 + (-zv[e]).exp());
        let want = g[e] * (p - yv[e]) / (b * c) as f64;
        assert!(
            (grad[e] - want).abs() < 1e-15,
            "element {e}: {} vs {want}",
            grad[e]
        );
        if g[e] == 0.0 {
            assert_eq!(grad[e], 0.0);
        }
    }
    // Finite differences under the same mask: perturbing a masked logit
    // leaves the loss bit-identical.
    let fixed = |zv: &[f64]| {
        apply_mask(&bce(&mat(zv.to_vec(), b, c), &y), &mask)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for e in (0..b * c).filter(|&e| g[e] == 0.0) {
        let mut plus = zv.clone();
        plus[e] += 1e-3;
        let mut minus = zv.clone();
        minus[e] -= 1e-3;
        assert_eq!(
            fixed(&plus).to_bits(),
            fixed(&minus).to_bits(),
            "element {e}"
        );
    }
    check_grad(
        "apply_mask(bce)",
        |t| apply_mask(&bce(&t[0], &y), &mask),
        &[z.detach()],
    );
    check_grad(
        "apply_mask wrt the elementwise loss",
        |t| apply_mask(&t[0], &mask),
        &[randn(&[b, c], 7)],
    );
}

// ----- oracle 4: bias-only fixed point ----------------------------------

/// Trains one bias per class on `[n, 2]` labels by full-batch gradient
/// descent (fresh mask every step when `plm` is given) and returns the
/// sigmoid of the bias averaged over the last half of the steps.
fn train_bias(y: &Tensor, mut plm: Option<&mut Plm>, steps: usize, lr: f64) -> Vec<f64> {
    let n = y.shape()[0];
    let mut b = vec![0.0f64; 2];
    let mut avg = vec![0.0f64; 2];
    for step in 0..steps {
        let bias = Tensor::from_vec(b.clone(), &[2])
            .unwrap()
            .requires_grad_(true);
        let z = bias.unsqueeze(0).unwrap().broadcast_to(&[n, 2]).unwrap();
        let loss = match plm.as_deref_mut() {
            Some(plm) => plm.masked_loss(&bce(&z, y), y).unwrap(),
            None => bce(&z, y).mean_all().unwrap(),
        };
        let grad = loss
            .backward()
            .unwrap()
            .get(&bias)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        for k in 0..2 {
            b[k] -= lr * grad[k];
            if step >= steps / 2 {
                avg[k] += 1.0 / (1.0 + (-b[k]).exp()) / (steps - steps / 2) as f64;
            }
        }
    }
    avg
}

#[test]
fn oracle4_bias_only_model_converges_to_rhat_over_one_plus_rhat() {
    let n = 4000;
    // Class 0: 40 positives (r = 0.010101); class 1: 3200 (r = 4).
    let y = mat(
        (0..n)
            .flat_map(|i| [(i % 100 == 0) as u8 as f64, (i % 5 != 0) as u8 as f64])
            .collect(),
        n,
        2,
    );
    let mut plm = Plm::new(PlmConfig::default(), &[40, 3200], n).unwrap();
    plm.set_rhat(&[1.2, 0.5]).unwrap();
    let with_plm = train_bias(&y, Some(&mut plm), 1000, 10.0);
    assert_close("p* with PLM", &with_plm, &[0.545455, 0.333333], 0.008, 0.0);
    let without = train_bias(&y, None, 500, 10.0);
    assert_close("p* without PLM", &without, &[0.01, 0.8], 1e-4, 0.0);
}

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

/// Observes one batch whose class `k` has positive predictions `pos[k]` and
/// negative predictions `neg[k]` (equal counts across classes), then ends
/// the epoch.
fn update_from(plm: &mut Plm, pos: &[Vec<f64>], neg: &[Vec<f64>]) -> ferrite::plm::PlmEpochUpdate {
    let c = pos.len();
    let cols: Vec<Vec<f64>> = (0..c)
        .map(|k| pos[k].iter().chain(&neg[k]).copied().collect())
        .collect();
    let labels: Vec<Vec<f64>> = (0..c)
        .map(|k| {
            let mut l = vec![1.0; pos[k].len()];
            l.extend(vec![0.0; neg[k].len()]);
            l
        })
        .collect();
    let b = cols[0].len();
    plm.observe(
        &mat(from_columns(&cols), b, c),
        &mat(from_columns(&labels), b, c),
    )
    .unwrap();
    plm.end_epoch().unwrap()
}

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

// ----- checkpoint state -----------------------------------------------------

#[test]
fn state_json_round_trips_and_resumed_masks_are_identical() {
    let cfg = PlmConfig {
        seed: u64::MAX - 12345,
        lambda: 0.123_456_789_012_345_67,
        init: RhatInit::Balanced,
        divergence: Divergence::TruthVsPred,
        n_bins: 7,
        ..PlmConfig::default()
    };
    let mut a = Plm::new(cfg, &[100, 20, 600, 300], 1000).unwrap();
    let y = labels_4x(32, 50);
    let p = common::uniform(&[32, 4], 0.0, 1.0, 51);
    for _ in 0..3 {
        a.sample_mask(&y).unwrap();
        a.observe(&p, &y).unwrap();
    }
    a.end_epoch().unwrap();
    for _ in 0..2 {
        a.sample_mask(&y).unwrap();
        a.observe(&p.square().unwrap(), &y).unwrap();
    }
    let saved = a.state_json().unwrap();
    let mut b = Plm::from_state_json(&saved).unwrap();
    assert_eq!(b.state_json().unwrap(), saved);
    assert_eq!(b.config(), a.config());
    assert_eq!(
        b.rhat().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        a.rhat().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(b.histograms(), a.histograms());
    assert_eq!((b.batches_drawn(), b.epochs()), (5, 1));
    // The resumed run continues exactly like the uninterrupted one.
    for _ in 0..3 {
        assert_eq!(
            a.sample_mask(&y).unwrap().to_vec::<f64>().unwrap(),
            b.sample_mask(&y).unwrap().to_vec::<f64>().unwrap()
        );
    }
    assert_eq!(a.end_epoch().unwrap(), b.end_epoch().unwrap());
    assert_eq!(a.state_json().unwrap(), b.state_json().unwrap());
}

#[test]
fn from_state_json_rejects_bad_states() {
    let good = masking_plm().state_json().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("format", Box::new(|v| v["format"] = "other".into())),
        ("version", Box::new(|v| v["version"] = 99.into())),
        (
            "missing rhat",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("rhat");
            }),
        ),
        (
            "rhat length",
            Box::new(|v| v["rhat"] = serde_json::json!(["1.0"])),
        ),
        ("rhat negative", Box::new(|v| v["rhat"][0] = "-1.0".into())),
        ("rhat NaN", Box::new(|v| v["rhat"][0] = "NaN".into())),
        ("rhat not a string", Box::new(|v| v["rhat"][0] = 1.0.into())),
        ("bins 0", Box::new(|v| v["config"]["bins"] = 0.into())),
        (
            "bins vs histograms",
            Box::new(|v| v["config"]["bins"] = 9.into()),
        ),
        ("lambda", Box::new(|v| v["config"]["lambda"] = "inf".into())),
        ("init", Box::new(|v| v["config"]["init"] = "uniform".into())),
        (
            "histogram length",
            Box::new(|v| v["histograms"]["pos_pred"] = serde_json::json!([1, 2])),
        ),
        (
            "negative count",
            Box::new(|v| v["histograms"]["neg_labels"][0] = (-1).into()),
        ),
        (
            "positives > N",
            Box::new(|v| v["positives"][0] = 5000.into()),
        ),
        (
            "no classes",
            Box::new(|v| v["positives"] = serde_json::json!([])),
        ),
    ];
    for (what, edit) in edits {
        let mut bad = v.clone();
        edit(&mut bad);
        let r = Plm::from_state_json(&bad.to_string());
        assert!(
            matches!(
                r,
                Err(Error::InvalidArgument {
                    op: "Plm::from_state_json",
                    ..
                })
            ),
            "{what}: {:?}",
            r.map(|_| ())
        );
    }
    assert!(Plm::from_state_json("{not json").is_err());
    assert!(Plm::from_state_json("[1, 2]").is_err());
    // The unedited state still loads.
    v["epochs"] = 3.into();
    assert_eq!(Plm::from_state_json(&v.to_string()).unwrap().epochs(), 3);
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

//! The Philox stream and masking oracles 1-4: start, kept ratio, unbiasedness, fixed point.

use super::helpers::{bce, labels_4x, masking_plm, mat};
use crate::common;
use crate::common::{assert_close, check_grad, randn};
use ferrite::plm::{apply_mask, mask_uniform, philox4x32_10, Plm, PlmConfig, RhatInit};
use ferrite::{DType, Tensor};

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

//! Cross-entropy: closed forms, ignored index, masked and extreme logits; class weights.

use super::helpers::{grad_of, idx, t32, t64, vals};
use crate::common::{assert_close, randn};
use ferrite::loss::{class_balanced_weights, cross_entropy, CrossEntropyOptions, Reduction};
use ferrite::Tensor;

// ----- cross-entropy ------------------------------------------------------

#[test]
fn cross_entropy_closed_forms() {
    // softmax([0, ln 2, ln 3]) = [1/6, 2/6, 3/6].
    let z = t64(&[0.0, 2f64.ln(), 3f64.ln()], &[1, 3]);
    let l = |p: f64| -p.ln();
    let plain = cross_entropy(&z, &idx(&[2]), &CrossEntropyOptions::default()).unwrap();
    assert_close("ce", &vals(&plain), &[l(0.5)], 1e-15, 1e-15);
    // Smoothing ε: (1 − ε)·(−ln p_t) + ε/C·Σ −ln p_c.
    let opts = CrossEntropyOptions {
        label_smoothing: 0.3,
        ..Default::default()
    };
    let smooth = cross_entropy(&z, &idx(&[2]), &opts).unwrap();
    let want = 0.7 * l(0.5) + 0.1 * (l(1.0 / 6.0) + l(2.0 / 6.0) + l(0.5));
    assert_close("ce smoothing", &vals(&smooth), &[want], 1e-15, 1e-15);
    // Class weights: the mean divides by the targets' summed weight.
    let z2 = t64(&[0.0, 2f64.ln(), 3f64.ln(), 0.0, 0.0, 0.0], &[2, 3]);
    let w = t64(&[1.0, 3.0, 0.5], &[3]);
    let opts = CrossEntropyOptions {
        weight: Some(w),
        ..Default::default()
    };
    let mean = cross_entropy(&z2, &idx(&[0, 1]), &opts).unwrap();
    let want = (1.0 * l(1.0 / 6.0) + 3.0 * l(1.0 / 3.0)) / 4.0;
    assert_close("ce weighted mean", &vals(&mean), &[want], 1e-15, 1e-15);
    let none = cross_entropy(
        &z2,
        &idx(&[0, 1]),
        &CrossEntropyOptions {
            reduction: Reduction::None,
            ..opts
        },
    )
    .unwrap();
    assert_close(
        "ce weighted none",
        &vals(&none),
        &[l(1.0 / 6.0), 3.0 * l(1.0 / 3.0)],
        1e-15,
        1e-15,
    );
}

#[test]
fn cross_entropy_ignore_index() {
    let z = randn(&[4, 3], 31);
    let kept = cross_entropy(
        &z.narrow(0, 0, 2).unwrap(),
        &idx(&[1, 2]),
        &Default::default(),
    )
    .unwrap();
    // Class 0 ignored (a real class): rows 2 and 3 drop out.
    let opts = CrossEntropyOptions {
        ignore_index: Some(0),
        ..Default::default()
    };
    let (v, g) = grad_of(&z, |z| cross_entropy(z, &idx(&[1, 2, 0, 0]), &opts));
    assert_close("ignored mean", &v, &vals(&kept), 1e-15, 1e-14);
    assert!(
        g[6..].iter().all(|&x| x == 0.0),
        "ignored rows get no gradient: {g:?}"
    );
    let none = cross_entropy(
        &z,
        &idx(&[1, -100, 0, 2]),
        &CrossEntropyOptions {
            ignore_index: Some(-100),
            label_smoothing: 0.2,
            reduction: Reduction::None,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(vals(&none)[1], 0.0);
    // Every target ignored: the mean is 0/0 = NaN (as PyTorch), the sum 0.
    let all = CrossEntropyOptions {
        ignore_index: Some(1),
        ..Default::default()
    };
    let z2 = z.narrow(0, 0, 2).unwrap();
    assert!(cross_entropy(&z2, &idx(&[1, 1]), &all)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .is_nan());
    let sum = CrossEntropyOptions {
        reduction: Reduction::Sum,
        ..all
    };
    assert_eq!(
        cross_entropy(&z2, &idx(&[1, 1]), &sum)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap(),
        0.0
    );
}

#[test]
fn cross_entropy_masked_logits_stay_finite() {
    // −∞ logits (masked classes) are fine without smoothing, also in an
    // ignored row whose placeholder index points at one.
    let inf = f64::NEG_INFINITY;
    let z = t64(&[inf, 0.0, 1.0, inf, 2.0, 0.0], &[2, 3]);
    let opts = CrossEntropyOptions {
        ignore_index: Some(-1),
        reduction: Reduction::None,
        ..Default::default()
    };
    let (v, g) = grad_of(&z, |z| cross_entropy(z, &idx(&[2, -1]), &opts));
    let want = -(1f64.exp() / (1.0 + 1f64.exp())).ln();
    assert_close("masked", &v, &[want, 0.0], 1e-15, 1e-15);
    assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
}

#[test]
fn cross_entropy_extreme_logits() {
    for make in [t64 as fn(&[f64], &[usize]) -> Tensor, t32] {
        let z = make(&[100.0, -100.0, 0.0, -100.0, 100.0, 0.0], &[2, 3]);
        let opts = CrossEntropyOptions {
            reduction: Reduction::None,
            ..Default::default()
        };
        let (v, g) = grad_of(&z, |z| cross_entropy(z, &idx(&[0, 0]), &opts));
        assert_close("ce extreme", &v, &[0.0, 200.0], 1e-5, 1e-6);
        assert!(g.iter().all(|x| x.is_finite()));
    }
}

// ----- class-balanced weights ------------------------------------------------

#[test]
fn class_balanced_weights_follow_the_formula() {
    let counts = [10usize, 100, 1000, 3];
    for beta in [0.9, 0.99, 0.999, 0.9999] {
        let got = class_balanced_weights(&counts, beta).unwrap();
        let raw: Vec<f64> = counts
            .iter()
            .map(|&n| (1.0 - beta) / (1.0 - beta.powi(n as i32)))
            .collect();
        let total: f64 = raw.iter().sum();
        let want: Vec<f64> = raw.iter().map(|w| w * 4.0 / total).collect();
        assert_close(&format!("beta {beta}"), &got, &want, 1e-12, 1e-10);
        assert!((got.iter().sum::<f64>() - 4.0).abs() < 1e-12);
        assert!(
            got[3] > got[0] && got[0] > got[1] && got[1] > got[2],
            "rarer classes weigh more"
        );
    }
    assert_eq!(
        class_balanced_weights(&[5, 50, 500], 0.0).unwrap(),
        vec![1.0; 3]
    );
    // n = 0 counts as n = 1: finite, equal to a class seen once.
    let w = class_balanced_weights(&[0, 1, 20], 0.9).unwrap();
    assert!(w.iter().all(|x| x.is_finite()));
    assert_eq!(w[0], w[1]);
    assert!(class_balanced_weights(&[], 0.5).unwrap().is_empty());
}

//! Forward values of the sigmoid losses: closed forms, weights, extreme logits, layouts.

use super::helpers::{grad_of, losses, t32, t64, vals, REDUCTIONS};
use crate::common::{assert_close, randn, uniform};
use ferrite::loss::{
    asymmetric_loss, bce_with_logits, bce_with_logits_pos_weight, sigmoid_focal_loss, AslOptions,
    Reduction,
};
use ferrite::{DType, Tensor};

/// `−y·ln σ(z) − (1 − y)·ln(1 − σ(z))` straight from the definition
/// (accurate for moderate z).
fn bce_naive(z: f64, y: f64) -> f64 {
    let p = 1.0 / (1.0 + (-z).exp());
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

// ----- forward values ------------------------------------------------------

#[test]
fn bce_values_match_the_definition() {
    let z = [-3.0, -0.5, 0.0, 0.7, 2.0, 4.5];
    let y = [0.0, 1.0, 1.0, 0.25, 0.0, 0.9];
    let want: Vec<f64> = z.iter().zip(&y).map(|(&z, &y)| bce_naive(z, y)).collect();
    assert_close("ln 2 at z = 0, y = 1", &[want[2]], &[2f64.ln()], 1e-15, 0.0);
    for (make, tol) in [(t64 as fn(&[f64], &[usize]) -> Tensor, 1e-14), (t32, 2e-6)] {
        let out = bce_with_logits(
            &make(&z, &[2, 3]),
            &make(&y, &[2, 3]),
            None,
            Reduction::None,
        )
        .unwrap();
        assert_eq!(out.shape(), &[2, 3]);
        assert_close("bce none", &vals(&out), &want, tol, tol);
        let sum: f64 = want.iter().sum();
        let s =
            bce_with_logits(&make(&z, &[2, 3]), &make(&y, &[2, 3]), None, Reduction::Sum).unwrap();
        let m = bce_with_logits(
            &make(&z, &[2, 3]),
            &make(&y, &[2, 3]),
            None,
            Reduction::Mean,
        )
        .unwrap();
        assert_eq!(s.shape(), &[] as &[usize]);
        assert_close("bce sum", &vals(&s), &[sum], tol, tol);
        assert_close("bce mean", &vals(&m), &[sum / 6.0], tol, tol);
    }
}

#[test]
fn weights_scale_elements_and_mean_divides_by_the_element_count() {
    let z = randn(&[3, 4], 1);
    let y = uniform(&[3, 4], 0.0, 1.0, 2);
    // Zero weights included: the mean still divides by B·C = 12.
    let w = [0.0, 2.0, 0.5, 1.0];
    let base = vals(&bce_with_logits(&z, &y, None, Reduction::None).unwrap());
    let weighted: Vec<f64> = base.iter().enumerate().map(|(i, l)| l * w[i % 4]).collect();
    let wt = t64(&w, &[4]);
    let none = bce_with_logits(&z, &y, Some(&wt), Reduction::None).unwrap();
    assert_close("weighted none", &vals(&none), &weighted, 1e-14, 1e-14);
    let mean = bce_with_logits(&z, &y, Some(&wt), Reduction::Mean).unwrap();
    let total: f64 = weighted.iter().sum();
    assert_close("weighted mean", &vals(&mean), &[total / 12.0], 1e-14, 1e-14);
    // A per-row weight [3, 1] broadcasts along the classes.
    let rows = t64(&[1.0, 0.0, 3.0], &[3, 1]);
    let by_row = bce_with_logits(&z, &y, Some(&rows), Reduction::None).unwrap();
    let want: Vec<f64> = base
        .iter()
        .enumerate()
        .map(|(i, l)| l * [1.0, 0.0, 3.0][i / 4])
        .collect();
    assert_close("row weight", &vals(&by_row), &want, 1e-14, 1e-14);
}

#[test]
fn pos_weight_scales_the_positive_term() {
    // z = 0: both terms are ln 2; y = 1 with w₊ = 3 gives 3 ln 2, y = 0 ln 2,
    // y = 0.5 gives (3 + 1)/2 · ln 2.
    let z = t64(&[0.0, 0.0, 0.0], &[3]);
    let y = t64(&[1.0, 0.0, 0.5], &[3]);
    let pw = t64(&[3.0], &[1]);
    let out = bce_with_logits_pos_weight(&z, &y, &pw, None, Reduction::None).unwrap();
    let l2 = 2f64.ln();
    assert_close(
        "pos weight",
        &vals(&out),
        &[3.0 * l2, l2, 2.0 * l2],
        1e-15,
        0.0,
    );
    // Gradient (1 − y)·σ − w₊·y·(1 − σ) at σ = 1/2: −1.5, 0.5, −0.5.
    let (_, g) = grad_of(&z, |z| {
        bce_with_logits_pos_weight(z, &y, &pw, None, Reduction::None)
    });
    assert_close("pos weight grad", &g, &[-1.5, 0.5, -0.5], 1e-15, 0.0);
}

#[test]
fn focal_values_match_closed_forms() {
    // z = ln 3: p = 3/4. y = 1: p_t = 3/4, α_t = α; y = 0: p_t = 1/4, α_t = 1 − α.
    let z = t64(&[3f64.ln(), 3f64.ln(), 0.0], &[3]);
    let y = t64(&[1.0, 0.0, 1.0], &[3]);
    let out = sigmoid_focal_loss(&z, &y, 2.0, Some(0.25), None, Reduction::None).unwrap();
    let want = [
        0.25 * (0.25f64).powi(2) * (4.0f64 / 3.0).ln(),
        0.75 * (0.75f64).powi(2) * 4f64.ln(),
        0.25 * 0.25 * 2f64.ln(),
    ];
    assert_close("focal", &vals(&out), &want, 1e-15, 1e-14);
    // Without α, γ = 1: (1 − p_t)·(−ln p_t).
    let out = sigmoid_focal_loss(&z, &y, 1.0, None, None, Reduction::Sum).unwrap();
    let want = 0.25 * (4.0f64 / 3.0).ln() + 0.75 * 4f64.ln() + 0.5 * 2f64.ln();
    assert_close("focal no alpha", &vals(&out), &[want], 1e-15, 1e-14);
}

#[test]
fn asl_values_match_closed_forms() {
    let opts = AslOptions::default();
    assert_eq!(
        (opts.gamma_pos, opts.gamma_neg, opts.clip),
        (0.0, 4.0, 0.05)
    );
    // p = 3/4: positive −ln(3/4); negative p_m = 0.7: −0.7⁴·ln 0.3.
    // z = −3: p ≈ 0.047 < clip, an easy negative that costs nothing.
    let z = t64(&[3f64.ln(), 3f64.ln(), -3.0, -3.0], &[4]);
    let y = t64(&[1.0, 0.0, 0.0, 1.0], &[4]);
    let out = asymmetric_loss(&z, &y, &opts, None, Reduction::None).unwrap();
    let p3 = 1.0 / (1.0 + 3f64.exp());
    let want = [
        -(0.75f64).ln(),
        -(0.7f64).powi(4) * 0.3f64.ln(),
        0.0,
        -p3.ln(),
    ];
    assert_close("asl", &vals(&out), &want, 1e-15, 1e-13);
    let (_, g) = grad_of(&z, |z| asymmetric_loss(z, &y, &opts, None, Reduction::None));
    assert_eq!(g[2], 0.0, "an easy negative has no gradient");
    // γ₊ = 1: positive (1 − p)·(−ln p) = 0.25·ln(4/3).
    let o = AslOptions {
        gamma_pos: 1.0,
        ..opts
    };
    let out = asymmetric_loss(&z, &y, &o, None, Reduction::None).unwrap();
    assert_close(
        "asl gamma_pos",
        &vals(&out)[..1],
        &[0.25 * (4.0f64 / 3.0).ln()],
        1e-15,
        1e-13,
    );
}

#[test]
fn extreme_logits_give_exact_finite_values_and_gradients() {
    let z = [100.0, 100.0, -100.0, -100.0, 100.0, -100.0];
    let y = [1.0, 0.0, 1.0, 0.0, 0.5, 0.5];
    // BCE: max(z, 0) − z·y + ln(1 + e^{−100}).
    let e = (-100f64).exp();
    let want_bce = [e, 100.0, 100.0, e, 50.0, 50.0];
    let want_grad = [0.0, 1.0, -1.0, 0.0, 0.5, -0.5];
    for make in [t64 as fn(&[f64], &[usize]) -> Tensor, t32] {
        let (zt, yt) = (make(&z, &[6]), make(&y, &[6]));
        let (v, g) = grad_of(&zt, |z| bce_with_logits(z, &yt, None, Reduction::None));
        assert_close("bce extreme", &v, &want_bce, 1e-6, 1e-6);
        assert_close("bce extreme grad", &g, &want_grad, 1e-6, 0.0);
        // Focal (γ = 2): confident mistakes cost about |z|·α_t.
        let (v, g) = grad_of(&zt, |z| {
            sigmoid_focal_loss(z, &yt, 2.0, Some(0.25), None, Reduction::None)
        });
        assert_close(
            "focal extreme",
            &v[..4],
            &[0.0, 75.0, 25.0, 0.0],
            1e-6,
            1e-6,
        );
        assert!(
            v.iter().chain(&g).all(|x| x.is_finite()),
            "focal {v:?} {g:?}"
        );
        // ASL (default): a positive at −100 costs 100, a negative at +100
        // costs −0.95⁴·ln 0.05.
        let (v, g) = grad_of(&zt, |z| {
            asymmetric_loss(z, &yt, &AslOptions::default(), None, Reduction::None)
        });
        let neg = -(0.95f64).powi(4) * 0.05f64.ln();
        assert_close("asl extreme", &v[..4], &[e, neg, 100.0, 0.0], 1e-6, 1e-6);
        assert!(v.iter().chain(&g).all(|x| x.is_finite()), "asl {v:?} {g:?}");
        // Far beyond exp's range too.
        let huge = make(&[1e4, -1e4, 1e4, -1e4], &[4]);
        let hy = make(&[0.0, 1.0, 1.0, 0.0], &[4]);
        for loss in losses() {
            let (v, g) = grad_of(&huge, |z| loss.compute(z, &hy, None, Reduction::Sum));
            assert!(
                v[0].is_finite() && g.iter().all(|x| x.is_finite()),
                "{}",
                loss.name()
            );
        }
    }
}

#[test]
fn focal_gamma_0_and_asl_gamma_0_clip_0_equal_bce() {
    let z = randn(&[4, 5], 3).mul_scalar(3.0).unwrap();
    let y = uniform(&[4, 5], 0.0, 1.0, 4);
    let w = uniform(&[5], 0.5, 2.0, 5);
    let asl0 = AslOptions {
        gamma_pos: 0.0,
        gamma_neg: 0.0,
        clip: 0.0,
    };
    for red in REDUCTIONS {
        for weight in [None, Some(&w)] {
            let (bv, bg) = grad_of(&z, |z| bce_with_logits(z, &y, weight, red));
            let (fv, fg) = grad_of(&z, |z| sigmoid_focal_loss(z, &y, 0.0, None, weight, red));
            let (av, ag) = grad_of(&z, |z| asymmetric_loss(z, &y, &asl0, weight, red));
            assert_close("focal γ=0 value", &fv, &bv, 1e-13, 1e-13);
            assert_close("focal γ=0 grad", &fg, &bg, 1e-13, 1e-13);
            assert_close("asl 0 value", &av, &bv, 1e-13, 1e-13);
            assert_close("asl 0 grad", &ag, &bg, 1e-13, 1e-13);
        }
    }
}

#[test]
fn non_contiguous_and_half_precision_logits() {
    let z = randn(&[5, 3], 6);
    let y = uniform(&[3, 5], 0.0, 1.0, 7);
    let zt = z.t().unwrap(); // a strided [3, 5] view
    let dense = zt.contiguous_copy().unwrap();
    for loss in losses() {
        let a = loss.compute(&zt, &y, None, Reduction::None).unwrap();
        let b = loss.compute(&dense, &y, None, Reduction::None).unwrap();
        assert_eq!(vals(&a), vals(&b), "{}", loss.name());
    }
    // bf16 logits are computed in f32 and rounded back.
    let (zb, yb) = (
        zt.to_dtype(DType::BF16).unwrap(),
        y.to_dtype(DType::BF16).unwrap(),
    );
    let half = bce_with_logits(&zb, &yb, None, Reduction::None).unwrap();
    assert_eq!(half.dtype(), DType::BF16);
    let wide = bce_with_logits(
        &zb.to_dtype(DType::F32).unwrap(),
        &yb.to_dtype(DType::F32).unwrap(),
        None,
        Reduction::None,
    )
    .unwrap();
    assert_close("bf16", &vals(&half), &vals(&wide), 1e-2, 1e-2);
}

//! The training objectives of `ferrite::loss`: closed-form values (extreme
//! logits included), f64 gradchecks of every loss in every reduction,
//! cross-entropy's weights / label smoothing / ignored index, class-balanced
//! weights, PyTorch parity (`tests/fixtures/gen_losses.py` wrote
//! `losses.json`) and argument errors.

mod common;
use common::{assert_close, check_grad, randn, tensor_of, uniform, values};
use ferrite::loss::{
    asymmetric_loss, bce_with_logits, bce_with_logits_pos_weight, class_balanced_weights,
    cross_entropy, mse_loss, sigmoid_focal_loss, AslOptions, CrossEntropyOptions, ElementLoss,
    Reduction,
};
use ferrite::train::{BaseLoss, LossSpec};
use ferrite::{DType, Error, Result, Tensor};
use serde_json::Value;

const REDUCTIONS: [Reduction; 3] = [Reduction::None, Reduction::Mean, Reduction::Sum];

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

fn t32(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<f32>>(), shape).unwrap()
}

fn idx(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// `−y·ln σ(z) − (1 − y)·ln(1 − σ(z))` straight from the definition
/// (accurate for moderate z).
fn bce_naive(z: f64, y: f64) -> f64 {
    let p = 1.0 / (1.0 + (-z).exp());
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// Gradient of `loss` w.r.t. a fresh leaf copy of `logits`, for an upstream
/// gradient of ones.
fn grad_of(logits: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> (Vec<f64>, Vec<f64>) {
    let z = logits.requires_grad_(true);
    let out = f(&z).unwrap();
    let g = out.backward_with_grad(&out.ones_like().unwrap()).unwrap();
    (vals(&out), vals(g.get(&z).unwrap()))
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

/// One configuration of each loss family (plus BCE-equivalent ones).
fn losses() -> Vec<ElementLoss> {
    vec![
        ElementLoss::Bce,
        ElementLoss::Focal {
            gamma: 2.0,
            alpha: Some(0.25),
        },
        ElementLoss::Focal {
            gamma: 0.5,
            alpha: None,
        },
        ElementLoss::Asl(AslOptions::default()),
        ElementLoss::Asl(AslOptions {
            gamma_pos: 1.0,
            gamma_neg: 2.0,
            clip: 0.0,
        }),
    ]
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

// ----- gradients -------------------------------------------------------------

#[test]
fn gradcheck_sigmoid_losses_every_reduction_and_weight() {
    let y = uniform(&[3, 5], 0.0, 1.0, 11);
    let binary = uniform(&[3, 5], 0.0, 1.0, 12)
        .gt(&Tensor::full(&[], 0.6, DType::F64).unwrap())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let class_w = uniform(&[5], 0.5, 2.0, 13);
    let row_w = uniform(&[3, 1], 0.5, 2.0, 14);
    let pos_w = uniform(&[5], 0.5, 3.0, 15);
    let z = randn(&[3, 5], 16).mul_scalar(2.5).unwrap();
    for loss in losses() {
        for targets in [&y, &binary] {
            for red in REDUCTIONS {
                for weight in [None, Some(&class_w), Some(&row_w)] {
                    let name = format!(
                        "{} {red:?} weight {:?}",
                        loss.name(),
                        weight.map(|w| w.shape())
                    );
                    check_grad(
                        &name,
                        |t| loss.compute(&t[0], targets, weight, red),
                        std::slice::from_ref(&z),
                    );
                }
            }
        }
    }
    for red in REDUCTIONS {
        for weight in [None, Some(&row_w)] {
            check_grad(
                "bce pos_weight",
                |t| bce_with_logits_pos_weight(&t[0], &y, &pos_w, weight, red),
                std::slice::from_ref(&z),
            );
        }
    }
}

#[test]
fn gradcheck_at_large_logits() {
    let z = t64(&[-20.0, -8.0, -0.5, 0.5, 8.0, 20.0], &[1, 6]);
    let y = t64(&[1.0, 0.0, 0.3, 1.0, 0.0, 0.7], &[1, 6]);
    let mut all = losses();
    all.push(ElementLoss::Asl(AslOptions {
        gamma_pos: 0.5,
        gamma_neg: 1.5,
        clip: 0.2,
    }));
    for loss in all {
        check_grad(
            &format!("{} large", loss.name()),
            |t| loss.compute(&t[0], &y, None, Reduction::None),
            std::slice::from_ref(&z),
        );
    }
}

#[test]
fn gradcheck_cross_entropy() {
    let z = randn(&[5, 4], 21).mul_scalar(2.0).unwrap();
    let t = idx(&[3, 0, 2, 2, 1]);
    let w = uniform(&[4], 0.5, 2.0, 22);
    for red in REDUCTIONS {
        for (weight, ls, ignore) in [
            (None, 0.0, None),
            (Some(w.clone()), 0.0, None),
            (None, 0.2, None),
            (Some(w.clone()), 0.1, Some(2)),
            (Some(w.clone()), 1.0, Some(-100)),
        ] {
            let opts = CrossEntropyOptions {
                weight,
                label_smoothing: ls,
                ignore_index: ignore,
                reduction: red,
            };
            check_grad(
                &format!("cross_entropy {opts:?}"),
                |x| cross_entropy(&x[0], &t, &opts),
                std::slice::from_ref(&z),
            );
        }
    }
}

#[test]
fn mse_values_gradients_and_shape_errors() {
    let p = t64(&[1.0, -2.0, 0.5, 3.0], &[2, 2]);
    let y = t64(&[0.0, 1.0, 0.5, 1.0], &[2, 2]);
    let want = [1.0, 9.0, 0.0, 4.0];
    assert_eq!(vals(&mse_loss(&p, &y, Reduction::None).unwrap()), want);
    assert_eq!(vals(&mse_loss(&p, &y, Reduction::Sum).unwrap()), [14.0]);
    assert_eq!(vals(&mse_loss(&p, &y, Reduction::Mean).unwrap()), [3.5]);
    let z = randn(&[3, 4], 31);
    let t = randn(&[3, 4], 32);
    for red in REDUCTIONS {
        check_grad(
            &format!("mse_loss {red:?}"),
            |x| mse_loss(&x[0], &t, red),
            std::slice::from_ref(&z),
        );
    }
    let err = mse_loss(&p, &t64(&[1.0, 2.0], &[2]), Reduction::Mean).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

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

// ----- ElementLoss ---------------------------------------------------------

#[test]
fn element_loss_dispatches_and_round_trips_its_name() {
    let z = randn(&[2, 3], 41);
    let y = uniform(&[2, 3], 0.0, 1.0, 42);
    let direct = [
        bce_with_logits(&z, &y, None, Reduction::Sum),
        sigmoid_focal_loss(&z, &y, 2.0, Some(0.25), None, Reduction::Sum),
        sigmoid_focal_loss(&z, &y, 0.5, None, None, Reduction::Sum),
        asymmetric_loss(&z, &y, &AslOptions::default(), None, Reduction::Sum),
    ];
    for (loss, want) in losses().iter().zip(direct) {
        let got = loss.compute(&z, &y, None, Reduction::Sum).unwrap();
        assert_eq!(vals(&got), vals(&want.unwrap()), "{}", loss.name());
        let parsed: LossSpec = loss.name().parse().unwrap();
        assert_eq!(
            parsed,
            LossSpec::new(BaseLoss::Element(*loss)),
            "{}",
            loss.name()
        );
    }
    assert_eq!(ElementLoss::Bce.name(), "bce");
    assert_eq!(losses()[1].name(), "focal(gamma=2,alpha=0.25)");
    let element = |text: &str| text.parse::<LossSpec>().map(|s| s.base);
    assert_eq!(
        element("focal").unwrap(),
        BaseLoss::Element(ElementLoss::Focal {
            gamma: 2.0,
            alpha: None
        })
    );
    assert_eq!(
        element(" focal( gamma = 1.5 , alpha = 0.5 ) ").unwrap(),
        BaseLoss::Element(ElementLoss::Focal {
            gamma: 1.5,
            alpha: Some(0.5)
        })
    );
    assert_eq!(
        element("asl(clip=0.1)").unwrap(),
        BaseLoss::Element(ElementLoss::Asl(AslOptions {
            clip: 0.1,
            ..Default::default()
        }))
    );
    for bad in [
        "mse",
        "bce(gamma=1)",
        "focal(gamma=x)",
        "focal(beta=1)",
        "focal(gamma=-1)",
        "asl(clip=1)",
        "asl(clip=0.1",
        "asl(clip)",
    ] {
        let r = element(bad);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{bad}: {r:?}"
        );
    }
}

// ----- PyTorch parity ------------------------------------------------------

fn opt_tensor(v: &Value) -> Option<Tensor> {
    (!v.is_null()).then(|| tensor_of(v))
}

fn reduction_of(s: &str) -> Reduction {
    match s {
        "none" => Reduction::None,
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        other => panic!("unknown reduction {other}"),
    }
}

fn evaluate(case: &Value, z: &Tensor) -> Result<Tensor> {
    let y = tensor_of(&case["targets"]);
    let w = opt_tensor(&case["weight"]);
    let pw = opt_tensor(&case["pos_weight"]);
    let red = reduction_of(case["reduction"].as_str().unwrap());
    let p = &case["params"];
    let f = |k: &str| p[k].as_f64().unwrap();
    match case["loss"].as_str().unwrap() {
        "bce" => match &pw {
            Some(pw) => bce_with_logits_pos_weight(z, &y, pw, w.as_ref(), red),
            None => bce_with_logits(z, &y, w.as_ref(), red),
        },
        "focal" => sigmoid_focal_loss(z, &y, f("gamma"), p["alpha"].as_f64(), w.as_ref(), red),
        "asl" => {
            let o = AslOptions {
                gamma_pos: f("gamma_pos"),
                gamma_neg: f("gamma_neg"),
                clip: f("clip"),
            };
            asymmetric_loss(z, &y, &o, w.as_ref(), red)
        }
        "ce" => {
            let opts = CrossEntropyOptions {
                weight: w,
                label_smoothing: f("label_smoothing"),
                ignore_index: p["ignore_index"].as_i64(),
                reduction: red,
            };
            cross_entropy(z, &y, &opts)
        }
        "mse" => mse_loss(z, &y, red),
        other => panic!("unknown loss {other}"),
    }
}

#[test]
fn losses_match_pytorch() {
    let root = common::fixture("losses.json");
    let cases = root["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 46, "every case in f32 and f64");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let tol = if case["dtype"] == "f64" { 1e-12 } else { 1e-5 };
        let z = tensor_of(&case["logits"]).requires_grad_(true);
        let out = evaluate(case, &z).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.dtype(), z.dtype(), "{name}");
        assert_eq!(
            out.shape(),
            common::shape_of(&case["output"]).as_slice(),
            "{name}"
        );
        assert_close(name, &vals(&out), &values(&case["output"]), tol, tol);
        let grads = out
            .backward_with_grad(&tensor_of(&case["upstream"]))
            .unwrap();
        let g = grads.get(&z).unwrap();
        assert_close(
            &format!("{name} grad"),
            &vals(g),
            &values(&case["grad"]),
            tol,
            tol,
        );
    }
}

// ----- errors --------------------------------------------------------------

fn is_shape_mismatch(r: Result<Tensor>, op: &str) -> bool {
    matches!(r, Err(Error::ShapeMismatch { op: o, .. }) if o == op)
}

fn is_invalid(r: Result<Tensor>, needle: &str) -> bool {
    match r {
        Err(e @ Error::InvalidArgument { .. }) => e.to_string().contains(needle),
        _ => false,
    }
}

#[test]
fn sigmoid_loss_errors() {
    let z = randn(&[4, 6], 51);
    let y = uniform(&[4, 6], 0.0, 1.0, 52);
    let none = Reduction::None;
    let y_bad = uniform(&[4, 5], 0.0, 1.0, 53);
    assert!(is_shape_mismatch(
        bce_with_logits(&z, &y_bad, None, none),
        "bce_with_logits"
    ));
    assert!(is_shape_mismatch(
        sigmoid_focal_loss(&z, &y_bad, 2.0, None, None, none),
        "sigmoid_focal_loss"
    ));
    assert!(is_shape_mismatch(
        asymmetric_loss(&z, &y_bad, &AslOptions::default(), None, none),
        "asymmetric_loss"
    ));
    // Weights must broadcast to the logits' shape, not beyond it.
    for shape in [&[5][..], &[2, 4, 6], &[4, 2]] {
        let w = Tensor::ones(shape, DType::F64).unwrap();
        assert!(
            is_shape_mismatch(bce_with_logits(&z, &y, Some(&w), none), "bce_with_logits"),
            "{shape:?}"
        );
        assert!(is_shape_mismatch(
            bce_with_logits_pos_weight(&z, &y, &w, None, none),
            "bce_with_logits"
        ));
    }
    let y32 = y.to_dtype(DType::F32).unwrap();
    assert!(matches!(
        bce_with_logits(&z, &y32, None, none),
        Err(Error::DTypeMismatch { .. })
    ));
    // Half-precision logits check dtypes before widening to f32.
    let (zb, yb) = (
        z.to_dtype(DType::BF16).unwrap(),
        y.to_dtype(DType::BF16).unwrap(),
    );
    assert!(matches!(
        bce_with_logits(&zb, &y32, None, none),
        Err(Error::DTypeMismatch { .. })
    ));
    let w32 = Tensor::ones(&[6], DType::F32).unwrap();
    assert!(matches!(
        bce_with_logits(&zb, &yb, Some(&w32), none),
        Err(Error::DTypeMismatch { .. })
    ));
    let zi = Tensor::zeros(&[4, 6], DType::I64).unwrap();
    assert!(matches!(
        bce_with_logits(&zi, &y, None, none),
        Err(Error::UnsupportedDType { .. })
    ));
    for bad in [1.5, -0.1, f64::NAN] {
        let mut v = vals(&y);
        v[7] = bad;
        let yb = t64(&v, &[4, 6]);
        assert!(is_invalid(
            bce_with_logits(&z, &yb, None, none),
            "targets must lie in [0, 1]"
        ));
    }
    assert!(is_invalid(
        bce_with_logits(&z, &y.requires_grad_(true), None, none),
        "must not require a gradient"
    ));
    let w = Tensor::ones(&[6], DType::F64).unwrap().requires_grad_(true);
    assert!(is_invalid(
        bce_with_logits(&z, &y, Some(&w), none),
        "weight is a constant"
    ));
    for gamma in [-0.5, f64::NAN, f64::INFINITY] {
        assert!(is_invalid(
            sigmoid_focal_loss(&z, &y, gamma, None, None, none),
            "gamma"
        ));
    }
    assert!(is_invalid(
        sigmoid_focal_loss(&z, &y, 2.0, Some(1.5), None, none),
        "alpha"
    ));
    let asl = |o: AslOptions| asymmetric_loss(&z, &y, &o, None, none);
    let d = AslOptions::default();
    assert!(is_invalid(
        asl(AslOptions {
            gamma_pos: -1.0,
            ..d
        }),
        "gamma_pos"
    ));
    assert!(is_invalid(
        asl(AslOptions {
            gamma_neg: f64::NAN,
            ..d
        }),
        "gamma_neg"
    ));
    assert!(is_invalid(asl(AslOptions { clip: 1.0, ..d }), "clip"));
    assert!(is_invalid(asl(AslOptions { clip: -0.1, ..d }), "clip"));
}

#[test]
fn cross_entropy_errors() {
    let z = randn(&[3, 4], 61);
    let t = idx(&[0, 3, 1]);
    let d = CrossEntropyOptions::default();
    assert!(matches!(
        cross_entropy(&z, &idx(&[0, 4, 1]), &d),
        Err(Error::IndexOutOfRange {
            op: "cross_entropy",
            index: 4,
            size: 4
        })
    ));
    assert!(matches!(
        cross_entropy(&z, &idx(&[0, -1, 1]), &d),
        Err(Error::IndexOutOfRange {
            op: "cross_entropy",
            index: -1,
            ..
        })
    ));
    assert!(is_shape_mismatch(
        cross_entropy(&z, &idx(&[0, 1]), &d),
        "cross_entropy"
    ));
    assert!(matches!(
        cross_entropy(&z.reshape(&[12]).unwrap(), &t, &d),
        Err(Error::BadShape {
            op: "cross_entropy",
            ..
        })
    ));
    assert!(is_invalid(
        cross_entropy(&z, &t.to_dtype(DType::F64).unwrap(), &d),
        "i64 class indices"
    ));
    let w5 = CrossEntropyOptions {
        weight: Some(Tensor::ones(&[5], DType::F64).unwrap()),
        ..Default::default()
    };
    assert!(is_shape_mismatch(
        cross_entropy(&z, &t, &w5),
        "cross_entropy"
    ));
    let w32 = CrossEntropyOptions {
        weight: Some(Tensor::ones(&[4], DType::F32).unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        cross_entropy(&z, &t, &w32),
        Err(Error::DTypeMismatch { .. })
    ));
    for ls in [-0.1, 1.5, f64::NAN] {
        let o = CrossEntropyOptions {
            label_smoothing: ls,
            ..Default::default()
        };
        assert!(is_invalid(cross_entropy(&z, &t, &o), "label_smoothing"));
    }
}

#[test]
fn class_balanced_weight_errors() {
    for beta in [1.0, -0.1, 1.5, f64::NAN] {
        let r = class_balanced_weights(&[1, 2], beta);
        assert!(
            matches!(&r, Err(e @ Error::InvalidArgument { .. }) if e.to_string().contains("beta")),
            "{beta}: {r:?}"
        );
    }
}

//! Gradchecks of every loss in every reduction, and MSE values, gradients and errors.

use super::helpers::{idx, losses, t64, vals, REDUCTIONS};
use crate::common::{check_grad, randn, uniform};
use ferrite::loss::{
    bce_with_logits_pos_weight, cross_entropy, mse_loss, AslOptions, CrossEntropyOptions,
    ElementLoss, Reduction,
};
use ferrite::{DType, Error, Tensor};

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

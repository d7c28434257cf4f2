//! Max-pool argmax rules (ties, NaN, -inf, saved indices) and gradchecks of every pool.

use super::helpers::{no_ties, p, vals};
use crate::common;
use crate::common::check_grad;
use ferrite::ops::{PadCount, Pool2dParams};
use ferrite::{no_grad, DType, Tensor};

// ----- argmax rules --------------------------------------------------------

fn grad_of_max(x: &[f64], q: Pool2dParams) -> (Vec<i64>, Vec<f64>) {
    let x = Tensor::from_vec(x.to_vec(), &[1, 1, 2, 2])
        .unwrap()
        .requires_grad_(true);
    let (y, idx) = x.max_pool2d_with_indices(q).unwrap();
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    (idx.to_vec::<i64>().unwrap(), vals(g.get(&x).unwrap()))
}

#[test]
fn ties_go_to_the_first_maximum() {
    let q = Pool2dParams::new(2);
    assert_eq!(
        grad_of_max(&[1.0, 3.0, 3.0, 2.0], q),
        (vec![1], vec![0.0, 1.0, 0.0, 0.0])
    );
    assert_eq!(
        grad_of_max(&[0.0; 4], q),
        (vec![0], vec![1.0, 0.0, 0.0, 0.0])
    );
}

#[test]
fn nan_wins_the_window() {
    let q = Pool2dParams::new(2);
    let x = Tensor::from_vec(vec![1.0f64, f64::NAN, 5.0, 2.0], &[1, 1, 2, 2]).unwrap();
    let (y, idx) = x.max_pool2d_with_indices(q).unwrap();
    assert!(vals(&y)[0].is_nan());
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![1]);
    // PyTorch's CPU scan replaces the maximum on every NaN: the last NaN.
    let (idx, _) = grad_of_max(&[f64::NAN, 1.0, f64::NAN, 2.0], q);
    assert_eq!(idx, vec![2]);
    // A NaN scanned before a larger value still wins.
    let (idx, _) = grad_of_max(&[f64::NAN, 1.0, 7.0, 2.0], q);
    assert_eq!(idx, vec![0]);
}

#[test]
fn all_negative_infinity_window_reports_first_in_bounds_element() {
    let x = Tensor::full(&[1, 1, 2, 2], f64::NEG_INFINITY, DType::F64).unwrap();
    // k3 s2 p1 on 2×2: one window, starting in the padding.
    let (y, idx) = x.max_pool2d_with_indices(p(3, 2, 1)).unwrap();
    assert_eq!(vals(&y), vec![f64::NEG_INFINITY]);
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![0]);
    // Padding never wins over a real value, even a very negative one.
    let x = Tensor::full(&[1, 1, 2, 2], -1e300, DType::F64).unwrap();
    assert_eq!(vals(&x.max_pool2d(p(3, 2, 1)).unwrap()), vec![-1e300]);
}

#[test]
fn max_backward_uses_saved_indices() {
    // Changing the input between forward and backward is refused (as in
    // PyTorch, whose max-pool backward saves its input), rather than sending
    // the gradient to where a new maximum might be.
    let x = Tensor::from_vec(vec![1.0f64, 9.0, 3.0, 4.0], &[1, 1, 2, 2])
        .unwrap()
        .requires_grad_(true);
    let y = x.max_pool2d(Pool2dParams::new(2)).unwrap();
    let changed = Tensor::from_vec(vec![10.0f64, 0.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
    no_grad(|| x.assign(&changed)).unwrap();
    let err = y.backward_with_grad(&y.ones_like().unwrap()).unwrap_err();
    assert!(err.to_string().contains("max_pool2d: its input 0"), "{err}");

    // The indices handed to the caller are not the ones backward uses:
    // overwriting them (even with an out-of-range index) changes nothing.
    let x = Tensor::from_vec(vec![1.0f64, 9.0, 3.0, 4.0], &[1, 1, 2, 2])
        .unwrap()
        .requires_grad_(true);
    let (y, idx) = x.max_pool2d_with_indices(Pool2dParams::new(2)).unwrap();
    idx.assign(&Tensor::from_vec(vec![1000i64], &[1, 1, 1, 1]).unwrap())
        .unwrap();
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    assert_eq!(vals(g.get(&x).unwrap()), vec![0.0, 1.0, 0.0, 0.0]);
}

// ----- gradcheck -----------------------------------------------------------

#[test]
fn gradcheck_max_pool2d() {
    let x = no_ties(&[2, 3, 7, 6], 1);
    let square = [
        p(3, 2, 1),
        p(2, 1, 0),
        p(2, 2, 0),
        p(3, 2, 0).ceil_mode(true),
        p(3, 2, 1).ceil_mode(true),
    ];
    for q in square {
        check_grad(
            &format!("max_pool2d {q:?}"),
            |t| t[0].max_pool2d(q),
            std::slice::from_ref(&x),
        );
    }
    let q = Pool2dParams {
        kernel: (2, 3),
        stride: (1, 2),
        padding: (1, 1),
        ceil_mode: true,
    };
    check_grad(
        "max_pool2d nonsquare",
        |t| t[0].max_pool2d(q),
        std::slice::from_ref(&x),
    );
}

#[test]
fn gradcheck_avg_pool2d() {
    let x = common::randn(&[2, 3, 7, 6], 2);
    let qs = [
        p(3, 2, 1),
        p(2, 1, 1),
        p(3, 2, 1).ceil_mode(true),
        p(3, 2, 0).ceil_mode(true),
        Pool2dParams::new(2),
        Pool2dParams {
            kernel: (2, 3),
            stride: (1, 2),
            padding: (1, 1),
            ceil_mode: true,
        },
    ];
    for q in qs {
        for incl in [PadCount::Include, PadCount::Exclude] {
            check_grad(
                &format!("avg_pool2d {q:?} {incl:?}"),
                |t| t[0].avg_pool2d(q, incl),
                std::slice::from_ref(&x),
            );
        }
    }
}

#[test]
fn gradcheck_adaptive_avg_pool2d() {
    let x = common::randn(&[2, 2, 7, 5], 3);
    for out in [(1, 1), (2, 3), (3, 2), (7, 5), (4, 4)] {
        check_grad(
            &format!("adaptive down {out:?}"),
            |t| t[0].adaptive_avg_pool2d(out),
            std::slice::from_ref(&x),
        );
    }
    let x = common::randn(&[1, 2, 2, 3], 4);
    for out in [(4, 5), (3, 7), (5, 3)] {
        check_grad(
            &format!("adaptive up {out:?}"),
            |t| t[0].adaptive_avg_pool2d(out),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn gradcheck_through_a_chain() {
    // Pooling inside a larger graph: a non-contiguous input and a
    // downstream op that makes the upstream gradient non-trivial.
    let x = no_ties(&[2, 6, 5, 3], 5);
    check_grad(
        "chain",
        |t| {
            let v = t[0].permute(&[0, 3, 2, 1])?; // 2×3×5×6, strided
            let a = v.max_pool2d(p(3, 2, 1))?;
            let b = v.avg_pool2d(p(3, 2, 1), PadCount::Exclude)?;
            a.mul(&b)?.adaptive_avg_pool2d((1, 1))?.tanh()
        },
        &[x],
    );
}

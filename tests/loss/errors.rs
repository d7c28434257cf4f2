//! Argument errors of the sigmoid losses, cross-entropy and class-balanced weights.

use super::helpers::{idx, t64, vals};
use crate::common::{randn, uniform};
use ferrite::loss::{
    asymmetric_loss, bce_with_logits, bce_with_logits_pos_weight, class_balanced_weights,
    cross_entropy, sigmoid_focal_loss, AslOptions, CrossEntropyOptions, Reduction,
};
use ferrite::{DType, Error, Result, Tensor};

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

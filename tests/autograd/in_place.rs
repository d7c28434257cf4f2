//! In-place parameter updates: shared handles, versions, and refused stale backwards.

use super::helpers::{grad_of, leaf, t64, vals};
use crate::common::assert_close;
use ferrite::no_grad;

// ----- in-place parameter updates ------------------------------------------

#[test]
fn in_place_updates_are_seen_by_every_handle() {
    let w = leaf(&[1.0, -2.0], &[2]);
    let alias = w.clone();
    let data = w.detach();
    let view = w.reshape(&[2, 1]).unwrap();
    let x = t64(&[3.0, 4.0], &[2]);
    let loss = w.mul(&x).unwrap().sum_all().unwrap();
    assert_eq!(loss.to_scalar::<f64>().unwrap(), -5.0);
    let g = loss.backward().unwrap();
    let grad = g.get(&w).unwrap().clone();
    assert_eq!(vals(&grad), vec![3.0, 4.0]);
    no_grad(|| w.add_scaled_(&grad, -0.5)).unwrap();
    // w - 0.5 * x = [-0.5, -4].
    for (name, h) in [
        ("w", &w),
        ("alias", &alias),
        ("detached", &data),
        ("view", &view),
    ] {
        assert_eq!(vals(h), vec![-0.5, -4.0], "{name}");
    }
    assert!(w.requires_grad() && w.is_leaf(), "still a parameter");
    // The next forward and backward use the new values.
    let loss = w.mul(&w).unwrap().sum_all().unwrap();
    assert_eq!(loss.to_scalar::<f64>().unwrap(), 16.25);
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &w), vec![-1.0, -8.0]);

    // A few steps of gradient descent on (w - t)² converge to t.
    let target = t64(&[2.0, 3.0], &[2]);
    for _ in 0..100 {
        let loss = w.sub(&target).unwrap().square().unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        no_grad(|| w.add_scaled_(g.get(&w).unwrap(), -0.1)).unwrap();
    }
    assert_close("descent", &vals(&w), &[2.0, 3.0], 1e-8, 0.0);
    assert_close("alias after descent", &vals(&alias), &[2.0, 3.0], 1e-8, 0.0);
}

#[test]
fn in_place_writes_bump_the_version_of_every_view() {
    let w = leaf(&[1.0, 2.0], &[2]);
    let view = w.reshape(&[2, 1]).unwrap();
    let copy = w.contiguous_copy().unwrap();
    let v0 = w.version();
    assert_eq!(view.version(), v0);
    no_grad(|| w.add_scaled_(&t64(&[1.0, 1.0], &[2]), 1.0)).unwrap();
    assert!(w.version() > v0);
    assert_eq!(view.version(), w.version(), "views share the counter");
    assert_eq!(copy.version(), 0, "a copy has its own storage");
    // Ops that only read leave it alone.
    let v1 = w.version();
    w.mul(&w).unwrap().sum_all().unwrap();
    assert_eq!(w.version(), v1);
}

#[test]
fn backward_refuses_an_input_modified_after_the_forward() {
    // d(sum(w * x))/dw reads x: changing x in place between the forward and
    // backward would silently give the wrong gradient.
    let w = leaf(&[1.0, 2.0], &[2]);
    let x = t64(&[3.0, 4.0], &[2]);
    let loss = w.mul(&x).unwrap().sum_all().unwrap();
    x.assign(&t64(&[5.0, 6.0], &[2])).unwrap();
    let err = loss.backward().unwrap_err().to_string();
    for part in [
        "mul",
        "input 1",
        "shape [2]",
        "modified in place",
        "version 0 then, 1 now",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }

    // The optimizer-before-backward mistake: the parameter itself changed.
    let loss = w.mul(&x).unwrap().sum_all().unwrap();
    no_grad(|| w.add_scaled_(&t64(&[1.0, 1.0], &[2]), -0.1)).unwrap();
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("mul: its input 0"), "{err}");

    // A view of the input shares its storage, so writing through the view
    // is caught too.
    let x = t64(&[3.0, 4.0], &[2]);
    let loss = w.mul(&x).unwrap().sum_all().unwrap();
    x.reshape(&[1, 2])
        .unwrap()
        .assign(&t64(&[0.0, 0.0], &[1, 2]))
        .unwrap();
    assert!(loss.backward().is_err());

    // Writing before the forward, or after backward, is fine.
    let x = t64(&[3.0, 4.0], &[2]);
    x.assign(&t64(&[5.0, 6.0], &[2])).unwrap();
    let loss = w.mul(&x).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &w), vec![5.0, 6.0]);
    x.assign(&t64(&[7.0, 8.0], &[2])).unwrap();
}

#[test]
fn backward_refuses_a_saved_tensor_modified_after_the_forward() {
    // The loss's rule reads its targets, which are not an input of the
    // graph (they get no gradient).
    use ferrite::loss::{bce_with_logits, Reduction};
    let z = leaf(&[0.5, -1.0], &[2]);
    let y = t64(&[1.0, 0.0], &[2]);
    let loss = bce_with_logits(&z, &y, None, Reduction::Sum).unwrap();
    y.assign(&t64(&[0.0, 1.0], &[2])).unwrap();
    let err = loss.backward().unwrap_err().to_string();
    assert!(
        err.contains("bce_with_logits: its saved tensor 0 (shape [2])"),
        "{err}"
    );
}

#[test]
fn backward_refuses_an_output_modified_after_the_forward() {
    // exp's rule reads its output. (Below the root, an op's output is its
    // consumer's input, which is checked first; so start backward at y.)
    let x = leaf(&[0.5, -1.0], &[2]);
    let y = x.exp().unwrap();
    no_grad(|| y.assign(&t64(&[0.0, 0.0], &[2]))).unwrap();
    let err = y
        .backward_with_grad(&y.ones_like().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("exp: its output (shape [2])"), "{err}");
    let loss = x.exp().unwrap().sum_all().unwrap();
    assert!(loss.backward().is_ok());
}

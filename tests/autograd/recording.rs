//! When ops are recorded, no_grad scopes, detaching, and gradient accumulation.

use super::helpers::{grad_of, leaf, t64, vals};
use crate::common::{assert_close, randn};
use ferrite::autograd::{is_grad_enabled, BackwardOptions, GradStore, NoGradGuard};
use ferrite::{no_grad, DType, KeepDim, Tensor};

// ----- recording ---------------------------------------------------------

#[test]
fn ops_record_only_when_an_input_requires_grad() {
    let a = t64(&[1.0, 2.0], &[2]);
    let b = leaf(&[3.0, 4.0], &[2]);
    assert!(!a.requires_grad() && a.is_leaf());
    assert!(b.requires_grad() && b.is_leaf());
    assert_ne!(a.id(), b.id());

    let plain = a.add(&a).unwrap().exp().unwrap().sum_all().unwrap();
    assert!(!plain.requires_grad());
    assert!(plain.is_leaf(), "nothing recorded without a grad input");

    let mixed = a.mul(&b).unwrap();
    assert!(mixed.requires_grad() && !mixed.is_leaf());
    // Every family records: views, reductions, matmul, softmax, indexing, casts.
    let recorded = [
        b.reshape(&[1, 2]).unwrap(),
        b.unsqueeze(0).unwrap().t().unwrap(),
        b.narrow(0, 1, 1).unwrap(),
        b.sum(&[0], KeepDim::No).unwrap(),
        b.max_all().unwrap(),
        b.matmul(&a).unwrap(),
        b.softmax(0).unwrap(),
        b.index_select(0, &Tensor::from_vec(vec![1i64], &[1]).unwrap())
            .unwrap(),
        b.to_dtype(DType::F32).unwrap(),
        Tensor::cat(&[a.clone(), b.clone()], 0).unwrap(),
        Tensor::from_vec(vec![1u8, 0], &[2])
            .unwrap()
            .where_cond(&a, &b)
            .unwrap(),
    ];
    for (i, r) in recorded.iter().enumerate() {
        assert!(r.requires_grad() && !r.is_leaf(), "op {i} was not recorded");
    }
    // Integer and boolean results never carry a gradient.
    assert!(!b.argmax(0, KeepDim::No).unwrap().requires_grad());
    assert!(!b.gt(&a).unwrap().requires_grad());
    assert!(!b.to_dtype(DType::I64).unwrap().requires_grad());
    // requires_grad_(false) makes a fresh, untracked leaf on the same data.
    let off = b.requires_grad_(false);
    assert!(!off.requires_grad() && off.same_storage(&b));
    assert!(!off.exp().unwrap().requires_grad());
}

#[test]
fn no_grad_scopes_nest_and_restore() {
    let b = leaf(&[1.0, 2.0], &[2]);
    assert!(is_grad_enabled());
    let inside = no_grad(|| {
        assert!(!is_grad_enabled());
        b.mul(&b).unwrap()
    });
    assert!(!inside.requires_grad() && inside.is_leaf());
    assert_eq!(vals(&inside), vec![1.0, 4.0], "values are still computed");
    assert!(is_grad_enabled());
    {
        let _outer = NoGradGuard::new();
        assert!(!is_grad_enabled());
        {
            let _inner = NoGradGuard::new();
            assert!(!is_grad_enabled());
            let nested = no_grad(|| b.exp().unwrap());
            assert!(!nested.requires_grad());
        }
        assert!(!is_grad_enabled(), "inner guard restores the outer scope");
        assert!(!b.sum_all().unwrap().requires_grad());
    }
    assert!(is_grad_enabled());
    assert!(b.sum_all().unwrap().requires_grad());

    // The mode is restored when the scope unwinds.
    let r = std::panic::catch_unwind(|| no_grad(|| panic!("boom")));
    assert!(r.is_err());
    assert!(is_grad_enabled(), "no_grad restored after a panic");

    // The mode is per thread.
    let _g = NoGradGuard::new();
    let other = std::thread::spawn(is_grad_enabled).join().unwrap();
    assert!(other, "another thread is unaffected");
    assert!(!is_grad_enabled());
}

#[test]
fn detach_cuts_the_graph() {
    let x = leaf(&[1.0, 2.0, 3.0], &[3]);
    let y = x.mul(&x).unwrap();
    let d = y.detach();
    assert!(!d.requires_grad() && d.is_leaf());
    assert!(d.same_storage(&y));
    assert_ne!(d.id(), y.id());
    // Through the detached copy only the direct x factor is differentiated:
    // d(sum(stop(x²) x))/dx = x², not 3x².
    let g = d.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![1.0, 4.0, 9.0]);
    let g = y.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![3.0, 12.0, 27.0]);
    // A detached result alone cannot be differentiated.
    assert!(d.sum_all().unwrap().backward().is_err());
}

// ----- accumulation ------------------------------------------------------

#[test]
fn a_tensor_used_twice_gets_the_sum() {
    let x = leaf(&[1.0, -2.0, 0.5], &[3]);
    // d/dx sum(x*x + 3x) = 2x + 3.
    let loss = x
        .mul(&x)
        .unwrap()
        .add(&x.mul_scalar(3.0).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![5.0, -1.0, 4.0]);
    assert_eq!(g.len(), 1);

    // Through views on separate branches: sum(x) + sum(x.reshape * 2) + x[1].
    let loss = x
        .sum_all()
        .unwrap()
        .add(
            &x.reshape(&[3, 1])
                .unwrap()
                .mul_scalar(2.0)
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap()
        .add(&x.narrow(0, 1, 1).unwrap().squeeze(0).unwrap())
        .unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![3.0, 4.0, 3.0]);

    // A diamond: y used by two consumers that meet again.
    let y = x.exp().unwrap();
    let loss = y.mul(&y).unwrap().add(&y).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let want: Vec<f64> = [1.0f64, -2.0, 0.5]
        .iter()
        .map(|v| 2.0 * (2.0 * v).exp() + v.exp())
        .collect();
    assert_close("diamond", &grad_of(&g, &x), &want, 1e-14, 1e-14);
}

#[test]
fn backward_into_accumulates_micro_batches() {
    let w = leaf(&[0.5, -1.0, 2.0], &[3]);
    let b = leaf(&[0.1], &[1]);
    let x = randn(&[5, 3], 1);
    let loss_of = |xb: &Tensor| {
        xb.matmul(&w)
            .unwrap()
            .add(&b)
            .unwrap()
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let (x1, x2) = (x.narrow(0, 0, 2).unwrap(), x.narrow(0, 2, 3).unwrap());
    let one = Tensor::ones(&[], DType::F64).unwrap();
    let mut store = GradStore::new();
    loss_of(&x1)
        .backward_into(&one, &mut store, BackwardOptions::default())
        .unwrap();
    let after_first = grad_of(&store, &w);
    loss_of(&x2)
        .backward_into(&one, &mut store, BackwardOptions::default())
        .unwrap();
    let full = loss_of(&Tensor::cat(&[x1.clone(), x2.clone()], 0).unwrap())
        .backward()
        .unwrap();
    assert_close("w", &grad_of(&store, &w), &grad_of(&full, &w), 1e-12, 1e-12);
    assert_close("b", &grad_of(&store, &b), &grad_of(&full, &b), 1e-12, 1e-12);
    assert_ne!(after_first, grad_of(&store, &w), "second batch added");

    // And against the closed form dL/dw = 2 Xᵀ (X w + b).
    let xv = vals(&x);
    let wv = [0.5, -1.0, 2.0];
    let mut want = [0.0; 3];
    let mut want_b = 0.0;
    for r in 0..5 {
        let pred: f64 = (0..3).map(|c| xv[r * 3 + c] * wv[c]).sum::<f64>() + 0.1;
        for c in 0..3 {
            want[c] += 2.0 * pred * xv[r * 3 + c];
        }
        want_b += 2.0 * pred;
    }
    assert_close("closed form", &grad_of(&store, &w), &want, 1e-12, 1e-12);
    assert_close(
        "closed form b",
        &grad_of(&store, &b),
        &[want_b],
        1e-12,
        1e-12,
    );
}

//! Semantics of the autodiff engine: when ops are recorded, detaching,
//! accumulation, retained and freed graphs, explicit upstream gradients,
//! in-place parameter updates, deep graphs and user-defined ops.

mod common;
use common::{assert_close, randn};
use ferrite::autograd::{
    gradcheck, is_grad_enabled, BackwardOptions, GradFn, GradStore, GradcheckOptions, NoGradGuard,
};
use ferrite::KeepDim;
use ferrite::{no_grad, DType, Result, Tensor};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn leaf(v: &[f64], shape: &[usize]) -> Tensor {
    t64(v, shape).requires_grad_(true)
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn grad_of(store: &GradStore, t: &Tensor) -> Vec<f64> {
    vals(store.get(t).expect("gradient missing"))
}

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

// ----- retained and freed graphs -----------------------------------------

#[test]
fn retain_graph_allows_a_second_backward() {
    let x = leaf(&[1.0, 2.0], &[2]);
    let loss = x.powf(3.0).unwrap().sum_all().unwrap();
    let one = Tensor::ones(&[], DType::F64).unwrap();
    let retain = BackwardOptions { retain_graph: true };
    let mut first = GradStore::new();
    loss.backward_into(&one, &mut first, retain).unwrap();
    assert_eq!(grad_of(&first, &x), vec![3.0, 12.0]);
    // Retained: again, into the same store (accumulates) ...
    loss.backward_into(&one, &mut first, retain).unwrap();
    assert_eq!(grad_of(&first, &x), vec![6.0, 24.0]);
    // ... and once more without retaining, which frees the graph.
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![3.0, 12.0]);
    let e = loss.backward().unwrap_err();
    assert!(e.to_string().contains("retain_graph"), "{e}");
    // Forward values survive freeing the graph.
    assert_eq!(loss.to_scalar::<f64>().unwrap(), 9.0);
}

/// A user op `y = 2x` that saves a large buffer and records when it is
/// dropped (with its saved tensors).
struct Probe {
    input: Tensor,
    saved: Tensor,
    dropped: Arc<AtomicBool>,
}

impl GradFn for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        assert_eq!(self.saved.numel(), 1 << 20);
        Ok(vec![Some(g.mul_scalar(2.0)?)])
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn probe(x: &Tensor, flag: &Arc<AtomicBool>) -> Tensor {
    let out = no_grad(|| x.mul_scalar(2.0)).unwrap();
    Tensor::from_op(
        out,
        Box::new(Probe {
            input: x.clone(),
            saved: Tensor::zeros(&[1 << 20], DType::F32).unwrap(),
            dropped: flag.clone(),
        }),
    )
}

#[test]
fn backward_releases_saved_tensors() {
    let x = leaf(&[1.0, 2.0], &[2]);
    let flag = Arc::new(AtomicBool::new(false));
    let y = probe(&x, &flag);
    let loss = y.sum_all().unwrap();
    assert!(!flag.load(Ordering::SeqCst));
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![2.0, 2.0]);
    // `y` and `loss` are still alive, yet the node and its buffer are gone.
    assert!(
        flag.load(Ordering::SeqCst),
        "saved tensors outlive backward"
    );
    assert_eq!(vals(&y), vec![2.0, 4.0]);
    let msg = loss.backward().unwrap_err().to_string();
    assert!(msg.contains("retain_graph"), "{msg}");
    let msg = y.sum_all().unwrap().backward().unwrap_err().to_string();
    assert!(msg.contains("`probe`"), "the freed op is named: {msg}");

    // With retain_graph the node survives backward and goes with its handles.
    let flag = Arc::new(AtomicBool::new(false));
    let y = probe(&x, &flag);
    let loss = y.sum_all().unwrap();
    let mut store = GradStore::new();
    loss.backward_into(
        &Tensor::ones(&[], DType::F64).unwrap(),
        &mut store,
        BackwardOptions { retain_graph: true },
    )
    .unwrap();
    assert!(!flag.load(Ordering::SeqCst), "retained graph was freed");
    drop(store);
    drop(loss);
    assert!(!flag.load(Ordering::SeqCst), "y still holds its node");
    drop(y);
    assert!(
        flag.load(Ordering::SeqCst),
        "dropping every handle frees the node"
    );
}

// ----- explicit upstream gradients ----------------------------------------

#[test]
fn backward_with_grad_is_a_vector_jacobian_product() {
    // y = A x for A [2, 3]: the VJP with v is Aᵀ v; dL/dA = v xᵀ.
    let a_vals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let a = leaf(&a_vals, &[2, 3]);
    let x = leaf(&[1.0, -1.0, 2.0], &[3]);
    let y = a.matmul(&x).unwrap();
    assert_eq!(vals(&y), vec![5.0, 11.0]);
    let v = t64(&[10.0, -1.0], &[2]);
    let g = y.backward_with_grad(&v).unwrap();
    assert_eq!(grad_of(&g, &x), vec![6.0, 15.0, 24.0]);
    assert_eq!(grad_of(&g, &a), vec![10.0, -10.0, 20.0, -1.0, 1.0, -2.0]);

    // Elementwise: y = x² ⊙ c over [2, 2] with upstream u: grad = 2 x c u.
    let x = leaf(&[1.0, 2.0, -3.0, 0.5], &[2, 2]);
    let c = t64(&[1.0, 0.5, 2.0, -1.0], &[2, 2]);
    let u = t64(&[1.0, -2.0, 0.5, 4.0], &[2, 2]);
    let y = x.square().unwrap().mul(&c).unwrap();
    let g = y.backward_with_grad(&u).unwrap();
    assert_eq!(grad_of(&g, &x), vec![2.0, -4.0, -6.0, -4.0]);

    // A zero upstream gives zero gradients (present, not absent).
    let x = leaf(&[1.0, 2.0], &[2]);
    let g = x
        .exp()
        .unwrap()
        .backward_with_grad(&t64(&[0.0, 0.0], &[2]))
        .unwrap();
    assert_eq!(grad_of(&g, &x), vec![0.0, 0.0]);
    // An f32 upstream for an f64 output is converted.
    let g = x
        .square()
        .unwrap()
        .backward_with_grad(&Tensor::ones(&[2], DType::F32).unwrap())
        .unwrap();
    assert_eq!(grad_of(&g, &x), vec![2.0, 4.0]);
    assert_eq!(g.get(&x).unwrap().dtype(), DType::F64);
}

#[test]
fn unreached_leaves_have_no_gradient() {
    let a = leaf(&[1.0, 2.0], &[2]);
    let b = leaf(&[3.0, 4.0], &[2]);
    let c = t64(&[5.0, 6.0], &[2]);
    let _unused = b.mul(&c).unwrap();
    let loss = a.mul(&c).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &a), vec![5.0, 6.0]);
    assert!(g.get(&b).is_none(), "b is not part of the loss");
    assert!(g.get(&c).is_none(), "c does not require a gradient");
    assert_eq!(g.len(), 1);
    // A leaf reached only through an integer path gets nothing either.
    let loss = a
        .index_select(0, &b.argmax(0, KeepDim::No).unwrap().unsqueeze(0).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(grad_of(&g, &a), vec![0.0, 1.0]);
    assert!(g.get(&b).is_none());
    // Views of a leaf are not leaves: the gradient is keyed by the leaf.
    let v = a.reshape(&[2, 1]).unwrap();
    let g = v.sum_all().unwrap().backward().unwrap();
    assert!(g.get(&v).is_none());
    assert_eq!(grad_of(&g, &a), vec![1.0, 1.0]);
}

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

// ----- deep graphs -------------------------------------------------------

const DEPTH: usize = 20_000;

/// Runs `f` on a thread with a small (256 KiB) stack, so that any recursion
/// proportional to the graph depth overflows deterministically.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn deep_chain_backward_does_not_overflow() {
    on_small_stack(|| {
        let x = leaf(&[1.0, 2.0], &[2]);
        let mut y = x.clone();
        for _ in 0..DEPTH {
            y = y.add_scalar(1.0).unwrap();
        }
        let loss = y.mul_scalar(0.5).unwrap().sum_all().unwrap();
        assert_eq!(
            loss.to_scalar::<f64>().unwrap(),
            0.5 * (3.0 + 2.0 * DEPTH as f64)
        );
        let g = loss.backward().unwrap();
        assert_eq!(grad_of(&g, &x), vec![0.5, 0.5]);
    });
}

#[test]
fn deep_graphs_drop_without_recursion() {
    on_small_stack(|| {
        // A graph that never runs backward is freed when its last handle goes.
        let x = leaf(&[1.0], &[1]);
        let mut y = x.clone();
        for _ in 0..5 * DEPTH {
            y = y.add_scalar(1.0).unwrap();
        }
        assert_eq!(vals(&y), vec![1.0 + 5.0 * DEPTH as f64]);
        drop(y);
        // So is a graph retained by backward.
        let mut y = x.clone();
        for _ in 0..5 * DEPTH {
            y = y.mul_scalar(1.0).unwrap();
        }
        let loss = y.sum_all().unwrap();
        let mut store = GradStore::new();
        loss.backward_into(
            &Tensor::ones(&[], DType::F64).unwrap(),
            &mut store,
            BackwardOptions { retain_graph: true },
        )
        .unwrap();
        assert_eq!(grad_of(&store, &x), vec![1.0]);
        drop(loss);
        drop(y);
        // A wide-and-deep graph: every step uses the previous two results.
        let (mut a, mut b) = (x.clone(), x.mul_scalar(0.5).unwrap());
        for _ in 0..DEPTH {
            let c = a.add(&b).unwrap().mul_scalar(0.5).unwrap();
            a = b;
            b = c;
        }
        drop(a);
        drop(b);
    });
}

// ----- user-defined ops ----------------------------------------------------

/// `hypot(a, b) = sqrt(a² + b²)`, elementwise; the backward uses the output:
/// `da = g a / y`, `db = g b / y`. With `wrong_at = Some(k)`, element `k` of
/// the gradient of `b` is off by one (to test that gradcheck notices).
struct Hypot {
    a: Tensor,
    b: Tensor,
    wrong_at: Option<usize>,
    backward_calls: Arc<AtomicUsize>,
}

impl GradFn for Hypot {
    fn name(&self) -> &'static str {
        "hypot"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.a.clone(), self.b.clone()]
    }
    fn backward(&self, y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward_calls.fetch_add(1, Ordering::SeqCst);
        assert!(!is_grad_enabled(), "backward runs in no-grad mode");
        assert!(
            !y.requires_grad(),
            "the output handed to backward is detached"
        );
        let ga = g.mul(&self.a)?.div(y)?;
        let mut gb = g.mul(&self.b)?.div(y)?;
        if let Some(k) = self.wrong_at {
            let mut bump = vec![0.0; gb.numel()];
            bump[k] = 1.0;
            gb = gb.add(&Tensor::from_vec(bump, gb.shape())?.to_dtype(gb.dtype())?)?;
        }
        Ok(vec![Some(ga), Some(gb)])
    }
}

fn hypot(
    a: &Tensor,
    b: &Tensor,
    wrong_at: Option<usize>,
    calls: &Arc<AtomicUsize>,
) -> Result<Tensor> {
    let out = no_grad(|| a.square()?.add(&b.square()?)?.sqrt())?;
    Ok(Tensor::from_op(
        out,
        Box::new(Hypot {
            a: a.clone(),
            b: b.clone(),
            wrong_at,
            backward_calls: calls.clone(),
        }),
    ))
}

#[test]
fn custom_op_passes_gradcheck() {
    let calls = Arc::new(AtomicUsize::new(0));
    let a = t64(&[3.0, -1.0, 0.5, 2.0, 1.5, -2.5], &[2, 3]);
    let b = t64(&[4.0, 2.0, -1.0, 0.3, -0.7, 1.1], &[2, 3]);
    // Forward values.
    let y = hypot(&a, &b, None, &calls).unwrap();
    assert!(
        !y.requires_grad() && y.is_leaf(),
        "no input requires a gradient"
    );
    assert_close("hypot(3,4)", &vals(&y)[..1], &[5.0], 1e-15, 0.0);
    // Recorded only when an input requires a gradient.
    let ar = a.requires_grad_(true);
    let y = hypot(&ar, &b, None, &calls).unwrap();
    assert!(y.requires_grad() && !y.is_leaf());
    let g = y.sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = vals(&a)
        .iter()
        .zip(vals(&b))
        .map(|(x, z)| x / (x * x + z * z).sqrt())
        .collect();
    assert_close("da", &grad_of(&g, &ar), &want, 1e-15, 1e-15);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let report = gradcheck(
        |t| hypot(&t[0], &t[1], None, &calls),
        &[a.clone(), b.clone()],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(report.passed, "{report}");
    assert_eq!(report.checked, 12);
    assert!(report.problem.is_none());
    // Composed with built-in ops on both sides.
    let report = gradcheck(
        |t| hypot(&t[0].tanh()?, &t[1].mul(&t[0])?, None, &calls)?.log_softmax(1),
        &[a, b],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(report.passed, "{report}");
}

#[test]
fn gradcheck_catches_a_wrong_custom_backward() {
    let calls = Arc::new(AtomicUsize::new(0));
    let a = t64(&[3.0, -1.0, 0.5, 2.0, 1.5, -2.5], &[2, 3]);
    let b = t64(&[4.0, 2.0, -1.0, 0.3, -0.7, 1.1], &[2, 3]);
    // Element 4 of b is [1, 1] in a [2, 3] tensor.
    let report = gradcheck(
        |t| hypot(&t[0], &t[1], Some(4), &calls),
        &[a, b],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(!report.passed, "{report}");
    assert_eq!(report.checked, 12);
    let (input, index, analytical, numerical) = report.worst.clone().expect("worst element");
    assert_eq!((input, index.clone()), (1, vec![1, 1]), "{report}");
    // The wrong backward adds exactly 1 to that element; elsewhere the
    // analytical and numerical gradients agree.
    let text = report.to_string();
    assert!(
        text.contains("FAILED") && text.contains("input 1 at [1, 1]"),
        "{text}"
    );
    assert!((analytical - numerical - 1.0).abs() < 1e-6, "{report}");
}

//! Retained and freed graphs, explicit upstream gradients, and deep graphs.

use super::helpers::{grad_of, leaf, t64, vals};
use ferrite::autograd::{BackwardOptions, GradFn, GradStore};
use ferrite::{no_grad, DType, KeepDim, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

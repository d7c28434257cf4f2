//! User-defined ops: a custom hypot passes gradcheck, a wrong backward is caught.

use super::helpers::{grad_of, t64, vals};
use crate::common::assert_close;
use ferrite::autograd::{gradcheck, is_grad_enabled, GradFn, GradcheckOptions};
use ferrite::{no_grad, Result, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

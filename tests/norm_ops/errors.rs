//! Error cases of batch norm.

use super::reference::f64s;
use crate::common::{randn, EVAL, TRAIN};
use ferrite::ops::BatchNormOptions;
use ferrite::{DType, Tensor};

// ----- errors ----------------------------------------------------------

fn err_of(r: ferrite::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.shape()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors() {
    let x = randn(&[4, 3, 2], 101);
    let c3 = Tensor::ones(&[3], DType::F64).unwrap();
    let c4 = Tensor::ones(&[4], DType::F64).unwrap();

    let e = err_of(randn(&[5], 1).batch_norm(None, None, None, None, TRAIN));
    assert!(e.contains("rank") && e.contains("[5]"), "{e}");
    let e = err_of(Tensor::scalar(1.0f64).batch_norm(None, None, None, None, TRAIN));
    assert!(e.contains("rank"), "{e}");

    // Channel-count mismatches name both shapes.
    for (i, name) in ["weight", "bias", "running_mean", "running_var"]
        .iter()
        .enumerate()
    {
        let mut args = [None, None, None, None];
        args[i] = Some(&c4);
        let e = err_of(x.batch_norm(args[2], args[3], args[0], args[1], TRAIN));
        assert!(
            e.contains(name) && e.contains("[4, 3, 2]") && e.contains("[4]"),
            "{e}"
        );
    }
    let e = err_of(x.batch_norm(
        None,
        None,
        Some(&Tensor::ones(&[3, 1], DType::F64).unwrap()),
        None,
        TRAIN,
    ));
    assert!(e.contains("[3, 1]") && e.contains("[4, 3, 2]"), "{e}");

    // Eval without running stats.
    let e = err_of(x.batch_norm(None, None, None, None, EVAL));
    assert!(e.contains("eval"), "{e}");
    let e = err_of(x.batch_norm(Some(&c3), None, None, None, EVAL));
    assert!(e.contains("running_var"), "{e}");

    // Non-float input.
    let xi = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap();
    let e = err_of(xi.batch_norm(None, None, None, None, TRAIN));
    assert!(e.contains("dtype") && e.contains("I64"), "{e}");
    // Dtype mismatch between input and weight.
    let w32 = Tensor::ones(&[3], DType::F32).unwrap();
    let e = err_of(x.batch_norm(None, None, Some(&w32), None, TRAIN));
    assert!(e.contains("dtype mismatch"), "{e}");

    // eps and momentum.
    for eps in [-1e-5, f64::NAN, f64::INFINITY] {
        let e = err_of(x.batch_norm(None, None, None, None, BatchNormOptions { eps, ..TRAIN }));
        assert!(e.contains("eps"), "{e}");
    }
    for momentum in [-0.1, 1.5, f64::NAN] {
        let e = err_of(x.batch_norm(
            None,
            None,
            None,
            None,
            BatchNormOptions { momentum, ..TRAIN },
        ));
        assert!(e.contains("momentum"), "{e}");
    }

    // One value per channel in training mode (fine in eval mode).
    for shape in [&[1, 3][..], &[1, 3, 1, 1]] {
        let x1 = randn(shape, 102);
        let e = err_of(x1.batch_norm(None, None, None, None, TRAIN));
        assert!(
            e.contains("Expected more than 1 value per channel when training"),
            "{e}"
        );
        x1.batch_norm(Some(&c3), Some(&c3), None, None, EVAL)
            .unwrap();
    }

    // Buffers that require a gradient are refused, and nothing is updated.
    let rm = Tensor::zeros(&[3], DType::F64)
        .unwrap()
        .requires_grad_(true);
    let e = err_of(x.batch_norm(Some(&rm), Some(&c3), None, None, TRAIN));
    assert!(e.contains("running_mean") && e.contains("gradient"), "{e}");
    assert_eq!(f64s(&c3), vec![1.0; 3]);
    // Non-contiguous buffers cannot be updated in place.
    let strided = Tensor::zeros(&[6], DType::F64)
        .unwrap()
        .reshape(&[3, 2])
        .unwrap()
        .narrow(1, 0, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let e = err_of(x.batch_norm(Some(&strided), None, None, None, TRAIN));
    assert!(e.contains("contiguous"), "{e}");
}

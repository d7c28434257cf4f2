//! Bad arguments, empty batches, dtypes, strided layouts and calls without a graph.

use super::helpers::{no_ties, p, vals};
use crate::common;
use crate::common::assert_close;
use ferrite::ops::{PadCount, Pool2dParams};
use ferrite::{no_grad, DType, Error, Result, Tensor};

// ----- errors --------------------------------------------------------------

#[track_caller]
fn err_contains(r: Result<Tensor>, needles: &[&str]) {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => {
            let msg = e.to_string();
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
            }
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let x = Tensor::zeros(&[1, 2, 6, 6], DType::F32).unwrap();
    for bad in [vec![2, 6, 6], vec![1, 1, 2, 6, 6], vec![36]] {
        let t = Tensor::zeros(&bad, DType::F32).unwrap();
        err_contains(t.max_pool2d(Pool2dParams::new(2)), &["max_pool2d", "4-D"]);
        err_contains(
            t.avg_pool2d(Pool2dParams::new(2), PadCount::Include),
            &["avg_pool2d", "4-D"],
        );
        err_contains(
            t.adaptive_avg_pool2d((1, 1)),
            &["adaptive_avg_pool2d", "4-D"],
        );
    }
    // Empty channel or spatial dims.
    for bad in [[1, 0, 6, 6], [1, 2, 0, 6], [1, 2, 6, 0]] {
        let t = Tensor::zeros(&bad, DType::F32).unwrap();
        err_contains(t.max_pool2d(Pool2dParams::new(1)), &["max_pool2d"]);
        err_contains(t.adaptive_avg_pool2d((1, 1)), &["adaptive_avg_pool2d"]);
    }
    // Zero kernel / stride.
    err_contains(
        x.max_pool2d(Pool2dParams::new(0)),
        &["max_pool2d", "positive"],
    );
    err_contains(
        x.avg_pool2d(Pool2dParams::new(2).stride(0), PadCount::Include),
        &["avg_pool2d", "positive"],
    );
    let q = Pool2dParams {
        kernel: (2, 0),
        ..Pool2dParams::new(2)
    };
    err_contains(x.max_pool2d(q), &["positive"]);
    // Padding above half the kernel (k3 p1 and k2 p1 are fine).
    err_contains(x.max_pool2d(p(3, 1, 2)), &["max_pool2d", "padding", "half"]);
    err_contains(
        x.avg_pool2d(p(1, 1, 1), PadCount::Exclude),
        &["avg_pool2d", "padding"],
    );
    assert!(x.max_pool2d(p(2, 2, 1)).is_ok());
    let q = Pool2dParams {
        padding: (0, 2),
        ..Pool2dParams::new(3)
    };
    err_contains(x.max_pool2d(q), &["padding"]);
    // Output smaller than 1.
    err_contains(
        x.max_pool2d(Pool2dParams::new(7)),
        &["max_pool2d", "too small"],
    );
    err_contains(
        x.avg_pool2d(p(9, 1, 1), PadCount::Include),
        &["avg_pool2d", "too small"],
    );
    err_contains(
        x.adaptive_avg_pool2d((0, 3)),
        &["adaptive_avg_pool2d", "1×1"],
    );
    // Non-float dtypes.
    for dt in [DType::I64, DType::U8] {
        let t = Tensor::zeros(&[1, 2, 6, 6], dt).unwrap();
        for r in [
            t.max_pool2d(Pool2dParams::new(2)),
            t.avg_pool2d(Pool2dParams::new(2), PadCount::Include),
            t.adaptive_avg_pool2d((2, 2)),
        ] {
            assert!(matches!(r, Err(Error::UnsupportedDType { .. })), "{r:?}");
        }
    }
}

#[test]
fn empty_batch_is_allowed() {
    let x = Tensor::zeros(&[0, 3, 6, 6], DType::F32)
        .unwrap()
        .requires_grad_(true);
    let y = x.max_pool2d(p(3, 2, 1)).unwrap();
    assert_eq!(y.shape(), &[0, 3, 3, 3]);
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    assert_eq!(g.get(&x).unwrap().shape(), &[0, 3, 6, 6]);
    assert_eq!(
        x.adaptive_avg_pool2d((2, 2)).unwrap().shape(),
        &[0, 3, 2, 2]
    );
}

// ----- dtypes and layouts ----------------------------------------------------

#[test]
fn f32_matches_f64_and_half_types_round_trip() {
    let x64 = common::randn(&[2, 3, 9, 8], 6);
    let q = p(3, 2, 1).ceil_mode(true);
    type PoolFn = fn(&Tensor, Pool2dParams) -> Result<Tensor>;
    let ops: [(&str, PoolFn); 3] = [
        ("max", |t, q| t.max_pool2d(q)),
        ("avg", |t, q| t.avg_pool2d(q, PadCount::Exclude)),
        ("adaptive", |t, _| t.adaptive_avg_pool2d((4, 3))),
    ];
    for (name, f) in ops {
        let want = vals(&f(&x64, q).unwrap());
        for (dt, tol) in [(DType::F32, 1e-6), (DType::BF16, 2e-2), (DType::F16, 4e-3)] {
            let x = x64.to_dtype(dt).unwrap().requires_grad_(true);
            let y = f(&x, q).unwrap();
            assert_eq!(y.dtype(), dt, "{name} {dt:?}");
            // Half inputs are rounded first, so compare within their precision.
            assert_close(&format!("{name} {dt:?}"), &vals(&y), &want, tol, tol);
            let up = y.ones_like().unwrap();
            let g = y.backward_with_grad(&up).unwrap();
            let gx = g.get(&x).unwrap();
            assert_eq!((gx.dtype(), gx.shape()), (dt, x.shape()), "{name} {dt:?}");
            // Total gradient mass is preserved by max pooling (each output
            // sends 1 somewhere) and by the average of a partition.
            if name == "max" {
                let total: f64 = vals(gx).iter().sum();
                assert_eq!(total, y.numel() as f64, "{name} {dt:?}");
            }
        }
    }
}

#[test]
fn strided_input_gives_the_same_result_as_contiguous() {
    let base = no_ties(&[2, 5, 6, 3], 7);
    let view = base.permute(&[0, 3, 1, 2]).unwrap(); // 2×3×5×6, not contiguous
    assert!(!view.is_contiguous());
    let copy = view.contiguous_copy().unwrap();
    let q = p(3, 2, 1).ceil_mode(true);
    assert_eq!(
        vals(&view.max_pool2d(q).unwrap()),
        vals(&copy.max_pool2d(q).unwrap())
    );
    assert_eq!(
        vals(&view.avg_pool2d(q, PadCount::Include).unwrap()),
        vals(&copy.avg_pool2d(q, PadCount::Include).unwrap())
    );
    assert_eq!(
        vals(&view.adaptive_avg_pool2d((2, 4)).unwrap()),
        vals(&copy.adaptive_avg_pool2d((2, 4)).unwrap())
    );
    // A view at an offset (narrow along the batch).
    let tail = base
        .narrow(0, 1, 1)
        .unwrap()
        .permute(&[0, 3, 1, 2])
        .unwrap();
    let tail_copy = tail.contiguous_copy().unwrap();
    assert_eq!(
        vals(&tail.max_pool2d(q).unwrap()),
        vals(&tail_copy.max_pool2d(q).unwrap())
    );
}

#[test]
fn no_graph_without_grad() {
    let x = Tensor::zeros(&[1, 1, 4, 4], DType::F32).unwrap();
    assert!(!x.max_pool2d(Pool2dParams::new(2)).unwrap().requires_grad());
    let x = x.requires_grad_(true);
    assert!(x.max_pool2d(Pool2dParams::new(2)).unwrap().requires_grad());
    let y = no_grad(|| x.avg_pool2d(Pool2dParams::new(2), PadCount::Include)).unwrap();
    assert!(!y.requires_grad());
}

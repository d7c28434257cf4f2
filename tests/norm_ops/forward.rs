//! Forward values and running statistics against the reference and by hand.

use super::reference::{f64s, reference};
use crate::common::{assert_close, randn, uniform, EVAL, TRAIN};
use ferrite::ops::BatchNormOptions;
use ferrite::{no_grad, DType, Tensor};

fn vec1(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

/// Runs batch norm and the reference on the same f64 data (running stats,
/// weight and bias optional) and compares output and updated stats.
fn compare_with_reference(shape: &[usize], affine: bool, with_stats: bool, opts: BatchNormOptions) {
    let c = shape[1];
    let x = randn(shape, 11)
        .mul_scalar(2.0)
        .unwrap()
        .add_scalar(0.7)
        .unwrap();
    let w = uniform(&[c], 0.5, 1.5, 12);
    let b = randn(&[c], 13);
    let rm0 = randn(&[c], 14).mul_scalar(0.1).unwrap();
    let rv0 = uniform(&[c], 0.5, 2.0, 15);
    let (rm, rv) = (
        rm0.contiguous_copy().unwrap(),
        rv0.contiguous_copy().unwrap(),
    );
    let y = x
        .batch_norm(
            with_stats.then_some(&rm),
            with_stats.then_some(&rv),
            affine.then_some(&w),
            affine.then_some(&b),
            opts,
        )
        .unwrap();
    let (wv, bv, rmv, rvv) = (f64s(&w), f64s(&b), f64s(&rm0), f64s(&rv0));
    let want = reference(
        &f64s(&x),
        shape,
        with_stats.then_some(rmv.as_slice()),
        with_stats.then_some(rvv.as_slice()),
        affine.then_some(wv.as_slice()),
        affine.then_some(bv.as_slice()),
        opts,
    );
    let name = format!("{shape:?} affine={affine} stats={with_stats} {opts:?}");
    assert_eq!(y.shape(), shape, "{name}");
    assert_eq!(y.dtype(), DType::F64, "{name}");
    assert_close(&name, &f64s(&y), &want.y, 1e-12, 1e-12);
    if with_stats {
        assert_close(
            &format!("{name} rm"),
            &f64s(&rm),
            want.running_mean.as_ref().unwrap(),
            1e-14,
            1e-14,
        );
        assert_close(
            &format!("{name} rv"),
            &f64s(&rv),
            want.running_var.as_ref().unwrap(),
            1e-14,
            1e-14,
        );
    }
}

#[test]
fn forward_matches_loop_reference() {
    for shape in [&[6, 3][..], &[4, 3, 5, 2], &[2, 4, 7], &[3, 2, 2, 3, 2]] {
        for affine in [false, true] {
            compare_with_reference(shape, affine, true, TRAIN);
            compare_with_reference(shape, affine, true, EVAL);
        }
        compare_with_reference(shape, true, false, TRAIN);
    }
}

#[test]
fn forward_hand_computed() {
    // Channel 0 holds {1, 3}, channel 1 holds {2, 6}: means 2 and 4,
    // biased variances 1 and 4, unbiased variances 2 and 8.
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 6.0], &[2, 2]).unwrap();
    let rm = Tensor::zeros(&[2], DType::F64).unwrap();
    let rv = Tensor::ones(&[2], DType::F64).unwrap();
    let y = x
        .batch_norm(Some(&rm), Some(&rv), None, None, TRAIN)
        .unwrap();
    let (a, b) = (1.0 / (1.0f64 + 1e-5).sqrt(), 2.0 / (4.0f64 + 1e-5).sqrt());
    assert_close("y", &f64s(&y), &[-a, -b, a, b], 1e-15, 1e-15);
    // rm = 0.9·0 + 0.1·mean, rv = 0.9·1 + 0.1·unbiased var.
    assert_close("rm", &f64s(&rm), &[0.2, 0.4], 1e-15, 1e-15);
    assert_close("rv", &f64s(&rv), &[1.1, 1.7], 1e-15, 1e-15);

    // Eval with weight and bias: y = (x − rm)/√(rv + eps)·w + b.
    let w = vec1(&[2.0, -1.0]);
    let bias = vec1(&[0.5, 1.0]);
    let y = x
        .batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&bias), EVAL)
        .unwrap();
    let (s0, s1) = ((1.1f64 + 1e-5).sqrt(), (1.7f64 + 1e-5).sqrt());
    let want = [
        (1.0 - 0.2) / s0 * 2.0 + 0.5,
        -(2.0 - 0.4) / s1 + 1.0,
        (3.0 - 0.2) / s0 * 2.0 + 0.5,
        -(6.0 - 0.4) / s1 + 1.0,
    ];
    assert_close("eval y", &f64s(&y), &want, 1e-15, 1e-15);
    // Eval leaves the running stats alone.
    assert_close("rm after eval", &f64s(&rm), &[0.2, 0.4], 0.0, 0.0);
}

#[test]
fn running_stats_momentum_and_unbiased_variance() {
    let x = randn(&[5, 2, 3], 21);
    let c = 2;
    for momentum in [0.0, 0.3, 1.0] {
        let rm = vec1(&[0.5, -0.5]);
        let rv = vec1(&[2.0, 3.0]);
        let opts = BatchNormOptions {
            momentum,
            ..Default::default()
        };
        x.batch_norm(Some(&rm), Some(&rv), None, None, opts)
            .unwrap();
        // Independent batch statistics per channel.
        let xs = f64s(&x);
        for ch in 0..c {
            let vals: Vec<f64> = (0..5)
                .flat_map(|i| (0..3).map(move |k| (i * c + ch) * 3 + k))
                .map(|j| xs[j])
                .collect();
            let mean = vals.iter().sum::<f64>() / 15.0;
            let unbiased = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 14.0;
            let (rm0, rv0) = ([0.5, -0.5][ch], [2.0, 3.0][ch]);
            let got_m = f64s(&rm)[ch];
            let got_v = f64s(&rv)[ch];
            let want_m = (1.0 - momentum) * rm0 + momentum * mean;
            let want_v = (1.0 - momentum) * rv0 + momentum * unbiased;
            assert!(
                (got_m - want_m).abs() < 1e-14,
                "m={momentum} ch={ch}: {got_m} vs {want_m}"
            );
            assert!(
                (got_v - want_v).abs() < 1e-14,
                "m={momentum} ch={ch}: {got_v} vs {want_v}"
            );
        }
    }
}

#[test]
fn running_stats_are_buffers_outside_the_graph() {
    let x = randn(&[4, 3], 31).requires_grad_(true);
    let w = Tensor::ones(&[3], DType::F64).unwrap().requires_grad_(true);
    let rm = Tensor::zeros(&[3], DType::F64).unwrap();
    let rv = Tensor::ones(&[3], DType::F64).unwrap();
    let y = x
        .batch_norm(Some(&rm), Some(&rv), Some(&w), None, TRAIN)
        .unwrap();
    assert!(y.requires_grad());
    assert!(!rm.requires_grad() && !rv.requires_grad());
    assert!(rm.is_leaf() && rv.is_leaf());
    let grads = y.square().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&rm).is_none() && grads.get(&rv).is_none());
    assert!(grads.get(&x).is_some() && grads.get(&w).is_some());

    // Updated under no_grad too (as PyTorch), and the update is in place:
    // another handle on the same storage sees it.
    let alias = rm.detach();
    let before = f64s(&rm);
    no_grad(|| x.batch_norm(Some(&rm), Some(&rv), None, None, TRAIN)).unwrap();
    assert_ne!(f64s(&alias), before);
    assert_eq!(f64s(&alias), f64s(&rm));
}

#[test]
fn numerically_stable_statistics() {
    // A large common offset: Σx² − M·mean² in f64 would lose ~1e-4 of the
    // variance here; shifted sums keep it to rounding.
    let x = randn(&[8, 2, 5, 5], 41).add_scalar(1e6).unwrap();
    let rv = Tensor::ones(&[2], DType::F64).unwrap();
    let rm = Tensor::zeros(&[2], DType::F64).unwrap();
    let y = x
        .batch_norm(Some(&rm), Some(&rv), None, None, TRAIN)
        .unwrap();
    let want = reference(
        &f64s(&x),
        x.shape(),
        Some(&[0.0, 0.0]),
        Some(&[1.0, 1.0]),
        None,
        None,
        TRAIN,
    );
    assert_close("y", &f64s(&y), &want.y, 1e-8, 1e-8);
    assert_close(
        "rv",
        &f64s(&rv),
        want.running_var.as_ref().unwrap(),
        1e-10,
        1e-10,
    );
}

#[test]
fn f32_and_half_inputs() {
    let shape = [4, 3, 3, 2];
    let x64 = randn(&shape, 51);
    let w64 = uniform(&[3], 0.5, 1.5, 52);
    let b64 = randn(&[3], 53);
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 3e-2), (DType::F16, 5e-3)] {
        let cast = |t: &Tensor| t.to_dtype(dtype).unwrap();
        let (x, w, b) = (cast(&x64), cast(&w64), cast(&b64));
        // The reference runs on the rounded inputs.
        let want = reference(
            &f64s(&x),
            &shape,
            Some(&[0.0; 3]),
            Some(&[1.0; 3]),
            Some(&f64s(&w)),
            Some(&f64s(&b)),
            TRAIN,
        );
        let rm = Tensor::zeros(&[3], dtype).unwrap();
        let rv = Tensor::ones(&[3], dtype).unwrap();
        let y = x
            .batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), TRAIN)
            .unwrap();
        assert_eq!(y.dtype(), dtype);
        assert_close(&format!("{dtype:?} y"), &f64s(&y), &want.y, tol, tol);
        assert_close(
            &format!("{dtype:?} rm"),
            &f64s(&rm),
            want.running_mean.as_ref().unwrap(),
            tol,
            tol,
        );
        assert_close(
            &format!("{dtype:?} rv"),
            &f64s(&rv),
            want.running_var.as_ref().unwrap(),
            tol,
            tol,
        );
        // Backward runs and returns gradients in the input dtype.
        let xg = x.requires_grad_(true);
        let g = xg
            .batch_norm(None, None, Some(&w), Some(&b), TRAIN)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(g.get(&xg).unwrap().dtype(), dtype);
    }
}

#[test]
fn non_contiguous_input() {
    // A permuted view normalises exactly like its contiguous copy.
    let base = randn(&[3, 5, 4], 61);
    let x = base.permute(&[2, 0, 1]).unwrap(); // [4, 3, 5], channels = 3
    assert!(!x.is_contiguous());
    let y = x.batch_norm(None, None, None, None, TRAIN).unwrap();
    let y2 = x
        .contiguous_copy()
        .unwrap()
        .batch_norm(None, None, None, None, TRAIN)
        .unwrap();
    assert_eq!(f64s(&y), f64s(&y2));
}

#[test]
fn empty_batch() {
    let x = Tensor::zeros(&[0, 3, 2], DType::F64)
        .unwrap()
        .requires_grad_(true);
    let w = Tensor::ones(&[3], DType::F64).unwrap().requires_grad_(true);
    let rm = vec1(&[1.0, 2.0, 3.0]);
    let rv = vec1(&[1.0, 2.0, 3.0]);
    let y = x
        .batch_norm(Some(&rm), Some(&rv), Some(&w), None, TRAIN)
        .unwrap();
    assert_eq!(y.shape(), &[0, 3, 2]);
    assert_eq!(f64s(&rm), vec![1.0, 2.0, 3.0]);
    assert_eq!(f64s(&rv), vec![1.0, 2.0, 3.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(f64s(g.get(&w).unwrap()), vec![0.0; 3]);
}

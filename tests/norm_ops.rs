//! Batch norm: forward values against a plain f64 loop implementation
//! written here, running-statistic updates, gradchecks (training and eval),
//! error cases, and large inputs through the parallel kernels.
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[x.clone()]` reads best here

mod common;
use common::{assert_close, check_grad, randn, uniform, EVAL, TRAIN};
use ferrite::ops::BatchNormOptions;
use ferrite::{no_grad, DType, Tensor};

/// What the reference computes: output and the running stats after the call.
struct Reference {
    y: Vec<f64>,
    running_mean: Option<Vec<f64>>,
    running_var: Option<Vec<f64>>,
}

/// Batch norm by the definition, one channel at a time, in f64 with a
/// two-pass variance (mean first, then squared deviations).
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f64],
    shape: &[usize],
    rm: Option<&[f64]>,
    rv: Option<&[f64]>,
    w: Option<&[f64]>,
    b: Option<&[f64]>,
    opts: BatchNormOptions,
) -> Reference {
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let m = (n * s) as f64;
    let at = |i: usize, ch: usize, k: usize| (i * c + ch) * s + k;
    let mut y = vec![0.0; x.len()];
    let mut new_rm = rm.map(|v| v.to_vec());
    let mut new_rv = rv.map(|v| v.to_vec());
    for ch in 0..c {
        let (mean, var) = if opts.training {
            let mut sum = 0.0;
            for i in 0..n {
                for k in 0..s {
                    sum += x[at(i, ch, k)];
                }
            }
            let mean = sum / m;
            let mut sq = 0.0;
            for i in 0..n {
                for k in 0..s {
                    sq += (x[at(i, ch, k)] - mean).powi(2);
                }
            }
            if let Some(r) = new_rm.as_mut() {
                r[ch] = (1.0 - opts.momentum) * r[ch] + opts.momentum * mean;
            }
            if let Some(r) = new_rv.as_mut() {
                r[ch] = (1.0 - opts.momentum) * r[ch] + opts.momentum * sq / (m - 1.0);
            }
            (mean, sq / m)
        } else {
            (rm.unwrap()[ch], rv.unwrap()[ch])
        };
        let wc = w.map_or(1.0, |w| w[ch]);
        let bc = b.map_or(0.0, |b| b[ch]);
        for i in 0..n {
            for k in 0..s {
                let j = at(i, ch, k);
                y[j] = (x[j] - mean) / (var + opts.eps).sqrt() * wc + bc;
            }
        }
    }
    Reference {
        y,
        running_mean: new_rm,
        running_var: new_rv,
    }
}

/// The reference input-gradient of training-mode batch norm, from the
/// definition of the closed form with per-channel loops in f64:
/// `dx = w·invstd/M · (M·dy − Σdy − x̂·Σ(dy·x̂))`; also returns `(dw, db)`.
fn reference_train_grads(
    x: &[f64],
    dy: &[f64],
    shape: &[usize],
    w: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let m = (n * s) as f64;
    let idx: Vec<Vec<usize>> = (0..c)
        .map(|ch| {
            (0..n)
                .flat_map(|i| (0..s).map(move |k| (i * c + ch) * s + k))
                .collect()
        })
        .collect();
    let mut dx = vec![0.0; x.len()];
    let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let mean = idx[ch].iter().map(|&j| x[j]).sum::<f64>() / m;
        let var = idx[ch].iter().map(|&j| (x[j] - mean).powi(2)).sum::<f64>() / m;
        let invstd = 1.0 / (var + eps).sqrt();
        let xhat = |j: usize| (x[j] - mean) * invstd;
        let sum_dy: f64 = idx[ch].iter().map(|&j| dy[j]).sum();
        let sum_dy_xhat: f64 = idx[ch].iter().map(|&j| dy[j] * xhat(j)).sum();
        for &j in &idx[ch] {
            dx[j] = w[ch] * invstd / m * (m * dy[j] - sum_dy - xhat(j) * sum_dy_xhat);
        }
        dw[ch] = sum_dy_xhat;
        db[ch] = sum_dy;
    }
    (dx, dw, db)
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

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

// ----- gradients ------------------------------------------------------

#[test]
fn gradcheck_training() {
    for shape in [&[5, 3][..], &[3, 2, 3, 2]] {
        let c = shape[1];
        let x = randn(shape, 71);
        let w = uniform(&[c], 0.5, 1.5, 72);
        let b = randn(&[c], 73);
        // With running stats (fresh buffers per call) and affine.
        check_grad(
            &format!("bn train {shape:?}"),
            |t| {
                let rm = Tensor::zeros(&[t[1].numel()], DType::F64)?;
                let rv = Tensor::ones(&[t[1].numel()], DType::F64)?;
                t[0].batch_norm(Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), TRAIN)
            },
            &[x.clone(), w.clone(), b.clone()],
        );
        // Without affine, without running stats.
        check_grad(
            &format!("bn train no affine {shape:?}"),
            |t| t[0].batch_norm(None, None, None, None, TRAIN),
            &[x.clone()],
        );
        // Weight only and bias only.
        check_grad(
            &format!("bn train weight only {shape:?}"),
            |t| t[0].batch_norm(None, None, Some(&t[1]), None, TRAIN),
            &[x.clone(), w.clone()],
        );
        check_grad(
            &format!("bn train bias only {shape:?}"),
            |t| t[0].batch_norm(None, None, None, Some(&t[1]), TRAIN),
            &[x.clone(), b.clone()],
        );
        // A non-contiguous input inside the graph.
        check_grad(
            &format!("bn train transposed {shape:?}"),
            |t| {
                let xt = t[0].transpose(0, 1)?.contiguous()?.transpose(0, 1)?;
                t[0].batch_norm(None, None, Some(&t[1]), None, TRAIN)?
                    .add(&xt.batch_norm(None, None, Some(&t[1]), None, TRAIN)?)
            },
            &[x.clone(), w.clone()],
        );
    }
}

#[test]
fn gradcheck_eval() {
    for shape in [&[4, 3][..], &[2, 3, 2, 2]] {
        let c = shape[1];
        let rm = randn(&[c], 81).mul_scalar(0.3).unwrap();
        let rv = uniform(&[c], 0.5, 2.0, 82);
        check_grad(
            &format!("bn eval {shape:?}"),
            |t| t[0].batch_norm(Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), EVAL),
            &[
                randn(shape, 83),
                uniform(&[c], 0.5, 1.5, 84),
                randn(&[c], 85),
            ],
        );
        check_grad(
            &format!("bn eval no affine {shape:?}"),
            |t| t[0].batch_norm(Some(&rm), Some(&rv), None, None, EVAL),
            &[randn(shape, 86)],
        );
    }
}

#[test]
fn gradient_only_for_what_requires_it() {
    let x = randn(&[4, 2, 3], 91);
    let w = uniform(&[2], 0.5, 1.5, 92).requires_grad_(true);
    let b = randn(&[2], 93);
    let y = x.batch_norm(None, None, Some(&w), Some(&b), TRAIN).unwrap();
    let g = y
        .mul(&randn(&[4, 2, 3], 94))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&x).is_none() && g.get(&b).is_none());
    assert_eq!(g.get(&w).unwrap().shape(), &[2]);
}

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

// ----- large inputs: parallel kernels ----------------------------------

/// Forward and backward of a large f32 input against the f64 references.
fn large_case(shape: &[usize], seed: u64) {
    let c = shape[1];
    let x = Tensor::randn(shape, 0.5, 2.0, DType::F32, &mut common::rng(seed)).unwrap();
    let w = Tensor::rand(&[c], 0.5, 1.5, DType::F32, &mut common::rng(seed + 1)).unwrap();
    let b = Tensor::randn(&[c], 0.0, 1.0, DType::F32, &mut common::rng(seed + 2)).unwrap();
    let rm = Tensor::zeros(&[c], DType::F32).unwrap();
    let rv = Tensor::ones(&[c], DType::F32).unwrap();
    let xg = x.requires_grad_(true);
    let y = xg
        .batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), TRAIN)
        .unwrap();
    let (xv, wv, bv) = (f64s(&x), f64s(&w), f64s(&b));
    let want = reference(
        &xv,
        shape,
        Some(&vec![0.0; c]),
        Some(&vec![1.0; c]),
        Some(&wv),
        Some(&bv),
        TRAIN,
    );
    let name = format!("large {shape:?}");
    assert_close(&name, &f64s(&y), &want.y, 1e-5, 1e-5);
    assert_close(
        &format!("{name} rm"),
        &f64s(&rm),
        want.running_mean.as_ref().unwrap(),
        1e-6,
        1e-6,
    );
    assert_close(
        &format!("{name} rv"),
        &f64s(&rv),
        want.running_var.as_ref().unwrap(),
        1e-6,
        1e-6,
    );

    let dy = Tensor::randn(shape, 0.0, 1.0, DType::F32, &mut common::rng(seed + 3)).unwrap();
    let g = y.backward_with_grad(&dy).unwrap();
    let (dx, _, _) = reference_train_grads(&xv, &f64s(&dy), shape, &wv, 1e-5);
    assert_close(
        &format!("{name} dx"),
        &f64s(g.get(&xg).unwrap()),
        &dx,
        1e-5,
        1e-4,
    );
}

#[test]
fn large_inputs_match_reference() {
    // Channel blocks (16·1024 per channel), channels split over the batch
    // (8·128·128 per channel = two 64K-element work units each) and a
    // rank-2 input.
    large_case(&[16, 64, 32, 32], 111);
    large_case(&[8, 2, 128, 128], 112);
    large_case(&[2048, 160], 113);
}

#[test]
fn large_gradients_in_f64() {
    // The weight and bias gradients of a large input, in f64, against the
    // closed form computed by loops.
    let shape = [8, 16, 48, 48];
    let x = randn(&shape, 121).requires_grad_(true);
    let w = uniform(&[16], 0.5, 1.5, 122).requires_grad_(true);
    let b = randn(&[16], 123).requires_grad_(true);
    let dy = randn(&shape, 124);
    let y = x.batch_norm(None, None, Some(&w), Some(&b), TRAIN).unwrap();
    let g = y.backward_with_grad(&dy).unwrap();
    let (dx, dw, db) = reference_train_grads(&f64s(&x), &f64s(&dy), &shape, &f64s(&w), 1e-5);
    assert_close("dx", &f64s(g.get(&x).unwrap()), &dx, 1e-10, 1e-10);
    assert_close("dw", &f64s(g.get(&w).unwrap()), &dw, 1e-9, 1e-10);
    assert_close("db", &f64s(g.get(&b).unwrap()), &db, 1e-9, 1e-10);
}

#[test]
fn parallel_result_is_bitwise_serial_result() {
    // The work split depends on the shape only: one thread and the default
    // pool give identical bits, forward and backward. 16·4·72·72 elements
    // is above the parallel threshold, and each channel (82944 elements)
    // is split over the batch into two work units. f64 data, so that a
    // different summation order would show in the last bits.
    let run = || {
        let x = Tensor::randn(
            &[16, 4, 72, 72],
            1.0,
            3.0,
            DType::F64,
            &mut common::rng(131),
        )
        .unwrap()
        .requires_grad_(true);
        let rv = Tensor::ones(&[4], DType::F64).unwrap();
        let y = x.batch_norm(None, Some(&rv), None, None, TRAIN).unwrap();
        let dy = y.mul_scalar(0.5).unwrap().detach();
        let g = y.backward_with_grad(&dy).unwrap();
        (
            y.to_vec::<f64>().unwrap(),
            rv.to_vec::<f64>().unwrap(),
            g.get(&x).unwrap().to_vec::<f64>().unwrap(),
        )
    };
    let parallel = run();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let serial = pool.install(run);
    assert!(
        parallel == serial,
        "results differ between 1 thread and the default pool"
    );
}

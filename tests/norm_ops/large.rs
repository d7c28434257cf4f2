//! Large inputs through the parallel kernels, against the reference and the serial path.

use super::reference::{f64s, reference};
use crate::common;
use crate::common::{assert_close, randn, uniform, TRAIN};
use ferrite::{DType, Tensor};

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

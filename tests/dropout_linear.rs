//! Dropout (seeded masks, keep rate, scaling, eval identity, gradient) and
//! linear (hand-computed forward, batched and strided inputs, gradcheck,
//! errors).
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[x.clone()]` reads best here

mod common;
use common::{assert_close, check_grad, randn, rng};
use ferrite::ops::Mode;
use ferrite::{DType, Tensor};
use rand::Rng;

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn err_of(r: ferrite::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.shape()),
        Err(e) => e.to_string(),
    }
}

// ----- dropout -----------------------------------------------------------

#[test]
fn dropout_is_deterministic_for_a_seed() {
    let x = randn(&[64, 33], 1);
    let a = x.dropout(0.4, Mode::Train, &mut rng(7)).unwrap();
    let b = x.dropout(0.4, Mode::Train, &mut rng(7)).unwrap();
    let c = x.dropout(0.4, Mode::Train, &mut rng(8)).unwrap();
    assert_eq!(f64s(&a), f64s(&b));
    assert_ne!(f64s(&a), f64s(&c));
}

#[test]
fn dropout_mask_follows_the_documented_draws() {
    // Element i is kept when the i-th `random::<f64>()` draw is < 1 − p.
    let (p, n) = (0.3, 1000);
    let x = Tensor::ones(&[10, 100], DType::F64).unwrap();
    let y = x.dropout(p, Mode::Train, &mut rng(3)).unwrap();
    let mut r = rng(3);
    let want: Vec<f64> = (0..n)
        .map(|_| {
            if r.random::<f64>() < 1.0 - p {
                1.0 / (1.0 - p)
            } else {
                0.0
            }
        })
        .collect();
    assert_eq!(f64s(&y), want);
}

#[test]
fn dropout_keep_rate_and_scaling() {
    let n = 400_000;
    let x = Tensor::rand(&[n], 0.5, 1.5, DType::F64, &mut rng(2)).unwrap();
    let xv = f64s(&x);
    for p in [0.1, 0.5, 0.8] {
        let y = f64s(&x.dropout(p, Mode::Train, &mut rng(11)).unwrap());
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        // 6 standard deviations of the binomial proportion (≤ 0.005).
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (kept - (1.0 - p)).abs() < 6.0 * sd,
            "p={p}: kept {kept}, expected {}",
            1.0 - p
        );
        // Survivors are scaled by exactly 1/(1 − p).
        let scale = 1.0 / (1.0 - p);
        for (i, (&yi, &xi)) in y.iter().zip(&xv).enumerate() {
            assert!(
                yi == 0.0 || yi == xi * scale,
                "p={p} element {i}: {yi} from {xi}"
            );
        }
        // The mean is preserved in expectation.
        let (my, mx) = (
            y.iter().sum::<f64>() / n as f64,
            xv.iter().sum::<f64>() / n as f64,
        );
        assert!((my - mx).abs() < 0.02, "p={p}: mean {my} vs {mx}");
    }
}

#[test]
fn dropout_identity_cases() {
    let x = randn(&[5, 4], 4).requires_grad_(true);
    for (p, training) in [(0.5, Mode::Eval), (1.0, Mode::Eval), (0.0, Mode::Train)] {
        let y = x.dropout(p, training, &mut rng(0)).unwrap();
        assert_eq!(f64s(&y), f64s(&x), "p={p} {training:?}");
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(f64s(g.get(&x).unwrap()), vec![1.0; 20]);
    }
    // p = 1 in training: zeros, still connected (zero gradient).
    let y = x.dropout(1.0, Mode::Train, &mut rng(0)).unwrap();
    assert_eq!(f64s(&y), vec![0.0; 20]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(f64s(g.get(&x).unwrap()), vec![0.0; 20]);
    // f32 keeps its dtype.
    let x32 = Tensor::ones(&[3, 3], DType::F32).unwrap();
    assert_eq!(
        x32.dropout(0.5, Mode::Train, &mut rng(1)).unwrap().dtype(),
        DType::F32
    );
}

#[test]
fn dropout_gradient_is_the_scaled_mask() {
    let p = 0.25;
    let x = randn(&[30, 20], 5).requires_grad_(true);
    let y = x.dropout(p, Mode::Train, &mut rng(9)).unwrap();
    let upstream = randn(&[30, 20], 6);
    let g = f64s(y.backward_with_grad(&upstream).unwrap().get(&x).unwrap());
    let (yv, xv, uv) = (f64s(&y), f64s(&x), f64s(&upstream));
    let mut dropped = 0;
    for i in 0..yv.len() {
        // The mask is read off the forward: kept where y ≠ 0 (x ≠ 0 here).
        let mask = if yv[i] != 0.0 { 1.0 / (1.0 - p) } else { 0.0 };
        assert_eq!(g[i], uv[i] * mask, "element {i} (x = {})", xv[i]);
        dropped += (mask == 0.0) as usize;
    }
    assert!(dropped > 0 && dropped < yv.len());
}

#[test]
fn dropout_gradcheck() {
    // A fresh generator with a fixed seed per call makes f deterministic.
    check_grad(
        "dropout p=0.3",
        |t| t[0].dropout(0.3, Mode::Train, &mut rng(5)),
        &[randn(&[6, 7], 7)],
    );
    check_grad(
        "dropout of a transposed view",
        |t| t[0].t()?.dropout(0.6, Mode::Train, &mut rng(6)),
        &[randn(&[4, 5], 8)],
    );
}

#[test]
fn dropout_errors() {
    let x = randn(&[3], 1);
    for p in [-0.1, 1.01, f64::NAN] {
        let e = err_of(x.dropout(p, Mode::Train, &mut rng(0)));
        assert!(e.contains("dropout") && e.contains("[0, 1]"), "{e}");
    }
    let xi = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    let e = err_of(xi.dropout(0.5, Mode::Train, &mut rng(0)));
    assert!(e.contains("dropout") && e.contains("I64"), "{e}");
}

// ----- linear ------------------------------------------------------------

/// `x·Wᵀ + b` by loops, for x given as rows of `in` values.
fn linear_ref(x: &[f64], w: &[f64], b: Option<&[f64]>, out: usize, inn: usize) -> Vec<f64> {
    let rows = x.len() / inn;
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut acc = b.map_or(0.0, |b| b[o]);
            for i in 0..inn {
                acc += x[r * inn + i] * w[o * inn + i];
            }
            y[r * out + o] = acc;
        }
    }
    y
}

#[test]
fn linear_forward_by_hand() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let w = Tensor::from_vec(vec![1.0f64, 0.0, -1.0, 0.5, 0.5, 0.5], &[2, 3]).unwrap();
    let b = Tensor::from_vec(vec![10.0f64, -1.0], &[2]).unwrap();
    // Row 0: 1 − 3 + 10 = 8, 0.5·6 − 1 = 2; row 1: 4 − 6 + 10 = 8, 0.5·15 − 1 = 6.5.
    let y = x.linear(&w, Some(&b)).unwrap();
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(f64s(&y), vec![8.0, 2.0, 8.0, 6.5]);
    let y = x.linear(&w, None).unwrap();
    assert_eq!(f64s(&y), vec![-2.0, 3.0, -2.0, 7.5]);
    // A 1-D input gives a 1-D output.
    let v = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap();
    let y = v.linear(&w, Some(&b)).unwrap();
    assert_eq!(y.shape(), &[2]);
    assert_eq!(f64s(&y), vec![8.0, 2.0]);
    // f32.
    let y = x
        .to_dtype(DType::F32)
        .unwrap()
        .linear(
            &w.to_dtype(DType::F32).unwrap(),
            Some(&b.to_dtype(DType::F32).unwrap()),
        )
        .unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![8.0, 2.0, 8.0, 6.5]);
}

#[test]
fn linear_batched_and_strided_inputs() {
    let (out, inn) = (5, 4);
    let w = randn(&[out, inn], 21);
    let b = randn(&[out], 22);
    let (wv, bv) = (f64s(&w), f64s(&b));
    // Contiguous 3-D and 4-D inputs (leading dims folded into rows).
    for shape in [&[2, 3, 4][..], &[2, 2, 3, 4]] {
        let x = randn(shape, 23);
        let y = x.linear(&w, Some(&b)).unwrap();
        let mut want_shape = shape.to_vec();
        *want_shape.last_mut().unwrap() = out;
        assert_eq!(y.shape(), want_shape.as_slice());
        assert_close(
            &format!("{shape:?}"),
            &f64s(&y),
            &linear_ref(&f64s(&x), &wv, Some(&bv), out, inn),
            1e-12,
            1e-12,
        );
    }
    // Leading dims that cannot be folded without a copy (batched product),
    // and a transposed last dim.
    let x = randn(&[3, 2, 4], 24).permute(&[1, 0, 2]).unwrap(); // [2, 3, 4]
    assert!(x.layout().reshape(&[6, 4]).is_none());
    let y = x.linear(&w, Some(&b)).unwrap();
    assert_eq!(y.shape(), &[2, 3, out]);
    assert_close(
        "permuted",
        &f64s(&y),
        &linear_ref(&f64s(&x), &wv, Some(&bv), out, inn),
        1e-12,
        1e-12,
    );
    let x = randn(&[2, 4, 3], 25).transpose(1, 2).unwrap(); // [2, 3, 4]
    let y = x.linear(&w, None).unwrap();
    assert_close(
        "transposed",
        &f64s(&y),
        &linear_ref(&f64s(&x), &wv, None, out, inn),
        1e-12,
        1e-12,
    );
    // A transposed weight view works too.
    let wt = randn(&[inn, out], 26).t().unwrap(); // (out, in), non-contiguous
    let x = randn(&[3, inn], 27);
    let y = x.linear(&wt, None).unwrap();
    assert_close(
        "weight view",
        &f64s(&y),
        &linear_ref(&f64s(&x), &f64s(&wt), None, out, inn),
        1e-12,
        1e-12,
    );
}

#[test]
fn linear_gradcheck() {
    let w = randn(&[3, 4], 31);
    let b = randn(&[3], 32);
    check_grad(
        "linear 2-D",
        |t| t[0].linear(&t[1], Some(&t[2])),
        &[randn(&[5, 4], 33), w.clone(), b.clone()],
    );
    check_grad(
        "linear 3-D",
        |t| t[0].linear(&t[1], Some(&t[2])),
        &[randn(&[2, 3, 4], 34), w.clone(), b.clone()],
    );
    check_grad(
        "linear 1-D, no bias",
        |t| t[0].linear(&t[1], None),
        &[randn(&[4], 35), w.clone()],
    );
    check_grad(
        "linear permuted (batched path)",
        |t| t[0].permute(&[1, 0, 2])?.linear(&t[1], Some(&t[2])),
        &[randn(&[3, 2, 4], 36), w.clone(), b.clone()],
    );
}

#[test]
fn linear_batched_gradients_by_hand() {
    // dW = Σ_rows dyᵀ·x, db = Σ_rows dy, dx = dy·W, checked by loops.
    let (out, inn) = (3, 4);
    let x = randn(&[2, 5, inn], 41).requires_grad_(true);
    let w = randn(&[out, inn], 42).requires_grad_(true);
    let b = randn(&[out], 43).requires_grad_(true);
    let dy = randn(&[2, 5, out], 44);
    let g = x
        .linear(&w, Some(&b))
        .unwrap()
        .backward_with_grad(&dy)
        .unwrap();
    let (xv, wv, dyv) = (f64s(&x), f64s(&w), f64s(&dy));
    let rows = 10;
    let mut dx = vec![0.0; rows * inn];
    let mut dw = vec![0.0; out * inn];
    let mut db = vec![0.0; out];
    for r in 0..rows {
        for o in 0..out {
            db[o] += dyv[r * out + o];
            for i in 0..inn {
                dx[r * inn + i] += dyv[r * out + o] * wv[o * inn + i];
                dw[o * inn + i] += dyv[r * out + o] * xv[r * inn + i];
            }
        }
    }
    assert_close("dx", &f64s(g.get(&x).unwrap()), &dx, 1e-12, 1e-12);
    assert_close("dw", &f64s(g.get(&w).unwrap()), &dw, 1e-12, 1e-12);
    assert_close("db", &f64s(g.get(&b).unwrap()), &db, 1e-12, 1e-12);
}

#[test]
fn linear_errors() {
    let x = randn(&[2, 3], 1);
    let e = err_of(x.linear(&randn(&[4, 5], 2), None));
    assert!(
        e.contains("linear") && e.contains("[2, 3]") && e.contains("[4, 5]"),
        "{e}"
    );
    let e = err_of(x.linear(&randn(&[3], 2), None));
    assert!(e.contains("[2, 3]") && e.contains("[3]"), "{e}");
    let e = err_of(Tensor::scalar(1.0f64).linear(&randn(&[4, 1], 2), None));
    assert!(e.contains("linear") && e.contains("[4, 1]"), "{e}");
    let e = err_of(x.linear(&randn(&[4, 3], 2), Some(&randn(&[3], 3))));
    assert!(
        e.contains("bias") && e.contains("[4, 3]") && e.contains("[3]"),
        "{e}"
    );
    let e = err_of(x.linear(&Tensor::ones(&[4, 3], DType::F32).unwrap(), None));
    assert!(e.contains("dtype mismatch"), "{e}");
    let xi = Tensor::from_vec(vec![1i64, 2], &[1, 2]).unwrap();
    let wi = Tensor::from_vec(vec![1i64, 2], &[1, 2]).unwrap();
    let e = err_of(xi.linear(&wi, None));
    assert!(e.contains("I64"), "{e}");
}

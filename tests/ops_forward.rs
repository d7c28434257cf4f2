//! Forward values of every op family against hand-computed results or an
//! independent naive reference (plain loops over f64 written in this file).
//!
//! Large cases (2^20-element reductions, a 300x200x250 matmul, a transposed
//! 512x512 add) exercise the parallel and strided kernel paths.

mod common;
use common::rng;
use ferrite::ops::CmpOp;
use ferrite::KeepDim;
use ferrite::{DType, Tensor};
use half::{bf16, f16};

// ----- helpers -----------------------------------------------------------

fn t32(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Reference NumPy broadcast of two shapes.
fn ref_broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            assert!(
                da == db || da == 1 || db == 1,
                "test shapes do not broadcast"
            );
            if da == 1 {
                db
            } else {
                da
            }
        })
        .collect()
}

/// Linear index into `shape` of the element that output index `out_idx`
/// (of a broadcast result) reads.
fn bcast_source(out_idx: &[usize], shape: &[usize]) -> usize {
    let lead = out_idx.len() - shape.len();
    let idx: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { out_idx[lead + i] })
        .collect();
    ravel(&idx, shape)
}

fn ref_binary(
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<f64>, Vec<usize>) {
    let shape = ref_broadcast_shape(sa, sb);
    let out = (0..numel(&shape))
        .map(|i| {
            let idx = unravel(i, &shape);
            f(a[bcast_source(&idx, sa)], b[bcast_source(&idx, sb)])
        })
        .collect();
    (out, shape)
}

/// Groups the elements of a row-major tensor by their kept coordinates; each
/// group lists the reduced elements in row-major order.
fn ref_groups(data: &[f64], shape: &[usize], dims: &[usize]) -> Vec<Vec<f64>> {
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !dims.contains(d)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
    let mut groups = vec![Vec::new(); numel(&kept_shape)];
    for (i, &v) in data.iter().enumerate() {
        let idx = unravel(i, shape);
        let k: Vec<usize> = kept.iter().map(|&d| idx[d]).collect();
        groups[ravel(&k, &kept_shape)].push(v);
    }
    groups
}

fn ref_reduce(
    data: &[f64],
    shape: &[usize],
    dims: &[usize],
    f: impl Fn(&[f64]) -> f64,
) -> Vec<f64> {
    ref_groups(data, shape, dims).iter().map(|g| f(g)).collect()
}

/// `out[i_0..] = x[i_{perm^-1}..]`: the row-major data of `x.permute(perm)`.
fn ref_permute(data: &[f64], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    (0..data.len())
        .map(|i| {
            let o = unravel(i, &out_shape);
            let mut src = vec![0; shape.len()];
            for (k, &p) in perm.iter().enumerate() {
                src[p] = o[k];
            }
            data[ravel(&src, shape)]
        })
        .collect()
}

/// Naive `[m, k] x [k, n]` in f64.
fn ref_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// Elementwise `|got - want| <= atol + rtol * |want|`; equal values
/// (including infinities) and NaN against NaN also match.
#[track_caller]
fn assert_close(name: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g == w || (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{name}: element {i}: got {g}, expected {w}");
    }
}

fn assert_all_finite(name: &str, v: &[f64]) {
    for (i, x) in v.iter().enumerate() {
        assert!(x.is_finite(), "{name}: element {i} is {x}");
    }
}

// ----- creation ----------------------------------------------------------

#[test]
fn constant_fills() {
    let z = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    assert_eq!(z.shape(), &[2, 3]);
    assert_eq!(z.dtype(), DType::F32);
    assert_eq!(z.to_vec::<f32>().unwrap(), vec![0.0; 6]);
    assert!(z.is_contiguous());

    let o = Tensor::ones(&[4], DType::I64).unwrap();
    assert_eq!(o.to_vec::<i64>().unwrap(), vec![1; 4]);

    let f = Tensor::full(&[2, 2], 2.5, DType::BF16).unwrap();
    assert_eq!(f.dtype(), DType::BF16);
    assert_eq!(f.to_vec::<bf16>().unwrap(), vec![bf16::from_f32(2.5); 4]);
    let h = Tensor::full(&[3], -1.5, DType::F16).unwrap();
    assert_eq!(h.to_vec::<f16>().unwrap(), vec![f16::from_f32(-1.5); 3]);
    let u = Tensor::full(&[2], 7.0, DType::U8).unwrap();
    assert_eq!(u.to_vec::<u8>().unwrap(), vec![7, 7]);

    let empty = Tensor::zeros(&[0, 3], DType::F64).unwrap();
    assert_eq!(empty.shape(), &[0, 3]);
    assert_eq!(empty.numel(), 0);
    assert!(empty.to_vec::<f64>().unwrap().is_empty());

    let s = Tensor::full(&[], 4.0, DType::F64).unwrap();
    assert_eq!(s.ndim(), 0);
    assert_eq!(s.to_scalar::<f64>().unwrap(), 4.0);
    let s2 = Tensor::scalar(7i64);
    assert_eq!((s2.shape(), s2.dtype()), (&[] as &[usize], DType::I64));

    let base = t64(&[1.0, 2.0, 3.0], &[3]);
    assert_eq!(f64s(&base.zeros_like().unwrap()), vec![0.0; 3]);
    assert_eq!(f64s(&base.ones_like().unwrap()), vec![1.0; 3]);
    let fl = base.full_like(-0.25).unwrap();
    assert_eq!((fl.dtype(), f64s(&fl)), (DType::F64, vec![-0.25; 3]));
}

#[test]
fn arange_eye_from_vec() {
    let a = Tensor::arange(0.0, 5.0, 1.0, DType::I64).unwrap();
    assert_eq!(a.to_vec::<i64>().unwrap(), vec![0, 1, 2, 3, 4]);
    let b = Tensor::arange(0.0, 1.0, 0.25, DType::F32).unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![0.0, 0.25, 0.5, 0.75]);
    let c = Tensor::arange(5.0, 0.0, -2.0, DType::F64).unwrap();
    assert_eq!(c.to_vec::<f64>().unwrap(), vec![5.0, 3.0, 1.0]);
    // A non-integral count rounds up: 0, 0.3, 0.6, 0.9.
    let d = Tensor::arange(0.0, 1.0, 0.3, DType::F64).unwrap();
    assert_eq!(d.shape(), &[4]);
    assert_close("arange 0.3", &f64s(&d), &[0.0, 0.3, 0.6, 0.9], 1e-12, 0.0);
    assert_eq!(
        Tensor::arange(0.0, 1.0, 0.1, DType::F64).unwrap().shape(),
        &[10]
    );
    assert_eq!(
        Tensor::arange(3.0, 3.0, 1.0, DType::F32).unwrap().shape(),
        &[0]
    );
    assert_eq!(
        Tensor::arange(2.0, 0.0, 1.0, DType::F32).unwrap().shape(),
        &[0]
    );

    let e = Tensor::eye(3, DType::F32).unwrap();
    assert_eq!(
        e.to_vec2::<f32>().unwrap(),
        vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 1.0]
        ]
    );
    assert_eq!(Tensor::eye(0, DType::F64).unwrap().shape(), &[0, 0]);

    let v = Tensor::from_vec(vec![1u8, 2, 3, 4, 5, 6], &[3, 2]).unwrap();
    assert_eq!(v.dtype(), DType::U8);
    assert_eq!(
        v.to_vec2::<u8>().unwrap(),
        vec![vec![1, 2], vec![3, 4], vec![5, 6]]
    );
    let w = Tensor::from_slice(&[1i64, -2], &[2, 1]).unwrap();
    assert_eq!(w.to_vec2::<i64>().unwrap(), vec![vec![1], vec![-2]]);
}

#[test]
fn rand_is_deterministic_and_in_range() {
    let n = 100_000;
    let a = Tensor::rand(&[n], -2.0, 3.0, DType::F32, &mut rng(7)).unwrap();
    let b = Tensor::rand(&[n], -2.0, 3.0, DType::F32, &mut rng(7)).unwrap();
    let c = Tensor::rand(&[n], -2.0, 3.0, DType::F32, &mut rng(8)).unwrap();
    let (va, vb, vc) = (f64s(&a), f64s(&b), f64s(&c));
    assert_eq!(va, vb, "same seed, same draws");
    assert_ne!(va, vc, "different seeds, different draws");
    assert!(va.iter().all(|&x| (-2.0..3.0).contains(&x)));
    let mean = va.iter().sum::<f64>() / n as f64;
    // Uniform on [-2, 3): mean 0.5, std 5/sqrt(12) ≈ 1.44, so se ≈ 0.005.
    assert!((mean - 0.5).abs() < 0.03, "mean {mean}");
    let var = va.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    assert!((var - 25.0 / 12.0).abs() < 0.05, "var {var}");
    // Both halves of the range are populated.
    assert!(va.iter().any(|&x| x < -1.9) && va.iter().any(|&x| x > 2.9));
}

#[test]
fn randn_moments_and_determinism() {
    let n = 100_000;
    let x = Tensor::randn(&[n], 0.0, 1.0, DType::F32, &mut rng(11)).unwrap();
    let y = Tensor::randn(&[n], 0.0, 1.0, DType::F32, &mut rng(11)).unwrap();
    let v = f64s(&x);
    assert_eq!(v, f64s(&y));
    assert_all_finite("randn", &v);
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = (v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((std - 1.0).abs() < 0.02, "std {std}");
    // About 68.3% within one standard deviation.
    let within = v.iter().filter(|a| a.abs() < 1.0).count() as f64 / n as f64;
    assert!((within - 0.6827).abs() < 0.01, "within 1 sd: {within}");

    let z = Tensor::randn(&[n], 3.0, 2.0, DType::F64, &mut rng(12)).unwrap();
    let v = f64s(&z);
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = (v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    assert!((mean - 3.0).abs() < 0.04, "mean {mean}");
    assert!((std - 2.0).abs() < 0.04, "std {std}");

    // Odd sizes and half dtypes work.
    let odd = Tensor::randn(&[5], 0.0, 1.0, DType::BF16, &mut rng(1)).unwrap();
    assert_eq!((odd.shape(), odd.dtype()), (&[5][..], DType::BF16));
    assert_ne!(
        f64s(&Tensor::randn(&[8], 0.0, 1.0, DType::F64, &mut rng(1)).unwrap()),
        f64s(&Tensor::randn(&[8], 0.0, 1.0, DType::F64, &mut rng(2)).unwrap())
    );
}

#[test]
fn bernoulli_frequencies() {
    let n = 100_000;
    let p = Tensor::full(&[n], 0.3, DType::F32).unwrap();
    let a = p.bernoulli(&mut rng(3)).unwrap();
    let b = p.bernoulli(&mut rng(3)).unwrap();
    assert_eq!((a.shape(), a.dtype()), (&[n][..], DType::F32));
    let v = f64s(&a);
    assert_eq!(v, f64s(&b));
    assert!(v.iter().all(|&x| x == 0.0 || x == 1.0));
    let freq = v.iter().sum::<f64>() / n as f64;
    assert!((freq - 0.3).abs() < 0.01, "frequency {freq}");
    assert_ne!(v, f64s(&p.bernoulli(&mut rng(4)).unwrap()));

    let edges = t64(&[0.0, 1.0, 0.0, 1.0, 1.0], &[5]);
    for seed in 0..5 {
        assert_eq!(
            f64s(&edges.bernoulli(&mut rng(seed)).unwrap()),
            vec![0.0, 1.0, 0.0, 1.0, 1.0]
        );
    }
}

// ----- unary -------------------------------------------------------------

#[test]
fn unary_hand_values_f64() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let x = t64(&[-2.0, -0.5, 0.0, 0.5, 3.0], &[5]);
    assert_eq!(f64s(&x.neg().unwrap()), vec![2.0, 0.5, 0.0, -0.5, -3.0]);
    assert_eq!(f64s(&x.abs().unwrap()), vec![2.0, 0.5, 0.0, 0.5, 3.0]);
    assert_eq!(f64s(&x.sign().unwrap()), vec![-1.0, -1.0, 0.0, 1.0, 1.0]);
    assert_eq!(f64s(&x.relu().unwrap()), vec![0.0, 0.0, 0.0, 0.5, 3.0]);
    assert_eq!(
        f64s(&x.clamp(-1.0, 1.0).unwrap()),
        vec![-1.0, -0.5, 0.0, 0.5, 1.0]
    );
    assert_eq!(
        f64s(&x.clamp(0.0, f64::INFINITY).unwrap()),
        vec![0.0, 0.0, 0.0, 0.5, 3.0]
    );
    assert_eq!(
        f64s(&x.clamp(f64::NEG_INFINITY, 0.25).unwrap()),
        vec![-2.0, -0.5, 0.0, 0.25, 0.25]
    );

    let e = std::f64::consts::E;
    let l3 = 3.0f64.ln();
    let y = t64(&[0.0, 1.0, -1.0, l3], &[4]);
    assert_close(
        "exp",
        &f64s(&y.exp().unwrap()),
        &[1.0, e, 1.0 / e, 3.0],
        0.0,
        1e-15,
    );
    assert_close(
        "sigmoid",
        &f64s(&y.sigmoid().unwrap()),
        &[0.5, 1.0 / (1.0 + 1.0 / e), 1.0 / (1.0 + e), 0.75],
        1e-16,
        1e-15,
    );
    assert_close(
        "softplus",
        &f64s(&y.softplus().unwrap()),
        &[2f64.ln(), (1.0 + e).ln(), (1.0 + 1.0 / e).ln(), 4f64.ln()],
        0.0,
        1e-15,
    );
    // tanh(ln 2) = (4 - 1) / (4 + 1).
    let th = t64(&[0.0, 2f64.ln(), -(2f64.ln())], &[3]).tanh().unwrap();
    assert_close("tanh", &f64s(&th), &[0.0, 0.6, -0.6], 1e-16, 1e-15);

    let p = t64(&[1.0, e, 4.0, 0.25, 0.0, -1.0], &[6]);
    assert_close(
        "log",
        &f64s(&p.log().unwrap()),
        &[0.0, 1.0, 4f64.ln(), -(4f64.ln()), f64::NEG_INFINITY, nan],
        1e-16,
        1e-15,
    );
    assert_close(
        "sqrt",
        &f64s(&p.sqrt().unwrap()),
        &[1.0, e.sqrt(), 2.0, 0.5, 0.0, nan],
        0.0,
        1e-15,
    );
    assert_close(
        "rsqrt",
        &f64s(&p.rsqrt().unwrap()),
        &[1.0, 1.0 / e.sqrt(), 0.5, 2.0, inf, nan],
        0.0,
        1e-15,
    );

    // Φ(1) = 0.8413447460685429, Φ(2) = 0.9772498680518208.
    let g = t64(&[0.0, 1.0, -1.0, 2.0, -2.0], &[5]).gelu().unwrap();
    assert_close(
        "gelu",
        &f64s(&g),
        &[
            0.0,
            0.8413447460685429,
            -0.15865525393145707,
            1.9544997361036416,
            -0.0455002638963584,
        ],
        1e-15,
        1e-13,
    );

    let q = t64(&[4.0, 9.0, 2.0, 0.0, -8.0], &[5]);
    assert_close(
        "powf 0.5",
        &f64s(&q.powf(0.5).unwrap()),
        &[2.0, 3.0, 2f64.sqrt(), 0.0, nan],
        0.0,
        1e-15,
    );
    assert_close(
        "powf -1",
        &f64s(&q.powf(-1.0).unwrap()),
        &[0.25, 1.0 / 9.0, 0.5, inf, -0.125],
        0.0,
        1e-15,
    );
    assert_eq!(
        f64s(&q.powf(3.0).unwrap()),
        vec![64.0, 729.0, 8.0, 0.0, -512.0]
    );
    assert_eq!(f64s(&q.square().unwrap()), vec![16.0, 81.0, 4.0, 0.0, 64.0]);
}

#[test]
fn unary_extremes_stay_finite_f32() {
    let x = t32(&[-1000.0, -100.0, -20.5, 0.0, 20.5, 100.0, 1000.0], &[7]);
    let sig = f64s(&x.sigmoid().unwrap());
    assert_all_finite("sigmoid", &sig);
    assert_eq!(sig[0], 0.0, "sigmoid(-1000)");
    assert_eq!(sig[3], 0.5);
    assert_eq!(sig[6], 1.0, "sigmoid(1000)");
    assert!(sig.windows(2).all(|w| w[0] <= w[1]), "sigmoid monotone");

    let sp = f64s(&x.softplus().unwrap());
    assert_all_finite("softplus", &sp);
    assert_eq!(sp[6], 1000.0, "softplus(1000)");
    assert_eq!(sp[5], 100.0);
    assert_eq!(sp[0], 0.0, "softplus(-1000)");
    assert!((sp[3] - 2f64.ln()).abs() < 1e-7);
    assert!((sp[4] - 20.5).abs() < 1e-5);

    let th = f64s(&x.tanh().unwrap());
    assert_eq!((th[0], th[6]), (-1.0, 1.0));
    let ex = f64s(&t32(&[-1000.0, 0.0, 1000.0], &[3]).exp().unwrap());
    assert_eq!(ex, vec![0.0, 1.0, f64::INFINITY]);

    let ge = f64s(&x.gelu().unwrap());
    assert_all_finite("gelu", &ge);
    assert_eq!((ge[0], ge[6]), (0.0, 1000.0));
}

#[test]
fn unary_f32_and_half_match_f64() {
    let vals = [-3.0, -1.25, -0.1, 0.1, 0.7, 2.5];
    let x64 = t64(&vals, &[2, 3]);
    let x32 = x64.to_dtype(DType::F32).unwrap();
    type Op = fn(&Tensor) -> ferrite::Result<Tensor>;
    let ops: [(&str, Op); 9] = [
        ("exp", |t| t.exp()),
        ("abs", |t| t.abs()),
        ("sigmoid", |t| t.sigmoid()),
        ("tanh", |t| t.tanh()),
        ("gelu", |t| t.gelu()),
        ("softplus", |t| t.softplus()),
        ("relu", |t| t.relu()),
        ("square", |t| t.square()),
        ("affine", |t| t.affine(2.0, -1.0)),
    ];
    for (name, op) in ops {
        let want = f64s(&op(&x64).unwrap());
        let got = op(&x32).unwrap();
        assert_eq!(got.dtype(), DType::F32, "{name}");
        assert_close(name, &f64s(&got), &want, 1e-6, 1e-6);
    }
    // BF16 is computed in f32 and rounded: e = 2.71828 rounds to 2.71875.
    let h = Tensor::from_vec(vec![bf16::from_f32(0.0), bf16::from_f32(1.0)], &[2]).unwrap();
    let eh = h.exp().unwrap();
    assert_eq!(eh.dtype(), DType::BF16);
    assert_eq!(f64s(&eh), vec![1.0, 2.71875]);
    let f = Tensor::from_vec(vec![f16::from_f32(1.0)], &[1]).unwrap();
    // e in f16: 10 mantissa bits, ulp 2^-9 at 2: 2.71828 -> 2.71875.
    assert_eq!(f64s(&f.exp().unwrap()), vec![2.71875]);
}

// ----- binary ------------------------------------------------------------

fn seq(n: usize, scale: f64, shift: f64) -> Vec<f64> {
    (0..n)
        .map(|i| (i as f64 * 0.37).sin() * scale + shift)
        .collect()
}

#[test]
fn binary_broadcasting_against_reference() {
    let cases: [(&[usize], &[usize]); 7] = [
        (&[2, 3], &[2, 3]),
        (&[2, 3], &[3]),
        (&[2, 1], &[1, 3]),
        (&[], &[2, 2]),
        (&[2, 1, 3], &[4, 1]),
        (&[3, 1], &[3]),
        (&[1], &[0, 2]),
    ];
    type Pair = (
        &'static str,
        fn(&Tensor, &Tensor) -> ferrite::Result<Tensor>,
        fn(f64, f64) -> f64,
    );
    let ops: [Pair; 7] = [
        ("add", |a, b| a.add(b), |x, y| x + y),
        ("sub", |a, b| a.sub(b), |x, y| x - y),
        ("mul", |a, b| a.mul(b), |x, y| x * y),
        ("div", |a, b| a.div(b), |x, y| x / y),
        ("pow", |a, b| a.pow(b), f64::powf),
        ("maximum", |a, b| a.maximum(b), f64::max),
        ("minimum", |a, b| a.minimum(b), f64::min),
    ];
    for (sa, sb) in cases {
        // Positive lhs so that pow is real.
        let va = seq(numel(sa), 1.0, 2.0);
        let vb = seq(numel(sb) + 3, 1.5, 0.2)[3..].to_vec();
        for dtype in [DType::F64, DType::F32] {
            let a = t64(&va, sa).to_dtype(dtype).unwrap();
            let b = t64(&vb, sb).to_dtype(dtype).unwrap();
            let (ra, rb) = (f64s(&a), f64s(&b));
            for (name, op, f) in ops {
                let (want, shape) = ref_binary(&ra, sa, &rb, sb, f);
                let got = op(&a, &b).unwrap();
                assert_eq!(got.shape(), shape.as_slice(), "{name} {sa:?} {sb:?}");
                assert_eq!(got.dtype(), dtype);
                let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
                assert_close(
                    &format!("{name} {sa:?} {sb:?} {dtype:?}"),
                    &f64s(&got),
                    &want,
                    tol,
                    tol,
                );
                // Swapped operands broadcast the same way.
                let (want, _) = ref_binary(&rb, sb, &ra, sa, f);
                let got = op(&b, &a).unwrap();
                assert_close(&format!("{name} swapped"), &f64s(&got), &want, tol, tol);
            }
        }
    }
}

#[test]
fn binary_hand_values() {
    let a = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let r = t32(&[10.0, 20.0, 30.0], &[3]);
    assert_eq!(
        a.add(&r).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![11.0, 22.0, 33.0], vec![14.0, 25.0, 36.0]]
    );
    let c = t32(&[1.0, -1.0], &[2, 1]);
    assert_eq!(
        a.mul(&c).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 3.0], vec![-4.0, -5.0, -6.0]]
    );
    let two = Tensor::full(&[], 2.0, DType::F32).unwrap();
    assert_eq!(
        a.pow(&two).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 4.0, 9.0, 16.0, 25.0, 36.0]
    );
    assert_eq!(
        two.div(&t32(&[4.0, 0.0, -0.5], &[3]))
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![0.5, f32::INFINITY, -4.0]
    );
    // A transposed (non-contiguous) operand.
    let at = a.t().unwrap();
    let s = at.sub(&t32(&[1.0, 1.0], &[2])).unwrap();
    assert_eq!(
        s.to_vec2::<f32>().unwrap(),
        vec![vec![0.0, 3.0], vec![1.0, 4.0], vec![2.0, 5.0]]
    );
    // NaN propagates through maximum and minimum from either side.
    let n = t64(&[f64::NAN, 1.0, 5.0], &[3]);
    let m = t64(&[2.0, f64::NAN, 3.0], &[3]);
    let mx = f64s(&n.maximum(&m).unwrap());
    let mn = f64s(&n.minimum(&m).unwrap());
    assert!(mx[0].is_nan() && mx[1].is_nan() && mx[2] == 5.0, "{mx:?}");
    assert!(mn[0].is_nan() && mn[1].is_nan() && mn[2] == 3.0, "{mn:?}");
    // BF16 adds in f32 and rounds to nearest even: 1 + 2^-8 is a tie -> 1.
    let h = |v: &[f32]| {
        Tensor::from_vec(v.iter().map(|&x| bf16::from_f32(x)).collect(), &[v.len()]).unwrap()
    };
    let sum = h(&[1.0, 2.0, 1.0])
        .add(&h(&[0.00390625, 0.5, 0.01171875]))
        .unwrap();
    assert_eq!(sum.dtype(), DType::BF16);
    assert_eq!(f64s(&sum), vec![1.0, 2.5, 1.015625]);
}

#[test]
fn scalar_forms() {
    let x = t64(&[-2.0, 0.0, 1.5, 8.0], &[2, 2]);
    assert_eq!(f64s(&x.add_scalar(2.5).unwrap()), vec![0.5, 2.5, 4.0, 10.5]);
    assert_eq!(
        f64s(&x.sub_scalar(1.0).unwrap()),
        vec![-3.0, -1.0, 0.5, 7.0]
    );
    assert_eq!(
        f64s(&x.mul_scalar(-3.0).unwrap()),
        vec![6.0, 0.0, -4.5, -24.0]
    );
    assert_eq!(
        f64s(&x.div_scalar(4.0).unwrap()),
        vec![-0.5, 0.0, 0.375, 2.0]
    );
    assert_close(
        "div_scalar 3",
        &f64s(&x.div_scalar(3.0).unwrap()),
        &[-2.0 / 3.0, 0.0, 0.5, 8.0 / 3.0],
        0.0,
        1e-15,
    );
    assert_eq!(
        f64s(&x.affine(2.0, 1.0).unwrap()),
        vec![-3.0, 1.0, 4.0, 17.0]
    );
    let y = x.to_dtype(DType::F32).unwrap().add_scalar(0.5).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(f64s(&y), vec![-1.5, 0.5, 2.0, 8.5]);
}

// ----- comparisons, where ------------------------------------------------

#[test]
fn comparisons_produce_u8_masks() {
    let a = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = t32(&[2.0, 2.0, 5.0], &[3]);
    let ra = f64s(&a);
    let rb = f64s(&b);
    type Cmp = (CmpOp, fn(f64, f64) -> bool);
    let ops: [Cmp; 6] = [
        (CmpOp::Eq, |x, y| x == y),
        (CmpOp::Ne, |x, y| x != y),
        (CmpOp::Lt, |x, y| x < y),
        (CmpOp::Le, |x, y| x <= y),
        (CmpOp::Gt, |x, y| x > y),
        (CmpOp::Ge, |x, y| x >= y),
    ];
    for (op, f) in ops {
        let m = a.compare(op, &b).unwrap();
        assert_eq!(m.dtype(), DType::U8);
        assert_eq!(m.shape(), &[2, 3]);
        let (want, _) = ref_binary(&ra, &[2, 3], &rb, &[3], |x, y| f(x, y) as u8 as f64);
        assert_eq!(f64s(&m), want, "{op:?}");
    }
    // The named methods.
    assert_eq!(
        a.eq(&b).unwrap().to_vec::<u8>().unwrap(),
        vec![0, 1, 0, 0, 0, 0]
    );
    assert_eq!(
        a.ne(&b).unwrap().to_vec::<u8>().unwrap(),
        vec![1, 0, 1, 1, 1, 1]
    );
    assert_eq!(
        a.lt(&b).unwrap().to_vec::<u8>().unwrap(),
        vec![1, 0, 1, 0, 0, 0]
    );
    assert_eq!(
        a.le(&b).unwrap().to_vec::<u8>().unwrap(),
        vec![1, 1, 1, 0, 0, 0]
    );
    assert_eq!(
        a.gt(&b).unwrap().to_vec::<u8>().unwrap(),
        vec![0, 0, 0, 1, 1, 1]
    );
    assert_eq!(
        a.ge(&b).unwrap().to_vec::<u8>().unwrap(),
        vec![0, 1, 0, 1, 1, 1]
    );
    // Integers, broadcasting a column.
    let i = Tensor::from_vec(vec![1i64, 5, 9], &[3]).unwrap();
    let j = Tensor::from_vec(vec![5i64, 9], &[2, 1]).unwrap();
    assert_eq!(
        i.ge(&j).unwrap().to_vec2::<u8>().unwrap(),
        vec![vec![0, 1, 1], vec![0, 0, 1]]
    );
    // NaN compares unequal to everything.
    let n = t64(&[f64::NAN, 1.0], &[2]);
    assert_eq!(n.eq(&n).unwrap().to_vec::<u8>().unwrap(), vec![0, 1]);
    assert_eq!(n.ne(&n).unwrap().to_vec::<u8>().unwrap(), vec![1, 0]);
    assert_eq!(n.le(&n).unwrap().to_vec::<u8>().unwrap(), vec![0, 1]);
    assert_eq!(
        a.compare_scalar(CmpOp::Gt, 3.5)
            .unwrap()
            .to_vec::<u8>()
            .unwrap(),
        vec![0, 0, 0, 1, 1, 1]
    );
}

#[test]
fn where_and_masked_fill() {
    let cond = Tensor::from_vec(vec![1u8, 0, 1], &[3]).unwrap();
    let on_true = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let on_false = Tensor::full(&[], -1.0, DType::F32).unwrap();
    let w = cond.where_cond(&on_true, &on_false).unwrap();
    assert_eq!(
        w.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, -1.0, 3.0], vec![4.0, -1.0, 6.0]]
    );
    // A float condition: nonzero (including negative and NaN) is true.
    let fc = t64(&[0.0, -0.5, f64::NAN, 2.0], &[4]);
    let a = t64(&[1.0, 2.0, 3.0, 4.0], &[4]);
    let b = t64(&[10.0, 20.0, 30.0, 40.0], &[4]);
    assert_eq!(
        f64s(&fc.where_cond(&a, &b).unwrap()),
        vec![10.0, 2.0, 3.0, 4.0]
    );
    // Condition broadcast along rows.
    let col = Tensor::from_vec(vec![0u8, 1], &[2, 1]).unwrap();
    assert_eq!(
        col.where_cond(&on_true, &on_false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![vec![-1.0, -1.0, -1.0], vec![4.0, 5.0, 6.0]]
    );
    let m = on_true.masked_fill(&cond, 0.5).unwrap();
    assert_eq!(
        m.to_vec2::<f32>().unwrap(),
        vec![vec![0.5, 2.0, 0.5], vec![0.5, 5.0, 0.5]]
    );
    let gt = on_true.compare_scalar(CmpOp::Gt, 4.0).unwrap();
    assert_eq!(
        f64s(&on_true.masked_fill(&gt, f64::NEG_INFINITY).unwrap()),
        vec![1.0, 2.0, 3.0, 4.0, f64::NEG_INFINITY, f64::NEG_INFINITY]
    );
    let ints = Tensor::from_vec(vec![1i64, 2, 3], &[3]).unwrap();
    assert_eq!(
        ints.masked_fill(&cond, 9.0)
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![9, 2, 9]
    );
}

// ----- reductions --------------------------------------------------------

fn ref_var(g: &[f64], correction: usize) -> f64 {
    let n = g.len() as f64;
    let m = g.iter().sum::<f64>() / n;
    g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - correction as f64)
}

fn ref_lse(g: &[f64]) -> f64 {
    g.iter().map(|x| x.exp()).sum::<f64>().ln()
}

fn reduced_shape(shape: &[usize], dims: &[usize], keep: bool) -> Vec<usize> {
    (0..shape.len())
        .filter_map(|d| match (dims.contains(&d), keep) {
            (false, _) => Some(shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// Checks every float reduction of `x` (whose row-major data is `data`)
/// over every dim set, against the reference.
fn check_reductions(x: &Tensor, data: &[f64], tol: f64) {
    let shape = x.shape().to_vec();
    let dim_sets: [&[isize]; 9] = [
        &[],
        &[0],
        &[1],
        &[2],
        &[-1],
        &[0, 2],
        &[2, 1],
        &[-3, -1],
        &[0, 1, 2],
    ];
    for dims in dim_sets {
        let norm: Vec<usize> = dims
            .iter()
            .map(|&d| if d < 0 { (d + 3) as usize } else { d as usize })
            .collect();
        for keep in [false, true] {
            let kd = if keep { KeepDim::Yes } else { KeepDim::No };
            let want_shape = reduced_shape(&shape, &norm, keep);
            let ctx = format!("dims {dims:?} keepdim {keep} {:?}", x.dtype());
            type Run = fn(&Tensor, &[isize], KeepDim) -> ferrite::Result<Tensor>;
            type Red = (&'static str, Run, fn(&[f64]) -> f64);
            let reds: [Red; 5] = [
                ("sum", |x, d, k| x.sum(d, k), |g| g.iter().sum()),
                (
                    "mean",
                    |x, d, k| x.mean(d, k),
                    |g| g.iter().sum::<f64>() / g.len() as f64,
                ),
                (
                    "max",
                    |x, d, k| x.max(d, k),
                    |g| g.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                ),
                (
                    "min",
                    |x, d, k| x.min(d, k),
                    |g| g.iter().cloned().fold(f64::INFINITY, f64::min),
                ),
                ("logsumexp", |x, d, k| x.logsumexp(d, k), ref_lse),
            ];
            for (name, run, f) in reds {
                let got = run(x, dims, kd).unwrap();
                assert_eq!(got.shape(), want_shape.as_slice(), "{name} {ctx}");
                assert_eq!(got.dtype(), x.dtype(), "{name} {ctx}");
                let want = ref_reduce(data, &shape, &norm, f);
                assert_close(&format!("{name} {ctx}"), &f64s(&got), &want, tol, tol);
            }
            if !norm.is_empty() {
                for correction in [0usize, 1] {
                    let got = x.var(dims, correction, kd).unwrap();
                    assert_eq!(got.shape(), want_shape.as_slice());
                    let want = ref_reduce(data, &shape, &norm, |g| ref_var(g, correction));
                    assert_close(&format!("var {ctx}"), &f64s(&got), &want, tol, tol);
                }
            }
        }
    }
    for dim in 0..3usize {
        for keep in [false, true] {
            let kd = if keep { KeepDim::Yes } else { KeepDim::No };
            for (max, name) in [(true, "argmax"), (false, "argmin")] {
                let got = if max {
                    x.argmax(dim as isize, kd).unwrap()
                } else {
                    x.argmin(dim as isize, kd).unwrap()
                };
                assert_eq!(got.dtype(), DType::I64);
                assert_eq!(got.shape(), reduced_shape(&shape, &[dim], keep).as_slice());
                let want = ref_reduce(data, &shape, &[dim], |g| {
                    let mut best = 0;
                    for (i, &v) in g.iter().enumerate() {
                        if (max && v > g[best]) || (!max && v < g[best]) {
                            best = i;
                        }
                    }
                    best as f64
                });
                assert_eq!(f64s(&got), want, "{name} dim {dim} keep {keep}");
            }
        }
    }
}

fn reduction_data() -> Vec<f64> {
    // Distinct values in a scrambled order: 7 is invertible mod 24.
    (0..24)
        .map(|i| ((i * 7) % 24) as f64 * 0.5 - 5.75)
        .collect()
}

#[test]
fn reductions_over_dim_sets() {
    let data = reduction_data();
    let x = t64(&data, &[2, 3, 4]);
    check_reductions(&x, &data, 1e-12);
    check_reductions(&x.to_dtype(DType::F32).unwrap(), &data, 1e-5);
    // Values are multiples of 0.25 below 8: exact in bf16 for the max/min.
    let h = x.to_dtype(DType::BF16).unwrap();
    assert_eq!(h.max(&[1], KeepDim::No).unwrap().dtype(), DType::BF16);
    assert_eq!(
        f64s(&h.max(&[0, 1], KeepDim::No).unwrap()),
        ref_reduce(&data, &[2, 3, 4], &[0, 1], |g| g
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max))
    );
}

#[test]
fn reductions_of_permuted_input() {
    let data = reduction_data();
    let x = t64(&data, &[2, 3, 4]);
    // [4, 2, 3] view with strides [1, 12, 4]: every reduction copies or
    // walks a non-contiguous layout.
    let p = x.permute(&[2, 0, 1]).unwrap();
    assert!(!p.is_contiguous());
    let pdata = ref_permute(&data, &[2, 3, 4], &[2, 0, 1]);
    check_reductions(&p, &pdata, 1e-12);
    // A narrowed view with an offset.
    let n = x.narrow(2, 1, 2).unwrap();
    let ndata: Vec<f64> = (0..12)
        .map(|i| {
            let idx = unravel(i, &[2, 3, 2]);
            data[ravel(&[idx[0], idx[1], idx[2] + 1], &[2, 3, 4])]
        })
        .collect();
    check_reductions(&n, &ndata, 1e-12);
}

#[test]
fn reduction_special_values() {
    let big = t64(&[1000.0, 1000.0], &[2]);
    let lse = big.logsumexp(&[0], KeepDim::No).unwrap();
    assert_eq!(lse.shape(), &[] as &[usize]);
    assert!((lse.to_scalar::<f64>().unwrap() - (1000.0 + 2f64.ln())).abs() < 1e-12);
    let big32 = t32(&[1000.0, 1000.0, -1000.0, -1000.0], &[2, 2]);
    let l = f64s(&big32.logsumexp(&[1], KeepDim::No).unwrap());
    assert_close(
        "lse f32",
        &l,
        &[1000.0 + 2f64.ln(), -1000.0 + 2f64.ln()],
        1e-4,
        0.0,
    );
    let withinf = t64(
        &[f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY, f64::NEG_INFINITY],
        &[2, 2],
    );
    assert_eq!(
        f64s(&withinf.logsumexp(&[1], KeepDim::No).unwrap()),
        vec![0.0, f64::NEG_INFINITY]
    );
    // Ties: argmax/argmin return the first occurrence.
    let tied = t32(&[3.0, 1.0, 3.0, 1.0], &[4]);
    assert_eq!(
        tied.argmax(0, KeepDim::No)
            .unwrap()
            .to_scalar::<i64>()
            .unwrap(),
        0
    );
    assert_eq!(
        tied.argmin(-1, KeepDim::No)
            .unwrap()
            .to_scalar::<i64>()
            .unwrap(),
        1
    );
    // NaN propagates through max and wins argmax.
    let n = t64(&[1.0, f64::NAN, 3.0], &[3]);
    assert!(n.max_all().unwrap().to_scalar::<f64>().unwrap().is_nan());
    assert!(n.min_all().unwrap().to_scalar::<f64>().unwrap().is_nan());
    assert_eq!(
        n.argmax(0, KeepDim::No)
            .unwrap()
            .to_scalar::<i64>()
            .unwrap(),
        1
    );
    // Whole-tensor forms are 0-d.
    let x = t32(&[1.0, -2.0, 4.0, 0.5], &[2, 2]);
    for (t, want) in [
        (x.sum_all().unwrap(), 3.5),
        (x.mean_all().unwrap(), 0.875),
        (x.max_all().unwrap(), 4.0),
        (x.min_all().unwrap(), -2.0),
    ] {
        assert_eq!(t.ndim(), 0);
        assert_eq!(t.to_scalar::<f32>().unwrap(), want);
    }
    // Sum over a zero-size dim is 0.
    let e = Tensor::zeros(&[0, 3], DType::F32).unwrap();
    assert_eq!(f64s(&e.sum(&[0], KeepDim::No).unwrap()), vec![0.0; 3]);
    assert_eq!(e.sum(&[1], KeepDim::Yes).unwrap().shape(), &[0, 1]);
}

#[test]
fn large_reductions_take_parallel_paths() {
    let n = 1 << 20;
    let x = Tensor::rand(&[n], 0.0, 1.0, DType::F32, &mut rng(21)).unwrap();
    let v = f64s(&x);
    let serial: f64 = v.iter().sum();
    let got = x.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!(
        (got - serial).abs() <= 1e-6 * serial,
        "sum {got} vs serial {serial}"
    );
    let mean = x.mean_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!((mean - serial / n as f64).abs() < 1e-6);

    // Planted extremes.
    let mut w = v.clone();
    w[777_777] = 5.0;
    w[12_345] = -5.0;
    let y = t64(&w, &[n]);
    assert_eq!(y.max_all().unwrap().to_scalar::<f64>().unwrap(), 5.0);
    assert_eq!(y.min_all().unwrap().to_scalar::<f64>().unwrap(), -5.0);
    assert_eq!(
        y.argmax(0, KeepDim::No)
            .unwrap()
            .to_scalar::<i64>()
            .unwrap(),
        777_777
    );
    assert_eq!(
        y.argmin(0, KeepDim::No)
            .unwrap()
            .to_scalar::<i64>()
            .unwrap(),
        12_345
    );
    let wsum: f64 = w.iter().sum();
    assert!((y.sum_all().unwrap().to_scalar::<f64>().unwrap() - wsum).abs() < 1e-9 * wsum);

    // Row reductions over a [1024, 1024] matrix, along both dims.
    let m = x.reshape(&[1024, 1024]).unwrap();
    let rows = f64s(&m.sum(&[1], KeepDim::No).unwrap());
    let cols = f64s(&m.sum(&[0], KeepDim::Yes).unwrap());
    assert_eq!(m.sum(&[0], KeepDim::Yes).unwrap().shape(), &[1, 1024]);
    for i in 0..1024 {
        let r: f64 = v[i * 1024..(i + 1) * 1024].iter().sum();
        let c: f64 = (0..1024).map(|k| v[k * 1024 + i]).sum();
        // f32 results near 512 are spaced 6e-5 apart.
        assert!((rows[i] - r).abs() < 5e-4, "row {i}: {} vs {r}", rows[i]);
        assert!((cols[i] - c).abs() < 5e-4, "col {i}: {} vs {c}", cols[i]);
    }
    let maxes = f64s(&m.max(&[1], KeepDim::No).unwrap());
    for (i, &mx) in maxes.iter().enumerate() {
        let r = v[i * 1024..(i + 1) * 1024]
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(mx, r, "row max {i}");
    }
    // A few long rows: [3, 2^18] reduced along the long dim.
    let long = x
        .narrow(0, 0, 3 << 18)
        .unwrap()
        .reshape(&[3, 1 << 18])
        .unwrap();
    let sums = f64s(&long.sum(&[1], KeepDim::No).unwrap());
    for (i, s) in sums.iter().enumerate() {
        let r: f64 = v[i << 18..(i + 1) << 18].iter().sum();
        assert!((s - r).abs() <= 1e-6 * r, "long row {i}");
    }
    // Variance of a large normal sample, against the two-pass formula.
    let z = Tensor::randn(&[n], 0.0, 2.0, DType::F64, &mut rng(22)).unwrap();
    let zv = f64s(&z);
    let want = ref_var(&zv, 1);
    let got = z
        .var(&[0], 1, KeepDim::No)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((got - want).abs() < 1e-9 * want, "var {got} vs {want}");
    assert!((want - 4.0).abs() < 0.05);
}

// ----- matmul ------------------------------------------------------------

#[test]
fn matmul_small_shapes() {
    let v = t32(&[1.0, 2.0, 3.0], &[3]);
    let dot = v.matmul(&t32(&[4.0, 5.0, 6.0], &[3])).unwrap();
    assert_eq!(dot.shape(), &[] as &[usize]);
    assert_eq!(dot.to_scalar::<f32>().unwrap(), 32.0);

    let b = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let vb = v.matmul(&b).unwrap();
    assert_eq!(
        (vb.shape(), vb.to_vec::<f32>().unwrap()),
        (&[2][..], vec![22.0, 28.0])
    );

    let a = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let av = a.matmul(&t32(&[1.0, 0.0, -1.0], &[3])).unwrap();
    assert_eq!(
        (av.shape(), av.to_vec::<f32>().unwrap()),
        (&[2][..], vec![-2.0, -2.0])
    );

    let ab = a.matmul(&b).unwrap();
    assert_eq!(
        ab.to_vec2::<f32>().unwrap(),
        vec![vec![22.0, 28.0], vec![49.0, 64.0]]
    );
    // Transposed views, no copy needed: (Bᵀ Aᵀ) = (A B)ᵀ.
    let btat = b.t().unwrap().matmul(&a.t().unwrap()).unwrap();
    assert_eq!(
        btat.to_vec2::<f32>().unwrap(),
        vec![vec![22.0, 49.0], vec![28.0, 64.0]]
    );
    // A times its own transpose (same storage on both sides).
    let aat = a.matmul(&a.t().unwrap()).unwrap();
    assert_eq!(
        aat.to_vec2::<f32>().unwrap(),
        vec![vec![14.0, 32.0], vec![32.0, 77.0]]
    );
    // A narrowed view with an offset.
    let a1 = a.narrow(0, 1, 1).unwrap();
    assert_eq!(
        a1.matmul(&b).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![49.0, 64.0]]
    );
    // F64 and BF16.
    let a64 = a.to_dtype(DType::F64).unwrap();
    let b64 = b.to_dtype(DType::F64).unwrap();
    assert_eq!(
        a64.matmul(&b64).unwrap().to_vec2::<f64>().unwrap(),
        vec![vec![22.0, 28.0], vec![49.0, 64.0]]
    );
    let ah = a.to_dtype(DType::BF16).unwrap();
    let bh = b.to_dtype(DType::BF16).unwrap();
    let abh = ah.matmul(&bh).unwrap();
    assert_eq!(abh.dtype(), DType::BF16);
    assert_eq!(f64s(&abh), vec![22.0, 28.0, 49.0, 64.0]);
    // k = 0: an empty sum.
    let z = Tensor::zeros(&[2, 0], DType::F32)
        .unwrap()
        .matmul(&Tensor::zeros(&[0, 3], DType::F32).unwrap())
        .unwrap();
    assert_eq!((z.shape(), f64s(&z)), (&[2, 3][..], vec![0.0; 6]));
}

#[test]
fn large_outputs_never_show_stale_values() {
    // Large buffers are recycled between ops: results that are sums over
    // nothing, or only partly computed, must still come out right. Rows of
    // 256 f32 make every tensor below as large as the smallest cached buffer.
    let rows = ferrite::backend::cpu::pool::MIN_CACHED_BYTES / (4 * 256);
    for _ in 0..3 {
        let junk = Tensor::full(&[rows, 256], 7.0, DType::F32)
            .unwrap()
            .add_scalar(1.0)
            .unwrap();
        assert_eq!(junk.to_vec::<f32>().unwrap()[0], 8.0);
        drop(junk);
        let a = Tensor::zeros(&[rows, 0], DType::F32).unwrap();
        let b = Tensor::zeros(&[0, 256], DType::F32).unwrap();
        let z = a.matmul(&b).unwrap();
        assert!(z.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
        let e = Tensor::zeros(&[0, rows * 256], DType::F32).unwrap();
        let s = e.sum(&[0], KeepDim::No).unwrap();
        assert!(s.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
        let x = Tensor::ones(&[rows, 256], DType::F32).unwrap();
        let sm = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert!(sm.iter().all(|&v| v == 1.0 / 256.0));
        let idx = Tensor::from_vec(vec![0i64; rows], &[rows]).unwrap();
        let ia = Tensor::zeros(&[rows, 256], DType::F32)
            .unwrap()
            .index_add(0, &idx, &x)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(ia[..256].iter().all(|&v| v == rows as f32));
        assert!(ia[256..].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn matmul_batched_with_broadcast() {
    let check = |sa: &[usize], sb: &[usize], seed: u64| {
        let a = Tensor::randn(sa, 0.0, 1.0, DType::F64, &mut rng(seed)).unwrap();
        let b = Tensor::randn(sb, 0.0, 1.0, DType::F64, &mut rng(seed + 1)).unwrap();
        let (va, vb) = (f64s(&a), f64s(&b));
        // Promote 1-D operands as torch.matmul does.
        let sa2: Vec<usize> = if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.to_vec()
        };
        let sb2: Vec<usize> = if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.to_vec()
        };
        let (m, k, n) = (sa2[sa2.len() - 2], sa2[sa2.len() - 1], sb2[sb2.len() - 1]);
        let batch = ref_broadcast_shape(&sa2[..sa2.len() - 2], &sb2[..sb2.len() - 2]);
        let mut want = Vec::new();
        for bi in 0..numel(&batch) {
            let idx = unravel(bi, &batch);
            let pick = |data: &[f64], s: &[usize], rows: usize, cols: usize| -> Vec<f64> {
                let bs = &s[..s.len() - 2];
                let off = bcast_source(&idx, bs) * rows * cols;
                data[off..off + rows * cols].to_vec()
            };
            want.extend(ref_matmul(
                &pick(&va, &sa2, m, k),
                &pick(&vb, &sb2, k, n),
                m,
                k,
                n,
            ));
        }
        let mut want_shape = batch.clone();
        if sa.len() > 1 {
            want_shape.push(m);
        }
        if sb.len() > 1 {
            want_shape.push(n);
        }
        let got = a.matmul(&b).unwrap();
        assert_eq!(got.shape(), want_shape.as_slice(), "{sa:?} x {sb:?}");
        assert_close(
            &format!("{sa:?} x {sb:?}"),
            &f64s(&got),
            &want,
            1e-12,
            1e-12,
        );
    };
    check(&[2, 1, 2, 3], &[3, 3, 2], 1);
    check(&[4, 2, 3], &[3, 5], 3);
    check(&[2, 3], &[4, 3, 2], 5);
    check(&[3], &[2, 3, 4], 7);
    check(&[2, 3, 4], &[4], 9);
    check(&[1, 2, 3], &[5, 3, 1], 11);

    // Strided operands: transposed matrices inside a batch, permuted batch
    // dims and broadcast (stride-0) rows.
    let a = Tensor::randn(&[2, 4, 3], 0.0, 1.0, DType::F64, &mut rng(13)).unwrap();
    let b = Tensor::randn(&[4, 2, 5], 0.0, 1.0, DType::F64, &mut rng(14)).unwrap();
    let at = a.transpose(1, 2).unwrap(); // [2, 3, 4]
    let bp = b.permute(&[1, 0, 2]).unwrap(); // [2, 4, 5]
    let va = ref_permute(&f64s(&a), &[2, 4, 3], &[0, 2, 1]);
    let vb = ref_permute(&f64s(&b), &[4, 2, 5], &[1, 0, 2]);
    let got = at.matmul(&bp).unwrap();
    assert_eq!(got.shape(), &[2, 3, 5]);
    let mut want = ref_matmul(&va[..12], &vb[..20], 3, 4, 5);
    want.extend(ref_matmul(&va[12..], &vb[20..], 3, 4, 5));
    assert_close("strided batch", &f64s(&got), &want, 1e-12, 1e-12);
    let row = t64(&[1.0, 2.0, 3.0], &[3]).broadcast_to(&[2, 3]).unwrap();
    let m = t64(&[1.0, 0.0, 0.0, 1.0, 1.0, -1.0], &[3, 2]);
    assert_eq!(
        row.matmul(&m).unwrap().to_vec2::<f64>().unwrap(),
        vec![vec![4.0, -1.0], vec![4.0, -1.0]]
    );
    let col = t64(&[2.0, -1.0], &[2, 1]).broadcast_to(&[2, 3]).unwrap();
    assert_eq!(
        m.matmul(&col).unwrap().to_vec2::<f64>().unwrap(),
        vec![
            vec![2.0, 2.0, 2.0],
            vec![-1.0, -1.0, -1.0],
            vec![3.0, 3.0, 3.0]
        ]
    );
}

#[test]
fn matmul_large_against_naive() {
    let (m, k, n) = (300, 200, 250);
    let a = Tensor::rand(&[m, k], -1.0, 1.0, DType::F32, &mut rng(31)).unwrap();
    let b = Tensor::rand(&[k, n], -1.0, 1.0, DType::F32, &mut rng(32)).unwrap();
    let (va, vb) = (f64s(&a), f64s(&b));
    let want = ref_matmul(&va, &vb, m, k, n);
    let got = a.matmul(&b).unwrap();
    assert_eq!(got.shape(), &[m, n]);
    assert_close("300x200x250", &f64s(&got), &want, 1e-4, 1e-5);

    // The same product through transposed storage: (Bᵀ)ᵀ with B stored [n, k].
    let bt = b.t().unwrap().contiguous().unwrap();
    let got_t = a.matmul(&bt.t().unwrap()).unwrap();
    assert_close("transposed rhs", &f64s(&got_t), &want, 1e-4, 1e-5);
    let at = a.t().unwrap().contiguous().unwrap();
    let got_tt = at.t().unwrap().matmul(&b).unwrap();
    assert_close("transposed lhs", &f64s(&got_tt), &want, 1e-4, 1e-5);

    // Short and wide: split into column panels.
    let (m, k, n) = (3, 300, 1000);
    let a = Tensor::rand(&[m, k], -1.0, 1.0, DType::F64, &mut rng(33)).unwrap();
    let b = Tensor::rand(&[k, n], -1.0, 1.0, DType::F64, &mut rng(34)).unwrap();
    let want = ref_matmul(&f64s(&a), &f64s(&b), m, k, n);
    assert_close(
        "3x300x1000",
        &f64s(&a.matmul(&b).unwrap()),
        &want,
        1e-10,
        1e-10,
    );

    // Many products in a batch: one task per product.
    let (bn, s) = (8, 64);
    let a = Tensor::rand(&[bn, s, s], -1.0, 1.0, DType::F32, &mut rng(35)).unwrap();
    let b = Tensor::rand(&[bn, s, s], -1.0, 1.0, DType::F32, &mut rng(36)).unwrap();
    let (va, vb) = (f64s(&a), f64s(&b));
    let got = f64s(&a.matmul(&b).unwrap());
    for i in 0..bn {
        let span = i * s * s..(i + 1) * s * s;
        let want = ref_matmul(&va[span.clone()], &vb[span.clone()], s, s, s);
        assert_close(&format!("batch {i}"), &got[span], &want, 1e-4, 1e-5);
    }
}

// ----- softmax -----------------------------------------------------------

fn ref_softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

#[test]
fn softmax_and_log_softmax() {
    let data = [1.0, 2.0, 3.0, 1.0, 1.0, 1.0];
    let x = t64(&data, &[2, 3]);
    let s = x.softmax(1).unwrap();
    let mut want = ref_softmax(&data[..3]);
    want.extend(ref_softmax(&data[3..]));
    assert_close("softmax", &f64s(&s), &want, 1e-15, 1e-14);
    assert_close("uniform row", &f64s(&s)[3..], &[1.0 / 3.0; 3], 1e-15, 0.0);
    let rows = f64s(&s.sum(&[1], KeepDim::No).unwrap());
    assert_close("rows sum to 1", &rows, &[1.0, 1.0], 1e-15, 0.0);
    let ls = x.log_softmax(-1).unwrap();
    let want_log: Vec<f64> = want.iter().map(|p| p.ln()).collect();
    assert_close("log_softmax", &f64s(&ls), &want_log, 1e-14, 1e-14);

    // Along dim 0: columns.
    let s0 = f64s(&x.softmax(0).unwrap());
    for c in 0..3 {
        let w = ref_softmax(&[data[c], data[3 + c]]);
        assert_close("softmax dim0", &[s0[c], s0[3 + c]], &w, 1e-15, 1e-14);
    }
    // Middle dim of a 3-D tensor.
    let y = Tensor::randn(&[2, 4, 3], 0.0, 3.0, DType::F64, &mut rng(5)).unwrap();
    let yv = f64s(&y);
    let got = f64s(&y.softmax(1).unwrap());
    for a in 0..2 {
        for c in 0..3 {
            let col: Vec<f64> = (0..4).map(|b| yv[a * 12 + b * 3 + c]).collect();
            let w = ref_softmax(&col);
            let g: Vec<f64> = (0..4).map(|b| got[a * 12 + b * 3 + c]).collect();
            assert_close("softmax dim1", &g, &w, 1e-15, 1e-13);
        }
    }
    // Large logits: shifted by the max, no overflow.
    let big = t32(&[1000.0, 1001.0, 1002.0], &[3]);
    let sb = f64s(&big.softmax(0).unwrap());
    assert_all_finite("softmax large", &sb);
    assert_close(
        "softmax large",
        &sb,
        &ref_softmax(&[0.0, 1.0, 2.0]),
        1e-6,
        1e-6,
    );
    let lb = f64s(&t32(&[1000.0, 0.0, -1000.0], &[3]).log_softmax(0).unwrap());
    assert_close(
        "log_softmax large",
        &lb,
        &[0.0, -1000.0, -2000.0],
        1e-3,
        0.0,
    );
    // A 0-d input is its own single row.
    assert_eq!(
        Tensor::scalar(3.0f32)
            .softmax(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        1.0
    );
    assert_eq!(
        Tensor::scalar(3.0f32)
            .log_softmax(-1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    // -inf entries get probability 0.
    let mi = t64(&[0.0, f64::NEG_INFINITY, 0.0], &[3]);
    assert_eq!(f64s(&mi.softmax(0).unwrap()), vec![0.5, 0.0, 0.5]);
    // A permuted input.
    let p = x.t().unwrap().softmax(0).unwrap();
    assert_eq!(p.shape(), &[3, 2]);
    let pv = f64s(&p);
    let w = ref_softmax(&data[..3]);
    assert_close("permuted", &[pv[0], pv[2], pv[4]], &w, 1e-15, 1e-14);
}

// ----- views -------------------------------------------------------------

fn iota(shape: &[usize]) -> (Tensor, Vec<f64>) {
    let data: Vec<f64> = (0..numel(shape)).map(|i| i as f64).collect();
    (t64(&data, shape).to_dtype(DType::F32).unwrap(), data)
}

#[test]
fn reshape_views_and_copies() {
    let (x, data) = iota(&[2, 3, 4]);
    let r = x.reshape(&[6, 4]).unwrap();
    assert!(
        r.same_storage(&x),
        "reshape of a contiguous tensor is a view"
    );
    assert_eq!((r.shape(), f64s(&r)), (&[6, 4][..], data.clone()));
    let ri = x.reshape_infer(&[-1, 8]).unwrap();
    assert_eq!(ri.shape(), &[3, 8]);
    assert!(ri.same_storage(&x));

    // Permuted [3, 2, 4] (strides [4, 12, 1]): splitting the last dim is a
    // view, merging everything is not.
    let p = x.permute(&[1, 0, 2]).unwrap();
    let pdata = ref_permute(&data, &[2, 3, 4], &[1, 0, 2]);
    let v = p.reshape(&[3, 2, 2, 2]).unwrap();
    assert!(v.same_storage(&x), "viewable reshape of a permuted tensor");
    assert_eq!(f64s(&v), pdata);
    let c = p.reshape(&[24]).unwrap();
    assert!(!c.same_storage(&x), "non-viewable reshape must copy");
    assert!(c.is_contiguous());
    assert_eq!(f64s(&c), pdata);
    let c2 = p.reshape(&[6, 4]).unwrap();
    assert!(!c2.same_storage(&x));
    assert_eq!(f64s(&c2), pdata);
    // A transposed matrix cannot be flattened without a copy.
    let (m, md) = iota(&[3, 4]);
    let mt = m.t().unwrap();
    let flat = mt.reshape(&[12]).unwrap();
    assert!(!flat.same_storage(&m));
    assert_eq!(f64s(&flat), ref_permute(&md, &[3, 4], &[1, 0]));
    // A narrowed tensor: [2, 3, 2] with strides [12, 4, 1].
    let n = x.narrow(2, 0, 2).unwrap();
    let ndata: Vec<f64> = data
        .iter()
        .cloned()
        .filter(|v| (*v as usize) % 4 < 2)
        .collect();
    let nv = n.reshape(&[6, 2]).unwrap();
    assert!(nv.same_storage(&x));
    assert_eq!(f64s(&nv), ndata);
    let nc = n.reshape(&[12]).unwrap();
    assert!(!nc.same_storage(&x));
    assert_eq!(f64s(&nc), ndata);
    // Writing through a copy does not touch the original; through a view it does.
    ferrite::no_grad(|| nc.assign(&Tensor::zeros(&[12], DType::F32).unwrap())).unwrap();
    assert_eq!(f64s(&x), data);
}

#[test]
fn permute_transpose_narrow_slice() {
    let (x, data) = iota(&[2, 3, 4]);
    let p = x.permute(&[2, 0, 1]).unwrap();
    assert_eq!(p.shape(), &[4, 2, 3]);
    assert_eq!(p.strides(), &[1, 12, 4]);
    assert!(p.same_storage(&x) && !p.is_contiguous());
    assert_eq!(f64s(&p), ref_permute(&data, &[2, 3, 4], &[2, 0, 1]));
    let pn = x.permute(&[-1, 0, -2]).unwrap();
    assert_eq!(pn.shape(), &[4, 2, 3]);

    let t = x.transpose(0, 2).unwrap();
    assert_eq!(t.shape(), &[4, 3, 2]);
    assert_eq!(f64s(&t), ref_permute(&data, &[2, 3, 4], &[2, 1, 0]));
    let (m, _) = iota(&[2, 3]);
    assert_eq!(
        m.t().unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![0.0, 3.0], vec![1.0, 4.0], vec![2.0, 5.0]]
    );

    let n = x.narrow(1, 1, 2).unwrap();
    assert_eq!(n.shape(), &[2, 2, 4]);
    assert!(n.same_storage(&x));
    let want: Vec<f64> = data
        .iter()
        .cloned()
        .filter(|v| (*v as usize / 4) % 3 >= 1)
        .collect();
    assert_eq!(f64s(&n), want);
    let s = x.slice(2, 1..3).unwrap();
    assert_eq!(s.shape(), &[2, 3, 2]);
    let want: Vec<f64> = data
        .iter()
        .cloned()
        .filter(|v| (1..3).contains(&(*v as usize % 4)))
        .collect();
    assert_eq!(f64s(&s), want);
    assert_eq!(x.slice(0, 1..1).unwrap().shape(), &[0, 3, 4]);
    let last = x.narrow(-1, 3, 1).unwrap();
    assert_eq!(f64s(&last), vec![3.0, 7.0, 11.0, 15.0, 19.0, 23.0]);

    let chunks = t32(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5]).chunks(2, 0).unwrap();
    let parts: Vec<Vec<f32>> = chunks.iter().map(|c| c.to_vec().unwrap()).collect();
    assert_eq!(parts, vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0]]);

    // A view written in place is seen through the base tensor.
    let (base, _) = iota(&[4, 3]);
    let rows = base.narrow(0, 1, 2).unwrap();
    assert!(rows.is_contiguous());
    ferrite::no_grad(|| rows.assign(&Tensor::full(&[2, 3], -1.0, DType::F32).unwrap())).unwrap();
    assert_eq!(
        f64s(&base),
        vec![0.0, 1.0, 2.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 9.0, 10.0, 11.0]
    );
}

#[test]
fn squeeze_unsqueeze_broadcast_flatten_contiguous() {
    let (x, data) = iota(&[2, 3]);
    let u0 = x.unsqueeze(0).unwrap();
    assert_eq!(u0.shape(), &[1, 2, 3]);
    let u1 = x.unsqueeze(1).unwrap();
    assert_eq!(u1.shape(), &[2, 1, 3]);
    let ul = x.unsqueeze(-1).unwrap();
    assert_eq!(ul.shape(), &[2, 3, 1]);
    for u in [&u0, &u1, &ul] {
        assert!(u.same_storage(&x) && u.is_contiguous());
        assert_eq!(f64s(u), data);
    }
    let back = u1.squeeze(1).unwrap();
    assert_eq!(back.shape(), &[2, 3]);
    assert_eq!(ul.squeeze(-1).unwrap().shape(), &[2, 3]);
    assert!(back.same_storage(&x));

    let row = t32(&[1.0, 2.0, 3.0], &[3]);
    let b = row.broadcast_to(&[2, 3]).unwrap();
    assert_eq!(b.strides(), &[0, 1]);
    assert!(b.same_storage(&row));
    assert_eq!(
        b.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0]]
    );
    let col = t32(&[1.0, 2.0], &[2, 1]);
    let e = col.expand(&[2, 2, 3]).unwrap();
    assert_eq!(e.shape(), &[2, 2, 3]);
    assert_eq!(
        f64s(&e),
        vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    );
    // A broadcast view feeds ops like any tensor.
    assert_eq!(
        f64s(&b.sum(&[0], KeepDim::No).unwrap()),
        vec![2.0, 4.0, 6.0]
    );

    let (y, ydata) = iota(&[2, 3, 4]);
    let f = y.flatten(1, 2).unwrap();
    assert_eq!(f.shape(), &[2, 12]);
    assert!(f.same_storage(&y));
    assert_eq!(y.flatten(0, -1).unwrap().shape(), &[24]);
    assert_eq!(y.flatten(0, 1).unwrap().shape(), &[6, 4]);
    let pf = y.permute(&[2, 1, 0]).unwrap().flatten(0, -1).unwrap();
    assert_eq!(f64s(&pf), ref_permute(&ydata, &[2, 3, 4], &[2, 1, 0]));

    let same = y.contiguous().unwrap();
    assert!(
        same.same_storage(&y),
        "contiguous() of a contiguous tensor is free"
    );
    let p = y.permute(&[1, 2, 0]).unwrap();
    let pc = p.contiguous().unwrap();
    assert!(!pc.same_storage(&y));
    assert!(pc.is_contiguous());
    assert_eq!(pc.strides(), &[8, 2, 1]);
    assert_eq!(f64s(&pc), ref_permute(&ydata, &[2, 3, 4], &[1, 2, 0]));
    let copy = y.contiguous_copy().unwrap();
    assert!(!copy.same_storage(&y));
    assert_eq!(f64s(&copy), ydata);
}

#[test]
fn cat_and_stack() {
    let a = t32(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = t32(&[5.0, 6.0], &[2, 1]);
    let c1 = Tensor::cat(&[a.clone(), b.clone()], 1).unwrap();
    assert_eq!(
        c1.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 5.0], vec![3.0, 4.0, 6.0]]
    );
    let cm = Tensor::cat(&[a.clone(), b.clone()], -1).unwrap();
    assert_eq!(f64s(&cm), f64s(&c1));
    let r = t32(&[7.0, 8.0], &[1, 2]);
    let c0 = Tensor::cat(&[a.clone(), r.clone(), a.clone()], 0).unwrap();
    assert_eq!(c0.shape(), &[5, 2]);
    assert_eq!(
        f64s(&c0),
        vec![1.0, 2.0, 3.0, 4.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0]
    );
    // Non-contiguous and empty parts.
    let ct = Tensor::cat(
        &[
            a.t().unwrap(),
            Tensor::zeros(&[2, 0], DType::F32).unwrap(),
            b.clone(),
        ],
        1,
    )
    .unwrap();
    assert_eq!(
        ct.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]
    );
    let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    let j = Tensor::from_vec(vec![3i64], &[1]).unwrap();
    assert_eq!(
        Tensor::cat(&[i, j], 0).unwrap().to_vec::<i64>().unwrap(),
        vec![1, 2, 3]
    );

    let s0 = Tensor::stack(&[a.clone(), a.mul_scalar(10.0).unwrap()], 0).unwrap();
    assert_eq!(s0.shape(), &[2, 2, 2]);
    assert_eq!(f64s(&s0), vec![1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
    let s1 = Tensor::stack(&[a.clone(), a.mul_scalar(10.0).unwrap()], 1).unwrap();
    assert_eq!(s1.shape(), &[2, 2, 2]);
    assert_eq!(f64s(&s1), vec![1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0]);
    let s2 = Tensor::stack(&[a.clone(), a.mul_scalar(10.0).unwrap()], -1).unwrap();
    assert_eq!(s2.shape(), &[2, 2, 2]);
    assert_eq!(f64s(&s2), vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
    let v = Tensor::stack(&[t32(&[1.0], &[]), t32(&[2.0], &[])], 0).unwrap();
    assert_eq!((v.shape(), f64s(&v)), (&[2][..], vec![1.0, 2.0]));
}

// ----- indexing ----------------------------------------------------------

fn idx(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

#[test]
fn index_select_gather_scatter_index_add() {
    let x = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &[3, 3]);
    assert_eq!(
        x.index_select(0, &idx(&[2, 0, 2], &[3]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![
            vec![7.0, 8.0, 9.0],
            vec![1.0, 2.0, 3.0],
            vec![7.0, 8.0, 9.0]
        ]
    );
    assert_eq!(
        x.index_select(-1, &idx(&[1, 1], &[2]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![vec![2.0, 2.0], vec![5.0, 5.0], vec![8.0, 8.0]]
    );
    assert_eq!(
        x.t()
            .unwrap()
            .index_select(0, &idx(&[0], &[1]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![vec![1.0, 4.0, 7.0]]
    );
    assert_eq!(x.index_select(0, &idx(&[], &[0])).unwrap().shape(), &[0, 3]);

    let g = x.gather(1, &idx(&[0, 0, 1, 0, 2, 1], &[3, 2])).unwrap();
    assert_eq!(
        g.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 1.0], vec![5.0, 4.0], vec![9.0, 8.0]]
    );
    let g0 = x.gather(0, &idx(&[2, 1, 0], &[1, 3])).unwrap();
    assert_eq!(g0.to_vec2::<f32>().unwrap(), vec![vec![7.0, 5.0, 3.0]]);
    let gt = x.t().unwrap().gather(1, &idx(&[2, 0], &[2, 1])).unwrap();
    assert_eq!(gt.to_vec2::<f32>().unwrap(), vec![vec![7.0], vec![2.0]]);
    let gi = Tensor::from_vec(vec![10i64, 20, 30], &[3])
        .unwrap()
        .gather(0, &idx(&[2, 2, 0], &[3]))
        .unwrap();
    assert_eq!(gi.to_vec::<i64>().unwrap(), vec![30, 30, 10]);

    let z = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let src = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let s = z
        .scatter_add(1, &idx(&[0, 1, 0, 2, 2, 2], &[2, 3]), &src)
        .unwrap();
    assert_eq!(
        s.to_vec2::<f32>().unwrap(),
        vec![vec![4.0, 2.0, 0.0], vec![0.0, 0.0, 15.0]]
    );
    assert_eq!(f64s(&z), vec![0.0; 6], "scatter_add is out of place");
    let s0 = Tensor::ones(&[3, 2], DType::F64)
        .unwrap()
        .scatter_add(0, &idx(&[2, 0], &[1, 2]), &t64(&[5.0, 7.0], &[1, 2]))
        .unwrap();
    assert_eq!(f64s(&s0), vec![1.0, 8.0, 1.0, 1.0, 6.0, 1.0]);

    let base = t64(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &[3, 2]);
    let add = base
        .index_add(
            0,
            &idx(&[0, 2, 0], &[3]),
            &t64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]),
        )
        .unwrap();
    assert_eq!(
        add.to_vec2::<f64>().unwrap(),
        vec![vec![7.0, 9.0], vec![1.0, 1.0], vec![4.0, 5.0]]
    );
    assert_eq!(f64s(&base), vec![1.0; 6], "index_add is out of place");
    let add1 = base
        .index_add(
            1,
            &idx(&[1, 1], &[2]),
            &t64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]),
        )
        .unwrap();
    assert_eq!(f64s(&add1), vec![1.0, 4.0, 1.0, 8.0, 1.0, 12.0]);
    // Half precision goes through f32.
    let hb = base.to_dtype(DType::BF16).unwrap();
    let hadd = hb
        .index_add(
            0,
            &idx(&[1], &[1]),
            &t64(&[0.5, 0.25], &[1, 2]).to_dtype(DType::BF16).unwrap(),
        )
        .unwrap();
    assert_eq!(hadd.dtype(), DType::BF16);
    assert_eq!(f64s(&hadd), vec![1.0, 1.0, 1.5, 1.25, 1.0, 1.0]);
}

// ----- casts -------------------------------------------------------------

#[test]
fn casts_between_dtypes() {
    let x = t32(&[1.5, -2.7, 2.7, 0.0, 300.0], &[5]);
    let d = x.to_dtype(DType::F64).unwrap();
    assert_eq!(d.dtype(), DType::F64);
    assert_eq!(
        d.to_vec::<f64>().unwrap(),
        vec![1.5, -2.7f32 as f64, 2.7f32 as f64, 0.0, 300.0]
    );
    // Float to integer truncates toward zero.
    assert_eq!(
        x.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap(),
        vec![1, -2, 2, 0, 300]
    );
    let small = t32(&[0.0, 1.0, 3.9, 255.0], &[4]);
    assert_eq!(
        small.to_dtype(DType::U8).unwrap().to_vec::<u8>().unwrap(),
        vec![0, 1, 3, 255]
    );
    let i = Tensor::from_vec(vec![-3i64, 0, 1 << 20], &[3]).unwrap();
    assert_eq!(
        i.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(),
        vec![-3.0, 0.0, 1048576.0]
    );
    let u = Tensor::from_vec(vec![0u8, 200], &[2]).unwrap();
    assert_eq!(
        u.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
        vec![0.0, 200.0]
    );
    assert_eq!(
        u.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap(),
        vec![0, 200]
    );
    // f64 -> f32 rounds to nearest.
    let third = t64(&[1.0 / 3.0], &[1]).to_dtype(DType::F32).unwrap();
    assert_eq!(third.to_vec::<f32>().unwrap(), vec![1.0f32 / 3.0]);
}

#[test]
fn half_precision_rounding() {
    // bf16 keeps 7 mantissa bits: the spacing above 1 is 2^-7 = 0.0078125.
    let tie = 1.0 + 2f32.powi(-8);
    let above_tie = f32::from_bits(tie.to_bits() + 1);
    let x = t32(
        &[
            tie,                       // 1 + 2^-8 = 1.00390625: a tie, rounds to even (1.0)
            above_tie,                 // just above the tie: rounds up
            1.0 + 3.0 * 2f32.powi(-8), // 1.01171875: a tie, rounds to even (1 + 2^-6)
            1.0078125,                 // exactly representable
            -(2.0 + 2f32.powi(-8)),
            3.0e38, // within range (bf16 max is about 3.39e38)
        ],
        &[6],
    );
    let b = x.to_dtype(DType::BF16).unwrap();
    assert_eq!(b.dtype(), DType::BF16);
    assert_eq!(
        f64s(&b),
        vec![
            1.0,
            1.0078125,
            1.015625,
            1.0078125,
            -2.0,
            bf16::from_f32(3.0e38).to_f64()
        ]
    );
    assert!(f64s(&b)[5].is_finite());
    // The same through f64 sources.
    let b64 = x
        .to_dtype(DType::F64)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    assert_eq!(f64s(&b64), f64s(&b));
    // Constant fills round the same way.
    assert_eq!(
        f64s(&Tensor::full(&[1], above_tie as f64, DType::BF16).unwrap()),
        vec![1.0078125]
    );

    // f16 keeps 10 mantissa bits: spacing 2^-10 above 1, max 65504.
    let above_tie = f32::from_bits((1.0 + 2f32.powi(-11)).to_bits() + 1);
    let y = t32(
        &[
            1.0 + 2f32.powi(-11),
            above_tie,
            1.0 + 3.0 * 2f32.powi(-11),
            65504.0,
            65520.0,
            1e-8,
        ],
        &[6],
    );
    let h = y.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(
        f64s(&h),
        vec![
            1.0,
            1.0 + 2f64.powi(-10),
            1.0 + 2f64.powi(-9),
            65504.0,
            f64::INFINITY,
            0.0
        ]
    );
    let h64 = y
        .to_dtype(DType::F64)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    assert_eq!(f64s(&h64), f64s(&h));
    // Back to f32 is exact, and bf16 <-> f16 converts through the value.
    let back = b.to_dtype(DType::F32).unwrap();
    assert_eq!(back.to_vec::<f32>().unwrap()[1], 1.0078125);
    let bh = b.to_dtype(DType::F16).unwrap();
    assert_eq!(f64s(&bh)[..5], f64s(&b)[..5]);
    // A strided view casts element by element.
    let m = t32(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).t().unwrap();
    assert_eq!(
        m.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
        vec![1.0, 3.0, 2.0, 4.0]
    );
}

// ----- strided large elementwise -------------------------------------------

#[test]
fn strided_large_elementwise() {
    let n = 512;
    let a = Tensor::rand(&[n, n], -1.0, 1.0, DType::F32, &mut rng(41)).unwrap();
    let b = Tensor::rand(&[n, n], -1.0, 1.0, DType::F32, &mut rng(42)).unwrap();
    let (va, vb) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let at = a.t().unwrap();
    let sum = at.add(&b).unwrap().to_vec::<f32>().unwrap();
    for i in 0..n {
        for j in 0..n {
            assert_eq!(sum[i * n + j], va[j * n + i] + vb[i * n + j], "({i}, {j})");
        }
    }
    // Both operands transposed, and a broadcast row.
    let both = at.mul(&b.t().unwrap()).unwrap().to_vec::<f32>().unwrap();
    let row = b.narrow(0, 7, 1).unwrap().squeeze(0).unwrap();
    let brow = at.sub(&row).unwrap().to_vec::<f32>().unwrap();
    for i in 0..n {
        for j in 0..n {
            assert_eq!(both[i * n + j], va[j * n + i] * vb[j * n + i]);
            assert_eq!(brow[i * n + j], va[j * n + i] - vb[7 * n + j]);
        }
    }
    // A strided unary op and a strided copy.
    let ex = at.exp().unwrap().to_vec::<f32>().unwrap();
    let cp = at.contiguous().unwrap().to_vec::<f32>().unwrap();
    for i in 0..n {
        for j in 0..n {
            // Within a few ulp: the vectorised f32 exp is not correctly rounded.
            let want = va[j * n + i].exp();
            assert!(
                (ex[i * n + j] - want).abs() <= 5e-7 * want,
                "exp ({i}, {j})"
            );
            assert_eq!(cp[i * n + j], va[j * n + i]);
        }
    }
    // A strided comparison and where.
    let gt = at.gt(&b).unwrap().to_vec::<u8>().unwrap();
    let w = at
        .gt(&b)
        .unwrap()
        .where_cond(&at, &b)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for i in 0..n {
        for j in 0..n {
            let (x, y) = (va[j * n + i], vb[i * n + j]);
            assert_eq!(gt[i * n + j], (x > y) as u8);
            assert_eq!(w[i * n + j], if x > y { x } else { y });
        }
    }
}

// ----- display -----------------------------------------------------------

#[test]
fn display_matches_pytorch() {
    let t = t32(&[1.5, -2.0, 3.0, 4.0], &[2, 2]);
    assert_eq!(
        format!("{t}"),
        "tensor([[ 1.5000, -2.0000],\n        [ 3.0000,  4.0000]])"
    );
    assert_eq!(
        format!("{}", t32(&[1.0, 2.0, 3.0], &[3])),
        "tensor([1., 2., 3.])"
    );
    assert_eq!(format!("{}", t32(&[-1.0, 2.0], &[2])), "tensor([-1.,  2.])");
    assert_eq!(
        format!("{}", Tensor::from_vec(vec![1i64, -20, 300], &[3]).unwrap()),
        "tensor([  1, -20, 300])"
    );
    assert_eq!(format!("{}", Tensor::scalar(3.5f32)), "tensor(3.5000)");
    assert_eq!(format!("{}", Tensor::scalar(2.0f32)), "tensor(2.)");
    assert_eq!(format!("{}", Tensor::scalar(5i64)), "tensor(5)");
    assert_eq!(
        format!("{}", t32(&[1.5, f32::NAN, f32::INFINITY], &[3])),
        "tensor([1.5000,    nan,    inf])"
    );
    // Scientific notation, with Python's two-digit signed exponent.
    assert_eq!(
        format!("{}", t32(&[1e-5, -1.0], &[2])),
        "tensor([ 1.0000e-05, -1.0000e+00])"
    );
    assert_eq!(
        format!("{}", t32(&[1.0, 2000.0], &[2])),
        "tensor([1.0000e+00, 2.0000e+03])"
    );
    // 3-D: blank line between matrices.
    let c = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[2, 2, 2]);
    assert_eq!(
        format!("{c}"),
        "tensor([[[1., 2.],\n         [3., 4.]],\n\n        [[5., 6.],\n         [7., 8.]]])"
    );
    // Empty tensors.
    assert_eq!(
        format!("{}", Tensor::zeros(&[0], DType::F32).unwrap()),
        "tensor([])"
    );
    assert_eq!(
        format!("{}", Tensor::zeros(&[0, 3], DType::F32).unwrap()),
        "tensor([], size=(0, 3))"
    );
    // A non-contiguous view prints its logical order.
    assert_eq!(
        format!("{}", t.t().unwrap()),
        "tensor([[ 1.5000,  3.0000],\n        [-2.0000,  4.0000]])"
    );
    // Other dtypes carry a suffix (ferrite spells the dtype its own way).
    let d = format!("{}", t64(&[0.5, 0.25], &[2]));
    assert!(d.starts_with("tensor([0.5000, 0.2500], dtype="), "{d}");
}

#[test]
fn display_wraps_and_summarizes_like_pytorch() {
    // Lines wrap at 80 columns: 9 elements of width 6 per line here.
    let halves: Vec<f32> = (0..20).map(|i| i as f32 / 2.0).collect();
    assert_eq!(
        format!("{}", t32(&halves, &[20])),
        "tensor([0.0000, 0.5000, 1.0000, 1.5000, 2.0000, 2.5000, 3.0000, 3.5000, 4.0000,\n        \
         4.5000, 5.0000, 5.5000, 6.0000, 6.5000, 7.0000, 7.5000, 8.0000, 8.5000,\n        \
         9.0000, 9.5000])"
    );
    // Over 1000 elements: three items at each edge around " ...".
    let digits: Vec<f32> = (0..2000).map(|i| (i % 10) as f32).collect();
    assert_eq!(
        format!("{}", t32(&digits, &[2000])),
        "tensor([0., 1., 2.,  ..., 7., 8., 9.])"
    );
    let rows = format!("{}", t32(&digits, &[100, 20]));
    let row = "[0., 1., 2.,  ..., 7., 8., 9.]";
    assert_eq!(
        rows,
        format!(
            "tensor([{row},\n        {row},\n        {row},\n        ...,\n        \
             {row},\n        {row},\n        {row}])"
        )
    );
    // Only the printed elements choose the format: the hidden middle is
    // not integral, the edges are.
    let mut mixed: Vec<f32> = vec![0.5; 2000];
    mixed[..3].copy_from_slice(&[1.0, 2.0, 3.0]);
    mixed[1997..].copy_from_slice(&[4.0, 5.0, 6.0]);
    assert_eq!(
        format!("{}", t32(&mixed, &[2000])),
        "tensor([1., 2., 3.,  ..., 4., 5., 6.])"
    );
    // A summarised 1-D f32 range: scientific notation, wrapped.
    let range: Vec<f32> = (0..2000).map(|i| i as f32).collect();
    assert_eq!(
        format!("{}", t32(&range, &[2000])),
        "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n        \
         1.9990e+03])"
    );
}

// ----- moving data out -----------------------------------------------------

#[test]
fn to_vec_to_vec2_to_scalar() {
    let x = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(
        x.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(
        x.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
    );
    assert_eq!(
        x.t().unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 4.0], vec![2.0, 5.0], vec![3.0, 6.0]]
    );
    let col = x.narrow(1, 2, 1).unwrap();
    assert_eq!(col.to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
    assert_eq!(
        Tensor::zeros(&[2, 0], DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![Vec::<f32>::new(), Vec::new()]
    );
    assert!(Tensor::zeros(&[0, 4], DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .is_empty());
    assert_eq!(Tensor::scalar(2.5f64).to_scalar::<f64>().unwrap(), 2.5);
    assert_eq!(t32(&[7.0], &[1, 1]).to_scalar::<f32>().unwrap(), 7.0);
    assert_eq!(
        x.narrow(1, 1, 1)
            .unwrap()
            .narrow(0, 1, 1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        5.0
    );
    assert_eq!(
        Tensor::from_vec(vec![3i64, -4], &[2])
            .unwrap()
            .to_f64_vec()
            .unwrap(),
        vec![3.0, -4.0]
    );
}

//! Reductions (every dim set, special values, parallel paths) and softmax/log_softmax.

use super::helpers::{
    assert_all_finite, assert_close, f64s, numel, ravel, ref_permute, t32, t64, unravel,
};
use crate::common::rng;
use ferrite::{DType, KeepDim, Tensor};

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

//! Shared helpers: tensor builders, index arithmetic, naive f64 references, tolerances.

use ferrite::Tensor;

// ----- helpers -----------------------------------------------------------

pub(super) fn t32(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

pub(super) fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

pub(super) fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

pub(super) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub(super) fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

pub(super) fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Reference NumPy broadcast of two shapes.
pub(super) fn ref_broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
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
pub(super) fn bcast_source(out_idx: &[usize], shape: &[usize]) -> usize {
    let lead = out_idx.len() - shape.len();
    let idx: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { out_idx[lead + i] })
        .collect();
    ravel(&idx, shape)
}

/// `out[i_0..] = x[i_{perm^-1}..]`: the row-major data of `x.permute(perm)`.
pub(super) fn ref_permute(data: &[f64], shape: &[usize], perm: &[usize]) -> Vec<f64> {
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

/// Elementwise `|got - want| <= atol + rtol * |want|`; equal values
/// (including infinities) and NaN against NaN also match.
#[track_caller]
pub(super) fn assert_close(name: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g == w || (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{name}: element {i}: got {g}, expected {w}");
    }
}

pub(super) fn assert_all_finite(name: &str, v: &[f64]) {
    for (i, x) in v.iter().enumerate() {
        assert!(x.is_finite(), "{name}: element {i} is {x}");
    }
}

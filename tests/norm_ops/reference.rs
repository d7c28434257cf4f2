//! Batch norm by the definition: a plain f64 loop reference, and value reads.

use ferrite::ops::BatchNormOptions;
use ferrite::Tensor;

/// What the reference computes: output and the running stats after the call.
pub(super) struct Reference {
    pub(super) y: Vec<f64>,
    pub(super) running_mean: Option<Vec<f64>>,
    pub(super) running_var: Option<Vec<f64>>,
}

/// Batch norm by the definition, one channel at a time, in f64 with a
/// two-pass variance (mean first, then squared deviations).
#[allow(clippy::too_many_arguments)]
pub(super) fn reference(
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

pub(super) fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

//! The parallel path against a serial reference written here.

use super::helpers::{p, vals};
use crate::common;
use crate::common::assert_close;
use ferrite::ops::PadCount;
use ferrite::{DType, Tensor};

// ----- the parallel path against a serial reference ------------------------

/// Straightforward pooling over padded coordinates, one output at a time:
/// returns (max values, argmax, avg incl pad, avg excl pad) for one
/// `planes × h × w` buffer. Padding as PyTorch: the window is
/// `[o·s − p, o·s − p + k)`; the include-pad divisor counts the positions
/// of it inside `[−p, in + p)`.
#[allow(clippy::type_complexity)]
fn reference_pool(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    k: usize,
    s: usize,
    pad: usize,
) -> (Vec<f32>, Vec<usize>, Vec<f64>, Vec<f64>) {
    let (mut mx, mut arg, mut incl, mut excl) = (vec![], vec![], vec![], vec![]);
    let pad = pad as i64;
    for pl in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut at, mut sum, mut n_in, mut n_pad) =
                    (f32::NEG_INFINITY, usize::MAX, 0.0f64, 0usize, 0usize);
                for i in 0..k as i64 {
                    for j in 0..k as i64 {
                        let iy = (oy * s) as i64 - pad + i;
                        let ix = (ox * s) as i64 - pad + j;
                        if iy < h as i64 + pad && ix < w as i64 + pad {
                            n_pad += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                            continue;
                        }
                        let flat = iy as usize * w + ix as usize;
                        let v = x[pl * h * w + flat];
                        n_in += 1;
                        sum += v as f64;
                        if at == usize::MAX || v > best {
                            best = v;
                            at = flat;
                        }
                    }
                }
                mx.push(best);
                arg.push(at);
                incl.push(sum / n_pad as f64);
                excl.push(sum / n_in as f64);
            }
        }
    }
    (mx, arg, incl, excl)
}

#[test]
fn large_input_parallel_path_matches_serial_reference() {
    // 8×64×56×56 = 1.6M elements: above the parallel threshold. Run inside
    // a 4-thread pool so the parallel path is taken on any machine.
    let (n, c, h, w) = (8, 64, 56, 56);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let x = Tensor::randn(&[n, c, h, w], 0.0, 1.0, DType::F32, &mut common::rng(8)).unwrap();
    let xv = x.to_vec::<f32>().unwrap();
    let planes = n * c;
    let q = p(3, 2, 1);
    let (oh, ow) = (28, 28);
    let (mx, arg, incl, excl) = reference_pool(&xv, planes, (h, w), (oh, ow), 3, 2, 1);

    pool.install(|| {
        let xg = x.requires_grad_(true);
        let (y, idx) = xg.max_pool2d_with_indices(q).unwrap();
        assert_eq!(y.shape(), &[n, c, oh, ow]);
        assert_eq!(y.to_vec::<f32>().unwrap(), mx, "max values");
        let idx: Vec<usize> = idx
            .to_vec::<i64>()
            .unwrap()
            .iter()
            .map(|&i| i as usize)
            .collect();
        assert_eq!(idx, arg, "argmax");

        // Backward: scatter a distinct upstream value per output.
        let up_v: Vec<f32> = (0..y.numel())
            .map(|i| (i % 97) as f32 * 0.25 - 3.0)
            .collect();
        let up = Tensor::from_vec(up_v.clone(), y.shape()).unwrap();
        let g = y.backward_with_grad(&up).unwrap();
        let mut want = vec![0.0f32; n * c * h * w];
        for (o, (&a, &u)) in arg.iter().zip(&up_v).enumerate() {
            want[(o / (oh * ow)) * h * w + a] += u;
        }
        assert_eq!(
            g.get(&xg).unwrap().to_vec::<f32>().unwrap(),
            want,
            "max backward"
        );

        let got = vals(&x.avg_pool2d(q, PadCount::Include).unwrap());
        assert_close("avg incl", &got, &incl, 1e-5, 1e-5);
        let y = xg.avg_pool2d(q, PadCount::Exclude).unwrap();
        assert_close("avg excl", &vals(&y), &excl, 1e-5, 1e-5);

        // Avg backward (excl pad) against the reference transpose: each
        // output spreads u / count over its in-bounds window.
        let up = Tensor::from_vec(up_v.clone(), y.shape()).unwrap();
        let g = y.backward_with_grad(&up).unwrap();
        let mut want = vec![0.0f64; n * c * h * w];
        for pl in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let rows = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h);
                    let cols = (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w);
                    let cnt = (rows.len() * cols.len()) as f64;
                    let u = up_v[(pl * oh + oy) * ow + ox] as f64 / cnt;
                    for iy in rows {
                        for ix in cols.clone() {
                            want[pl * h * w + iy * w + ix] += u;
                        }
                    }
                }
            }
        }
        assert_close(
            "avg backward",
            &vals(g.get(&xg).unwrap()),
            &want,
            1e-5,
            1e-5,
        );

        // Adaptive to 1×1 (ResNet head) against the plane means, and to an
        // uneven 5×3.
        let a = x.adaptive_avg_pool2d((1, 1)).unwrap();
        let means: Vec<f64> = xv
            .chunks(h * w)
            .map(|pl| pl.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64)
            .collect();
        assert_close("adaptive 1x1", &vals(&a), &means, 1e-5, 1e-5);
        let a = x.adaptive_avg_pool2d((5, 3)).unwrap();
        let mut want = Vec::new();
        for pl in xv.chunks(h * w) {
            for i in 0..5 {
                let rows = i * h / 5..((i + 1) * h).div_ceil(5);
                for j in 0..3 {
                    let cols = j * w / 3..((j + 1) * w).div_ceil(3);
                    let mut s = 0.0;
                    for iy in rows.clone() {
                        for ix in cols.clone() {
                            s += pl[iy * w + ix] as f64;
                        }
                    }
                    want.push(s / (rows.len() * cols.len()) as f64);
                }
            }
        }
        assert_close("adaptive 5x3", &vals(&a), &want, 1e-5, 1e-5);
    });

    // The serial path (one thread) gives bit-identical results.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let serial = one.install(|| x.max_pool2d(q).unwrap().to_vec::<f32>().unwrap());
    assert_eq!(serial, mx);
    let par = pool.install(|| {
        x.avg_pool2d(q, PadCount::Include)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    });
    let ser = one.install(|| {
        x.avg_pool2d(q, PadCount::Include)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    });
    assert_eq!(par, ser);
}

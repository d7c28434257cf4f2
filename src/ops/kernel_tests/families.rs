//! One or more kernels of each remaining family on the emulated GPU (clamped
//! grids, strict sync, race check), against direct Rust references.

use crate::backend::cuda::emulator::tests::{bytes_of, download, emu, run, upload};
use crate::backend::cuda::launch;
use crate::ground::Layout;
use crate::ops::conv::params::Im2colParams;
use crate::ops::norm::params::BatchNormParams;
use crate::ops::pool::params::Pool2dKernelParams;
use crate::ops::reduce::params::{RowParams, StridedReduceParams};
use cudarc::driver::LaunchConfig;
use half::bf16;

/// Deterministic values in [-2, 2) with some exact ties.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 97) as f32 / 24.0 - 2.0)
        .collect()
}

/// Runs `name` with a launch config of `launch.rs`, panicking on error.
fn go(name: &str, c: LaunchConfig, args: &[&[u8]]) {
    run(name, c.grid_dim, c.block_dim, args).unwrap_or_else(|e| panic!("{e}"));
}

/// Asserts `got` and `want` agree within `tol` (absolute, or relative
/// above 1).
fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g as f64 - w).abs() <= tol * w.abs().max(1.0) || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn row_kernels_max_logsumexp_argmax_softmax() {
    let (rows, cols) = (7, 300);
    let x = values(rows * cols, 1);
    let row = |r: usize| &x[r * cols..(r + 1) * cols];
    let (xd, out, y) = (
        upload(&x),
        upload(&vec![0f32; rows]),
        upload(&vec![0f32; rows * cols]),
    );
    let idx = upload(&vec![0i64; rows]);
    let p = RowParams::contiguous(rows, cols);
    let c = launch::rows(rows, cols).unwrap();
    let maxes: Vec<f64> = (0..rows)
        .map(|r| row(r).iter().fold(f64::MIN, |m, &v| m.max(v as f64)))
        .collect();
    go(
        "max_fwd_f32",
        c,
        &[bytes_of(&p), bytes_of(&xd), bytes_of(&out)],
    );
    close("max", &download(out, rows), &maxes, 0.0);
    go(
        "logsumexp_fwd_f32",
        c,
        &[bytes_of(&p), bytes_of(&xd), bytes_of(&out)],
    );
    let lse: Vec<f64> = (0..rows)
        .map(|r| {
            maxes[r]
                + row(r)
                    .iter()
                    .map(|&v| (v as f64 - maxes[r]).exp())
                    .sum::<f64>()
                    .ln()
        })
        .collect();
    close("logsumexp", &download(out, rows), &lse, 1e-5);
    go(
        "argmax_fwd_f32",
        c,
        &[bytes_of(&p), bytes_of(&xd), bytes_of(&idx)],
    );
    let first_max: Vec<i64> = (0..rows)
        .map(|r| row(r).iter().position(|&v| v as f64 == maxes[r]).unwrap() as i64)
        .collect();
    assert_eq!(
        download::<i64>(idx, rows),
        first_max,
        "argmax: first of the ties"
    );
    go(
        "softmax_fwd_f32",
        c,
        &[bytes_of(&p), bytes_of(&xd), bytes_of(&y)],
    );
    let soft: Vec<f64> = (0..rows * cols)
        .map(|i| (x[i] as f64 - lse[i / cols]).exp())
        .collect();
    close("softmax", &download(y, rows * cols), &soft, 1e-5);
    for ptr in [xd, out, y, idx] {
        emu().free(ptr).unwrap();
    }
}

#[test]
fn strided_sum_over_the_first_and_last_dims() {
    let shape = [3, 5, 7];
    let x = values(105, 2);
    let xd = upload(&x);
    for (dims, want) in [
        (
            vec![0],
            (0..35)
                .map(|o| (0..3).map(|a| x[a * 35 + o] as f64).sum())
                .collect::<Vec<f64>>(),
        ),
        (
            vec![0, 2],
            (0..5)
                .map(|b| {
                    (0..3)
                        .flat_map(|a| (0..7).map(move |c| (a, c)))
                        .map(|(a, c)| x[a * 35 + b * 7 + c] as f64)
                        .sum()
                })
                .collect(),
        ),
    ] {
        let p = StridedReduceParams::new(&Layout::contiguous(&shape), &dims).unwrap();
        let out = upload(&vec![0f32; want.len()]);
        let c = launch::elementwise(want.len()).unwrap();
        go(
            "sum_strided_fwd_f32",
            c,
            &[bytes_of(&p), bytes_of(&xd), bytes_of(&out)],
        );
        close("strided sum", &download(out, want.len()), &want, 1e-5);
        emu().free(out).unwrap();
    }
    emu().free(xd).unwrap();
}

#[test]
fn batch_norm_statistics_reduce_in_f64_per_channel() {
    let (n, c, s) = (4, 5, 50);
    let x = values(n * c * s, 3);
    let p = BatchNormParams::new(&[n, c, s], 1e-5, 0.1, true).unwrap();
    let xd = upload(&x);
    let bufs: Vec<u64> = (0..4).map(|_| upload(&vec![0.5f32; c])).collect();
    let mut args = vec![bytes_of(&p), bytes_of(&xd)];
    args.extend(bufs.iter().map(bytes_of));
    go(
        "batch_norm_stats_fwd_f32",
        launch::rows(c, n * s).unwrap(),
        &args,
    );
    let mut mean = vec![0f64; c];
    let mut invstd = vec![0f64; c];
    for ch in 0..c {
        let v: Vec<f64> = (0..n)
            .flat_map(|i| (0..s).map(move |j| (i * c + ch) * s + j))
            .map(|k| x[k] as f64)
            .collect();
        mean[ch] = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|a| (a - mean[ch]).powi(2)).sum::<f64>() / v.len() as f64;
        invstd[ch] = 1.0 / (var + 1e-5).sqrt();
    }
    close("mean", &download(bufs[0], c), &mean, 1e-6);
    close("invstd", &download(bufs[1], c), &invstd, 1e-5);
    for ptr in bufs.into_iter().chain([xd]) {
        emu().free(ptr).unwrap();
    }
}

#[test]
fn im2col_and_max_pool_gather_their_windows() {
    let (n, ch, h, w) = (2, 3, 7, 6);
    let x = values(n * ch * h * w, 4);
    let xd = upload(&x);
    let p = Im2colParams::new(n, (ch, h, w), (3, 3), (4, 3), (2, 2), (1, 1), (1, 1)).unwrap();
    let (oh, ow) = (p.oh as usize, p.ow as usize);
    let total = n * ch * 9 * oh * ow;
    let col = upload(&vec![0f32; total]);
    let c = launch::im2col(n, ch, (3, 3), (oh, ow)).unwrap().unwrap();
    go(
        "im2col_fwd_f32",
        c,
        &[bytes_of(&p), bytes_of(&xd), bytes_of(&col)],
    );
    let pixel = |img: usize, c: usize, y: i64, xx: i64| -> f64 {
        let inside = (0..h as i64).contains(&y) && (0..w as i64).contains(&xx);
        if inside {
            x[((img * ch + c) * h + y as usize) * w + xx as usize] as f64
        } else {
            0.0
        }
    };
    // The batch-folded layout: row (c, ky, kx), then column (image, oy, ox).
    let mut want = Vec::with_capacity(total);
    for r in 0..ch * 9 {
        let (c, ky, kx) = (r / 9, (r / 3) % 3, r % 3);
        for img in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (y, xx) = ((oy * 2 + ky) as i64 - 1, (ox * 2 + kx) as i64 - 1);
                    want.push(pixel(img, c, y, xx));
                }
            }
        }
    }
    let col_f32: Vec<f32> = download(col, total);
    close("im2col", &col_f32, &want, 0.0);

    // The bf16 columns of the mixed-precision GEMMs: the same values, each
    // rounded to nearest-even bf16 (as the half crate rounds).
    let col16 = upload(&vec![0u16; total]);
    go(
        "im2col_fwd_f32_to_bf16",
        c,
        &[bytes_of(&p), bytes_of(&xd), bytes_of(&col16)],
    );
    let got: Vec<u16> = download(col16, total);
    let rounded: Vec<u16> = col_f32
        .iter()
        .map(|&v| bf16::from_f32(v).to_bits())
        .collect();
    assert_eq!(got, rounded, "im2col to bf16");
    let inexact = col_f32.iter().filter(|&&v| bf16::from_f32(v).to_f32() != v);
    assert!(inexact.count() > total / 4, "the test values need rounding");
    emu().free(col16).unwrap();

    // 3×3 max pooling, stride 2, padding 1 (padding never wins).
    let planes = n * ch;
    let pp = Pool2dKernelParams {
        planes: planes as i64,
        h: h as i64,
        w: w as i64,
        oh: oh as i64,
        ow: ow as i64,
        kh: 3,
        kw: 3,
        stride_h: 2,
        stride_w: 2,
        pad_h: 1,
        pad_w: 1,
        count_include_pad: 0,
        _unused: 0,
    };
    let (y, idx) = (
        upload(&vec![0f32; planes * oh * ow]),
        upload(&vec![0i64; planes * oh * ow]),
    );
    let c = launch::elementwise(planes * oh * ow).unwrap();
    go(
        "max_pool2d_fwd_f32",
        c,
        &[bytes_of(&pp), bytes_of(&xd), bytes_of(&y), bytes_of(&idx)],
    );
    let want: Vec<f64> = (0..planes * oh * ow)
        .map(|i| {
            let (plane, oy, ox) = (i / (oh * ow), (i / ow) % oh, i % ow);
            let mut best = f64::NEG_INFINITY;
            for ky in 0..3 {
                for kx in 0..3 {
                    let (yy, xx) = ((oy * 2 + ky) as i64 - 1, (ox * 2 + kx) as i64 - 1);
                    if (0..h as i64).contains(&yy) && (0..w as i64).contains(&xx) {
                        best = best.max(pixel(plane / ch, plane % ch, yy, xx));
                    }
                }
            }
            best
        })
        .collect();
    close("max_pool2d", &download(y, planes * oh * ow), &want, 0.0);
    for ptr in [xd, col, y, idx] {
        emu().free(ptr).unwrap();
    }
}

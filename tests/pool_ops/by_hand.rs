//! Forward and backward values worked out by hand: windows, ceil mode, adaptive pooling.

use super::helpers::{counting, p, vals};
use crate::common::assert_close;
use ferrite::ops::{PadCount, Pool2dParams};
use ferrite::{DType, KeepDim, Tensor};

// ----- forward, by hand ------------------------------------------------

#[test]
fn window_tables_clamp_to_input_and_padded_extent() {
    use ferrite::ops::pool::cpu::{adaptive_spans, pool_spans, Span};
    // in 8, k 3, s 2, p 1, ceil: 5 outputs; the last starts at 7 and
    // spans input 7, pad 8 and (beyond the padding) 9.
    let s = pool_spans(5, 8, 3, 2, 1);
    let span = |lo, hi, padded_len| Span { lo, hi, padded_len };
    assert_eq!(s[0], span(0, 2, 3));
    assert_eq!(s[1], span(1, 4, 3));
    assert_eq!(s[4], span(7, 8, 2));
    // Adaptive 7 -> 2: [0, 4) and [3, 7) (overlapping).
    let s = adaptive_spans(2, 7);
    assert_eq!((s[0], s[1]), (span(0, 4, 4), span(3, 7, 4)));
    // 2 -> 4 (up-sampling): [0,1) [0,1) [1,2) [1,2).
    let s: Vec<(usize, usize)> = adaptive_spans(4, 2).iter().map(|s| (s.lo, s.hi)).collect();
    assert_eq!(s, vec![(0, 1), (0, 1), (1, 2), (1, 2)]);
}

#[test]
fn params_builder_defaults_match_pytorch() {
    let q = Pool2dParams::new(3);
    assert_eq!(q.kernel, (3, 3));
    assert_eq!(q.stride, (3, 3), "stride defaults to the kernel");
    assert_eq!(q.padding, (0, 0));
    assert!(!q.ceil_mode);
    let q = q.stride(2).padding(1).ceil_mode(true);
    assert_eq!((q.stride, q.padding, q.ceil_mode), ((2, 2), (1, 1), true));
}

#[test]
fn resnet_stem_window_on_4x4() {
    // x[r][c] = 4r + c + 1; k3 s2 p1 -> 2×2. Row/col windows: {0,1}, {1,2,3}.
    let x = counting(&[1, 1, 4, 4]);
    let m = x.max_pool2d(p(3, 2, 1)).unwrap();
    assert_eq!(m.shape(), &[1, 1, 2, 2]);
    assert_eq!(vals(&m), vec![6.0, 8.0, 14.0, 16.0]);
    let (_, idx) = x.max_pool2d_with_indices(p(3, 2, 1)).unwrap();
    assert_eq!(idx.dtype(), DType::I64);
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![5, 7, 13, 15]);

    // Window sums 14, 30, 57, 99; padded windows all count 9.
    let incl = x.avg_pool2d(p(3, 2, 1), PadCount::Include).unwrap();
    assert_close(
        "avg incl",
        &vals(&incl),
        &[14.0 / 9.0, 30.0 / 9.0, 57.0 / 9.0, 11.0],
        1e-12,
        0.0,
    );
    // In-bounds counts 4, 6, 6, 9.
    let excl = x.avg_pool2d(p(3, 2, 1), PadCount::Exclude).unwrap();
    assert_close("avg excl", &vals(&excl), &[3.5, 5.0, 9.5, 11.0], 1e-12, 0.0);
}

#[test]
fn ceil_mode_with_padding_divisors() {
    // 4×4, k3 s2 p1: floor gives 2×2, ceil gives 3×3. The extra window
    // starts at 3 and covers input 3, pad 4 and 5 (beyond the padding), so
    // its count_include_pad divisor is 2 per axis, not 3.
    let x = counting(&[1, 1, 4, 4]);
    let q = p(3, 2, 1).ceil_mode(true);
    assert_eq!(x.max_pool2d(p(3, 2, 1)).unwrap().shape(), &[1, 1, 2, 2]);
    let m = x.max_pool2d(q).unwrap();
    assert_eq!(m.shape(), &[1, 1, 3, 3]);
    assert_eq!(
        vals(&m),
        vec![6.0, 8.0, 8.0, 14.0, 16.0, 16.0, 14.0, 16.0, 16.0]
    );
    // Window sums: [14 30 12; 57 99 36; 27 45 16].
    let incl = x.avg_pool2d(q, PadCount::Include).unwrap();
    let want = [
        14.0 / 9.0,
        30.0 / 9.0,
        12.0 / 6.0,
        57.0 / 9.0,
        99.0 / 9.0,
        36.0 / 6.0,
        27.0 / 6.0,
        45.0 / 6.0,
        16.0 / 4.0,
    ];
    assert_close("ceil incl", &vals(&incl), &want, 1e-12, 0.0);
    // In-bounds counts [4 6 2; 6 9 3; 2 3 1].
    let excl = x.avg_pool2d(q, PadCount::Exclude).unwrap();
    let want = [3.5, 5.0, 6.0, 9.5, 11.0, 12.0, 13.5, 15.0, 16.0];
    assert_close("ceil excl", &vals(&excl), &want, 1e-12, 0.0);
}

#[test]
fn ceil_mode_without_padding() {
    // 5×5, k2 s2: floor 2×2, ceil 3×3 with a last window of one row/col.
    // x[r][c] = 5r + c: window mean = 5·mean(rows) + mean(cols).
    let x = counting(&[1, 1, 5, 5]).sub_scalar(1.0).unwrap();
    let q = Pool2dParams::new(2).ceil_mode(true);
    assert_eq!(
        x.avg_pool2d(Pool2dParams::new(2), PadCount::Include)
            .unwrap()
            .shape(),
        &[1, 1, 2, 2]
    );
    let m = x.max_pool2d(q).unwrap();
    assert_eq!(
        vals(&m),
        vec![6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0]
    );
    let a = x.avg_pool2d(q, PadCount::Include).unwrap();
    let means = [0.5, 2.5, 4.0];
    let want: Vec<f64> = means
        .iter()
        .flat_map(|r| means.iter().map(move |c| 5.0 * r + c))
        .collect();
    assert_close("ceil avg", &vals(&a), &want, 1e-12, 0.0);
}

#[test]
fn ceil_mode_drops_a_window_that_starts_in_the_right_padding() {
    // 3 wide, k2 s2 p1: (3 + 2 - 2 + 1) / 2 + 1 = 3 windows, but the third
    // would start at 4 - 1 = 3 = the padding, so PyTorch keeps 2.
    let x = counting(&[1, 1, 3, 3]);
    let q = p(2, 2, 1).ceil_mode(true);
    let m = x.max_pool2d(q).unwrap();
    assert_eq!(m.shape(), &[1, 1, 2, 2]);
    // Windows {0}, {1,2} per axis.
    assert_eq!(vals(&m), vec![1.0, 3.0, 7.0, 9.0]);
    // A window half outside the unpadded input: 2×2 with k3 s2 ceil gives
    // one window (its numerator is 2 - 3 + 1 = 0); floor mode has none.
    let x = counting(&[1, 1, 2, 2]);
    let q = Pool2dParams::new(3).stride(2).ceil_mode(true);
    assert_eq!(vals(&x.max_pool2d(q).unwrap()), vec![4.0]);
    // Without padding, the divisor is the in-bounds part either way.
    assert_eq!(
        vals(&x.avg_pool2d(q, PadCount::Include).unwrap()),
        vec![2.5]
    );
    assert!(x.max_pool2d(Pool2dParams::new(3).stride(2)).is_err());
}

#[test]
fn output_shapes_follow_pytorch_formula() {
    // (input height, width), params, (output height, width), by hand.
    type Case = ((usize, usize), Pool2dParams, (usize, usize));
    let cases: [Case; 7] = [
        ((112, 112), p(3, 2, 1), (56, 56)),               // ResNet stem
        ((7, 8), p(3, 2, 0), (3, 3)),                     // floor
        ((7, 8), p(3, 2, 0).ceil_mode(true), (3, 4)),     // 7 fits exactly, 8 adds one
        ((9, 10), p(3, 2, 1).ceil_mode(true), (5, 6)),    // (10+2-3+1)/2+1 = 6
        ((6, 7), Pool2dParams::new(2).stride(1), (5, 6)), // overlapping
        ((5, 5), Pool2dParams::new(2).ceil_mode(true), (3, 3)),
        ((3, 4), p(2, 2, 1).ceil_mode(true), (2, 3)), // 3: 3rd window would start in the pad
    ];
    for ((h, w), q, want) in cases {
        let x = Tensor::zeros(&[1, 1, h, w], DType::F32).unwrap();
        let y = x.max_pool2d(q).unwrap();
        assert_eq!((y.shape()[2], y.shape()[3]), want, "{h}x{w} {q:?}");
        assert_eq!(
            x.avg_pool2d(q, PadCount::Exclude).unwrap().shape(),
            y.shape()
        );
    }
    // Non-square everything.
    let q = Pool2dParams {
        kernel: (2, 3),
        stride: (1, 2),
        padding: (1, 1),
        ceil_mode: false,
    };
    let x = Tensor::zeros(&[2, 3, 5, 7], DType::F32).unwrap();
    // rows (5 + 2 - 2) / 1 + 1 = 6, cols (7 + 2 - 3) / 2 + 1 = 4.
    assert_eq!(x.max_pool2d(q).unwrap().shape(), &[2, 3, 6, 4]);
}

#[test]
fn nonsquare_windows_by_hand() {
    // 3×4 plane, kernel (2, 3), stride (1, 2), padding (1, 1): rows
    // windows {0}, {0,1}, {1,2}, {2}; column windows {0,1}, {1,2,3}.
    let x = counting(&[1, 1, 3, 4]); // rows [1..4], [5..8], [9..12]
    let q = Pool2dParams {
        kernel: (2, 3),
        stride: (1, 2),
        padding: (1, 1),
        ceil_mode: false,
    };
    let m = x.max_pool2d(q).unwrap();
    assert_eq!(m.shape(), &[1, 1, 4, 2]);
    assert_eq!(vals(&m), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 10.0, 12.0]);
    // Excluding pad: the mean of the in-bounds window.
    let a = x.avg_pool2d(q, PadCount::Exclude).unwrap();
    let want = [1.5, 3.0, 3.5, 5.0, 7.5, 9.0, 9.5, 11.0];
    assert_close("nonsquare excl", &vals(&a), &want, 1e-12, 0.0);
    // Including pad: divisor 2·3 = 6 everywhere (no window passes the padding).
    let a = x.avg_pool2d(q, PadCount::Include).unwrap();
    let sums = [3.0, 9.0, 14.0, 30.0, 30.0, 54.0, 19.0, 33.0];
    let want: Vec<f64> = sums.iter().map(|s| s / 6.0).collect();
    assert_close("nonsquare incl", &vals(&a), &want, 1e-12, 0.0);
}

#[test]
fn adaptive_global_mean_and_uneven_windows() {
    // 1×1 is the mean of every plane.
    let x = counting(&[2, 3, 5, 4]);
    let g = x.adaptive_avg_pool2d((1, 1)).unwrap();
    assert_eq!(g.shape(), &[2, 3, 1, 1]);
    let want: Vec<f64> = (0..6).map(|p| p as f64 * 20.0 + 10.5).collect();
    assert_close("global mean", &vals(&g), &want, 1e-12, 0.0);
    let also = x.mean(&[2, 3], KeepDim::No).unwrap();
    assert_close("global mean vs mean", &vals(&g), &vals(&also), 1e-12, 0.0);

    // 3×5 -> 2×3: rows {0,1}, {1,2}; cols {0,1}, {1,2,3}, {3,4}.
    // x[r][c] = 5r + c, so each output = 5·mean(rows) + mean(cols).
    let x = counting(&[1, 1, 3, 5]).sub_scalar(1.0).unwrap();
    let a = x.adaptive_avg_pool2d((2, 3)).unwrap();
    assert_eq!(a.shape(), &[1, 1, 2, 3]);
    assert_close(
        "adaptive 2x3",
        &vals(&a),
        &[3.0, 4.5, 6.0, 8.0, 9.5, 11.0],
        1e-12,
        0.0,
    );

    // Identity when the output equals the input size.
    let a = x.adaptive_avg_pool2d((3, 5)).unwrap();
    assert_eq!(vals(&a), vals(&x));
}

#[test]
fn adaptive_upsampling_repeats_and_blends() {
    // 2×3 -> 4×5: rows {0},{0},{1},{1}; cols {0},{0,1},{1},{1,2},{2}.
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 4.0, 8.0, 16.0, 32.0], &[1, 1, 2, 3]).unwrap();
    let a = x.adaptive_avg_pool2d((4, 5)).unwrap();
    let r0 = [1.0, 1.5, 2.0, 3.0, 4.0];
    let r1 = [8.0, 12.0, 16.0, 24.0, 32.0];
    let want: Vec<f64> = [r0, r0, r1, r1].concat();
    assert_close("adaptive up", &vals(&a), &want, 1e-12, 0.0);
}

// ----- backward, by hand -------------------------------------------------

#[test]
fn max_backward_sums_over_overlapping_windows() {
    // Ceil example: 16 (index 15) is the max of 4 windows, 8 (7) and 14 (13)
    // of 2 each, 6 (5) of one.
    let x = counting(&[1, 1, 4, 4]).requires_grad_(true);
    let y = x.max_pool2d(p(3, 2, 1).ceil_mode(true)).unwrap();
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    let mut want = vec![0.0; 16];
    want[5] = 1.0;
    want[7] = 2.0;
    want[13] = 2.0;
    want[15] = 4.0;
    assert_eq!(vals(g.get(&x).unwrap()), want);
}

#[test]
fn avg_backward_spreads_with_the_divisor() {
    // 2×2 plane, k2 s1 p1 with padding counted: 3×3 windows of 4 cells
    // each; every input lies in 4 windows -> gradient 4·(1/4) = 1. Without
    // padding counted, windows have 1, 2 or 4 in-bounds cells.
    let x = counting(&[1, 1, 2, 2]).requires_grad_(true);
    let q = Pool2dParams::new(2).stride(1).padding(1);
    let y = x.avg_pool2d(q, PadCount::Include).unwrap();
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    assert_close("incl", &vals(g.get(&x).unwrap()), &[1.0; 4], 1e-12, 0.0);
    let y = x.avg_pool2d(q, PadCount::Exclude).unwrap();
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    // Each input: one corner window (1), two edge windows (1/2 each), the
    // centre window (1/4): 2.25.
    assert_close("excl", &vals(g.get(&x).unwrap()), &[2.25; 4], 1e-12, 0.0);
}

#[test]
fn adaptive_backward_counts_overlaps() {
    // 3 -> 2 along rows ({0,1}, {1,2}) and 1 -> 1 along cols: row 1 is in
    // both windows, each of size 2.
    let x = counting(&[1, 1, 3, 1]).requires_grad_(true);
    let y = x.adaptive_avg_pool2d((2, 1)).unwrap();
    let up = Tensor::from_vec(vec![2.0f64, 6.0], &[1, 1, 2, 1]).unwrap();
    let g = y.backward_with_grad(&up).unwrap();
    assert_close(
        "adaptive bwd",
        &vals(g.get(&x).unwrap()),
        &[1.0, 4.0, 3.0],
        1e-12,
        0.0,
    );
}

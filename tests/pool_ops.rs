//! Pooling ops (`max_pool2d`, `avg_pool2d`, `adaptive_avg_pool2d`):
//! forward values worked out by hand, gradients by finite differences,
//! argmax rules (ties, NaN, −∞), errors, dtypes and layouts, and the
//! parallel path against a serial reference written here.

mod common;
use common::{assert_close, check_grad};
use ferrite::ops::{PadCount, Pool2dParams};
use ferrite::KeepDim;
use ferrite::{no_grad, DType, Error, Result, Tensor};
use rand::seq::SliceRandom;

/// `1..=n` as an f64 `shape` tensor (x[r][c] = W·r + c + 1 in one plane).
fn counting(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((1..=n).map(|v| v as f64).collect::<Vec<_>>(), shape).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// Distinct values (a shuffled `0..n`, scaled and shifted so some are
/// negative) so max pooling has no ties and finite differences of step
/// 1e-6 never reorder two elements.
fn no_ties(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.1 - n as f64 * 0.05).collect();
    v.shuffle(&mut common::rng(seed));
    Tensor::from_vec(v, shape).unwrap()
}

fn p(kernel: usize, stride: usize, pad: usize) -> Pool2dParams {
    Pool2dParams::new(kernel).stride(stride).padding(pad)
}

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

// ----- argmax rules --------------------------------------------------------

fn grad_of_max(x: &[f64], q: Pool2dParams) -> (Vec<i64>, Vec<f64>) {
    let x = Tensor::from_vec(x.to_vec(), &[1, 1, 2, 2])
        .unwrap()
        .requires_grad_(true);
    let (y, idx) = x.max_pool2d_with_indices(q).unwrap();
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    (idx.to_vec::<i64>().unwrap(), vals(g.get(&x).unwrap()))
}

#[test]
fn ties_go_to_the_first_maximum() {
    let q = Pool2dParams::new(2);
    assert_eq!(
        grad_of_max(&[1.0, 3.0, 3.0, 2.0], q),
        (vec![1], vec![0.0, 1.0, 0.0, 0.0])
    );
    assert_eq!(
        grad_of_max(&[0.0; 4], q),
        (vec![0], vec![1.0, 0.0, 0.0, 0.0])
    );
}

#[test]
fn nan_wins_the_window() {
    let q = Pool2dParams::new(2);
    let x = Tensor::from_vec(vec![1.0f64, f64::NAN, 5.0, 2.0], &[1, 1, 2, 2]).unwrap();
    let (y, idx) = x.max_pool2d_with_indices(q).unwrap();
    assert!(vals(&y)[0].is_nan());
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![1]);
    // PyTorch's CPU scan replaces the maximum on every NaN: the last NaN.
    let (idx, _) = grad_of_max(&[f64::NAN, 1.0, f64::NAN, 2.0], q);
    assert_eq!(idx, vec![2]);
    // A NaN scanned before a larger value still wins.
    let (idx, _) = grad_of_max(&[f64::NAN, 1.0, 7.0, 2.0], q);
    assert_eq!(idx, vec![0]);
}

#[test]
fn all_negative_infinity_window_reports_first_in_bounds_element() {
    let x = Tensor::full(&[1, 1, 2, 2], f64::NEG_INFINITY, DType::F64).unwrap();
    // k3 s2 p1 on 2×2: one window, starting in the padding.
    let (y, idx) = x.max_pool2d_with_indices(p(3, 2, 1)).unwrap();
    assert_eq!(vals(&y), vec![f64::NEG_INFINITY]);
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![0]);
    // Padding never wins over a real value, even a very negative one.
    let x = Tensor::full(&[1, 1, 2, 2], -1e300, DType::F64).unwrap();
    assert_eq!(vals(&x.max_pool2d(p(3, 2, 1)).unwrap()), vec![-1e300]);
}

#[test]
fn max_backward_uses_saved_indices() {
    // Changing the input between forward and backward is refused (as in
    // PyTorch, whose max-pool backward saves its input), rather than sending
    // the gradient to where a new maximum might be.
    let x = Tensor::from_vec(vec![1.0f64, 9.0, 3.0, 4.0], &[1, 1, 2, 2])
        .unwrap()
        .requires_grad_(true);
    let y = x.max_pool2d(Pool2dParams::new(2)).unwrap();
    let changed = Tensor::from_vec(vec![10.0f64, 0.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
    no_grad(|| x.assign(&changed)).unwrap();
    let err = y.backward_with_grad(&y.ones_like().unwrap()).unwrap_err();
    assert!(err.to_string().contains("max_pool2d: its input 0"), "{err}");

    // The indices handed to the caller are not the ones backward uses:
    // overwriting them (even with an out-of-range index) changes nothing.
    let x = Tensor::from_vec(vec![1.0f64, 9.0, 3.0, 4.0], &[1, 1, 2, 2])
        .unwrap()
        .requires_grad_(true);
    let (y, idx) = x.max_pool2d_with_indices(Pool2dParams::new(2)).unwrap();
    idx.assign(&Tensor::from_vec(vec![1000i64], &[1, 1, 1, 1]).unwrap())
        .unwrap();
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    assert_eq!(vals(g.get(&x).unwrap()), vec![0.0, 1.0, 0.0, 0.0]);
}

// ----- gradcheck -----------------------------------------------------------

#[test]
fn gradcheck_max_pool2d() {
    let x = no_ties(&[2, 3, 7, 6], 1);
    let square = [
        p(3, 2, 1),
        p(2, 1, 0),
        p(2, 2, 0),
        p(3, 2, 0).ceil_mode(true),
        p(3, 2, 1).ceil_mode(true),
    ];
    for q in square {
        check_grad(
            &format!("max_pool2d {q:?}"),
            |t| t[0].max_pool2d(q),
            std::slice::from_ref(&x),
        );
    }
    let q = Pool2dParams {
        kernel: (2, 3),
        stride: (1, 2),
        padding: (1, 1),
        ceil_mode: true,
    };
    check_grad(
        "max_pool2d nonsquare",
        |t| t[0].max_pool2d(q),
        std::slice::from_ref(&x),
    );
}

#[test]
fn gradcheck_avg_pool2d() {
    let x = common::randn(&[2, 3, 7, 6], 2);
    let qs = [
        p(3, 2, 1),
        p(2, 1, 1),
        p(3, 2, 1).ceil_mode(true),
        p(3, 2, 0).ceil_mode(true),
        Pool2dParams::new(2),
        Pool2dParams {
            kernel: (2, 3),
            stride: (1, 2),
            padding: (1, 1),
            ceil_mode: true,
        },
    ];
    for q in qs {
        for incl in [PadCount::Include, PadCount::Exclude] {
            check_grad(
                &format!("avg_pool2d {q:?} {incl:?}"),
                |t| t[0].avg_pool2d(q, incl),
                std::slice::from_ref(&x),
            );
        }
    }
}

#[test]
fn gradcheck_adaptive_avg_pool2d() {
    let x = common::randn(&[2, 2, 7, 5], 3);
    for out in [(1, 1), (2, 3), (3, 2), (7, 5), (4, 4)] {
        check_grad(
            &format!("adaptive down {out:?}"),
            |t| t[0].adaptive_avg_pool2d(out),
            std::slice::from_ref(&x),
        );
    }
    let x = common::randn(&[1, 2, 2, 3], 4);
    for out in [(4, 5), (3, 7), (5, 3)] {
        check_grad(
            &format!("adaptive up {out:?}"),
            |t| t[0].adaptive_avg_pool2d(out),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn gradcheck_through_a_chain() {
    // Pooling inside a larger graph: a non-contiguous input and a
    // downstream op that makes the upstream gradient non-trivial.
    let x = no_ties(&[2, 6, 5, 3], 5);
    check_grad(
        "chain",
        |t| {
            let v = t[0].permute(&[0, 3, 2, 1])?; // 2×3×5×6, strided
            let a = v.max_pool2d(p(3, 2, 1))?;
            let b = v.avg_pool2d(p(3, 2, 1), PadCount::Exclude)?;
            a.mul(&b)?.adaptive_avg_pool2d((1, 1))?.tanh()
        },
        &[x],
    );
}

// ----- errors --------------------------------------------------------------

#[track_caller]
fn err_contains(r: Result<Tensor>, needles: &[&str]) {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => {
            let msg = e.to_string();
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
            }
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let x = Tensor::zeros(&[1, 2, 6, 6], DType::F32).unwrap();
    for bad in [vec![2, 6, 6], vec![1, 1, 2, 6, 6], vec![36]] {
        let t = Tensor::zeros(&bad, DType::F32).unwrap();
        err_contains(t.max_pool2d(Pool2dParams::new(2)), &["max_pool2d", "4-D"]);
        err_contains(
            t.avg_pool2d(Pool2dParams::new(2), PadCount::Include),
            &["avg_pool2d", "4-D"],
        );
        err_contains(
            t.adaptive_avg_pool2d((1, 1)),
            &["adaptive_avg_pool2d", "4-D"],
        );
    }
    // Empty channel or spatial dims.
    for bad in [[1, 0, 6, 6], [1, 2, 0, 6], [1, 2, 6, 0]] {
        let t = Tensor::zeros(&bad, DType::F32).unwrap();
        err_contains(t.max_pool2d(Pool2dParams::new(1)), &["max_pool2d"]);
        err_contains(t.adaptive_avg_pool2d((1, 1)), &["adaptive_avg_pool2d"]);
    }
    // Zero kernel / stride.
    err_contains(
        x.max_pool2d(Pool2dParams::new(0)),
        &["max_pool2d", "positive"],
    );
    err_contains(
        x.avg_pool2d(Pool2dParams::new(2).stride(0), PadCount::Include),
        &["avg_pool2d", "positive"],
    );
    let q = Pool2dParams {
        kernel: (2, 0),
        ..Pool2dParams::new(2)
    };
    err_contains(x.max_pool2d(q), &["positive"]);
    // Padding above half the kernel (k3 p1 and k2 p1 are fine).
    err_contains(x.max_pool2d(p(3, 1, 2)), &["max_pool2d", "padding", "half"]);
    err_contains(
        x.avg_pool2d(p(1, 1, 1), PadCount::Exclude),
        &["avg_pool2d", "padding"],
    );
    assert!(x.max_pool2d(p(2, 2, 1)).is_ok());
    let q = Pool2dParams {
        padding: (0, 2),
        ..Pool2dParams::new(3)
    };
    err_contains(x.max_pool2d(q), &["padding"]);
    // Output smaller than 1.
    err_contains(
        x.max_pool2d(Pool2dParams::new(7)),
        &["max_pool2d", "too small"],
    );
    err_contains(
        x.avg_pool2d(p(9, 1, 1), PadCount::Include),
        &["avg_pool2d", "too small"],
    );
    err_contains(
        x.adaptive_avg_pool2d((0, 3)),
        &["adaptive_avg_pool2d", "1×1"],
    );
    // Non-float dtypes.
    for dt in [DType::I64, DType::U8] {
        let t = Tensor::zeros(&[1, 2, 6, 6], dt).unwrap();
        for r in [
            t.max_pool2d(Pool2dParams::new(2)),
            t.avg_pool2d(Pool2dParams::new(2), PadCount::Include),
            t.adaptive_avg_pool2d((2, 2)),
        ] {
            assert!(matches!(r, Err(Error::UnsupportedDType { .. })), "{r:?}");
        }
    }
}

#[test]
fn empty_batch_is_allowed() {
    let x = Tensor::zeros(&[0, 3, 6, 6], DType::F32)
        .unwrap()
        .requires_grad_(true);
    let y = x.max_pool2d(p(3, 2, 1)).unwrap();
    assert_eq!(y.shape(), &[0, 3, 3, 3]);
    let g = y.backward_with_grad(&y.ones_like().unwrap()).unwrap();
    assert_eq!(g.get(&x).unwrap().shape(), &[0, 3, 6, 6]);
    assert_eq!(
        x.adaptive_avg_pool2d((2, 2)).unwrap().shape(),
        &[0, 3, 2, 2]
    );
}

// ----- dtypes and layouts ----------------------------------------------------

#[test]
fn f32_matches_f64_and_half_types_round_trip() {
    let x64 = common::randn(&[2, 3, 9, 8], 6);
    let q = p(3, 2, 1).ceil_mode(true);
    type PoolFn = fn(&Tensor, Pool2dParams) -> Result<Tensor>;
    let ops: [(&str, PoolFn); 3] = [
        ("max", |t, q| t.max_pool2d(q)),
        ("avg", |t, q| t.avg_pool2d(q, PadCount::Exclude)),
        ("adaptive", |t, _| t.adaptive_avg_pool2d((4, 3))),
    ];
    for (name, f) in ops {
        let want = vals(&f(&x64, q).unwrap());
        for (dt, tol) in [(DType::F32, 1e-6), (DType::BF16, 2e-2), (DType::F16, 4e-3)] {
            let x = x64.to_dtype(dt).unwrap().requires_grad_(true);
            let y = f(&x, q).unwrap();
            assert_eq!(y.dtype(), dt, "{name} {dt:?}");
            // Half inputs are rounded first, so compare within their precision.
            assert_close(&format!("{name} {dt:?}"), &vals(&y), &want, tol, tol);
            let up = y.ones_like().unwrap();
            let g = y.backward_with_grad(&up).unwrap();
            let gx = g.get(&x).unwrap();
            assert_eq!((gx.dtype(), gx.shape()), (dt, x.shape()), "{name} {dt:?}");
            // Total gradient mass is preserved by max pooling (each output
            // sends 1 somewhere) and by the average of a partition.
            if name == "max" {
                let total: f64 = vals(gx).iter().sum();
                assert_eq!(total, y.numel() as f64, "{name} {dt:?}");
            }
        }
    }
}

#[test]
fn strided_input_gives_the_same_result_as_contiguous() {
    let base = no_ties(&[2, 5, 6, 3], 7);
    let view = base.permute(&[0, 3, 1, 2]).unwrap(); // 2×3×5×6, not contiguous
    assert!(!view.is_contiguous());
    let copy = view.contiguous_copy().unwrap();
    let q = p(3, 2, 1).ceil_mode(true);
    assert_eq!(
        vals(&view.max_pool2d(q).unwrap()),
        vals(&copy.max_pool2d(q).unwrap())
    );
    assert_eq!(
        vals(&view.avg_pool2d(q, PadCount::Include).unwrap()),
        vals(&copy.avg_pool2d(q, PadCount::Include).unwrap())
    );
    assert_eq!(
        vals(&view.adaptive_avg_pool2d((2, 4)).unwrap()),
        vals(&copy.adaptive_avg_pool2d((2, 4)).unwrap())
    );
    // A view at an offset (narrow along the batch).
    let tail = base
        .narrow(0, 1, 1)
        .unwrap()
        .permute(&[0, 3, 1, 2])
        .unwrap();
    let tail_copy = tail.contiguous_copy().unwrap();
    assert_eq!(
        vals(&tail.max_pool2d(q).unwrap()),
        vals(&tail_copy.max_pool2d(q).unwrap())
    );
}

#[test]
fn no_graph_without_grad() {
    let x = Tensor::zeros(&[1, 1, 4, 4], DType::F32).unwrap();
    assert!(!x.max_pool2d(Pool2dParams::new(2)).unwrap().requires_grad());
    let x = x.requires_grad_(true);
    assert!(x.max_pool2d(Pool2dParams::new(2)).unwrap().requires_grad());
    let y = no_grad(|| x.avg_pool2d(Pool2dParams::new(2), PadCount::Include)).unwrap();
    assert!(!y.requires_grad());
}

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

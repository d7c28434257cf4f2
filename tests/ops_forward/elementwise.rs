//! Elementwise ops: unary, broadcasting binary, scalars, comparisons, where, strided inputs.

use super::helpers::{
    assert_all_finite, assert_close, bcast_source, f64s, numel, ref_broadcast_shape, t32, t64,
    unravel,
};
use crate::common::rng;
use ferrite::ops::CmpOp;
use ferrite::{DType, Tensor};
use half::{bf16, f16};

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

//! Dtype casts and half-precision rounding.

use super::helpers::{f64s, t32, t64};
use ferrite::{DType, Tensor};
use half::bf16;

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

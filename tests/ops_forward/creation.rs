//! Creation ops: constant fills, arange/eye/from_vec and the seeded random generators.

use super::helpers::{assert_all_finite, assert_close, f64s, t64};
use crate::common::rng;
use ferrite::{DType, Tensor};
use half::{bf16, f16};

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

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ferrite::autograd::{gradcheck, GradcheckOptions};
use ferrite::{DType, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A seeded generator for test inputs.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard-normal f64 test input.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, &mut rng(seed)).unwrap()
}

/// Uniform f64 test input in [lo, hi).
pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    Tensor::rand(shape, lo, hi, DType::F64, &mut rng(seed)).unwrap()
}

/// Runs gradcheck with default tolerances and panics with the report on failure.
pub fn check_grad(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let report = gradcheck(f, inputs, &GradcheckOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.passed, "{name}: {report}");
    let float_inputs: usize = inputs
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.numel())
        .sum();
    assert_eq!(
        report.checked, float_inputs,
        "{name}: not every element was checked"
    );
}

/// Asserts two f64 slices agree elementwise within `atol + rtol * |expected|`.
pub fn assert_close(name: &str, got: &[f64], expected: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: length {} vs {}",
        got.len(),
        expected.len()
    );
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let ok = (g - e).abs() <= atol + rtol * e.abs() || (g.is_nan() && e.is_nan());
        assert!(ok, "{name}: element {i}: got {g}, expected {e}");
    }
}

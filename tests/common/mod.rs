//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ferrite::autograd::{gradcheck, GradcheckOptions};
use ferrite::ops::BatchNormOptions;
use ferrite::{DType, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Batch norm in training mode with PyTorch's momentum and eps.
pub const TRAIN: BatchNormOptions = BatchNormOptions {
    training: true,
    momentum: 0.1,
    eps: 1e-5,
};

/// Batch norm in eval mode (running statistics), PyTorch's momentum and eps.
pub const EVAL: BatchNormOptions = BatchNormOptions {
    training: false,
    momentum: 0.1,
    eps: 1e-5,
};

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

/// The parsed JSON fixture `tests/fixtures/<name>` (written offline by the
/// `gen_*.py` scripts beside it).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The flat `data` of a fixture tensor, as f64.
pub fn values(v: &serde_json::Value) -> Vec<f64> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The `shape` of a fixture tensor.
pub fn shape_of(v: &serde_json::Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// A fixture tensor `{"dtype", "shape", "data"}` (f64, f32 or i64; f32
/// values are exact f32 values written as Python floats).
pub fn tensor_of(v: &serde_json::Value) -> Tensor {
    let shape = shape_of(v);
    let data = v["data"].as_array().unwrap();
    match v["dtype"].as_str().unwrap() {
        "f64" => Tensor::from_vec(
            data.iter()
                .map(|x| x.as_f64().unwrap())
                .collect::<Vec<f64>>(),
            &shape,
        ),
        "f32" => Tensor::from_vec(
            data.iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect::<Vec<f32>>(),
            &shape,
        ),
        "i64" => Tensor::from_vec(
            data.iter()
                .map(|x| x.as_i64().unwrap())
                .collect::<Vec<i64>>(),
            &shape,
        ),
        other => panic!("unknown fixture dtype {other}"),
    }
    .unwrap()
}

/// A two-element fixture list `[a, b]` as a pair.
pub fn pair(v: &serde_json::Value) -> (usize, usize) {
    let a = v.as_array().unwrap();
    (
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    )
}

/// Mean and (population) standard deviation of 8-bit pixels scaled to
/// [0, 1], the figures image datasets publish for normalisation.
pub fn pixel_mean_std(images: &[u8]) -> (f64, f64) {
    let n = images.len() as f64;
    let mean = images.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / n;
    let var = images
        .iter()
        .map(|&p| (p as f64 / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

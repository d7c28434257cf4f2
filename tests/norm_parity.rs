//! Parity with PyTorch for `batch_norm` and `linear`: outputs, gradients
//! and (batch norm) the updated running statistics must match the values
//! recorded by `tests/fixtures/gen_layers.py` in `tests/fixtures/layers.json`.
//! Each case runs in its own dtype: f64 to 1e-10, f32 to 1e-5 (absolute +
//! relative).

mod common;
use common::{assert_close, shape_of, tensor_of, values};
use ferrite::ops::BatchNormOptions;
use ferrite::{DType, Tensor};
use serde_json::Value;

/// Number of cases of each op in `layers.json` (f64 and f32 variants):
/// bn_train (f64, f32), bn_train_small_batch (f64), bn_eval (f64);
/// linear (f64, f32), linear_batched (f64).
const BATCH_NORM_CASES: usize = 4;
const LINEAR_CASES: usize = 3;

fn cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/layers.json");
    let text = std::fs::read_to_string(path).expect("fixture file is committed");
    let root: Value = serde_json::from_str(&text).unwrap();
    root["cases"].as_array().unwrap().clone()
}

fn tolerance(case: &Value) -> (f64, DType) {
    match case["dtype"].as_str().unwrap() {
        "f64" => (1e-10, DType::F64),
        "f32" => (1e-5, DType::F32),
        other => panic!("unknown case dtype {other}"),
    }
}

/// Compares the output and the gradients of the inputs that have one.
fn check_output_and_grads(case: &Value, out: &Tensor, inputs: &[Tensor], tol: f64) {
    let name = case["name"].as_str().unwrap();
    assert_eq!(
        out.shape(),
        shape_of(&case["output"]).as_slice(),
        "{name}: output shape"
    );
    assert_close(
        &format!("{name} output"),
        &out.to_f64_vec().unwrap(),
        &values(&case["output"]),
        tol,
        tol,
    );
    let upstream = tensor_of(&case["upstream"]);
    let grads = out.backward_with_grad(&upstream).unwrap();
    let mut compared = 0;
    for (i, (input, want)) in inputs
        .iter()
        .zip(case["grads"].as_array().unwrap())
        .enumerate()
    {
        if want.is_null() {
            assert!(
                grads.get(input).is_none(),
                "{name}: input {i} has no PyTorch gradient but got one"
            );
            continue;
        }
        let got = grads
            .get(input)
            .unwrap_or_else(|| panic!("{name}: no gradient for input {i}"));
        assert_eq!(got.shape(), input.shape(), "{name}: grad {i} shape");
        assert_eq!(got.dtype(), input.dtype(), "{name}: grad {i} dtype");
        assert_close(
            &format!("{name} grad {i}"),
            &got.to_f64_vec().unwrap(),
            &values(want),
            tol,
            tol,
        );
        compared += 1;
    }
    assert!(compared > 0, "{name}: no gradient compared");
}

#[test]
fn batch_norm_matches_pytorch() {
    let mut ran = 0;
    for case in cases().iter().filter(|c| c["op"] == "batch_norm") {
        let name = case["name"].as_str().unwrap();
        let (tol, dtype) = tolerance(case);
        let p = &case["params"];
        let opts = BatchNormOptions {
            training: p["training"].as_bool().unwrap(),
            momentum: p["momentum"].as_f64().unwrap(),
            eps: p["eps"].as_f64().unwrap(),
        };
        let raw: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(tensor_of)
            .collect();
        assert_eq!(
            raw.len(),
            5,
            "{name}: inputs [x, weight, bias, running_mean, running_var]"
        );
        let x = raw[0].requires_grad_(true);
        let w = raw[1].requires_grad_(true);
        let b = raw[2].requires_grad_(true);
        let (rm, rv) = (raw[3].clone(), raw[4].clone());
        let out = x
            .batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), opts)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.dtype(), dtype, "{name}: dtype");
        for (key, stat) in [("running_mean", &rm), ("running_var", &rv)] {
            assert_close(
                &format!("{name} {key}"),
                &stat.to_f64_vec().unwrap(),
                &values(&case["extra"][key]),
                tol,
                tol,
            );
        }
        check_output_and_grads(case, &out, &[x, w, b, rm, rv], tol);
        ran += 1;
    }
    assert_eq!(ran, BATCH_NORM_CASES, "batch_norm cases run");
}

#[test]
fn linear_matches_pytorch() {
    let mut ran = 0;
    for case in cases().iter().filter(|c| c["op"] == "linear") {
        let name = case["name"].as_str().unwrap();
        let (tol, dtype) = tolerance(case);
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| tensor_of(v).requires_grad_(true))
            .collect();
        assert_eq!(inputs.len(), 3, "{name}: inputs [x, weight, bias]");
        let out = inputs[0]
            .linear(&inputs[1], Some(&inputs[2]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.dtype(), dtype, "{name}: dtype");
        check_output_and_grads(case, &out, &inputs, tol);
        ran += 1;
    }
    assert_eq!(ran, LINEAR_CASES, "linear cases run");
}

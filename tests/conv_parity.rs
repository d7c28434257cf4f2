//! conv2d against PyTorch: forward and all gradients for the conv cases of
//! `tests/fixtures/layers.json` (made offline by `tests/fixtures/gen_layers.py`).

mod common;
use common::{assert_close, pair, tensor_of, values};
use ferrite::ops::Conv2dParams;
use ferrite::Tensor;
use serde_json::Value;

#[test]
fn conv2d_matches_pytorch() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/layers.json"
    ))
    .unwrap();
    let root: Value = serde_json::from_str(&text).unwrap();
    let cases: Vec<&Value> = root["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["op"] == "conv2d")
        .collect();
    assert_eq!(cases.len(), 10, "8 conv cases in f64 and 2 in f32");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let tol = if case["dtype"] == "f64" { 1e-10 } else { 1e-5 };
        let prm = &case["params"];
        let params = Conv2dParams {
            stride: pair(&prm["stride"]),
            padding: pair(&prm["padding"]),
            dilation: pair(&prm["dilation"]),
            groups: prm["groups"].as_u64().unwrap() as usize,
        };
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| tensor_of(v).requires_grad_(true))
            .collect();
        let bias = if prm["bias"].as_bool().unwrap() {
            Some(&inputs[2])
        } else {
            None
        };
        let out = inputs[0].conv2d(&inputs[1], bias, params).unwrap();
        assert_close(
            &format!("{name} output"),
            &out.to_f64_vec().unwrap(),
            &values(&case["output"]),
            tol,
            tol,
        );
        let grads = out
            .backward_with_grad(&tensor_of(&case["upstream"]))
            .unwrap();
        for (i, want) in case["grads"].as_array().unwrap().iter().enumerate() {
            let got = grads.get(&inputs[i]).unwrap().to_f64_vec().unwrap();
            assert_close(&format!("{name} grad {i}"), &got, &values(want), tol, tol);
        }
    }
}

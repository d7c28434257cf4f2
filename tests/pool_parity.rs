//! Parity with PyTorch for the pooling ops: every `max_pool2d`,
//! `avg_pool2d` and `adaptive_avg_pool2d` case of `tests/fixtures/layers.json`
//! (written offline by `tests/fixtures/gen_layers.py`) is run forward and
//! backward in its own dtype, and its output and input gradient compared
//! with PyTorch's: f64 to 1e-10, f32 to 1e-5 (absolute and relative).

mod common;
use common::{assert_close, pair, shape_of, tensor_of, values};
use ferrite::ops::{PadCount, Pool2dParams};
use ferrite::DType;
use serde_json::Value;
use std::collections::BTreeSet;

/// The pooling cases the fixture file holds (read off its case names). A
/// case missing from the file, or a new one not listed here, fails the test.
const EXPECTED: [&str; 14] = [
    "maxpool_k3s2p1_f64",
    "maxpool_k3s2p1_f32",
    "maxpool_k2s2_f64",
    "maxpool_ceil_f64",
    "maxpool_nonsquare_f64",
    "avgpool_k3s2p1_incl_f64",
    "avgpool_k3s2p1_excl_f64",
    "avgpool_ceil_f64",
    "avgpool_ceil_f32",
    "avgpool_k2s2_f64",
    "adaptive_1x1_f64",
    "adaptive_1x1_f32",
    "adaptive_2x3_f64",
    "adaptive_up_f64",
];

const POOL_OPS: [&str; 3] = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"];

fn pool_params(p: &Value) -> Pool2dParams {
    Pool2dParams {
        kernel: pair(&p["kernel"]),
        stride: pair(&p["stride"]),
        padding: pair(&p["padding"]),
        ceil_mode: p["ceil_mode"].as_bool().unwrap(),
    }
}

#[test]
fn pooling_matches_pytorch() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/layers.json");
    let text = std::fs::read_to_string(path).expect("fixture file is committed");
    let root: Value = serde_json::from_str(&text).unwrap();
    let mut ran = BTreeSet::new();
    for case in root["cases"].as_array().unwrap() {
        let op = case["op"].as_str().unwrap();
        if !POOL_OPS.contains(&op) {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let (tol, dtype) = match case["dtype"].as_str().unwrap() {
            "f64" => (1e-10, DType::F64),
            "f32" => (1e-5, DType::F32),
            other => panic!("{name}: unexpected dtype {other}"),
        };
        let inputs = case["inputs"].as_array().unwrap();
        assert_eq!(inputs.len(), 1, "{name}: pooling takes one input");
        let x = tensor_of(&inputs[0]).requires_grad_(true);
        assert_eq!(x.dtype(), dtype, "{name}");
        let params = &case["params"];
        let y = match op {
            "max_pool2d" => x.max_pool2d(pool_params(params)),
            "avg_pool2d" => x.avg_pool2d(
                pool_params(params),
                if params["count_include_pad"].as_bool().unwrap() {
                    PadCount::Include
                } else {
                    PadCount::Exclude
                },
            ),
            _ => x.adaptive_avg_pool2d(pair(&params["output_size"])),
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));

        let want = &case["output"];
        assert_eq!(y.shape(), shape_of(want).as_slice(), "{name}: output shape");
        assert_eq!(y.dtype(), dtype, "{name}: output dtype");
        let got = y.to_f64_vec().unwrap();
        assert_close(&format!("{name} output"), &got, &values(want), tol, tol);

        let upstream = tensor_of(&case["upstream"]);
        let grads = y.backward_with_grad(&upstream).unwrap();
        let gx = grads
            .get(&x)
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let want = &case["grads"][0];
        assert_eq!(gx.shape(), shape_of(want).as_slice(), "{name}: grad shape");
        assert_eq!(gx.dtype(), dtype, "{name}: grad dtype");
        let got = gx.to_f64_vec().unwrap();
        assert_close(&format!("{name} grad"), &got, &values(want), tol, tol);

        assert!(ran.insert(name.to_string()), "{name}: duplicate case");
    }
    let expected: BTreeSet<String> = EXPECTED.iter().map(|s| s.to_string()).collect();
    assert_eq!(ran, expected, "pooling cases run vs expected");
}

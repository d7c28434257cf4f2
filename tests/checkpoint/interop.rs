//! PyTorch interop: PyTorch-written files load exactly and are rewritten byte for byte.

use super::helpers::{assert_same_tensor, meta, TestDir};
use ferrite::checkpoint::{
    load_into_module, load_state_dict, save_module, save_state_dict, Strict,
};
use ferrite::nn::{self, BatchNorm2d, Bias, Conv2d, Module, Sequential, Visit};
use ferrite::ops::Conv2dParams;
use ferrite::{DType, Tensor};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

// ----- PyTorch interop ------------------------------------------------------

fn values_json() -> Value {
    let text = std::fs::read_to_string(fixture("checkpoint_values.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A tensor from the JSON fixture (exact values).
fn from_json(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"].as_array().unwrap();
    let f = |x: &Value| x.as_f64().unwrap();
    match v["dtype"].as_str().unwrap_or("F32") {
        "F32" => Tensor::from_vec(data.iter().map(|x| f(x) as f32).collect(), &shape),
        "F64" => Tensor::from_vec(data.iter().map(f).collect(), &shape),
        "F16" => Tensor::from_vec(data.iter().map(|x| f16::from_f64(f(x))).collect(), &shape),
        "BF16" => Tensor::from_vec(data.iter().map(|x| bf16::from_f64(f(x))).collect(), &shape),
        "I64" => Tensor::from_vec(data.iter().map(|x| x.as_i64().unwrap()).collect(), &shape),
        "U8" => Tensor::from_vec(
            data.iter().map(|x| x.as_u64().unwrap() as u8).collect(),
            &shape,
        ),
        d => panic!("dtype {d}"),
    }
    .unwrap()
}

fn conv_bn(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .with(
            Conv2d::new(
                3,
                4,
                3,
                Conv2dParams::default().padding(1),
                Bias::Yes,
                &mut rng,
            )
            .unwrap(),
        )
        .with(BatchNorm2d::new(4).unwrap())
}

#[test]
fn pytorch_written_file_loads_into_matching_module() {
    let doc = values_json();
    let mut model = conv_bn(5);
    let report = load_into_module(
        fixture("checkpoint_conv_bn.safetensors"),
        &model,
        Strict::Yes,
    )
    .unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(
        report.loaded,
        vec![
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked"
        ]
    );
    let expected = doc["conv_bn"].as_object().unwrap();
    let sd = nn::state_dict(&model);
    assert_eq!(sd.len(), expected.len());
    for (name, t) in &sd {
        assert_same_tensor(name, t, &from_json(&expected[name]));
    }
    let nbt = sd
        .iter()
        .find(|(n, _)| n == "1.num_batches_tracked")
        .unwrap();
    assert_eq!(nbt.1.to_scalar::<i64>().unwrap(), 2);

    // The loaded weights compute what PyTorch computed (eval mode).
    model.set_training(false);
    let x = from_json(&doc["input"]);
    let y = model.forward(&x).unwrap();
    let want = from_json(&doc["output"]);
    assert_eq!(y.shape(), want.shape());
    let worst = y
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .zip(want.to_vec::<f32>().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "forward differs from PyTorch by {worst}");

    // Metadata written by PyTorch comes through.
    let (_, m) = load_state_dict(fixture("checkpoint_conv_bn.safetensors")).unwrap();
    assert_eq!(m, meta(&[("format", "pt")]));
}

#[test]
fn pytorch_written_dtypes_load_exactly() {
    let doc = values_json();
    let (tensors, m) = load_state_dict(fixture("checkpoint_dtypes.safetensors")).unwrap();
    assert_eq!(m, meta(&[("source", "torch")]));
    let expected = doc["dtypes"].as_object().unwrap();
    assert_eq!(tensors.len(), expected.len());
    for (name, t) in &tensors {
        assert_same_tensor(name, t, &from_json(&expected[name]));
    }
    let get = |n: &str| &tensors.iter().find(|(k, _)| k == n).unwrap().1;
    assert_eq!(get("i64").shape(), &[] as &[usize]);
    assert_eq!(get("i64").to_scalar::<i64>().unwrap(), -1234567890123);
    assert_eq!(get("u8").to_vec::<u8>().unwrap(), vec![0, 1, 127, 128, 255]);
    assert_eq!(get("empty").shape(), &[0, 3]);
    assert_eq!(get("bf16").dtype(), DType::BF16);
    assert_eq!(get("f16").dtype(), DType::F16);
}

#[test]
fn ferrite_rewrites_pytorch_files_byte_for_byte() {
    // Same tensors, same metadata: ferrite's writer produces the very bytes
    // PyTorch's `save_file` did, so PyTorch reads ferrite's files as its own.
    let dir = TestDir::new("rewrite");
    for name in [
        "checkpoint_conv_bn.safetensors",
        "checkpoint_dtypes.safetensors",
    ] {
        let original = std::fs::read(fixture(name)).unwrap();
        let (tensors, m) = load_state_dict(fixture(name)).unwrap();
        let out = dir.path(name);
        save_state_dict(&out, &tensors, &m).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), original, "{name}");
    }
    // And a module loaded from PyTorch saves back to the same file.
    let model = conv_bn(9);
    load_into_module(
        fixture("checkpoint_conv_bn.safetensors"),
        &model,
        Strict::Yes,
    )
    .unwrap();
    let out = dir.path("module.safetensors");
    save_module(&out, &model, &meta(&[("format", "pt")])).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fixture("checkpoint_conv_bn.safetensors")).unwrap()
    );
}

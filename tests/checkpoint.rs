//! Checkpoints: safetensors round trips, the file format checked
//! independently, PyTorch interop, strict/non-strict loading, corrupt files,
//! atomic writes and bit-identical training resumption.

use ferrite::checkpoint::Strict;
use ferrite::checkpoint::{
    self, apply_state_dict, load_into_module, load_into_module_with, load_state_dict,
    load_training, read_training, save_module, save_state_dict, save_training, write_atomic,
    CheckpointOptimizer, Conversion, LoadOptions, LoadReport, OptimizerState,
};
use ferrite::nn::{
    self, BatchNorm2d, Bias, Conv2d, Flatten, Linear, Module, ReLU, Sequential, Visit,
};
use ferrite::ops::Conv2dParams;
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::{DType, Error, Tensor};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ----- helpers ----------------------------------------------------------

/// A fresh, empty directory for one test (removed when dropped).
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("checkpoint-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    /// File names in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The exact bits of every element (any dtype), for bitwise comparisons.
fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::F64 => t
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect(),
        DType::BF16 => t
            .to_vec::<bf16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::F16 => t
            .to_vec::<f16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::I64 => t
            .to_vec::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as u64)
            .collect(),
        DType::U8 => t
            .to_vec::<u8>()
            .unwrap()
            .iter()
            .map(|&v| v as u64)
            .collect(),
    }
}

/// Little-endian bytes of every element, as safetensors stores them.
fn le_bytes(t: &Tensor) -> Vec<u8> {
    let size = t.dtype().size_in_bytes();
    bits(t)
        .iter()
        .flat_map(|b| b.to_le_bytes()[..size].to_vec())
        .collect()
}

fn assert_same_tensor(name: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dtype(), b.dtype(), "{name}: dtype");
    assert_eq!(a.shape(), b.shape(), "{name}: shape");
    assert_eq!(bits(a), bits(b), "{name}: values");
}

fn assert_same_dict(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    let a: BTreeMap<&str, &Tensor> = a.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let b: BTreeMap<&str, &Tensor> = b.iter().map(|(n, t)| (n.as_str(), t)).collect();
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "names"
    );
    for (name, ta) in &a {
        assert_same_tensor(name, ta, b[name]);
    }
}

/// The state dict of a module as owned copies (not sharing storage).
fn snapshot(m: &dyn Module) -> Vec<(String, Tensor)> {
    nn::state_dict(m)
        .into_iter()
        .map(|(n, t)| (n, t.detach().contiguous_copy().unwrap()))
        .collect()
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One tensor of every dtype, with awkward values and shapes.
fn every_dtype() -> Vec<(String, Tensor)> {
    let f32s = vec![
        0.0f32,
        -0.0,
        1.5,
        f32::MIN_POSITIVE / 4.0, // subnormal
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234), // NaN with a payload
        -3.25,
        7.0,
        1e-30,
        2.0,
    ];
    let f64s: Vec<f64> = vec![
        std::f64::consts::PI,
        -0.0,
        f64::MIN_POSITIVE / 8.0,
        f64::NAN,
        1e300,
        -1.0,
    ];
    let t = |v: Result<Tensor, Error>| v.unwrap();
    vec![
        ("f32.matrix".into(), t(Tensor::from_vec(f32s, &[3, 4]))),
        ("f64.vector".into(), t(Tensor::from_vec(f64s, &[6]))),
        (
            "bf16.cube".into(),
            t(Tensor::from_vec(
                (0..24)
                    .map(|i| bf16::from_f32(i as f32 * 0.37 - 4.0))
                    .collect(),
                &[2, 3, 4],
            )),
        ),
        (
            "f16.row".into(),
            t(Tensor::from_vec(
                vec![
                    f16::from_f32(65504.0),
                    f16::from_f32(-0.000061),
                    f16::INFINITY,
                    f16::from_f32(0.1),
                ],
                &[1, 4],
            )),
        ),
        ("i64.scalar".into(), Tensor::scalar(i64::MIN)),
        (
            "i64.vector".into(),
            t(Tensor::from_vec(vec![i64::MAX, -1, 0, 42], &[4])),
        ),
        (
            "u8.mask".into(),
            t(Tensor::from_vec(vec![0u8, 1, 255, 128, 7], &[5, 1])),
        ),
        ("f32.scalar".into(), Tensor::scalar(-2.5f32)),
        ("f32.empty".into(), t(Tensor::zeros(&[0], DType::F32))),
        ("f64.empty".into(), t(Tensor::zeros(&[2, 0, 3], DType::F64))),
        ("u8.empty".into(), t(Tensor::zeros(&[0, 5], DType::U8))),
        (
            "bn.num_batches_tracked".into(),
            Tensor::scalar(3i64), // as PyTorch keeps it
        ),
    ]
}

// ----- round trips --------------------------------------------------------

#[test]
fn round_trip_every_dtype_shape_and_metadata() {
    let dir = TestDir::new("roundtrip");
    let path = dir.path("all.safetensors");
    let tensors = every_dtype();
    let metadata = meta(&[
        ("format", "pt"),
        ("note", "quotes \" backslash \\ newline \n unicode é ✓"),
        ("empty", ""),
        ("rng", r#"{"seed": 42, "stream": [1, 2, 3]}"#),
    ]);
    save_state_dict(&path, &tensors, &metadata).unwrap();
    let (back, back_meta) = load_state_dict(&path).unwrap();
    assert_eq!(back.len(), tensors.len());
    assert_same_dict(&tensors, &back);
    assert_eq!(back_meta, metadata);
    assert_eq!(dir.listing(), vec!["all.safetensors"]);

    // No metadata at all comes back empty; an empty dict is a valid file.
    save_state_dict(&path, &tensors[..2], &BTreeMap::new()).unwrap();
    let (back, back_meta) = load_state_dict(&path).unwrap();
    assert!(back_meta.is_empty());
    assert_same_dict(&tensors[..2], &back);
    save_state_dict(&path, &[], &meta(&[("k", "v")])).unwrap();
    let (back, back_meta) = load_state_dict(&path).unwrap();
    assert!(back.is_empty());
    assert_eq!(back_meta, meta(&[("k", "v")]));
}

#[test]
fn non_contiguous_tensors_are_written_row_major() {
    let dir = TestDir::new("noncontig");
    let path = dir.path("views.safetensors");
    let base = Tensor::from_vec((0..24).map(|i| i as f32).collect(), &[2, 3, 4]).unwrap();
    let permuted = base.permute(&[2, 0, 1]).unwrap();
    let sliced = base.narrow(2, 1, 2).unwrap();
    let expanded = Tensor::from_vec(vec![1i64, 2, 3], &[3, 1])
        .unwrap()
        .expand(&[3, 4])
        .unwrap();
    assert!(!permuted.is_contiguous() && !sliced.is_contiguous() && !expanded.is_contiguous());
    let tensors = vec![
        ("permuted".to_string(), permuted.clone()),
        ("sliced".to_string(), sliced.clone()),
        ("expanded".to_string(), expanded.clone()),
    ];
    save_state_dict(&path, &tensors, &BTreeMap::new()).unwrap();
    let (back, _) = load_state_dict(&path).unwrap();
    let back: BTreeMap<String, Tensor> = back.into_iter().collect();
    assert_same_tensor(
        "permuted",
        &back["permuted"],
        &permuted.contiguous().unwrap(),
    );
    assert_same_tensor("sliced", &back["sliced"], &sliced.contiguous().unwrap());
    assert_same_tensor(
        "expanded",
        &back["expanded"],
        &expanded.contiguous().unwrap(),
    );
    assert_eq!(
        back["sliced"].to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 5.0, 6.0, 9.0, 10.0, 13.0, 14.0, 17.0, 18.0, 21.0, 22.0]
    );
}

#[test]
fn save_rejects_duplicate_and_reserved_names() {
    let dir = TestDir::new("names");
    let path = dir.path("x.safetensors");
    let t = Tensor::scalar(1.0f32);
    let dup = vec![("a".to_string(), t.clone()), ("a".to_string(), t.clone())];
    let e = save_state_dict(&path, &dup, &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("`a` appears twice"), "{e}");
    let reserved = vec![("__metadata__".to_string(), t)];
    let e = save_state_dict(&path, &reserved, &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("__metadata__"), "{e}");
    assert!(dir.listing().is_empty());
}

#[test]
fn module_round_trip_resnet20_by_name() {
    use ferrite::nn::resnet::{resnet20, ResNet};
    let dir = TestDir::new("resnet");
    let path = dir.path("resnet20.safetensors");
    let a = ResNet::new(&resnet20(3, 10), &mut StdRng::seed_from_u64(1)).unwrap();
    let b = ResNet::new(&resnet20(3, 10), &mut StdRng::seed_from_u64(2)).unwrap();
    // Make a buffer non-trivial too.
    let sd = nn::state_dict(&a);
    let (_, nbt) = sd
        .iter()
        .find(|(n, _)| n == "bn1.num_batches_tracked")
        .expect("PyTorch name of the stem batch norm");
    nbt.assign(&Tensor::scalar(17i64)).unwrap();
    save_module(&path, &a, &meta(&[("arch", "resnet20")])).unwrap();
    assert_ne!(bits(&nn::parameters(&a)[0]), bits(&nn::parameters(&b)[0]));
    let report = load_into_module(&path, &b, Strict::Yes).unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.loaded.len(), nn::state_dict(&a).len());
    assert_same_dict(&snapshot(&a), &snapshot(&b));
    assert!(report.loaded.iter().any(|n| n == "layer3.2.conv2.weight"));
}

// ----- the file format, checked independently ------------------------------

/// Parses a safetensors file by hand: (header JSON, data section).
fn parse_by_hand(bytes: &[u8]) -> (serde_json::Map<String, Value>, &[u8]) {
    assert!(bytes.len() >= 8);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header length {n} is padded to a multiple of 8");
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(header.starts_with('{'));
    assert!(header.trim_end().ends_with('}'));
    assert!(
        header[header.trim_end().len()..].bytes().all(|b| b == b' '),
        "padding is spaces"
    );
    let json: Value = serde_json::from_str(header).unwrap();
    (json.as_object().unwrap().clone(), &bytes[8 + n..])
}

#[test]
fn written_file_is_valid_safetensors() {
    let dir = TestDir::new("format");
    let path = dir.path("fmt.safetensors");
    let tensors = every_dtype();
    let metadata = meta(&[("format", "pt"), ("epoch", "3")]);
    save_state_dict(&path, &tensors, &metadata).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (header, data) = parse_by_hand(&bytes);

    assert_eq!(
        header["__metadata__"],
        serde_json::json!({"format": "pt", "epoch": "3"})
    );
    let expected_dtype = |d: DType| match d {
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::I64 => "I64",
        DType::U8 => "U8",
    };
    let mut spans = Vec::new();
    for (name, t) in &tensors {
        let entry = header.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(entry["dtype"], expected_dtype(t.dtype()), "{name}");
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, t.shape(), "{name}");
        let off = entry["data_offsets"].as_array().unwrap();
        let (b, e) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        assert_eq!(e - b, t.numel() * t.dtype().size_in_bytes(), "{name}");
        assert_eq!(&data[b..e], &le_bytes(t)[..], "{name}: bytes");
        assert_eq!(b % t.dtype().size_in_bytes().max(1), 0, "{name}: aligned");
        spans.push((b, e, t.dtype().size_in_bytes(), name.clone()));
    }
    assert_eq!(header.len(), tensors.len() + 1, "no other keys");
    // The spans tile the data section exactly, larger elements first.
    spans.sort();
    let mut at = 0;
    for (b, e, _, name) in &spans {
        assert_eq!(*b, at, "{name} starts where the previous one ended");
        at = *e;
    }
    assert_eq!(at, data.len(), "no trailing bytes");
    let sizes: Vec<usize> = spans.iter().map(|s| s.2).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "by decreasing alignment: {sizes:?}"
    );

    // The reference writer (the safetensors crate) produces the same bytes.
    struct V(safetensors::Dtype, Vec<usize>, Vec<u8>);
    impl safetensors::View for &V {
        fn dtype(&self) -> safetensors::Dtype {
            self.0
        }
        fn shape(&self) -> &[usize] {
            &self.1
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.2)
        }
        fn data_len(&self) -> usize {
            self.2.len()
        }
    }
    let views: Vec<(String, V)> = tensors
        .iter()
        .map(|(n, t)| {
            let d: safetensors::Dtype =
                serde_json::from_value(Value::String(expected_dtype(t.dtype()).into())).unwrap();
            (n.clone(), V(d, t.shape().to_vec(), le_bytes(t)))
        })
        .collect();
    // (With one metadata key: the crate writes several in hash order.)
    let one_key = meta(&[("format", "pt")]);
    let reference = safetensors::serialize(
        views.iter().map(|(n, v)| (n.as_str(), v)),
        Some(one_key.clone().into_iter().collect()),
    )
    .unwrap();
    save_state_dict(&path, &tensors, &one_key).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), reference);
}

#[test]
fn same_contents_give_the_same_bytes() {
    let dir = TestDir::new("deterministic");
    let tensors = every_dtype();
    let metadata = meta(&[
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d", "4"),
        ("e", "5"),
        ("f", "6"),
    ]);
    let mut files = Vec::new();
    for i in 0..4 {
        let path = dir.path(&format!("{i}.safetensors"));
        save_state_dict(&path, &tensors, &metadata).unwrap();
        files.push(std::fs::read(&path).unwrap());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]));
    let (header, _) = parse_by_hand(&files[0]);
    let keys: Vec<&String> = header["__metadata__"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["a", "b", "c", "d", "e", "f"]);
    let text = String::from_utf8_lossy(&files[0][8..80]).into_owned();
    assert!(
        text.starts_with(r#"{"__metadata__":{"a":"1","b":"2","c":"3""#),
        "{text}"
    );
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

// ----- strict and non-strict loading -----------------------------------------

fn mlp(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .with(Linear::new(3, 4, Bias::Yes, &mut rng).unwrap())
        .with(ReLU)
        .with(Linear::new(4, 2, Bias::Yes, &mut rng).unwrap())
}

/// A state dict for `mlp` with one key missing (`2.bias`), one extra
/// (`3.weight`), one mis-shaped (`0.weight` [5, 3]) and one of the wrong
/// dtype (`2.weight` F64); `0.bias` matches.
fn bad_state_dict() -> Vec<(String, Tensor)> {
    let mut rng = StdRng::seed_from_u64(77);
    let r = |s: &[usize], d: DType, rng: &mut StdRng| Tensor::randn(s, 0.0, 1.0, d, rng).unwrap();
    vec![
        ("0.weight".into(), r(&[5, 3], DType::F32, &mut rng)),
        ("0.bias".into(), r(&[4], DType::F32, &mut rng)),
        ("2.weight".into(), r(&[2, 4], DType::F64, &mut rng)),
        ("3.weight".into(), r(&[1, 2], DType::F32, &mut rng)),
    ]
}

#[test]
fn strict_load_names_every_problem_and_changes_nothing() {
    let dir = TestDir::new("strict");
    let path = dir.path("bad.safetensors");
    save_state_dict(&path, &bad_state_dict(), &BTreeMap::new()).unwrap();
    let model = mlp(1);
    let before = snapshot(&model);
    let e = load_into_module(&path, &model, Strict::Yes).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    for needle in [
        path.display().to_string().as_str(),
        "nothing was loaded: 1 missing, 1 unexpected, 2 mismatched",
        "missing: 2.bias [2] F32",
        "unexpected: 3.weight [1, 2] F32",
        "mismatched: 0.weight (module [4, 3] F32, checkpoint [5, 3] F32), \
         2.weight (module [2, 4] F32, checkpoint [2, 4] F64)",
        "hint: 1 mismatch(es) differ only in floating dtype",
    ] {
        assert!(msg.contains(needle), "`{needle}` not in: {msg}");
    }
    assert!(!msg.contains("0.bias"), "{msg}");
    // Not even the matching `0.bias` was written.
    assert_same_dict(&before, &snapshot(&model));

    // The in-memory form behaves the same.
    let e = apply_state_dict(&model, &bad_state_dict(), Strict::Yes).unwrap_err();
    assert!(e.to_string().contains("missing: 2.bias [2] F32"), "{e}");
    assert_same_dict(&before, &snapshot(&model));
}

#[test]
fn non_strict_load_takes_the_intersection_and_reports_the_rest() {
    let dir = TestDir::new("nonstrict");
    let path = dir.path("bad.safetensors");
    let bad = bad_state_dict();
    save_state_dict(&path, &bad, &BTreeMap::new()).unwrap();
    let model = mlp(1);
    let before: BTreeMap<String, Tensor> = snapshot(&model).into_iter().collect();
    // Without converting dtypes: the F64 `2.weight` is a mismatch too.
    let opts = LoadOptions::lenient().with_convert_dtypes(false);
    let report = load_into_module_with(&path, &model, &opts).unwrap();
    assert!(!report.is_exact() && !report.is_complete());
    assert_eq!(report.loaded, vec!["0.bias"]);
    assert_eq!(report.missing, vec!["2.bias"]);
    assert_eq!(report.unexpected, vec!["3.weight"]);
    assert!(report.converted.is_empty());
    let mism: Vec<(&str, &[usize], &[usize])> = report
        .mismatched
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.module_shape.as_slice(),
                m.checkpoint_shape.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        mism,
        vec![
            ("0.weight", &[4usize, 3][..], &[5usize, 3][..]),
            ("2.weight", &[2, 4][..], &[2, 4][..]),
        ]
    );
    assert_eq!(report.mismatched[1].checkpoint_dtype, DType::F64);
    let text = report.to_string();
    assert!(
        text.starts_with(
            "loaded 1 tensor(s); 1 missing, 1 unexpected, 2 mismatched; missing: 2.bias; \
             unexpected: 3.weight; mismatched: 0.weight (module [4, 3] F32, checkpoint [5, 3] F32)"
        ),
        "{text}"
    );
    let after: BTreeMap<String, Tensor> = snapshot(&model).into_iter().collect();
    assert_same_tensor("0.bias", &after["0.bias"], &bad[1].1);
    for name in ["0.weight", "2.weight", "2.bias"] {
        assert_same_tensor(name, &after[name], &before[name]);
    }

    // Not strict (the default options): the F64 `2.weight` converts to F32.
    let model = mlp(1);
    let report = load_into_module(&path, &model, Strict::No).unwrap();
    assert_eq!(report.loaded, vec!["0.bias", "2.weight"]);
    assert_eq!(
        report.converted,
        vec![Conversion {
            name: "2.weight".into(),
            from: DType::F64,
            to: DType::F32
        }]
    );
    assert_eq!(report.missing, vec!["2.bias"]);
    assert_eq!(report.unexpected, vec!["3.weight"]);
    assert_eq!(report.mismatched.len(), 1);
    assert_eq!(report.mismatched[0].name, "0.weight");
    let text = report.to_string();
    assert!(
        text.starts_with("loaded 2 tensor(s) (1 converted: 1 F64 → F32); 1 missing"),
        "{text}"
    );
    let after: BTreeMap<String, Tensor> = snapshot(&model).into_iter().collect();
    assert_eq!(after["2.weight"].dtype(), DType::F32);
    assert_same_tensor(
        "2.weight",
        &after["2.weight"],
        &bad[2].1.to_dtype(DType::F32).unwrap(),
    );

    // A complete, exact dict is exact in both modes.
    let good = snapshot(&mlp(2));
    let report: LoadReport = apply_state_dict(&model, &good, Strict::No).unwrap();
    assert!(report.is_exact() && report.loaded.len() == 4, "{report}");
    assert_same_dict(&good, &snapshot(&model));
}

#[test]
fn loading_writes_through_to_optimizer_handles() {
    // The optimizer holds clones of the parameter handles: loading must
    // overwrite the shared storage, not replace the module's tensors.
    let model = mlp(1);
    let params = nn::parameters(&model);
    let good = snapshot(&mlp(2));
    apply_state_dict(&model, &good, Strict::Yes).unwrap();
    for ((name, t), p) in good.iter().zip(&params) {
        assert_same_tensor(name, t, p);
        assert!(p.requires_grad());
    }
}

// ----- corrupt and truncated files --------------------------------------------

fn expect_corrupt(
    result: ferrite::Result<impl std::fmt::Debug>,
    path: &Path,
    what: &str,
) -> String {
    match result {
        Err(Error::CorruptFile { path: p, msg }) => {
            assert_eq!(p, path.display().to_string(), "{what}");
            let e = Error::CorruptFile {
                path: p.clone(),
                msg: msg.clone(),
            };
            assert!(e.to_string().starts_with(&p), "{what}: {e}");
            msg
        }
        other => panic!("{what}: expected CorruptFile, got {other:?}"),
    }
}

/// A small valid file with several dtypes and metadata.
fn sample_file_bytes(dir: &TestDir) -> Vec<u8> {
    let path = dir.path("sample.safetensors");
    let tensors: Vec<(String, Tensor)> = every_dtype().into_iter().take(7).collect();
    save_state_dict(&path, &tensors, &meta(&[("format", "pt")])).unwrap();
    std::fs::read(&path).unwrap()
}

/// Writes `bytes` to `path` and loads it.
fn load_bytes(path: &Path, bytes: &[u8]) -> ferrite::Result<Vec<(String, Tensor)>> {
    std::fs::write(path, bytes).unwrap();
    load_state_dict(path).map(|(t, _)| t)
}

#[test]
fn every_truncation_is_a_corrupt_file_error() {
    let dir = TestDir::new("truncate");
    let good = sample_file_bytes(&dir);
    let path = dir.path("cut.safetensors");
    assert!(load_bytes(&path, &good).is_ok());
    for len in 0..good.len() {
        let msg = expect_corrupt(
            load_bytes(&path, &good[..len]),
            &path,
            &format!("truncated to {len}"),
        );
        if len < 8 {
            assert!(msg.contains("truncated"), "{len}: {msg}");
        }
    }
    // Trailing garbage is rejected as well.
    let mut longer = good.clone();
    longer.extend_from_slice(b"extra");
    expect_corrupt(load_bytes(&path, &longer), &path, "trailing bytes");
}

#[test]
fn random_byte_flips_never_panic() {
    let dir = TestDir::new("flips");
    let good = sample_file_bytes(&dir);
    let path = dir.path("flipped.safetensors");
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut rng = StdRng::seed_from_u64(2024);
    let (mut ok, mut corrupt) = (0, 0);
    for round in 0..400 {
        let mut bytes = good.clone();
        let flips = rng.random_range(1..=3);
        for _ in 0..flips {
            // Mostly in the header, where the structure is.
            let at = if round % 4 == 3 {
                rng.random_range(0..bytes.len())
            } else {
                rng.random_range(0..8 + n)
            };
            bytes[at] ^= 1u8 << rng.random_range(0..8);
        }
        match load_bytes(&path, &bytes) {
            Ok(_) => ok += 1,
            Err(Error::CorruptFile { path: p, .. }) => {
                assert_eq!(p, path.display().to_string());
                corrupt += 1;
            }
            Err(e) => panic!("round {round}: unexpected error {e:?}"),
        }
    }
    assert!(
        corrupt > 200,
        "most header flips are detected: {corrupt} / 400"
    );
    assert!(ok > 0, "flips in tensor data still load: {ok}");

    // Whole-byte rewrites of the 8-byte length prefix and random overwrites.
    for round in 0..200 {
        let mut bytes = good.clone();
        let at = rng.random_range(0..bytes.len().min(64));
        bytes[at] = rng.random();
        if round % 2 == 0 {
            let k = rng.random_range(0..8);
            bytes[k] = 0xff;
        }
        match load_bytes(&path, &bytes) {
            Ok(_) | Err(Error::CorruptFile { .. }) => {}
            Err(e) => panic!("round {round}: unexpected error {e:?}"),
        }
    }
}

#[test]
fn specific_corruptions_are_described() {
    let dir = TestDir::new("corrupt");
    let path = dir.path("bad.safetensors");
    let with_header = |json: &str, data: &[u8]| {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b.extend_from_slice(data);
        b
    };
    // Header length larger than the file.
    let mut b = with_header("{}", &[]);
    b[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let msg = expect_corrupt(load_bytes(&path, &b), &path, "huge length");
    assert!(msg.contains("header length 1000000 is larger"), "{msg}");
    let mut b = with_header("{}", &[]);
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_corrupt(load_bytes(&path, &b), &path, "u64::MAX length");
    // Not JSON.
    let msg = expect_corrupt(
        load_bytes(&path, &with_header("{not json", &[])),
        &path,
        "bad json",
    );
    assert!(msg.contains("JSON"), "{msg}");
    // Offsets beyond the data.
    let msg = expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 4],
            ),
        ),
        &path,
        "offsets out of range",
    );
    assert!(!msg.is_empty());
    // Offsets that disagree with the shape.
    expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        &path,
        "shape vs offsets",
    );
    // Shape whose element count overflows.
    expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        &path,
        "overflowing shape",
    );
    // A dtype safetensors knows but ferrite cannot hold, named with the tensor.
    let msg = expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        &path,
        "I32",
    );
    assert!(msg.contains("`w`") && msg.contains("I32"), "{msg}");
    // A dtype nobody knows.
    expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        &path,
        "Q9",
    );
    // Invalid UTF-8 in the header.
    let mut b = with_header(r#"{"a":{}}"#, &[]);
    b[10] = 0xff;
    expect_corrupt(load_bytes(&path, &b), &path, "utf-8");
    // A missing file is an I/O error naming it.
    let missing = dir.path("nope.safetensors");
    match load_state_dict(&missing) {
        Err(Error::Io { path: p, source }) => {
            assert_eq!(p, missing.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let e = load_into_module(&missing, &mlp(1), Strict::No).unwrap_err();
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
}

// ----- atomic writes ---------------------------------------------------------

#[test]
fn failed_write_leaves_old_checkpoint_byte_identical_and_no_temp_file() {
    let dir = TestDir::new("atomic");
    let path = dir.path("model.safetensors");
    let old_model = mlp(1);
    save_module(&path, &old_model, &meta(&[("version", "old")])).unwrap();
    let old = std::fs::read(&path).unwrap();
    let new_model = mlp(2);

    // Fail at the start, inside the header, at the header/data boundary and
    // in the middle of the tensor data.
    for limit in [0u64, 5, 8, 40, old.len() as u64 / 2, old.len() as u64 - 1] {
        checkpoint::inject_write_fault_after(Some(limit));
        let e = save_module(&path, &new_model, &meta(&[("version", "new")])).unwrap_err();
        match &e {
            Error::Io { path: p, source } => {
                assert_eq!(p, &path.display().to_string());
                assert!(source.to_string().contains("injected"), "{source}");
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), old, "limit {limit}");
        assert_eq!(dir.listing(), vec!["model.safetensors"], "limit {limit}");
    }
    // The fault was one-shot: the next save replaces the file completely.
    save_module(&path, &new_model, &meta(&[("version", "new")])).unwrap();
    assert_ne!(std::fs::read(&path).unwrap(), old);
    let (_, m) = load_state_dict(&path).unwrap();
    assert_eq!(m["version"], "new");
    assert_eq!(dir.listing(), vec!["model.safetensors"]);

    // The same holds for an error raised by the producer of the bytes.
    let current = std::fs::read(&path).unwrap();
    let e = write_atomic(&path, |w| {
        w.write_all(b"partial garbage").unwrap();
        Err(Error::InvalidArgument {
            op: "producer",
            msg: "cannot produce the data".into(),
        })
    })
    .unwrap_err();
    assert!(e.to_string().contains("cannot produce the data"));
    assert_eq!(std::fs::read(&path).unwrap(), current);
    assert_eq!(dir.listing(), vec!["model.safetensors"]);

    // And for a panic in the producer (the temporary file is still removed).
    let caught = std::panic::catch_unwind(|| {
        let _ = write_atomic(&path, |w| {
            w.write_all(&[0u8; 4096]).unwrap();
            panic!("producer panicked");
        });
    });
    assert!(caught.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), current);
    assert_eq!(dir.listing(), vec!["model.safetensors"]);
}

#[test]
fn unwritable_targets_are_io_errors_naming_the_path() {
    let dir = TestDir::new("unwritable");
    let t = vec![("w".to_string(), Tensor::scalar(1.0f32))];
    let nowhere = dir.path("no/such/dir/x.safetensors");
    match save_state_dict(&nowhere, &t, &BTreeMap::new()) {
        Err(Error::Io { path, .. }) => assert_eq!(path, nowhere.display().to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
    // The target is a directory: the rename fails, the temp file goes.
    std::fs::create_dir(dir.path("taken")).unwrap();
    let e = save_state_dict(dir.path("taken"), &t, &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(dir.listing(), vec!["taken"]);
}

// ----- training checkpoints and bit-identical resumption ------------------------

/// A tiny CNN with batch norm (so buffers matter too).
fn tiny_cnn(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .with(Conv2d::new(2, 3, 3, Conv2dParams::default(), Bias::Yes, &mut rng).unwrap())
        .with(BatchNorm2d::new(3).unwrap())
        .with(ReLU)
        .with(Flatten)
        .with(Linear::new(3 * 4 * 4, 2, Bias::Yes, &mut rng).unwrap())
}

/// Two parameter groups: conv + batch norm, and the linear head with decay.
fn groups(model: &Sequential) -> Vec<ParamGroup> {
    let named = nn::named_parameters(model);
    let (head, body): (Vec<_>, Vec<_>) = named.into_iter().partition(|(n, _)| n.starts_with("4."));
    vec![
        ParamGroup::new(body.into_iter().map(|(_, t)| t).collect(), 0.05, 0.0),
        ParamGroup::new(head.into_iter().map(|(_, t)| t).collect(), 0.02, 1e-3),
    ]
}

/// One training step on the batch of step `step` (deterministic data).
fn train_step(model: &Sequential, opt: &mut dyn Optimizer, step: u64) {
    let mut rng = StdRng::seed_from_u64(1000 + step);
    let x = Tensor::randn(&[4, 2, 6, 6], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let target = Tensor::randn(&[4, 2], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let loss = model
        .forward(&x)
        .unwrap()
        .sub(&target)
        .unwrap()
        .square()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    opt.step(&grads).unwrap();
}

fn sgd(model: &Sequential) -> Sgd {
    let cfg = SgdConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
    };
    Sgd::new(groups(model), cfg).unwrap()
}

fn adam(model: &Sequential) -> Adam {
    Adam::new(groups(model), AdamConfig::adamw()).unwrap()
}

fn optimizer_bits(state: &OptimizerState) -> Vec<Vec<u64>> {
    match state {
        OptimizerState::Sgd { buffers, steps } => buffers
            .iter()
            .map(|b| b.as_ref().map(bits).unwrap_or_default())
            .chain([vec![*steps]])
            .collect(),
        OptimizerState::Adam { moments, steps } => moments
            .iter()
            .flat_map(|s| match s {
                Some((m, v, k)) => vec![bits(m), bits(v), vec![*k]],
                None => vec![vec![]],
            })
            .chain([vec![*steps]])
            .collect(),
    }
}

/// 4 steps straight vs 2 steps, save, load into a fresh model and
/// optimizer (different initial weights), 2 more steps: bit-identical.
fn resume_is_bit_identical<O: Optimizer + CheckpointOptimizer>(
    name: &str,
    make: fn(&Sequential) -> O,
) {
    let dir = TestDir::new(name);
    let path = dir.path("train.safetensors");

    let straight = tiny_cnn(7);
    let mut opt = make(&straight);
    for s in 0..4 {
        train_step(&straight, &mut opt, s);
    }
    let want_model = snapshot(&straight);
    let want_opt = opt.checkpoint_state().unwrap();

    let first = tiny_cnn(7);
    let mut opt1 = make(&first);
    for s in 0..2 {
        train_step(&first, &mut opt1, s);
    }
    let extra = meta(&[("rng", r#"{"seed":42,"next_step":2}"#)]);
    save_training(&path, &first, &opt1.checkpoint_state().unwrap(), 2, &extra).unwrap();

    let resumed = tiny_cnn(12345);
    let mut opt2 = make(&resumed);
    let ckpt = load_training(&path, &resumed, &mut opt2).unwrap();
    assert_eq!(ckpt.epoch, 2);
    assert_eq!(ckpt.metadata, extra);
    assert_eq!(opt2.steps(), 2);
    assert_same_dict(&snapshot(&first), &snapshot(&resumed));
    for s in 2..4 {
        train_step(&resumed, &mut opt2, s);
    }
    assert_same_dict(&want_model, &snapshot(&resumed));
    assert_eq!(
        optimizer_bits(&want_opt),
        optimizer_bits(&opt2.checkpoint_state().unwrap()),
        "{name}: optimizer state"
    );
    let nbt = nn::state_dict(&resumed)
        .into_iter()
        .find(|(n, _)| n == "1.num_batches_tracked")
        .unwrap();
    assert_eq!(nbt.1.to_scalar::<i64>().unwrap(), 4);

    // Without the optimizer state the run diverges (the test can fail).
    let naive = tiny_cnn(12345);
    let mut opt3 = make(&naive);
    apply_state_dict(&naive, &ckpt.model, Strict::Yes).unwrap();
    for s in 2..4 {
        train_step(&naive, &mut opt3, s);
    }
    let diverged = snapshot(&naive);
    assert!(
        want_model
            .iter()
            .zip(&diverged)
            .any(|((_, a), (_, b))| bits(a) != bits(b)),
        "{name}: a resume without optimizer state should differ"
    );
}

#[test]
fn resume_sgd_momentum_is_bit_identical() {
    resume_is_bit_identical("resume-sgd", sgd);
}

#[test]
fn resume_adam_is_bit_identical() {
    resume_is_bit_identical("resume-adam", adam);
}

#[test]
fn training_checkpoint_layout_uses_pytorch_style_keys() {
    let dir = TestDir::new("train-layout");
    let path = dir.path("t.safetensors");
    let model = tiny_cnn(1);
    let mut opt = adam(&model);
    train_step(&model, &mut opt, 0);
    save_training(
        &path,
        &model,
        &opt.checkpoint_state().unwrap(),
        1,
        &BTreeMap::new(),
    )
    .unwrap();
    let (tensors, m) = load_state_dict(&path).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    for key in [
        "model.0.weight",
        "model.1.num_batches_tracked",
        "model.4.bias",
        "optimizer.state.0.exp_avg",
        "optimizer.state.0.exp_avg_sq",
        "optimizer.state.0.step",
        "optimizer.state.5.exp_avg",
    ] {
        assert!(names.contains(&key), "{key} not in {names:?}");
    }
    let nparams = nn::parameters(&model).len();
    assert_eq!(nparams, 6);
    assert_eq!(tensors.len(), nn::state_dict(&model).len() + 3 * nparams);
    assert_eq!(m["ferrite.optimizer"], "adam");
    assert_eq!(m["ferrite.optimizer.steps"], "1");
    assert_eq!(m["ferrite.optimizer.num_params"], "6");
    assert_eq!(m["ferrite.epoch"], "1");
    let step = &tensors
        .iter()
        .find(|(n, _)| n == "optimizer.state.3.step")
        .unwrap()
        .1;
    assert_eq!(step.dtype(), DType::I64);
    assert_eq!(step.to_scalar::<i64>().unwrap(), 1);

    // SGD without momentum has no per-parameter state at all.
    let mut plain = Sgd::new(groups(&model), SgdConfig::default()).unwrap();
    train_step(&model, &mut plain, 1);
    let state = plain.checkpoint_state().unwrap();
    save_training(&path, &model, &state, 0, &BTreeMap::new()).unwrap();
    let ckpt = read_training(&path).unwrap();
    match ckpt.optimizer {
        OptimizerState::Sgd { buffers, steps } => {
            assert_eq!(buffers.len(), 6);
            assert!(buffers.iter().all(Option::is_none));
            assert_eq!(steps, 1);
        }
        other => panic!("{other:?}"),
    }

    // Reserved metadata keys are refused.
    let e = save_training(&path, &model, &state, 0, &meta(&[("ferrite.epoch", "9")])).unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
}

#[test]
fn snapshots_do_not_follow_later_training() {
    let model = tiny_cnn(3);
    let mut opt = sgd(&model);
    train_step(&model, &mut opt, 0);
    let state = opt.checkpoint_state().unwrap();
    let before = optimizer_bits(&state);
    train_step(&model, &mut opt, 1);
    assert_eq!(before, optimizer_bits(&state));
}

#[test]
fn mismatched_resume_changes_neither_model_nor_optimizer() {
    let dir = TestDir::new("train-mismatch");
    let path = dir.path("t.safetensors");
    let model = tiny_cnn(1);
    let mut opt = sgd(&model);
    train_step(&model, &mut opt, 0);
    save_training(
        &path,
        &model,
        &opt.checkpoint_state().unwrap(),
        1,
        &BTreeMap::new(),
    )
    .unwrap();

    // SGD state into Adam: refused before the model is touched.
    let other = tiny_cnn(2);
    let mut wrong = adam(&other);
    let before = snapshot(&other);
    let e = load_training(&path, &other, &mut wrong).unwrap_err();
    assert!(e.to_string().contains("sgd state"), "{e}");
    assert!(e.to_string().contains("t.safetensors"), "{e}");
    assert_same_dict(&before, &snapshot(&other));
    assert!(wrong.moments().iter().all(Option::is_none));
    assert_eq!(wrong.steps(), 0);

    // A different architecture: refused, names the problem.
    let mut rng = StdRng::seed_from_u64(0);
    let small = Sequential::new().with(Linear::new(3, 2, Bias::Yes, &mut rng).unwrap());
    let mut small_opt = Sgd::new(
        vec![ParamGroup::new(nn::parameters(&small), 0.1, 0.0)],
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    let before = snapshot(&small);
    let e = load_training(&path, &small, &mut small_opt).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("0.weight (module [2, 3] F32, checkpoint"),
        "{msg}"
    );
    assert!(msg.contains("unexpected: "), "{msg}");
    assert!(!msg.contains("hint"), "{msg}");
    assert_same_dict(&before, &snapshot(&small));
    assert!(small_opt.momentum_buffers().iter().all(Option::is_none));

    // A plain state dict is not a training checkpoint.
    let plain = dir.path("plain.safetensors");
    save_module(&plain, &model, &BTreeMap::new()).unwrap();
    expect_corrupt(read_training(&plain), &plain, "plain state dict");
}

#[test]
fn corrupt_training_checkpoints_never_panic() {
    let dir = TestDir::new("train-corrupt");
    let path = dir.path("t.safetensors");
    let model = tiny_cnn(1);
    let mut opt = adam(&model);
    train_step(&model, &mut opt, 0);
    save_training(
        &path,
        &model,
        &opt.checkpoint_state().unwrap(),
        1,
        &BTreeMap::new(),
    )
    .unwrap();
    let good = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let bad = dir.path("bad.safetensors");
    let mut rng = StdRng::seed_from_u64(99);
    for round in 0..300 {
        let mut bytes = good.clone();
        if round % 3 == 0 {
            bytes.truncate(rng.random_range(0..good.len()));
        } else {
            let at = rng.random_range(0..8 + n);
            bytes[at] ^= 1u8 << rng.random_range(0..8);
        }
        std::fs::write(&bad, &bytes).unwrap();
        let fresh = tiny_cnn(2);
        let mut fresh_opt = adam(&fresh);
        match load_training(&bad, &fresh, &mut fresh_opt) {
            Ok(_) => {}
            Err(Error::CorruptFile { path, .. }) => assert_eq!(path, bad.display().to_string()),
            // A flip that renames a tensor or changes a count is a mismatch.
            Err(Error::InvalidArgument { msg, .. }) => {
                assert!(msg.contains("bad.safetensors"), "{msg}")
            }
            Err(e) => panic!("round {round}: {e:?}"),
        }
    }

    // Hand-made inconsistencies in the optimizer part.
    let mut tensors = load_state_dict(&path).unwrap().0;
    let (_, mut m) = load_state_dict(&path).unwrap();
    tensors.retain(|(n, _)| n != "optimizer.state.2.exp_avg_sq");
    save_state_dict(&bad, &tensors, &m).unwrap();
    let msg = expect_corrupt(read_training(&bad), &bad, "incomplete Adam state");
    assert!(msg.contains("parameter 2"), "{msg}");
    let tensors = load_state_dict(&path).unwrap().0;
    m.insert("ferrite.optimizer.num_params".into(), "3".into());
    save_state_dict(&bad, &tensors, &m).unwrap();
    let msg = expect_corrupt(read_training(&bad), &bad, "index out of range");
    assert!(msg.contains("out of range"), "{msg}");
    m.insert("ferrite.optimizer.num_params".into(), "99999999999".into());
    save_state_dict(&bad, &tensors, &m).unwrap();
    expect_corrupt(read_training(&bad), &bad, "absurd parameter count");
}

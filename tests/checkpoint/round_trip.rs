//! Safetensors round trips, and the written file format checked by an independent parser.

use super::helpers::{
    assert_same_dict, assert_same_tensor, bits, every_dtype, meta, snapshot, TestDir,
};
use ferrite::checkpoint::{
    load_into_module, load_state_dict, save_module, save_state_dict, Strict,
};
use ferrite::nn;
use ferrite::{DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use std::collections::BTreeMap;

/// Little-endian bytes of every element, as safetensors stores them.
fn le_bytes(t: &Tensor) -> Vec<u8> {
    let size = t.dtype().size_in_bytes();
    bits(t)
        .iter()
        .flat_map(|b| b.to_le_bytes()[..size].to_vec())
        .collect()
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

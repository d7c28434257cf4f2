//! Lenient and strict loading of checkpoints that PyTorch accepts but that
//! do not match a ferrite module exactly: fp16 weights, DataParallel's
//! `module.` prefix, no `num_batches_tracked`. The files were written by
//! PyTorch (`tests/fixtures/gen_checkpoint_lenient.py`).

use ferrite::checkpoint::Strict;
use ferrite::checkpoint::{
    load_into_module, load_into_module_with, load_state_dict, Conversion, LoadOptions,
};
use ferrite::nn::resnet::{resnet18, ResNet};
use ferrite::nn::{self, Module, Visit};
use ferrite::{DType, Tensor};
use half::f16;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use std::collections::BTreeMap;

mod lenient;
use lenient::*;

fn values() -> Value {
    let text = std::fs::read_to_string(fixture("checkpoint_resnet.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn from_json(v: &Value) -> Tensor {
    assert_eq!(v["dtype"], "f32");
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"].as_array().unwrap();
    Tensor::from_vec(
        data.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        &shape,
    )
    .unwrap()
}

/// The reference: the F32 state dict, from the DataParallel file without
/// its prefix, checked against the float64 sums PyTorch computed.
fn reference() -> BTreeMap<String, Tensor> {
    let (tensors, meta) = load_state_dict(fixture(DP_FILE)).unwrap();
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    let sums = values()["sums"].as_object().unwrap().clone();
    assert_eq!(sums.len(), FLOATS);
    let out: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| (k.strip_prefix("module.").unwrap().to_string(), t))
        .collect();
    assert_eq!(out.len(), TENSORS);
    for (name, want) in &sums {
        let got: f64 = out[name]
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .sum();
        let want = want.as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()), "{name}");
    }
    out
}

/// Eval-mode logits of `model` on the fixture's input, against `key`.
fn assert_logits(model: &mut ResNet, key: &str, tol: f32) {
    let doc = values();
    model.set_training(false);
    let got = model
        .forward(&from_json(&doc["x"]))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let want = from_json(&doc[key]).to_vec::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= tol, "{key}[{i}]: {g} vs {w}");
    }
}

fn counters(m: &dyn Module) -> Vec<(String, i64)> {
    nn::state_dict(m)
        .into_iter()
        .filter(|(n, _)| n.ends_with("num_batches_tracked"))
        .map(|(n, t)| (n, t.to_scalar::<i64>().unwrap()))
        .collect()
}

// ----- the three PyTorch files, lenient ---------------------------------

#[test]
fn fp16_file_converts_into_a_float32_resnet() {
    let mut model = small_resnet(1);
    let report = load_into_module_with(fixture(F16_FILE), &model, &LoadOptions::default()).unwrap();
    assert!(report.is_complete() && !report.is_exact(), "{report}");
    assert_eq!(report.loaded.len(), TENSORS);
    assert_eq!(report.converted.len(), FLOATS);
    assert!(report
        .converted
        .iter()
        .all(|c| c.from == DType::F16 && c.to == DType::F32));
    assert_eq!(
        report.converted[0],
        Conversion {
            name: "conv1.weight".into(),
            from: DType::F16,
            to: DType::F32
        }
    );
    assert!(report.tolerated_missing.is_empty() && report.hints.is_empty());
    assert_eq!(
        report.to_string(),
        format!("loaded {TENSORS} tensor(s) ({FLOATS} converted: {FLOATS} F16 → F32)")
    );

    // Each value is the float32 reference rounded to fp16 (exactly, as
    // PyTorch's `half()` rounds), and so within fp16 rounding of it.
    let reference = reference();
    for (name, t) in nn::state_dict(&model) {
        let want = &reference[&name];
        if t.dtype() == DType::I64 {
            assert_eq!(t.to_scalar::<i64>().unwrap(), 2, "{name}");
            continue;
        }
        assert_eq!((t.dtype(), t.shape()), (DType::F32, want.shape()), "{name}");
        for (g, w) in t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .zip(want.to_vec::<f32>().unwrap())
        {
            assert_eq!(g.to_bits(), f16::from_f32(w).to_f32().to_bits(), "{name}");
            assert!(
                (g - w).abs() <= w.abs() / 2048.0 + 1e-7,
                "{name}: {g} vs {w}"
            );
        }
    }
    // And the network computes what PyTorch's float32 model loaded from the
    // same file does.
    assert_logits(&mut model, "eval_logits_f16", 2e-5);
}

#[test]
fn fp16_file_converts_into_other_float_dtypes_and_loads_f16_exactly() {
    let mut model = small_resnet(1);
    model.to_dtype(DType::F64).unwrap();
    let report = load_into_module(fixture(F16_FILE), &model, Strict::No).unwrap();
    assert_eq!(report.converted.len(), FLOATS);
    assert!(report.converted.iter().all(|c| c.to == DType::F64));
    let w = nn::state_dict(&model)[0].1.to_vec::<f64>().unwrap();
    let r = reference()["conv1.weight"].to_vec::<f32>().unwrap();
    for (g, w) in w.iter().zip(r) {
        assert_eq!(*g, f16::from_f32(w).to_f64());
    }

    // A half-precision module takes the file as it is: exact, even strictly.
    let mut model = small_resnet(1);
    model.to_dtype(DType::F16).unwrap();
    let report = load_into_module(fixture(F16_FILE), &model, Strict::Yes).unwrap();
    assert!(report.is_exact() && report.converted.is_empty(), "{report}");
}

#[test]
fn dataparallel_file_loads_with_strip_prefix() {
    let mut model = small_resnet(1);
    let opts = LoadOptions::default().with_strip_prefix("module.");
    let report = load_into_module_with(fixture(DP_FILE), &model, &opts).unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.loaded.len(), TENSORS);
    assert_eq!(report.to_string(), format!("loaded {TENSORS} tensor(s)"));
    let reference = reference();
    for (name, t) in nn::state_dict(&model) {
        assert_eq!(t.dtype(), reference[&name].dtype(), "{name}");
        if t.dtype() == DType::F32 {
            assert_eq!(
                t.to_vec::<f32>().unwrap(),
                reference[&name].to_vec::<f32>().unwrap(),
                "{name}"
            );
        }
    }
    assert!(counters(&model).iter().all(|(_, c)| *c == 2));
    assert_logits(&mut model, "eval_logits", 2e-5);

    // The same options, strict: still loads (the prefix is a rename).
    let model = small_resnet(2);
    let report = load_into_module_with(
        fixture(DP_FILE),
        &model,
        &LoadOptions::strict().with_strip_prefix("module."),
    )
    .unwrap();
    assert!(report.is_exact(), "{report}");
}

#[test]
fn dataparallel_file_without_the_option_loads_nothing_and_says_why() {
    let model = small_resnet(1);
    let before = snapshot(&model);
    let report = load_into_module(fixture(DP_FILE), &model, Strict::No).unwrap();
    assert!(report.loaded.is_empty());
    assert_eq!(report.missing.len(), FLOATS);
    assert_eq!(report.tolerated_missing.len(), COUNTERS);
    assert_eq!(report.unexpected.len(), TENSORS);
    assert!(report.unexpected.iter().all(|k| k.starts_with("module.")));
    assert_eq!(
        report.hints,
        vec![format!(
            "every checkpoint key starts with `module.` (the prefix of nn.DataParallel \
             checkpoints): with strip_prefix(\"module.\"), {TENSORS} key(s) would match \
             instead of 0"
        )]
    );
    let text = report.to_string();
    assert_short(&text);
    assert_contains(
        &text,
        &[
            "loaded 0 tensor(s)",
            &format!("{FLOATS} missing, {TENSORS} unexpected, 0 mismatched"),
            "missing: conv1.weight, bn1.weight, bn1.bias, bn1.running_mean, \
             bn1.running_var, … and 42 more",
            "hint: every checkpoint key starts with `module.`",
        ],
    );
    assert_eq!(before, snapshot(&model));
}

#[test]
fn file_without_num_batches_tracked_keeps_the_modules_counters() {
    let mut model = small_resnet(1);
    // One training step's forward, so the module's counters are 1 and
    // "kept" is distinguishable from "reset".
    let x = Tensor::randn(
        &[2, 3, 8, 8],
        0.0,
        1.0,
        DType::F32,
        &mut StdRng::seed_from_u64(9),
    )
    .unwrap();
    model.forward(&x).unwrap();
    let kept = counters(&model);
    assert!(kept.len() == COUNTERS && kept.iter().all(|(_, c)| *c == 1));

    let report = load_into_module(fixture(NO_NBT_FILE), &model, Strict::No).unwrap();
    assert!(report.is_complete() && !report.is_exact(), "{report}");
    assert_eq!(report.loaded.len(), FLOATS);
    assert!(report.converted.is_empty());
    let names: Vec<String> = kept.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(report.tolerated_missing, names);
    assert_eq!(
        &names[..3],
        [
            "bn1.num_batches_tracked",
            "layer1.0.bn1.num_batches_tracked",
            "layer1.0.bn2.num_batches_tracked"
        ]
    );
    assert_eq!(
        report.to_string(),
        format!(
            "loaded {FLOATS} tensor(s); {COUNTERS} num_batches_tracked missing from the \
             checkpoint kept the module's value"
        )
    );
    assert_eq!(counters(&model), kept);
    assert_logits(&mut model, "eval_logits", 2e-5);
}

// ----- strict -------------------------------------------------------------

#[test]
fn strict_refuses_each_pytorch_file_with_a_short_message() {
    let model = small_resnet(1);
    let before = snapshot(&model);
    let load = |file: &str, opts: &LoadOptions| {
        let msg = strict_error(load_into_module_with(fixture(file), &model, opts));
        // The boolean form is the same strict load.
        assert_eq!(
            msg,
            strict_error(load_into_module(fixture(file), &model, Strict::Yes))
        );
        assert_short(&msg);
        assert!(
            msg.contains(file) && msg.contains("nothing was loaded"),
            "{msg}"
        );
        msg
    };
    let strict = LoadOptions::strict();

    let msg = load(F16_FILE, &strict);
    assert_contains(
        &msg,
        &[
            &format!("0 missing, 0 unexpected, {FLOATS} mismatched"),
            "mismatched: conv1.weight (module [8, 3, 3, 3] F32, checkpoint [8, 3, 3, 3] F16), \
             bn1.weight (module [8] F32, checkpoint [8] F16)",
            &format!("… and {} more", FLOATS - 5),
            &format!("hint: {FLOATS} mismatch(es) differ only in floating dtype"),
        ],
    );

    let msg = load(DP_FILE, &strict);
    assert_contains(
        &msg,
        &[
            &format!("{TENSORS} missing, {TENSORS} unexpected, 0 mismatched"),
            "missing: conv1.weight [8, 3, 3, 3] F32, bn1.weight [8] F32",
            // File order: the I64 counters first, then by name.
            "unexpected: module.bn1.num_batches_tracked [] I64, \
             module.layer1.0.bn1.num_batches_tracked [] I64",
            "strip_prefix(\"module.\")",
        ],
    );

    let msg = load(NO_NBT_FILE, &strict);
    assert_contains(
        &msg,
        &[
            &format!("{COUNTERS} missing, 0 unexpected, 0 mismatched"),
            "missing: bn1.num_batches_tracked [] I64, layer1.0.bn1.num_batches_tracked [] I64",
            "… and 4 more",
            "hint: 9 missing key(s) are num_batches_tracked",
        ],
    );
    assert!(!msg.contains("unexpected:"), "{msg}");
    assert_eq!(before, snapshot(&model));
}

#[test]
fn strict_as_pytorch_converts_and_tolerates_but_needs_every_key() {
    // `strict` alone, with the default conversions: PyTorch's
    // `load_state_dict(strict=True)`.
    let opts = LoadOptions::default().with_strict(true);
    let model = small_resnet(1);
    let report = load_into_module_with(fixture(F16_FILE), &model, &opts).unwrap();
    assert_eq!(report.converted.len(), FLOATS);
    let report = load_into_module_with(fixture(NO_NBT_FILE), &model, &opts).unwrap();
    assert_eq!(report.tolerated_missing.len(), COUNTERS);
    let before = snapshot(&model);
    let msg = strict_error(load_into_module_with(fixture(DP_FILE), &model, &opts));
    assert_contains(&msg, &[&format!("{FLOATS} missing, {TENSORS} unexpected")]);
    assert_eq!(before, snapshot(&model));
}

#[test]
fn strict_error_on_resnet18_against_another_network_is_short() {
    let model = ResNet::new(&resnet18(3, 1000), &mut StdRng::seed_from_u64(0)).unwrap();
    let own = nn::state_dict(&model).len();
    assert_eq!(own, 122);
    // The small network's 56 names all exist in ResNet-18 with other
    // shapes (its counters match, but strictness refuses the whole load).
    let msg = strict_error(load_into_module(fixture(F16_FILE), &model, Strict::Yes));
    assert_short(&msg);
    assert_contains(
        &msg,
        &[
            &format!(
                "{} missing, 0 unexpected, {FLOATS} mismatched",
                own - TENSORS
            ),
            "missing: layer1.1.conv1.weight [64, 64, 3, 3] F32",
            "mismatched: conv1.weight (module [64, 3, 7, 7] F32, checkpoint [8, 3, 3, 3] F16)",
            &format!("… and {} more", own - TENSORS - 5),
        ],
    );
    // Nothing in common: every key of both sides.
    let msg = strict_error(load_into_module(fixture(DP_FILE), &model, Strict::Yes));
    assert_short(&msg);
    assert_contains(
        &msg,
        &[
            &format!("{own} missing, {TENSORS} unexpected, 0 mismatched"),
            &format!("… and {} more", own - 5),
            &format!("… and {} more", TENSORS - 5),
        ],
    );
    // The lenient report of the same load is bounded as well.
    let report = load_into_module(fixture(DP_FILE), &model, Strict::No).unwrap();
    let text = report.to_string();
    assert_short(&text);
    assert_eq!(report.missing.len() + report.tolerated_missing.len(), own);
}

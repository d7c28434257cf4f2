//! Load options on state dicts: key prefixes stripped, added or replaced,
//! options that match nothing, names that collide after renaming, and which
//! dtypes convert.

mod lenient;

use ferrite::checkpoint::Strict;
use ferrite::checkpoint::{apply_state_dict, apply_state_dict_with, load_state_dict, LoadOptions};
use ferrite::nn::{self, Module, Sequential};
use ferrite::{DType, Tensor};
use half::{bf16, f16};
use lenient::*;

// ----- prefixes -----------------------------------------------------------

#[test]
fn prefixes_strip_add_and_replace() {
    let (tensors, _) = load_state_dict(fixture(DP_FILE)).unwrap();
    // A module whose keys are `0.conv1.weight`, ...: replace the prefix.
    let wrapped = Sequential::new().with(small_resnet(1));
    let opts = LoadOptions::strict()
        .with_strip_prefix("module.")
        .with_add_prefix("0.");
    let report = apply_state_dict_with(&wrapped, &tensors, &opts).unwrap();
    assert!(
        report.is_exact() && report.loaded[0] == "0.conv1.weight",
        "{report}"
    );

    // Add only: the unprefixed fp16 file into the wrapped module.
    let (half, _) = load_state_dict(fixture(F16_FILE)).unwrap();
    let wrapped = Sequential::new().with(small_resnet(1));
    let report = apply_state_dict_with(
        &wrapped,
        &half,
        &LoadOptions::default().with_add_prefix("0."),
    )
    .unwrap();
    assert!(
        report.is_complete() && report.converted.len() == FLOATS,
        "{report}"
    );
    // Without it, the report suggests it.
    let wrapped = Sequential::new().with(small_resnet(1));
    let report = apply_state_dict(&wrapped, &half, Strict::No).unwrap();
    assert!(report.loaded.is_empty());
    assert_eq!(
        report.hints,
        vec![format!(
            "every module key starts with `0.`: with add_prefix(\"0.\"), {TENSORS} key(s) \
             would match instead of 0"
        )]
    );

    // Keys without the prefix to strip are kept as they are.
    let mut mixed = tensors.clone();
    mixed[0].0 = mixed[0].0.strip_prefix("module.").unwrap().to_string();
    let model = small_resnet(1);
    let opts = LoadOptions::strict().with_strip_prefix("module.");
    assert!(apply_state_dict_with(&model, &mixed, &opts)
        .unwrap()
        .is_exact());
}

#[test]
fn prefix_options_that_match_nothing_are_explained() {
    let model = small_resnet(1);
    let before = snapshot(&model);
    let (tensors, _) = load_state_dict(fixture(DP_FILE)).unwrap();

    // A prefix no key has.
    let opts = LoadOptions::default().with_strip_prefix("model.");
    let report = apply_state_dict_with(&model, &tensors, &opts).unwrap();
    assert!(report.loaded.is_empty());
    assert_eq!(report.hints.len(), 2, "{report}");
    assert_eq!(
        report.hints[0],
        "no checkpoint key starts with strip_prefix `model.`"
    );
    assert!(
        report.hints[1].contains("strip_prefix(\"module.\")"),
        "{report}"
    );

    // Strip and add that together make no key match, strictly: refused,
    // with the options that would have worked.
    let opts = LoadOptions::strict()
        .with_strip_prefix("module.")
        .with_add_prefix("net.");
    let msg = strict_error(apply_state_dict_with(&model, &tensors, &opts));
    assert_contains(
        &msg,
        &[
            &format!("{TENSORS} missing, {TENSORS} unexpected"),
            "unexpected: module.bn1.num_batches_tracked [] I64",
            "hint: every checkpoint key starts with `module.` (the prefix of \
             nn.DataParallel checkpoints): with strip_prefix(\"module.\") and no add_prefix, \
             56 key(s) would match instead of 0",
        ],
    );
    assert_short(&msg);

    // The right prefix on a file that does not have it: nothing changes,
    // and the report says so.
    let (half, _) = load_state_dict(fixture(F16_FILE)).unwrap();
    let report = apply_state_dict_with(
        &model,
        &half,
        &LoadOptions::default().with_strip_prefix("module."),
    )
    .unwrap();
    assert!(report.is_complete());
    assert_eq!(
        report.hints,
        vec!["no checkpoint key starts with strip_prefix `module.`"]
    );
    assert_ne!(before, snapshot(&model));
}

#[test]
fn names_that_collide_after_renaming_are_refused() {
    let model = small_resnet(1);
    let before = snapshot(&model);
    let t = |n: usize| Tensor::zeros(&[n], DType::F32).unwrap();
    let tensors = vec![
        ("module.fc.bias".to_string(), t(10)),
        ("fc.bias".to_string(), t(10)),
    ];
    let opts = LoadOptions::default().with_strip_prefix("module.");
    let e = apply_state_dict_with(&model, &tensors, &opts).unwrap_err();
    assert_contains(
        &e.to_string(),
        &["`module.fc.bias` and `fc.bias` both become `fc.bias`"],
    );
    assert_eq!(before, snapshot(&model));
}

// ----- conversions ----------------------------------------------------------

#[test]
fn only_floating_dtypes_convert() {
    let model = small_resnet(1);
    let mut sd = nn::state_dict(&model);
    let bias: Vec<f32> = (0..10).map(|i| 0.1 * i as f32 - 0.3).collect();
    for (name, t) in sd.iter_mut() {
        *t = match name.as_str() {
            "fc.bias" => {
                Tensor::from_vec(bias.iter().map(|&v| bf16::from_f32(v)).collect(), &[10]).unwrap()
            }
            "fc.weight" => t.to_dtype(DType::F64).unwrap(),
            // batch norm's counter as a float, and as another integer type
            "bn1.num_batches_tracked" => Tensor::from_vec(vec![3.0f32], &[]).unwrap(),
            "layer1.0.bn1.num_batches_tracked" => Tensor::from_vec(vec![3u8], &[]).unwrap(),
            _ => t.clone(),
        };
    }
    let target = small_resnet(2);
    let report = apply_state_dict(&target, &sd, Strict::No).unwrap();
    let conv: Vec<(&str, DType, DType)> = report
        .converted
        .iter()
        .map(|c| (c.name.as_str(), c.from, c.to))
        .collect();
    assert_eq!(
        conv,
        vec![
            ("fc.weight", DType::F64, DType::F32),
            ("fc.bias", DType::BF16, DType::F32)
        ]
    );
    let mism: Vec<(&str, DType)> = report
        .mismatched
        .iter()
        .map(|m| (m.name.as_str(), m.checkpoint_dtype))
        .collect();
    assert_eq!(
        mism,
        vec![
            ("bn1.num_batches_tracked", DType::F32),
            ("layer1.0.bn1.num_batches_tracked", DType::U8)
        ]
    );
    assert!(report.hints.is_empty(), "{report}");
    assert_contains(
        &report.to_string(),
        &[
            "(2 converted: 1 F64 → F32, 1 BF16 → F32)",
            "0 missing, 0 unexpected, 2 mismatched",
        ],
    );
    let got = nn::state_dict(&target);
    let get = |n: &str| got.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let want: Vec<f32> = bias.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(get("fc.bias").to_vec::<f32>().unwrap(), want);
    assert_eq!(
        get("fc.weight").to_vec::<f32>().unwrap(),
        nn::state_dict(&model)
            .into_iter()
            .find(|(k, _)| k == "fc.weight")
            .unwrap()
            .1
            .to_vec::<f32>()
            .unwrap()
    );
    assert_eq!(
        get("bn1.num_batches_tracked").to_scalar::<i64>().unwrap(),
        0
    );

    // Narrowing converts too (rounded; beyond the range, infinite).
    let mut m16 = small_resnet(3);
    m16.to_dtype(DType::F16).unwrap();
    let big = vec![(
        "fc.bias".to_string(),
        Tensor::from_vec(vec![1e6f32; 10], &[10]).unwrap(),
    )];
    let report = apply_state_dict(&m16, &big, Strict::No).unwrap();
    assert_eq!(report.converted[0].to, DType::F16);
    let got = nn::state_dict(&m16);
    let b = &got.iter().find(|(k, _)| k == "fc.bias").unwrap().1;
    assert!(b.to_vec::<f16>().unwrap().iter().all(|v| v.is_infinite()));
}

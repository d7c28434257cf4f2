//! Strict and non-strict loading: reported problems, intersections, optimizer handles.

use super::helpers::{assert_same_dict, assert_same_tensor, mlp, snapshot, TestDir};
use ferrite::checkpoint::{
    apply_state_dict, load_into_module, load_into_module_with, save_state_dict, Conversion,
    LoadOptions, LoadReport, Strict,
};
use ferrite::nn;
use ferrite::{DType, Error, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

// ----- strict and non-strict loading -----------------------------------------

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

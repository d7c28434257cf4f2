//! ElementLoss dispatch and name round trips, and parity with PyTorch (`losses.json`).

use super::helpers::{losses, vals};
use crate::common;
use crate::common::{assert_close, randn, tensor_of, uniform, values};
use ferrite::loss::{
    asymmetric_loss, bce_with_logits, bce_with_logits_pos_weight, cross_entropy, mse_loss,
    sigmoid_focal_loss, AslOptions, CrossEntropyOptions, ElementLoss, Reduction,
};
use ferrite::train::{BaseLoss, LossSpec};
use ferrite::{Error, Result, Tensor};
use serde_json::Value;

// ----- ElementLoss ---------------------------------------------------------

#[test]
fn element_loss_dispatches_and_round_trips_its_name() {
    let z = randn(&[2, 3], 41);
    let y = uniform(&[2, 3], 0.0, 1.0, 42);
    let direct = [
        bce_with_logits(&z, &y, None, Reduction::Sum),
        sigmoid_focal_loss(&z, &y, 2.0, Some(0.25), None, Reduction::Sum),
        sigmoid_focal_loss(&z, &y, 0.5, None, None, Reduction::Sum),
        asymmetric_loss(&z, &y, &AslOptions::default(), None, Reduction::Sum),
    ];
    for (loss, want) in losses().iter().zip(direct) {
        let got = loss.compute(&z, &y, None, Reduction::Sum).unwrap();
        assert_eq!(vals(&got), vals(&want.unwrap()), "{}", loss.name());
        let parsed: LossSpec = loss.name().parse().unwrap();
        assert_eq!(
            parsed,
            LossSpec::new(BaseLoss::Element(*loss)),
            "{}",
            loss.name()
        );
    }
    assert_eq!(ElementLoss::Bce.name(), "bce");
    assert_eq!(losses()[1].name(), "focal(gamma=2,alpha=0.25)");
    let element = |text: &str| text.parse::<LossSpec>().map(|s| s.base);
    assert_eq!(
        element("focal").unwrap(),
        BaseLoss::Element(ElementLoss::Focal {
            gamma: 2.0,
            alpha: None
        })
    );
    assert_eq!(
        element(" focal( gamma = 1.5 , alpha = 0.5 ) ").unwrap(),
        BaseLoss::Element(ElementLoss::Focal {
            gamma: 1.5,
            alpha: Some(0.5)
        })
    );
    assert_eq!(
        element("asl(clip=0.1)").unwrap(),
        BaseLoss::Element(ElementLoss::Asl(AslOptions {
            clip: 0.1,
            ..Default::default()
        }))
    );
    for bad in [
        "mse",
        "bce(gamma=1)",
        "focal(gamma=x)",
        "focal(beta=1)",
        "focal(gamma=-1)",
        "asl(clip=1)",
        "asl(clip=0.1",
        "asl(clip)",
    ] {
        let r = element(bad);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{bad}: {r:?}"
        );
    }
}

// ----- PyTorch parity ------------------------------------------------------

fn opt_tensor(v: &Value) -> Option<Tensor> {
    (!v.is_null()).then(|| tensor_of(v))
}

fn reduction_of(s: &str) -> Reduction {
    match s {
        "none" => Reduction::None,
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        other => panic!("unknown reduction {other}"),
    }
}

fn evaluate(case: &Value, z: &Tensor) -> Result<Tensor> {
    let y = tensor_of(&case["targets"]);
    let w = opt_tensor(&case["weight"]);
    let pw = opt_tensor(&case["pos_weight"]);
    let red = reduction_of(case["reduction"].as_str().unwrap());
    let p = &case["params"];
    let f = |k: &str| p[k].as_f64().unwrap();
    match case["loss"].as_str().unwrap() {
        "bce" => match &pw {
            Some(pw) => bce_with_logits_pos_weight(z, &y, pw, w.as_ref(), red),
            None => bce_with_logits(z, &y, w.as_ref(), red),
        },
        "focal" => sigmoid_focal_loss(z, &y, f("gamma"), p["alpha"].as_f64(), w.as_ref(), red),
        "asl" => {
            let o = AslOptions {
                gamma_pos: f("gamma_pos"),
                gamma_neg: f("gamma_neg"),
                clip: f("clip"),
            };
            asymmetric_loss(z, &y, &o, w.as_ref(), red)
        }
        "ce" => {
            let opts = CrossEntropyOptions {
                weight: w,
                label_smoothing: f("label_smoothing"),
                ignore_index: p["ignore_index"].as_i64(),
                reduction: red,
            };
            cross_entropy(z, &y, &opts)
        }
        "mse" => mse_loss(z, &y, red),
        other => panic!("unknown loss {other}"),
    }
}

#[test]
fn losses_match_pytorch() {
    let root = common::fixture("losses.json");
    let cases = root["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 46, "every case in f32 and f64");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let tol = if case["dtype"] == "f64" { 1e-12 } else { 1e-5 };
        let z = tensor_of(&case["logits"]).requires_grad_(true);
        let out = evaluate(case, &z).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.dtype(), z.dtype(), "{name}");
        assert_eq!(
            out.shape(),
            common::shape_of(&case["output"]).as_slice(),
            "{name}"
        );
        assert_close(name, &vals(&out), &values(&case["output"]), tol, tol);
        let grads = out
            .backward_with_grad(&tensor_of(&case["upstream"]))
            .unwrap();
        let g = grads.get(&z).unwrap();
        assert_close(
            &format!("{name} grad"),
            &vals(g),
            &values(&case["grad"]),
            tol,
            tol,
        );
    }
}

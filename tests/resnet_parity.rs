//! A whole CIFAR ResNet-20 against PyTorch: the same weights (a safetensors
//! file written by PyTorch, loaded strictly by name) give the same training
//! logits, loss, gradients and running statistics, and the same eval logits.
//!
//! The reference is `tests/fixtures/resnet20.{safetensors,json}`, made
//! offline by `tests/fixtures/gen_resnet.py`, which documents the network
//! (in particular the option-A shortcut: subsample, then `extra / 2` zero
//! channels before and the rest after) and the procedure. Batch norm's
//! running statistics depend on its momentum (0.1) and its unbiased variance,
//! the train/eval logits on every layer and on the shortcut's channel order,
//! so a wrong pad order or momentum fails here.
//!
//! Tolerance: `|got - want| <= TOL + TOL * |want|` with `TOL = 1e-4` for every
//! float compared. Both sides compute in f32 through 20 layers and 19 batch
//! norms with batch statistics over as few as 4 x 4 x 4 = 64 values per
//! channel, summing in different orders. The errors observed are at most
//! about 1e-6 (1% of the allowed error; printed with `--nocapture`), while a
//! real mistake is off by far more than the tolerance: padding all zero
//! channels after (or before) the subsampled input moves the train logits by
//! about 1.0, and BN momentum 0.2 instead of 0.1 moves `bn1.running_mean`
//! by 7e-3.

mod common;
use common::{assert_close, fixture, tensor_of, values};
use ferrite::checkpoint;
use ferrite::checkpoint::Strict;
use ferrite::nn::resnet::{resnet20, ResNet};
use ferrite::nn::{self, Module, Visit};
use ferrite::{DType, Tensor};
use serde_json::Value;

const TOL: f64 = 1e-4;

/// Asserts `got` is within the tolerance of the fixture tensor `want` and
/// prints the largest absolute error and the largest fraction of the
/// allowed error used.
fn check(name: &str, got: &Tensor, want: &Value) {
    let want_shape = common::shape_of(want);
    assert_eq!(got.shape(), &want_shape[..], "{name}: shape");
    let (g, w) = (got.to_f64_vec().unwrap(), values(want));
    let (mut max_abs, mut max_frac) = (0.0f64, 0.0f64);
    for (a, b) in g.iter().zip(&w) {
        max_abs = max_abs.max((a - b).abs());
        max_frac = max_frac.max((a - b).abs() / (TOL + TOL * b.abs()));
    }
    println!(
        "{name:32} max |err| {max_abs:.3e}  ({:.1}% of tolerance)",
        100.0 * max_frac
    );
    assert_close(name, &g, &w, TOL, TOL);
}

/// The state-dict tensor called `name`.
fn named(net: &ResNet, name: &str) -> Tensor {
    nn::state_dict(net)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .1
}

#[test]
fn resnet20_matches_pytorch_in_training_and_eval() {
    let fx = fixture("resnet20.json");
    let mut net = ResNet::new(&resnet20(3, 10), &mut common::rng(7)).unwrap();
    let report = checkpoint::load_into_module(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/resnet20.safetensors"
        ),
        &net,
        Strict::Yes,
    )
    .unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.loaded.len(), 116, "{report}");
    assert_eq!(nn::parameter_count(&net), 269_722);

    // Training mode: batch statistics, running statistics updated once.
    let x = tensor_of(&fx["x"]);
    assert_eq!(x.dtype(), DType::F32);
    let targets = tensor_of(&fx["targets"]).reshape(&[4, 1]).unwrap();
    let logits = net.forward(&x).unwrap();
    check("train logits", &logits, &fx["train_logits"]);
    let loss = logits
        .log_softmax(1)
        .unwrap()
        .gather(1, &targets)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap();
    check("loss", &loss, &fx["loss"]);

    let grads = loss.backward().unwrap();
    let want_grads = fx["grads"].as_object().unwrap();
    assert_eq!(want_grads.len(), 7);
    for (name, want) in want_grads {
        let p = named(&net, name);
        let g = grads
            .get(&p)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        check(&format!("grad {name}"), g, want);
    }

    let want_buffers = fx["buffers"].as_object().unwrap();
    assert_eq!(want_buffers.len(), 6);
    for (name, want) in want_buffers {
        let b = named(&net, name);
        if name.ends_with("num_batches_tracked") {
            assert_eq!(b.dtype(), DType::I64, "{name}");
            assert_eq!(b.to_scalar::<i64>().unwrap(), 1, "{name}");
            assert_eq!(values(want), [1.0], "{name}");
        } else {
            check(name, &b, want);
        }
    }
    // Every one of the 19 batch norms counted exactly one batch.
    let counters: Vec<i64> = nn::state_dict(&net)
        .into_iter()
        .filter(|(n, _)| n.ends_with("num_batches_tracked"))
        .map(|(_, t)| t.to_scalar::<i64>().unwrap())
        .collect();
    assert_eq!(counters, vec![1; 19]);

    // Eval mode: the running statistics, which the forward leaves alone.
    net.set_training(false);
    let before = named(&net, "layer3.2.bn2.running_var")
        .to_f64_vec()
        .unwrap();
    let eval_logits = ferrite::no_grad(|| net.forward(&x)).unwrap();
    check("eval logits", &eval_logits, &fx["eval_logits"]);
    let after = named(&net, "layer3.2.bn2.running_var")
        .to_f64_vec()
        .unwrap();
    assert_eq!(before, after, "eval forward changed the running statistics");
    assert_eq!(
        named(&net, "bn1.num_batches_tracked")
            .to_scalar::<i64>()
            .unwrap(),
        1
    );
}

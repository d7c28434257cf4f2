//! ResNet-18 against PyTorch, with weights PyTorch initialised and exported
//! as bf16 safetensors, loaded by torchvision's names:
//!
//! - torchvision's ImageNet `resnet18()` (1000 classes) loads into
//!   `resnet18(3, 1000)` with no missing or unexpected key, and its eval-mode
//!   logits on a 2 x 3 x 128 x 128 input match PyTorch's (f32);
//! - the CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool, 10 classes) on a
//!   4 x 3 x 32 x 32 batch: in f32, the training-mode logits, loss and
//!   running statistics and then the eval-mode logits; in f64, the same
//!   forward, the gradients (sampled from the stem, every stage and the
//!   classifier), one SGD step (momentum 0.9, weight decay 5e-4), the
//!   running statistics, the updated parameters and the eval-mode logits.
//!
//! The reference is made offline by `tests/fixtures/gen_resnet18.py`, which
//! documents the procedure: `resnet18.safetensors` (the ImageNet state dict,
//! bf16, with running statistics moved by three training batches),
//! `resnet18_cifar.safetensors` (the CIFAR model's own `conv1.weight` and
//! `fc.*`; the rest is shared), `resnet18_inputs.safetensors` and
//! `resnet18.json` (expected values; large tensors as a sample of elements
//! plus the norm of the whole). The bf16 values are widened exactly to the
//! dtype computed in, on both sides.
//!
//! Why the gradients are compared in f64: a ReLU's gradient jumps at 0, and
//! one pre-activation of this batch lies 5e-7 from 0, inside f32 rounding
//! (which moves pre-activations by up to about 1e-5). In f32 ferrite and
//! PyTorch take different sides of that kink, and every gradient upstream of
//! it (`layer3.1` back to the stem) differs by about 3e-3 relative although
//! both are right to rounding. In f64 the margin is huge, so the whole
//! training step is compared tightly; the forward quantities, which are
//! continuous, are compared in f32 too.
//!
//! Tolerance: an element passes when `|got - want| <= tol * (|want| + rms)`,
//! `rms` being the root mean square of the whole expected tensor (so an
//! element near zero is judged against the tensor's scale), and a norm when
//! it is within `tol` relative; `tol` is [`TOL_F32`] or [`TOL_F64`]. The
//! largest errors, as a share of the allowed ones, are printed with
//! `--nocapture`.

mod common;
use common::{fixture, shape_of, tensor_of, values};
use ferrite::checkpoint::Strict;
use ferrite::checkpoint::{self, StateDict};
use ferrite::nn::resnet::{resnet18, resnet18_cifar, Block, ResNet, Shortcut};
use ferrite::nn::{self, BatchNorm2d, Conv2d, Module, Visit};
use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::{DType, Tensor};
use serde_json::Value;

/// Tolerance for f32 results: both sides sum in f32 in different orders
/// through 18 layers and 20 batch norms (the last ones over 64 values per
/// channel); the errors observed are at most 2.2% of it.
const TOL_F32: f64 = 1e-4;
/// Tolerance for f64 results (the errors observed are at most 0.5% of it).
const TOL_F64: f64 = 1e-11;
/// `num_batches_tracked` in the exported weights (three warm-up batches).
const WARMUP_BATCHES: i64 = 3;

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A safetensors fixture with every bf16 tensor widened (exactly) to
/// `dtype`; integer tensors, the batch-norm counters, are kept. Fails on any
/// other float dtype, so the files really are the bf16 ones described.
fn load_widened(name: &str, dtype: DType) -> StateDict {
    let (tensors, _) = checkpoint::load_state_dict(fixture_path(name)).unwrap();
    tensors
        .into_iter()
        .map(|(n, t)| match t.dtype() {
            DType::BF16 => (n, t.to_dtype(dtype).unwrap()),
            DType::I64 => (n, t),
            other => panic!("{name}: {n} is {other:?}, expected BF16 or I64"),
        })
        .collect()
}

/// The input called `name` in `resnet18_inputs.safetensors` (stored as
/// f32), in `dtype`.
fn input(name: &str, dtype: DType) -> Tensor {
    let path = fixture_path("resnet18_inputs.safetensors");
    let (tensors, _) = checkpoint::load_state_dict(path).unwrap();
    let x = tensors
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no input {name}"))
        .1;
    assert_eq!(x.dtype(), DType::F32, "{name}");
    x.to_dtype(dtype).unwrap()
}

/// The state-dict tensor called `name`.
fn named(net: &ResNet, name: &str) -> Tensor {
    nn::state_dict(net)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .1
}

/// Compares `got[index[i]]` with `want[i]` within `tol * (|want| + rms)`
/// and prints the largest error as a share of the allowed one.
fn compare(name: &str, got: &[f64], index: &[usize], want: &[f64], rms: f64, tol: f64) {
    assert_eq!(index.len(), want.len(), "{name}: fixture");
    let mut worst = 0.0f64;
    for (&i, &w) in index.iter().zip(want) {
        let g = got[i];
        let allowed = tol * (w.abs() + rms);
        assert!(
            (g - w).abs() <= allowed,
            "{name}: element {i}: got {g}, expected {w} (allowed error {allowed:.3e})"
        );
        worst = worst.max((g - w).abs() / allowed);
    }
    println!(
        "{name:40} {:4} elements, max error {worst:.1e} x tolerance",
        index.len()
    );
}

/// Checks `got` against a whole fixture tensor, of the same dtype.
fn check(name: &str, got: &Tensor, want: &Value, tol: f64) {
    assert_eq!(got.shape(), &shape_of(want)[..], "{name}: shape");
    assert_eq!(got.dtype(), tensor_of(want).dtype(), "{name}: dtype");
    let w = values(want);
    let rms = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    let index: Vec<usize> = (0..w.len()).collect();
    compare(name, &got.to_f64_vec().unwrap(), &index, &w, rms, tol);
}

/// Checks `got` against a fixture sample: the listed elements and the norm
/// of the whole tensor.
fn check_sample(name: &str, got: &Tensor, want: &Value, tol: f64) {
    assert_eq!(got.shape(), &shape_of(want)[..], "{name}: shape");
    let g = got.to_f64_vec().unwrap();
    let index: Vec<usize> = want["index"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as usize)
        .collect();
    let want_norm = want["norm"].as_f64().unwrap();
    let rms = want_norm / (g.len() as f64).sqrt();
    compare(name, &g, &index, &values(want), rms, tol);
    let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(
        (norm - want_norm).abs() <= tol * want_norm,
        "{name}: norm {norm}, expected {want_norm}"
    );
}

/// Mean cross-entropy of `logits` [N, C] against class indices [N, 1].
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits
        .log_softmax(1)
        .unwrap()
        .gather(1, targets)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap()
}

/// The values of every batch norm's `num_batches_tracked`.
fn counters(net: &ResNet) -> Vec<i64> {
    nn::state_dict(net)
        .into_iter()
        .filter(|(n, _)| n.ends_with("num_batches_tracked"))
        .map(|(_, t)| t.to_scalar::<i64>().unwrap())
        .collect()
}

#[test]
fn torchvision_resnet18_loads_by_name_and_matches_in_eval() {
    let fx = fixture("resnet18.json");
    let mut net = ResNet::new(&resnet18(3, 1000), &mut common::rng(1)).unwrap();
    assert_eq!(nn::parameter_count(&net), 11_689_512);
    let state = load_widened("resnet18.safetensors", DType::F32);
    let report = checkpoint::apply_state_dict(&net, &state, Strict::Yes).unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.loaded.len(), 122, "{report}");
    assert_eq!(counters(&net), vec![WARMUP_BATCHES; 20]);

    net.set_training(false);
    let x = input("imagenet_x", DType::F32);
    assert_eq!(x.shape(), &[2, 3, 128, 128]);
    let logits = ferrite::no_grad(|| net.forward(&x)).unwrap();
    check(
        "imagenet eval logits",
        &logits,
        &fx["imagenet"]["eval_logits"],
        TOL_F32,
    );
}

/// A trainable f64 copy of `t`.
fn f64_param(t: &Tensor) -> Tensor {
    ferrite::no_grad(|| t.to_dtype(DType::F64))
        .unwrap()
        .requires_grad_(true)
}

fn widen_conv(c: &mut Conv2d) {
    c.weight = f64_param(&c.weight);
    c.bias = c.bias.as_ref().map(f64_param);
}

fn widen_bn(bn: &mut BatchNorm2d) {
    bn.weight = f64_param(&bn.weight);
    bn.bias = f64_param(&bn.bias);
    bn.running_mean = bn.running_mean.to_dtype(DType::F64).unwrap();
    bn.running_var = bn.running_var.to_dtype(DType::F64).unwrap();
}

/// Makes every parameter and running statistic of `net` f64 (basic blocks
/// only; the values are then overwritten by the checkpoint).
fn widen_to_f64(net: &mut ResNet) {
    widen_conv(&mut net.conv1);
    widen_bn(&mut net.bn1);
    for block in net.stages.iter_mut().flatten() {
        let Block::Basic(b) = block else {
            panic!("ResNet-18 has basic blocks only")
        };
        widen_conv(&mut b.conv1);
        widen_bn(&mut b.bn1);
        widen_conv(&mut b.conv2);
        widen_bn(&mut b.bn2);
        if let Shortcut::Projection(c, bn) = &mut b.shortcut {
            widen_conv(c);
            widen_bn(bn);
        }
    }
    net.fc.weight = f64_param(&net.fc.weight);
    net.fc.bias = net.fc.bias.as_ref().map(f64_param);
}

/// The CIFAR ResNet-18 in `dtype` with the fixture weights: the shared
/// tensors with the model's own `conv1.weight` and `fc.*` in place of the
/// ImageNet ones, loaded strictly by name.
fn cifar_model(dtype: DType) -> ResNet {
    let mut net = ResNet::new(&resnet18_cifar(3, 10), &mut common::rng(2)).unwrap();
    assert_eq!(nn::parameter_count(&net), 11_173_962);
    if dtype == DType::F64 {
        widen_to_f64(&mut net);
    }
    let mut state = load_widened("resnet18.safetensors", dtype);
    let own = load_widened("resnet18_cifar.safetensors", dtype);
    assert_eq!(own.len(), 3);
    for (name, t) in own {
        let slot = state
            .iter_mut()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is not a ResNet-18 tensor"));
        assert_ne!(slot.1.shape(), t.shape(), "{name}");
        slot.1 = t;
    }
    let report = checkpoint::apply_state_dict(&net, &state, Strict::Yes).unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.loaded.len(), 122, "{report}");
    net
}

#[test]
fn cifar_resnet18_forward_matches_pytorch_in_f32() {
    let root = fixture("resnet18.json");
    let fx = &root["cifar"]["f32"];
    let mut net = cifar_model(DType::F32);
    let x = input("cifar_x", DType::F32);
    assert_eq!(x.shape(), &[4, 3, 32, 32]);
    let targets = tensor_of(&root["cifar"]["targets"])
        .reshape(&[4, 1])
        .unwrap();

    // Training mode: batch statistics; the running statistics move once.
    let logits = ferrite::no_grad(|| net.forward(&x)).unwrap();
    check("f32 train logits", &logits, &fx["train_logits"], TOL_F32);
    let loss = cross_entropy(&logits, &targets);
    check("f32 loss", &loss, &fx["loss"], TOL_F32);
    let want_buffers = fx["buffers"].as_object().unwrap();
    assert_eq!(want_buffers.len(), 6);
    for (name, want) in want_buffers {
        check_sample(&format!("f32 {name}"), &named(&net, name), want, TOL_F32);
    }
    assert_eq!(counters(&net), vec![WARMUP_BATCHES + 1; 20]);

    // Eval mode: those running statistics, which the forward leaves alone.
    net.set_training(false);
    let eval_logits = ferrite::no_grad(|| net.forward(&x)).unwrap();
    check("f32 eval logits", &eval_logits, &fx["eval_logits"], TOL_F32);
    assert_eq!(counters(&net), vec![WARMUP_BATCHES + 1; 20]);
}

#[test]
fn cifar_resnet18_training_step_matches_pytorch_in_f64() {
    let root = fixture("resnet18.json");
    let fx = &root["cifar"]["f64"];
    let mut net = cifar_model(DType::F64);
    let x = input("cifar_x", DType::F64);
    let targets = tensor_of(&root["cifar"]["targets"])
        .reshape(&[4, 1])
        .unwrap();

    let logits = net.forward(&x).unwrap();
    check("f64 train logits", &logits, &fx["train_logits"], TOL_F64);
    let loss = cross_entropy(&logits, &targets);
    check("f64 loss", &loss, &fx["loss"], TOL_F64);

    let grads = loss.backward().unwrap();
    let want_grads = fx["grads"].as_object().unwrap();
    assert_eq!(want_grads.len(), 16);
    for (name, want) in want_grads {
        let g = grads
            .get(&named(&net, name))
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        check_sample(&format!("f64 grad {name}"), g, want, TOL_F64);
    }

    let sgd = &root["cifar"]["sgd"];
    let config = SgdConfig {
        momentum: sgd["momentum"].as_f64().unwrap(),
        ..SgdConfig::default()
    };
    let group = ParamGroup::new(
        nn::parameters(&net),
        sgd["lr"].as_f64().unwrap(),
        sgd["weight_decay"].as_f64().unwrap(),
    );
    let mut opt = Sgd::new(vec![group], config).unwrap();
    opt.step(&grads).unwrap();

    let want_buffers = fx["buffers"].as_object().unwrap();
    assert_eq!(want_buffers.len(), 6);
    for (name, want) in want_buffers {
        check_sample(&format!("f64 {name}"), &named(&net, name), want, TOL_F64);
    }
    assert_eq!(counters(&net), vec![WARMUP_BATCHES + 1; 20]);
    let want_params = fx["params_after"].as_object().unwrap();
    assert_eq!(want_params.len(), 5);
    for (name, want) in want_params {
        let p = named(&net, name);
        check_sample(&format!("f64 {name} after step"), &p, want, TOL_F64);
    }

    // Eval mode: the updated weights and the running statistics.
    net.set_training(false);
    let eval_logits = ferrite::no_grad(|| net.forward(&x)).unwrap();
    check(
        "f64 eval logits after step",
        &eval_logits,
        &fx["eval_logits"],
        TOL_F64,
    );
}

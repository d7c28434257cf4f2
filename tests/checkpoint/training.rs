//! Training checkpoints: PyTorch-style layout and bit-identical resumption.

use super::helpers::{assert_same_dict, bits, expect_corrupt, meta, snapshot, TestDir};
use ferrite::checkpoint::{
    apply_state_dict, load_state_dict, load_training, read_training, save_module, save_state_dict,
    save_training, CheckpointOptimizer, OptimizerState, Strict,
};
use ferrite::nn::{self, BatchNorm2d, Bias, Conv2d, Flatten, Linear, Module, ReLU, Sequential};
use ferrite::ops::Conv2dParams;
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::{DType, Error, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

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

/// One training step of `model` with `opt`, then a training checkpoint of
/// both at epoch 1 (no extra metadata) at `path`.
fn save_after_one_step<O: Optimizer + CheckpointOptimizer>(
    path: &std::path::Path,
    model: &Sequential,
    opt: &mut O,
) {
    train_step(model, opt, 0);
    let state = opt.checkpoint_state().unwrap();
    save_training(path, model, &state, 1, &BTreeMap::new()).unwrap();
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
    save_after_one_step(&path, &model, &mut opt);
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
    save_after_one_step(&path, &model, &mut opt);

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
    save_after_one_step(&path, &model, &mut opt);
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

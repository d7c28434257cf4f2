//! Training pieces on every device, compared with the CPU in the same
//! process (see `tests/device/mod.rs`): `Module::to_device`, gradients and
//! optimizer state on the device, a short Adam/SGD trajectory of a small
//! ResNet, gradient clipping, and checkpoints that cross devices. In CI
//! this runs on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_train`.

mod device;

use device::{assert_close, devices, scale, uniform, Tol};
use ferrite::checkpoint::Strict;
use ferrite::checkpoint::{
    load_into_module, load_into_module_with, load_training, save_module, save_training,
    CheckpointOptimizer, LoadOptions,
};
use ferrite::nn::resnet::{BlockKind, ResNet, ResNetConfig, ShortcutKind, Stem};
use ferrite::nn::{self, Module, Role, Visit};
use ferrite::optim::{clip_grad_norm, Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::{DType, Device, GradStore, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// A two-stage CIFAR-style ResNet with projection shortcuts (so every kind
/// of parameter and buffer is present), small enough for the emulator.
fn small_resnet(seed: u64) -> ResNet {
    let config = ResNetConfig {
        block: BlockKind::Basic,
        layers: vec![1, 1],
        widths: vec![4, 8],
        stem: Stem::Cifar,
        shortcut: ShortcutKind::Projection,
        in_channels: 3,
        num_classes: 5,
    };
    ResNet::new(&config, &mut StdRng::seed_from_u64(seed)).unwrap()
}

fn batch(seed: u64) -> (Tensor, Tensor) {
    let side = 6 * scale();
    let x = uniform(&[4, 3, side, side], (-1.0, 1.0), seed);
    let t = uniform(&[4, 5], (0.0, 1.0), seed + 1)
        .gt(&Tensor::scalar(0.7f32))
        .unwrap();
    (x, t.to_dtype(DType::F32).unwrap())
}

/// Mean BCE of the model on a batch.
fn loss(model: &dyn Module, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let logits = model.forward(x)?;
    ferrite::loss::bce_with_logits(&logits, t, None, ferrite::loss::Reduction::Mean)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// The state dict as `(name, role, requires_grad, device, values)`.
fn described(m: &dyn Module) -> Vec<(String, Role, bool, Device, Vec<f64>)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, role| {
        out.push((
            name.to_string(),
            role,
            t.requires_grad(),
            t.device(),
            values(t),
        ))
    });
    out
}

#[test]
fn to_device_moves_every_parameter_and_buffer_by_name() {
    for device in devices() {
        let cpu = small_resnet(1);
        let mut moved = small_resnet(1);
        moved.to_device(device).unwrap();
        let (before, after) = (described(&cpu), described(&moved));
        assert_eq!(before.len(), after.len());
        assert!(before
            .iter()
            .any(|b| b.0 == "layer2.0.downsample.1.running_var"));
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((&b.0, b.1, b.2), (&a.0, a.1, a.2), "{}", b.0);
            assert_eq!(a.3, device, "{} stayed on {:?}", a.0, a.3);
            assert_eq!(b.4, a.4, "{}: values changed on the way", b.0);
        }
        // And back: bit-identical, every tensor on the host again.
        moved.to_device(Device::Cpu).unwrap();
        for (b, a) in before.iter().zip(&described(&moved)) {
            assert_eq!((a.3, &b.4), (Device::Cpu, &a.4), "{}", a.0);
        }
    }
}

#[test]
fn to_device_keeps_shared_tensors_shared() {
    for device in devices() {
        let w = Tensor::ones(&[3, 3], DType::F32)
            .unwrap()
            .requires_grad_(true);
        let tied = |w: &Tensor| nn::Linear {
            weight: w.clone(),
            bias: None,
        };
        let mut net = nn::Sequential::new().with(tied(&w)).with(tied(&w));
        net.to_device(device).unwrap();
        let ids: Vec<_> = nn::parameters(&net).iter().map(|p| p.id()).collect();
        assert_eq!(ids[0], ids[1], "a tied weight was copied twice");
    }
}

#[test]
fn to_dtype_converts_floats_and_keeps_integer_buffers() {
    let mut m = small_resnet(2);
    m.to_dtype(DType::F64).unwrap();
    m.visit("", &mut |name, t, role| {
        let want = if name.ends_with("num_batches_tracked") {
            DType::I64
        } else {
            DType::F64
        };
        assert_eq!(t.dtype(), want, "{name}");
        assert_eq!(t.requires_grad(), role == Role::Parameter, "{name}");
    });
    assert!(
        m.to_dtype(DType::I64).is_err(),
        "to_dtype(I64) must be refused"
    );
    let (x, t) = batch(3);
    let l = loss(
        &m,
        &x.to_dtype(DType::F64).unwrap(),
        &t.to_dtype(DType::F64).unwrap(),
    )
    .unwrap();
    assert_eq!(l.dtype(), DType::F64);
}

/// Runs `steps` optimizer steps on `device` (checking that every gradient
/// is created there), returning the losses and the final state dict.
fn trajectory(device: Device, adam: bool, steps: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut model = small_resnet(7);
    model.to_device(device).unwrap();
    let params = nn::parameters(&model);
    let groups = vec![ParamGroup::new(params.clone(), 0.05, 1e-4)];
    let mut opt: Box<dyn Optimizer> = if adam {
        Box::new(Adam::new(groups, AdamConfig::default()).unwrap())
    } else {
        let config = SgdConfig {
            momentum: 0.9,
            nesterov: true,
            ..SgdConfig::default()
        };
        Box::new(Sgd::new(groups, config).unwrap())
    };
    let mut losses = Vec::new();
    // One batch, fitted again and again: the loss must go down.
    let (x, t) = batch(100);
    let (x, t) = (x.to_device(device).unwrap(), t.to_device(device).unwrap());
    for _ in 0..steps {
        let l = loss(&model, &x, &t).unwrap();
        let grads: GradStore = l.backward().unwrap();
        for p in &params {
            let g = grads.get(p).expect("every parameter gets a gradient");
            assert_eq!(g.device(), device, "gradient left the device");
        }
        opt.step(&grads).unwrap();
        losses.push(values(&l)[0]);
    }
    let state = nn::state_dict(&model)
        .iter()
        .map(|(_, t)| values(t))
        .collect();
    (losses, state)
}

/// Device vs CPU after a few steps: the kernels sum in other orders, and
/// Adam divides by `√v`, which amplifies differences of tiny gradients.
const TRAJECTORY: Tol = Tol(2e-4, 2e-3);

#[test]
fn adam_and_sgd_trajectories_match_the_cpu() {
    for device in devices() {
        for adam in [true, false] {
            let (cpu_loss, cpu_state) = trajectory(Device::Cpu, adam, 5);
            let (dev_loss, dev_state) = trajectory(device, adam, 5);
            assert!(
                cpu_loss[4] < cpu_loss[0],
                "the loss did not go down: {cpu_loss:?}"
            );
            assert_close("losses", &dev_loss, &cpu_loss, TRAJECTORY);
            for (i, (d, c)) in dev_state.iter().zip(&cpu_state).enumerate() {
                assert_close(
                    &format!("state tensor {i} (adam: {adam})"),
                    d,
                    c,
                    TRAJECTORY,
                );
            }
        }
    }
}

#[test]
fn optimizer_state_lives_next_to_its_parameter() {
    for device in devices() {
        let mut model = small_resnet(8);
        model.to_device(device).unwrap();
        let params = nn::parameters(&model);
        let groups = vec![ParamGroup::new(params.clone(), 0.01, 0.0)];
        let mut opt = Adam::new(groups, AdamConfig::default()).unwrap();
        let (x, t) = batch(9);
        let l = loss(
            &model,
            &x.to_device(device).unwrap(),
            &t.to_device(device).unwrap(),
        );
        opt.step(&l.unwrap().backward().unwrap()).unwrap();
        for (m, v, _) in opt.moments().iter().flatten() {
            assert_eq!((m.device(), v.device()), (device, device));
        }
    }
}

#[test]
fn clip_grad_norm_on_the_device_matches_the_cpu() {
    for device in devices() {
        let mut norms = Vec::new();
        let mut clipped = Vec::new();
        for on in [Device::Cpu, device] {
            let mut model = small_resnet(10);
            model.to_device(on).unwrap();
            let params = nn::parameters(&model);
            let (x, t) = batch(11);
            let l = loss(&model, &x.to_device(on).unwrap(), &t.to_device(on).unwrap()).unwrap();
            let mut grads = l.backward().unwrap();
            norms.push(clip_grad_norm(&mut grads, &params, 0.05).unwrap());
            clipped.push(values(grads.get(&params[0]).unwrap()));
        }
        assert!(norms[0] > 0.05, "the test must clip: norm {}", norms[0]);
        assert_close("norm", &norms[1..], &norms[..1], Tol(1e-6, 1e-5));
        assert_close(
            "clipped gradient",
            &clipped[1],
            &clipped[0],
            Tol(1e-7, 1e-4),
        );
    }
}

#[test]
fn checkpoints_cross_devices_both_ways() {
    let dir = std::env::temp_dir().join(format!("ferrite-device-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for device in devices() {
        // A trained model on the device, saved; loaded into a CPU model and
        // into a fresh device model: all three agree bit for bit.
        let mut model = small_resnet(12);
        model.to_device(device).unwrap();
        let params = nn::parameters(&model);
        let mut opt = Adam::new(
            vec![ParamGroup::new(params, 0.01, 0.0)],
            AdamConfig::default(),
        )
        .unwrap();
        let (x, t) = batch(13);
        let (x, t) = (x.to_device(device).unwrap(), t.to_device(device).unwrap());
        opt.step(&loss(&model, &x, &t).unwrap().backward().unwrap())
            .unwrap();
        let path = dir.join("model.safetensors");
        save_module(&path, &model, &BTreeMap::new()).unwrap();
        let on_cpu = small_resnet(99);
        load_into_module(&path, &on_cpu, Strict::Yes).unwrap();
        let mut back = small_resnet(98);
        back.to_device(device).unwrap();
        load_into_module(&path, &back, Strict::Yes).unwrap();
        for ((a, b), c) in described(&model)
            .iter()
            .zip(described(&on_cpu))
            .zip(described(&back))
        {
            assert_eq!((b.3, c.3), (Device::Cpu, device), "{}", a.0);
            assert_eq!((&a.4, &a.4), (&b.4, &c.4), "{}", a.0);
        }

        // Training checkpoints: resuming on the device continues exactly as
        // the uninterrupted run does.
        let ckpt = dir.join("train.safetensors");
        let state = opt.checkpoint_state().unwrap();
        save_training(&ckpt, &model, &state, 1, &BTreeMap::new()).unwrap();
        let mut resumed = small_resnet(97);
        resumed.to_device(device).unwrap();
        let mut opt2 = Adam::new(
            vec![ParamGroup::new(nn::parameters(&resumed), 0.01, 0.0)],
            AdamConfig::default(),
        )
        .unwrap();
        load_training(&ckpt, &resumed, &mut opt2).unwrap();
        let (x, t) = batch(14);
        let (x, t) = (x.to_device(device).unwrap(), t.to_device(device).unwrap());
        opt.step(&loss(&model, &x, &t).unwrap().backward().unwrap())
            .unwrap();
        opt2.step(&loss(&resumed, &x, &t).unwrap().backward().unwrap())
            .unwrap();
        for (a, b) in described(&model).iter().zip(described(&resumed)) {
            assert_eq!(a.4, b.4, "{}: resumed run diverged", a.0);
        }
        for (m, v, _) in opt2.moments().iter().flatten() {
            assert_eq!((m.device(), v.device()), (device, device));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn batch_norm_counts_batches_on_the_device() {
    for device in devices() {
        let mut bn = nn::BatchNorm2d::new(3).unwrap();
        bn.to_device(device).unwrap();
        let x = uniform(&[2, 3, 4, 4], (-1.0, 1.0), 15)
            .to_device(device)
            .unwrap();
        for _ in 0..3 {
            bn.forward(&x).unwrap();
        }
        assert_eq!(bn.num_batches_tracked.device(), device);
        assert_eq!(bn.num_batches_tracked.to_vec::<i64>().unwrap(), vec![3]);
    }
}

/// A ResNet-8 (CIFAR style, zero-pad shortcuts) trained with PLM over BCE
/// and Adam for two epochs of ten batches on long-tailed multi-label
/// targets: the losses and PLM's r̂ after each epoch on `device`.
fn plm_run(device: Device) -> (Vec<f64>, Vec<Vec<f64>>) {
    use ferrite::loss::{ElementLoss, Reduction};
    use ferrite::plm::{Plm, PlmConfig};
    let classes = 4;
    let config = ferrite::nn::resnet::resnet_cifar(8, 1, classes).unwrap();
    let mut model = ResNet::new(&config, &mut StdRng::seed_from_u64(21)).unwrap();
    model.to_device(device).unwrap();
    let mut opt = Adam::new(
        vec![ParamGroup::new(nn::parameters(&model), 3e-3, 0.0)],
        AdamConfig::default(),
    )
    .unwrap();
    // Class c is positive with probability 0.6 / 2^c: a long tail.
    let (batches, b, side) = (10, 8, 8);
    let data: Vec<(Tensor, Tensor)> = (0..batches)
        .map(|i| {
            let x = uniform(&[b, 1, side, side], (-1.0, 1.0), 300 + i);
            let u = uniform(&[b, classes], (0.0, 1.0), 400 + i)
                .to_vec::<f32>()
                .unwrap();
            let t: Vec<f32> = u
                .iter()
                .enumerate()
                .map(|(e, &v)| (v < 0.6 / (1 << (e % classes)) as f32) as u8 as f32)
                .collect();
            (x, Tensor::from_vec(t, &[b, classes]).unwrap())
        })
        .collect();
    let mut positives = vec![0usize; classes];
    for (_, t) in &data {
        for (e, v) in t.to_vec::<f32>().unwrap().iter().enumerate() {
            positives[e % classes] += (*v > 0.5) as usize;
        }
    }
    let plm_config = PlmConfig {
        lambda: 0.5,
        seed: 5,
        ..PlmConfig::default()
    };
    let mut plm = Plm::new(plm_config, &positives, batches as usize * b).unwrap();
    let (mut losses, mut rhats) = (Vec::new(), Vec::new());
    for _epoch in 0..2 {
        for (x, t) in &data {
            let (x, t) = (x.to_device(device).unwrap(), t.to_device(device).unwrap());
            let logits = model.forward(&x).unwrap();
            let per_element = ElementLoss::Bce
                .compute(&logits, &t, None, Reduction::None)
                .unwrap();
            let l = plm.masked_loss(&per_element, &t).unwrap();
            plm.observe(&logits.detach().sigmoid().unwrap(), &t)
                .unwrap();
            opt.step(&l.backward().unwrap()).unwrap();
            losses.push(values(&l)[0]);
        }
        plm.end_epoch().unwrap();
        rhats.push(plm.rhat().to_vec());
    }
    (losses, rhats)
}

#[test]
fn a_plm_resnet8_run_matches_the_cpu_loss_curve_and_rhat() {
    for device in devices() {
        let (cpu_losses, cpu_rhat) = plm_run(Device::Cpu);
        let (dev_losses, dev_rhat) = plm_run(device);
        assert_eq!(cpu_losses.len(), 20);
        // The masks are bit-identical; the sums differ in order only.
        assert_close("PLM losses", &dev_losses, &cpu_losses, TRAJECTORY);
        for (epoch, (d, c)) in dev_rhat.iter().zip(&cpu_rhat).enumerate() {
            assert_close(
                &format!("rhat after epoch {}", epoch + 1),
                d,
                c,
                Tol(1e-9, 1e-6),
            );
        }
        assert_ne!(
            cpu_rhat[0], cpu_rhat[1],
            "r̂ must move for the check to mean something"
        );
    }
}

#[test]
fn cifar_resnet18_forward_and_backward_match_the_cpu() {
    use ferrite::nn::resnet::resnet18_cifar;
    for device in devices() {
        let config = resnet18_cifar(3, 10);
        let cpu = ResNet::new(&config, &mut StdRng::seed_from_u64(31)).unwrap();
        let mut dev = ResNet::new(&config, &mut StdRng::seed_from_u64(31)).unwrap();
        dev.to_device(device).unwrap();
        // 16×16 leaves 2×2 planes in the last stage: batch norm over 8
        // values per channel (over 2, it would amplify rounding noise).
        let side = 16 * scale();
        let x = uniform(&[2, 3, side, side], (-1.0, 1.0), 32);
        let w = uniform(&[2, 10], (-1.0, 1.0), 33);
        let run = |m: &ResNet, on: Device| {
            let y = m.forward(&x.to_device(on).unwrap()).unwrap();
            let l = y.mul(&w.to_device(on).unwrap()).unwrap().sum_all().unwrap();
            let grads = l.backward().unwrap();
            let g: Vec<Vec<f64>> = nn::parameters(m)
                .iter()
                .map(|p| values(grads.get(p).expect("a gradient for every parameter")))
                .collect();
            (values(&y), g)
        };
        let (y_cpu, g_cpu) = run(&cpu, Device::Cpu);
        let (y_dev, g_dev) = run(&dev, device);
        assert_close("ResNet-18 logits", &y_dev, &y_cpu, Tol(1e-4, 1e-3));
        let names = nn::named_parameters(&cpu);
        for ((d, c), (name, _)) in g_dev.iter().zip(&g_cpu).zip(&names) {
            // Batch norm over few elements amplifies rounding differences;
            // relative to each gradient's own scale.
            let scale = c.iter().fold(0f64, |m, v| m.max(v.abs()));
            assert_close(
                &format!("gradient of {name}"),
                d,
                c,
                Tol(1e-3 * scale, 1e-3),
            );
        }
    }
}

/// A tiny PLM run of the trainer (MultiMNIST-LT from the repository's MNIST).
fn tiny_run_config() -> ferrite::train::config::TrainConfig {
    use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
    let mut data = DataConfig::new(DatasetKind::MultiMnistLt);
    // FERRITE_TEST_MNIST_DIR: where the test binary runs away from its
    // source tree (the GPU validation carries the files with it).
    data.dir = std::env::var_os("FERRITE_TEST_MNIST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    data.train_size = 64;
    data.test_size = 32;
    let mut config = TrainConfig::new(data, "resnet8", ferrite::train::LossSpec::plm());
    config.stem = Some("imagenet".into());
    config.epochs = 2;
    config.batch_size = 32;
    config.seed = 3;
    if let Some(plm) = &mut config.loss.plm {
        plm.lambda = ferrite::train::PlmLambda::Fixed(0.5);
    }
    config
}

#[test]
fn a_run_resumed_on_the_device_continues_bit_identically() {
    use ferrite::train::run::{Quiet, Run};
    for device in devices() {
        let dir = |name: &str| {
            let d =
                std::env::temp_dir().join(format!("ferrite-devrun-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            d
        };
        let (straight_dir, split_dir) = (dir("straight"), dir("split"));
        let mut straight = Run::new_on(tiny_run_config(), &straight_dir, device).unwrap();
        straight.run(&mut Quiet).unwrap();
        let mut first = Run::new_on(tiny_run_config(), &split_dir, device).unwrap();
        first.train_epoch(&mut Quiet).unwrap();
        drop(first);
        // Continuing on another device is allowed, with a warning.
        let on_cpu = Run::resume_on(&split_dir, Device::Cpu).unwrap();
        let warning = on_cpu.device_warning().expect("a warning");
        assert!(warning.contains(&device.to_string()), "{warning}");
        drop(on_cpu);
        let mut resumed = Run::resume_on(&split_dir, device).unwrap();
        assert_eq!(resumed.device_warning(), None, "same device: no warning");
        resumed.run(&mut Quiet).unwrap();
        for (a, b) in described(straight.model())
            .iter()
            .zip(described(resumed.model()))
        {
            assert_eq!((a.3, &a.4), (b.3, &b.4), "{}", a.0);
        }
        let (p, q) = (
            straight.objective().plm().unwrap(),
            resumed.objective().plm().unwrap(),
        );
        assert_eq!(p.rhat(), q.rhat());
        let _ = std::fs::remove_dir_all(&straight_dir);
        let _ = std::fs::remove_dir_all(&split_dir);
    }
}

#[test]
fn pytorch_fp16_checkpoint_converts_into_a_model_on_the_device() {
    // The fp16 file of `tests/fixtures/gen_checkpoint_lenient.py`, loaded
    // with the default (lenient) options: each tensor is converted to f32,
    // then uploaded, into a model that lives on the device.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoint_resnet_f16.safetensors");
    let config = ResNetConfig {
        block: BlockKind::Basic,
        layers: vec![1, 1, 1],
        widths: vec![8, 16, 32],
        stem: Stem::Cifar,
        shortcut: ShortcutKind::Projection,
        in_channels: 3,
        num_classes: 10,
    };
    let net = |seed| ResNet::new(&config, &mut StdRng::seed_from_u64(seed)).unwrap();
    let on_cpu = net(1);
    let opts = LoadOptions::default();
    let want = load_into_module_with(&path, &on_cpu, &opts).unwrap();
    assert_eq!(want.converted.len(), 47);
    for device in devices() {
        let mut model = net(2);
        model.to_device(device).unwrap();
        let report = load_into_module_with(&path, &model, &opts).unwrap();
        assert_eq!(report, want);
        for (a, b) in described(&on_cpu).iter().zip(described(&model)) {
            assert_eq!((a.3, b.3), (Device::Cpu, device), "{}", a.0);
            assert_eq!(b.2, a.1 == Role::Parameter, "{}", a.0);
            assert_eq!(a.4, b.4, "{}", a.0);
        }
    }
}

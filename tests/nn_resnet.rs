//! nn modules and ResNets: parameter counts and state_dict names as
//! torchvision/the paper, shapes, train/eval behaviour, and a few training
//! steps that reduce the loss.

use ferrite::nn::resnet::{
    resnet18, resnet18_cifar, resnet20, resnet32, resnet34, resnet50, resnet56, resnet_cifar,
    ResNet,
};
use ferrite::nn::{self, Module, Role, Visit};
use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::{no_grad, DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng() -> StdRng {
    StdRng::seed_from_u64(0)
}

#[test]
fn parameter_counts_match_the_references() {
    // torchvision (1000 classes) and the CIFAR ResNets (10 classes).
    let cases = [
        (resnet18(3, 1000), 11_689_512),
        (resnet34(3, 1000), 21_797_672),
        (resnet50(3, 1000), 25_557_032),
        (resnet18_cifar(3, 10), 11_173_962),
        (resnet20(3, 10), 269_722),
        (resnet32(3, 10), 464_154),
        (resnet56(3, 10), 853_018),
    ];
    for (config, want) in cases {
        let net = ResNet::new(&config, &mut rng()).unwrap();
        assert_eq!(nn::parameter_count(&net), want, "{config:?}");
    }
    assert!(resnet_cifar(21, 3, 10).is_err());
}

#[test]
fn state_dict_names_follow_torchvision() {
    let net = ResNet::new(&resnet18(3, 1000), &mut rng()).unwrap();
    let sd = nn::state_dict(&net);
    assert_eq!(
        sd.len(),
        122,
        "62 parameters + 3 buffers for each of 20 batch norms"
    );
    let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
    for key in [
        "conv1.weight",
        "bn1.weight",
        "bn1.running_mean",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&key), "missing {key}");
    }
    let (_, t) = sd
        .iter()
        .find(|(n, _)| n == "bn1.num_batches_tracked")
        .unwrap();
    assert_eq!(t.dtype(), DType::I64);
    let mut roles = (0, 0);
    net.visit("", &mut |_, _, r| {
        if r == Role::Parameter {
            roles.0 += 1
        } else {
            roles.1 += 1
        }
    });
    assert_eq!(roles, (62, 60));
    let r50 = ResNet::new(&resnet50(3, 1000), &mut rng()).unwrap();
    let names50: Vec<String> = nn::state_dict(&r50).into_iter().map(|(n, _)| n).collect();
    assert!(names50.contains(&"layer3.5.conv3.weight".to_string()));
    assert_eq!(names50.len(), 320);
}

#[test]
fn shapes_for_any_classes_and_channels() {
    let mut r = rng();
    let x = Tensor::randn(&[2, 1, 28, 28], 0.0, 1.0, DType::F32, &mut r).unwrap();
    let net = ResNet::new(&resnet20(1, 7), &mut r).unwrap();
    assert_eq!(no_grad(|| net.forward(&x)).unwrap().shape(), &[2, 7]);
    let x = Tensor::randn(&[1, 3, 64, 64], 0.0, 1.0, DType::F32, &mut r).unwrap();
    let net = ResNet::new(&resnet18(3, 5), &mut r).unwrap();
    assert_eq!(no_grad(|| net.forward(&x)).unwrap().shape(), &[1, 5]);
}

#[test]
fn eval_mode_is_deterministic_and_does_not_touch_running_stats() {
    let mut r = rng();
    let mut net = ResNet::new(&resnet20(3, 10), &mut r).unwrap();
    let x = Tensor::randn(&[4, 3, 16, 16], 0.0, 1.0, DType::F32, &mut r).unwrap();
    no_grad(|| net.forward(&x)).unwrap(); // training mode: updates the statistics
    let snapshot = |n: &ResNet| -> Vec<f64> {
        nn::state_dict(n)
            .into_iter()
            .filter(|(k, _)| k.contains("running"))
            .flat_map(|(_, t)| t.to_f64_vec().unwrap())
            .collect()
    };
    let before = snapshot(&net);
    assert!(
        before.iter().any(|&v| v != 0.0 && v != 1.0),
        "training forward should move the running statistics"
    );
    net.set_training(false);
    let a = no_grad(|| net.forward(&x))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let b = no_grad(|| net.forward(&x.narrow(0, 0, 2).unwrap()))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(snapshot(&net), before);
    // Eval output of a sample does not depend on the rest of the batch.
    for (x, y) in a[..20].iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    let tracked = nn::state_dict(&net)
        .into_iter()
        .find(|(k, _)| k == "bn1.num_batches_tracked")
        .unwrap()
        .1;
    assert_eq!(tracked.to_scalar::<i64>().unwrap(), 1);
}

#[test]
fn a_few_sgd_steps_reduce_the_loss() {
    let mut r = rng();
    let net = ResNet::new(&resnet20(1, 4), &mut r).unwrap();
    let x = Tensor::randn(&[8, 1, 12, 12], 0.0, 1.0, DType::F32, &mut r).unwrap();
    let y = Tensor::from_vec(vec![0i64, 1, 2, 3, 0, 1, 2, 3], &[8, 1]).unwrap();
    let mut opt = Sgd::new(
        vec![ParamGroup::new(nn::parameters(&net), 0.05, 0.0)],
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    let loss_of = |net: &ResNet| -> ferrite::Result<Tensor> {
        net.forward(&x)?
            .log_softmax(1)?
            .gather(1, &y)?
            .mean_all()?
            .neg()
    };
    let first = loss_of(&net).unwrap().to_scalar::<f32>().unwrap();
    for _ in 0..15 {
        let grads = loss_of(&net).unwrap().backward().unwrap();
        assert_eq!(
            grads.len(),
            nn::parameters(&net).len(),
            "every parameter gets a gradient"
        );
        opt.step(&grads).unwrap();
    }
    let last = loss_of(&net).unwrap().to_scalar::<f32>().unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

#[test]
fn same_seed_same_run_bit_for_bit() {
    // Large enough for the parallel conv, reduction and batch-norm paths.
    let run = || -> Vec<f32> {
        let mut r = rng();
        let net = ResNet::new(&resnet20(3, 10), &mut r).unwrap();
        let x = Tensor::randn(&[8, 3, 16, 16], 0.0, 1.0, DType::F32, &mut r).unwrap();
        let y = Tensor::from_vec((0..8).collect::<Vec<i64>>(), &[8, 1]).unwrap();
        let mut opt = Sgd::new(
            vec![ParamGroup::new(nn::parameters(&net), 0.1, 1e-4)],
            SgdConfig {
                momentum: 0.9,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..3 {
            let loss = net
                .forward(&x)
                .unwrap()
                .log_softmax(1)
                .unwrap()
                .gather(1, &y)
                .unwrap()
                .mean_all()
                .unwrap()
                .neg()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        nn::state_dict(&net)
            .into_iter()
            .filter(|(_, t)| t.dtype() == DType::F32)
            .flat_map(|(_, t)| t.to_vec::<f32>().unwrap())
            .collect()
    };
    let (a, b) = (run(), run());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "two runs with one seed differ"
    );
}

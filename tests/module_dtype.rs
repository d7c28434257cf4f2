//! `Module::to_dtype(F64)` gives a reference model: a CIFAR ResNet-18 in
//! f64 whose backward pass matches central finite differences on sampled
//! parameters (batch norm in training mode, projection shortcuts, the
//! classifier), so f32 and device results can be checked against it.

use ferrite::nn::resnet::{resnet18_cifar, ResNet};
use ferrite::nn::{self, Module};
use ferrite::{no_grad, DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn resnet18_in_f64_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = ResNet::new(&resnet18_cifar(3, 10), &mut rng).unwrap();
    model.to_dtype(DType::F64).unwrap();
    let x = Tensor::randn(&[2, 3, 16, 16], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let w = Tensor::randn(&[2, 10], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let objective = |m: &ResNet| -> f64 {
        let y = m.forward(&x).unwrap();
        y.mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };

    let value = model
        .forward(&x)
        .unwrap()
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = value.backward().unwrap();
    let named = nn::named_parameters(&model);
    let sampled = [
        "conv1.weight",
        "bn1.weight",
        "layer1.0.conv2.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "layer3.1.bn1.weight",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ];
    let h = 1e-6;
    for name in sampled {
        let (_, p) = named.iter().find(|(n, _)| n == name).expect(name);
        assert_eq!(p.dtype(), DType::F64, "{name}");
        let g = grads.get(p).expect(name).to_vec::<f64>().unwrap();
        let flat = p.flatten(0, -1).unwrap();
        for _ in 0..3 {
            let i = rng.random_range(0..p.numel());
            let element = flat.narrow(0, i, 1).unwrap();
            let original = element.to_vec::<f64>().unwrap()[0];
            let set = |v: f64| {
                no_grad(|| element.assign(&Tensor::from_vec(vec![v], &[1]).unwrap())).unwrap()
            };
            set(original + h);
            let up = objective(&model);
            set(original - h);
            let down = objective(&model);
            set(original);
            let numeric = (up - down) / (2.0 * h);
            let err = (numeric - g[i]).abs();
            assert!(
                err <= 1e-6 + 1e-4 * numeric.abs(),
                "{name}[{i}]: backward {}, finite differences {numeric}",
                g[i]
            );
        }
    }
}

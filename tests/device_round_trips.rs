//! A PLM training step on a device never waits for it: no download between
//! the batch's upload and the next batch (the loss, PLM's histograms and
//! the device's check of the targets are read later, in one go). Its own
//! test binary, so that no other test's downloads are counted. In CI:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_round_trips`.
#![cfg(feature = "cuda")]

mod device;

use device::{devices, uniform};
use ferrite::loss::{ElementLoss, Reduction};
use ferrite::nn::resnet::{resnet_cifar, ResNet};
use ferrite::nn::{self, Module};
use ferrite::optim::{clip_grad_norm_, Adam, AdamConfig, Optimizer, ParamGroup};
use ferrite::plm::{Plm, PlmConfig};
use ferrite::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn plm_training_steps_download_nothing() {
    for device in devices() {
        let Device::Cuda(ordinal) = device else {
            continue;
        };
        let gpu = ferrite::backend::cuda::device(ordinal).unwrap();
        let classes = 3;
        let config = resnet_cifar(8, 1, classes).unwrap();
        let mut model = ResNet::new(&config, &mut StdRng::seed_from_u64(1)).unwrap();
        model.to_device(device).unwrap();
        let params = nn::parameters(&model);
        let mut opt = Adam::new(
            vec![ParamGroup::new(params.clone(), 1e-3, 0.0)],
            AdamConfig::default(),
        )
        .unwrap();
        let mut plm = Plm::new(PlmConfig::default(), &[5, 3, 1], 16).unwrap();
        let targets = Tensor::from_vec(
            vec![1f32, 0., 0., 0., 1., 0., 1., 1., 0., 0., 0., 1.],
            &[4, classes],
        )
        .unwrap();
        let mut losses = Vec::new();
        let mut step = |i: u64, plm: &mut Plm| {
            let x = uniform(&[4, 1, 8, 8], (-1.0, 1.0), i)
                .to_device(device)
                .unwrap();
            let t = targets.to_device(device).unwrap();
            let logits = model.forward(&x).unwrap();
            let per_element = ElementLoss::Bce
                .compute(&logits, &t, None, Reduction::None)
                .unwrap();
            let loss = plm.masked_loss(&per_element, &t).unwrap();
            plm.observe(&logits.detach().sigmoid().unwrap(), &t)
                .unwrap();
            let mut grads = loss.backward().unwrap();
            clip_grad_norm_(&mut grads, &params, 1.0).unwrap();
            opt.step(&grads).unwrap();
            loss.detach()
        };
        losses.push(step(0, &mut plm)); // first use: kernels load, caches fill
        let before = gpu.transfer_stats();
        for i in 1..4 {
            losses.push(step(i, &mut plm));
        }
        let after = gpu.transfer_stats();
        assert_eq!(
            (after.downloads, after.synchronizations),
            (before.downloads, before.synchronizations),
            "training steps waited for the device: {before:?} → {after:?}"
        );
        // Reading the results afterwards is where the host waits, once.
        let values = Tensor::stack(&losses, 0).unwrap().to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
        plm.end_epoch().unwrap();
        assert!(gpu.transfer_stats().downloads > after.downloads);
    }
}

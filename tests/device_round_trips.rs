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
use std::sync::{Mutex, MutexGuard};

/// Held by each test while it runs: the device's transfer counts are
/// global, so a test running beside another would count its downloads.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn plm_training_steps_download_nothing() {
    let _turn = one_at_a_time();
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

#[test]
fn a_trainer_epoch_on_the_device_downloads_nothing_between_batches() {
    let _turn = one_at_a_time();
    use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
    use ferrite::data::{ImageDataset, Labels};
    use ferrite::nn::{Bias, Flatten, Linear, Sequential};
    use ferrite::train::trainer::{Quiet, Trainer, LOSS_READ_INTERVAL};
    for device in devices() {
        let Device::Cuda(ordinal) = device else {
            continue;
        };
        let gpu = ferrite::backend::cuda::device(ordinal).unwrap();
        // Fewer batches than LOSS_READ_INTERVAL: the losses are read once, at the end.
        let batches = 8;
        assert!(batches < LOSS_READ_INTERVAL);
        let labels: Vec<u32> = (0..4 * batches as u32).map(|i| i % 3).collect();
        let data = ImageDataset {
            images: (0..labels.len() * 16)
                .map(|i| (i * 37 % 251) as u8)
                .collect(),
            channels: 1,
            height: 4,
            width: 4,
            num_classes: 3,
            labels: Labels::Single(labels),
            name: "toy".into(),
        };
        let mut rng = StdRng::seed_from_u64(2);
        let mut model = Sequential::new()
            .with(Flatten)
            .with(Linear::new(16, 3, Bias::Yes, &mut rng).unwrap());
        model.to_device(device).unwrap();
        let opt = Adam::new(
            vec![ParamGroup::new(model.parameters(), 1e-3, 0.0)],
            AdamConfig::default(),
        )
        .unwrap();
        // Transfer counters when each batch's loss is computed.
        let mut seen = Vec::new();
        let loss = |logits: &Tensor, batch: &Batch| {
            seen.push(gpu.transfer_stats());
            ElementLoss::Bce.compute(logits, &batch.targets, None, Reduction::Mean)
        };
        let mut trainer = Trainer::new(model, opt, loss)
            .unwrap()
            .clip_grad_norm(Some(1.0));
        let mut loader = DataLoader::new(&data, LoaderConfig::training(4, 0)).unwrap();
        trainer.fit(&mut loader, None, &mut Quiet).unwrap();
        drop(trainer);
        assert_eq!(seen.len(), batches);
        // From the second batch on (the first loads kernels), no download
        // and no synchronisation until the epoch's losses are read.
        let (first, last) = (&seen[1], &seen[batches - 1]);
        assert_eq!(
            (last.downloads, last.synchronizations),
            (first.downloads, first.synchronizations),
            "training steps waited for the device: {first:?} → {last:?}"
        );
        assert!(gpu.transfer_stats().downloads > last.downloads);
    }
}

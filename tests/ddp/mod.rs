//! Helpers of the data-parallel tests: a tiny image dataset, a tiny
//! model, SGD, and ranks as threads.
#![allow(dead_code)]

use ferrite::data::{ImageDataset, Labels};
use ferrite::distributed::{Communicator, InProcess};
use ferrite::nn::{Bias, Flatten, Linear, Module, ReLU, Sequential};
use ferrite::optim::{ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, Rng, SeedableRng};
use ferrite::Result;
use std::path::PathBuf;
use std::thread;

/// Classes of the tiny datasets.
pub const CLASSES: usize = 3;
/// 97 training images in global batches of 32: 32, 32, 32 and a last
/// batch of 1, of which rank 1 of 2 has nothing.
pub const TRAIN: usize = 97;
/// The global batch.
pub const BATCH: usize = 32;
/// 45 validation images in batches of 22: 22, 22, 1.
pub const VAL: usize = 45;
/// The validation batch.
pub const VAL_BATCH: usize = 22;

/// A fresh scratch folder for test `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-ddp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `n` grey 4×4 images whose brightest quadrant says their class, with
/// noise; single labels, or (multi) a random multi-hot row per image
/// with class frequencies 1/2, 1/4, 1/8.
pub fn dataset(n: usize, seed: u64, multi: bool) -> ImageDataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 16);
    let mut single = Vec::new();
    let mut bits = Vec::new();
    for _ in 0..n {
        let class = rng.random_range(0..CLASSES);
        let row: Vec<u8> = (0..CLASSES)
            .map(|c| u8::from(rng.random::<f64>() < 0.5f64.powi(c as i32 + 1)))
            .collect();
        for p in 0..16 {
            let lit = if multi {
                row.get(p / 4).is_some_and(|&b| b == 1)
            } else {
                p / 4 == class
            };
            let base: u8 = if lit { 160 } else { 40 };
            images.push(base + rng.random_range(0..60));
        }
        single.push(class as u32);
        bits.extend(row);
    }
    let labels = if multi {
        Labels::Multi {
            num_classes: CLASSES,
            bits,
        }
    } else {
        Labels::Single(single)
    };
    ImageDataset {
        images,
        channels: 1,
        height: 4,
        width: 4,
        num_classes: CLASSES,
        labels,
        name: "toy".into(),
    }
}

/// flatten → linear 16→12 → ReLU → linear 12→3, from `seed`; no batch norm.
pub fn model(seed: u64) -> Result<Sequential> {
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(Sequential::new()
        .with(Flatten)
        .with(Linear::new(16, 12, Bias::Yes, &mut rng)?)
        .with(ReLU)
        .with(Linear::new(12, CLASSES, Bias::Yes, &mut rng)?))
}

/// SGD with momentum and weight decay over the model's parameters.
pub fn sgd(model: &Sequential) -> Result<Sgd> {
    let config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::default()
    };
    Sgd::new(vec![ParamGroup::new(model.parameters(), 0.2, 1e-4)], config)
}

/// Runs `body` as every rank of an in-process group of `world` on its own
/// thread; the results in rank order.
pub fn on_ranks<T: Send>(
    world: usize,
    body: impl Fn(Box<dyn Communicator>) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let group = InProcess::group(world).unwrap();
    let body = &body;
    thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| s.spawn(move || body(Box::new(comm))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no rank panics"))
            .collect()
    })
}

/// Largest |a − b| over the largest |b|, per tensor; the worst tensor.
pub fn relative_error(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = y.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
            let diff = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs() as f64)
                .fold(0.0, f64::max);
            diff / scale.max(1e-12)
        })
        .fold(0.0, f64::max)
}

//! Trains a small CNN on MNIST (the copy in `data/mnist`) and reports test
//! accuracy after each epoch.
//!
//! Run: `cargo run --release --example mnist_cnn [-- EPOCHS [TRAIN_IMAGES]]`
//!
//! Network: `ferrite::nn::small_cnn` (two conv/BN/ReLU/max-pool stages and
//! a linear classifier); Adam, learning rate 2e-3 with cosine decay, batch 128.

use ferrite::data::{loader::epoch_batches, mnist};
use ferrite::nn::{self, small_cnn, Module, Sequential, Visit};
use ferrite::optim::{Adam, AdamConfig, CosineAnnealing, Optimizer, ParamGroup};
use ferrite::KeepDim;
use ferrite::{no_grad, DType, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Instant;

const MEAN: f32 = 0.1307;
const STD: f32 = 0.3081;

fn accuracy(net: &Sequential, split: &mnist::ImageSplit) -> Result<f64> {
    let mut correct = 0usize;
    for chunk in (0..split.len()).collect::<Vec<_>>().chunks(500) {
        let (x, y) = split.batch(chunk, MEAN, STD)?;
        let pred = no_grad(|| net.forward(&x))?.argmax(1, KeepDim::Yes)?;
        correct += pred
            .eq(&y)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()? as usize;
    }
    Ok(correct as f64 / split.len() as f64)
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let epochs = args.first().copied().unwrap_or(3);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
    let (train, test) = mnist::load(dir)?;
    let n_train = args.get(1).copied().unwrap_or(train.len()).min(train.len());
    let mut rng = StdRng::seed_from_u64(0);
    let mut net = small_cnn(1, 10, &mut rng)?;
    println!(
        "{} parameters; {n_train} training images, {} test images",
        nn::parameter_count(&net),
        test.len()
    );
    let mut opt = Adam::new(
        vec![ParamGroup::new(nn::parameters(&net), 2e-3, 0.0)],
        AdamConfig::default(),
    )?;
    let schedule = CosineAnnealing {
        t_max: epochs,
        eta_min: 0.0,
    };
    let start = Instant::now();
    for epoch in 0..epochs {
        opt.apply_schedule(&schedule, epoch);
        net.set_training(true);
        let mut total = 0.0;
        let batches = epoch_batches(n_train, 128, 0, epoch);
        for batch in &batches {
            let (x, y) = train.batch(batch, MEAN, STD)?;
            let loss = net
                .forward(&x)?
                .log_softmax(1)?
                .gather(1, &y)?
                .mean_all()?
                .neg()?;
            total += loss.to_scalar::<f32>()? as f64;
            opt.step(&loss.backward()?)?;
        }
        net.set_training(false);
        let acc = accuracy(&net, &test)?;
        println!(
            "epoch {}: train loss {:.4}, test accuracy {:.2} %, {:.0} s elapsed",
            epoch + 1,
            total / batches.len() as f64,
            100.0 * acc,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

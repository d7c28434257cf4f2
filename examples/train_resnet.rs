//! The README's ResNet training loop, run on two random CIFAR-shaped
//! batches (CIFAR itself is not shipped): it shows the API, not accuracy.
//!
//! Run: `cargo run --release --example train_resnet`

use ferrite::nn::{self, resnet, Module, Visit};
use ferrite::optim::{CosineAnnealing, Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::KeepDim;
use ferrite::{no_grad, DType, Result, Tensor};
use rand::{rngs::StdRng, SeedableRng};

fn train(batches: &[(Tensor, Tensor)], epochs: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut net = resnet::ResNet::new(&resnet::resnet20(3, 10), &mut rng)?; // CIFAR ResNet-20
    let groups = vec![ParamGroup::new(nn::parameters(&net), 0.1, 5e-4)];
    let mut opt = Sgd::new(
        groups,
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    )?;
    let schedule = CosineAnnealing {
        t_max: epochs,
        eta_min: 0.0,
    };
    for epoch in 0..epochs {
        opt.apply_schedule(&schedule, epoch);
        net.set_training(true);
        for (x, y) in batches {
            // x: N×3×32×32 f32, y: N×1 i64
            let loss = net
                .forward(x)?
                .log_softmax(1)?
                .gather(1, y)?
                .mean_all()?
                .neg()?;
            opt.step(&loss.backward()?)?;
            println!("epoch {epoch}: loss {:.4}", loss.to_scalar::<f32>()?);
        }
    }
    net.set_training(false);
    let logits = no_grad(|| net.forward(&batches[0].0))?; // evaluation: running statistics
    println!("{}", logits.argmax(1, KeepDim::No)?);
    Ok(())
}

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(1);
    let batches = (0..2)
        .map(|b| {
            let x = Tensor::randn(&[16, 3, 32, 32], 0.0, 1.0, DType::F32, &mut rng)?;
            let y = Tensor::from_vec(
                (0..16).map(|i| (i + b) % 10).collect::<Vec<i64>>(),
                &[16, 1],
            )?;
            Ok((x, y))
        })
        .collect::<Result<Vec<_>>>()?;
    train(&batches, 3)
}

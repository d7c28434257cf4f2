//! Fits a 2-layer MLP to the two-spirals problem with plain gradient descent.
//!
//! Run: `cargo run --release --example spirals`
//!
//! Shows the whole training loop by hand: forward, cross-entropy from
//! `log_softmax` + `gather`, `backward`, and an in-place parameter update
//! under `no_grad`. Reaches loss ≈ 0.03 and ≈ 99 % accuracy in 3000 steps.

use ferrite::data::synthetic::two_spirals;
use ferrite::KeepDim;
use ferrite::{no_grad, DType, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let (x, y) = two_spirals(200, 0.05, &mut rng)?;
    let hidden = 64;
    // A wide first-layer init gives tanh units varied slopes across the plane.
    let w1 = Tensor::randn(&[2, hidden], 0.0, 4.0, DType::F32, &mut rng)?.requires_grad_(true);
    let b1 = Tensor::zeros(&[hidden], DType::F32)?.requires_grad_(true);
    let w2 = Tensor::randn(
        &[hidden, 2],
        0.0,
        (1.0 / hidden as f64).sqrt(),
        DType::F32,
        &mut rng,
    )?
    .requires_grad_(true);
    let b2 = Tensor::zeros(&[2], DType::F32)?.requires_grad_(true);
    let params = [&w1, &b1, &w2, &b2];
    let learning_rate = 1.0;
    for step in 0..=3000 {
        let logits = x.matmul(&w1)?.add(&b1)?.tanh()?.matmul(&w2)?.add(&b2)?;
        let loss = logits.log_softmax(1)?.gather(1, &y)?.mean_all()?.neg()?;
        let grads = loss.backward()?;
        no_grad(|| -> Result<()> {
            for p in params {
                p.add_scaled_(
                    grads.get(p).expect("every parameter is used"),
                    -learning_rate,
                )?;
            }
            Ok(())
        })?;
        if step % 500 == 0 {
            let pred = logits.argmax(1, KeepDim::Yes)?;
            let acc = pred
                .eq(&y)?
                .to_dtype(DType::F32)?
                .mean_all()?
                .to_scalar::<f32>()?;
            println!(
                "step {step:5}  loss {:.4}  accuracy {:.3}",
                loss.to_scalar::<f32>()?,
                acc
            );
        }
    }
    Ok(())
}

//! The README's tiny net: a derived two-layer MLP fitted to
//! `y = x0² + x1²` with Adam and the mean squared error.
//!
//! Run: `cargo run --release --example tiny_net`

use ferrite::loss::{mse_loss, Reduction};
use ferrite::nn::{Bias, Linear, Module};
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{DType, KeepDim, Result, Tensor};

#[derive(Module)]
struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.hidden.forward(x)?.relu()?)
    }
}

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let x = Tensor::randn(&[256, 2], 0.0, 1.0, DType::F32, &mut rng)?;
    let y = x.square()?.sum(&[1], KeepDim::Yes)?; // target: x0² + x1²
    let hidden = Linear::new(2, 32, Bias::Yes, &mut rng)?;
    let net = Mlp {
        hidden,
        out: Linear::new(32, 1, Bias::Yes, &mut rng)?,
    };
    let group = ParamGroup::new(net.parameters(), 1e-2, 0.0);
    let mut opt = Adam::new(vec![group], AdamConfig::default())?;
    for step in 0..=500 {
        let loss = mse_loss(&net.forward(&x)?, &y, Reduction::Mean)?;
        opt.step(&loss.backward()?)?; // gradients keyed by parameter
        if step % 100 == 0 {
            println!("step {step:3}: loss {:.5}", loss.item::<f32>()?);
        }
    }
    Ok(())
}

//! The README's ten-line example: fit `tanh(x·w)` to `tanh(x0 + x1 + x2)`.
//!
//! Run: `cargo run --release --example tiny_net`

use ferrite::KeepDim;
use ferrite::{no_grad, DType, Result, Tensor};
use rand::{rngs::StdRng, SeedableRng};

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let x = Tensor::randn(&[64, 3], 0.0, 1.0, DType::F32, &mut rng)?;
    let y = x.sum(&[1], KeepDim::Yes)?.tanh()?; // target: tanh(x0 + x1 + x2)
    let w = Tensor::randn(&[3, 1], 0.0, 0.1, DType::F32, &mut rng)?.requires_grad_(true);
    let mut loss = Tensor::zeros(&[], DType::F32)?;
    for _ in 0..200 {
        loss = x.matmul(&w)?.tanh()?.sub(&y)?.square()?.mean_all()?;
        let grads = loss.backward()?; // gradients keyed by tensor
        no_grad(|| w.add_scaled_(grads.get(&w).unwrap(), -0.5))?; // SGD step, in place
    }
    println!(
        "final loss {:.6}, w = {}",
        loss.to_scalar::<f32>()?,
        w.reshape(&[3])?
    );
    Ok(())
}

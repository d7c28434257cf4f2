//! Synthetic datasets that need no files.

use crate::error::Result;
use crate::tensor::Tensor;
use rand::Rng;

/// The two-spirals problem: `n` points per class on two interleaved
/// spirals (1.75 turns, radius 0 to 1), each coordinate jittered by
/// uniform noise of width `noise`.
///
/// Returns `x` of shape `[2n, 2]` (f32) and labels `y` of shape `[2n, 1]`
/// (i64, 0 or 1), ready for `log_softmax(..).gather(1, &y)`.
///
/// ```
/// use ferrite::data::synthetic::two_spirals;
/// use ferrite::rand::{rngs::StdRng, SeedableRng};
/// let (x, y) = two_spirals(100, 0.05, &mut StdRng::seed_from_u64(0))?;
/// assert_eq!((x.shape(), y.shape()), (&[200usize, 2][..], &[200usize, 1][..]));
/// assert_eq!(y.to_vec::<i64>()?.iter().sum::<i64>(), 100); // half of each class
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn two_spirals<R: Rng + ?Sized>(n: usize, noise: f64, rng: &mut R) -> Result<(Tensor, Tensor)> {
    let mut xs = Vec::with_capacity(4 * n);
    let mut ys = Vec::with_capacity(2 * n);
    for class in 0..2 {
        for i in 0..n {
            let r = i as f64 / n as f64;
            let theta = 1.75 * std::f64::consts::TAU * r + class as f64 * std::f64::consts::PI;
            xs.push((r * theta.sin() + noise * (rng.random::<f64>() - 0.5)) as f32);
            xs.push((r * theta.cos() + noise * (rng.random::<f64>() - 0.5)) as f32);
            ys.push(class as i64);
        }
    }
    Ok((
        Tensor::from_vec(xs, &[2 * n, 2])?,
        Tensor::from_vec(ys, &[2 * n, 1])?,
    ))
}

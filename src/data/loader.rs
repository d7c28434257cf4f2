//! Minibatch order: a seeded shuffle of the indices, cut into batches.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The batches of one epoch: indices `0..n` shuffled by a generator seeded
/// with `seed` and `epoch` (so every epoch differs and runs repeat), cut
/// into chunks of `batch_size` (the last may be shorter).
pub fn epoch_batches(n: usize, batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
        .chunks(batch_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

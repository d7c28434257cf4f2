//! A small, portable random generator for data pipelines.
//!
//! Datasets built from a seed (MultiMNIST-LT, long-tail subsets) and the
//! loader's shuffles and augmentations must give the same bytes on every
//! machine and with every version of the `rand` crate, whose `StdRng` makes no
//! such promise. SplitMix64 (Steele, Lea and Flood, 2014) is a one-word
//! generator that is fully specified by a few lines of arithmetic, so it is
//! used here for everything the data module draws.
//!
//! Independent streams come from [`stream_seed`]: it hashes a base seed and
//! a path of integers (a purpose tag, an epoch, a sample index...) into a new
//! seed. Work split across threads can then give each unit its own stream,
//! and the result does not depend on which thread runs which unit.

/// Mixes the bits of `z` (the SplitMix64 output function, a bijection on
/// `u64`): every input bit affects every output bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The increment of SplitMix64's state (2^64 divided by the golden ratio).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Seed of the stream named by `path` under `seed`: starting from
/// `h = mix(seed)`, each element `p` of the path updates
/// `h = mix(h ^ mix(p + GOLDEN))`. Different paths give unrelated seeds,
/// and the same path always gives the same seed.
pub fn stream_seed(seed: u64, path: &[u64]) -> u64 {
    path.iter()
        .fold(mix(seed), |h, &p| mix(h ^ mix(p.wrapping_add(GOLDEN))))
}

/// The SplitMix64 generator: the state advances by a constant and the
/// output is [`mix`] of the new state.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator for the stream `path` under `seed` (see [`stream_seed`]).
    pub fn stream(seed: u64, path: &[u64]) -> Self {
        Self::new(stream_seed(seed, path))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A uniform `f64` in `[0, 1)`: the top 53 bits of [`Self::next_u64`]
    /// scaled by 2^-53.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A fair coin.
    pub fn next_bool(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// A uniform integer in `0..n` without modulo bias (Lemire's
    /// multiply-and-reject method). `n` must be positive; `below(0)` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        // Products whose low half falls below 2^64 mod n are rejected so that
        // every high half is equally likely.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates, from the last position down).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_splitmix64_sequence() {
        // Reference outputs for seed 1234567 (the C reference implementation
        // by Vigna, as listed on Rosetta Code).
        let mut g = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..5).map(|_| g.next_u64()).collect();
        assert_eq!(
            got,
            vec![
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821,
            ]
        );
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut g = SplitMix64::new(7);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[g.below(6)] += 1;
        }
        // Each count is Binomial(60000, 1/6): mean 10000, sd about 91.
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 500, "{counts:?}");
        }
        assert_eq!(g.below(0), 0);
        assert_eq!(g.below(1), 0);
    }

    #[test]
    fn streams_differ_by_path_and_repeat() {
        assert_eq!(stream_seed(1, &[2, 3]), stream_seed(1, &[2, 3]));
        assert_ne!(stream_seed(1, &[2, 3]), stream_seed(1, &[3, 2]));
        assert_ne!(stream_seed(1, &[2]), stream_seed(2, &[2]));
        assert_ne!(stream_seed(1, &[0]), stream_seed(1, &[]));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64::new(3).shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}

//! A tiny deterministic generator (xorshift64*): the same `--seed` gives
//! the same sequence of inputs on every machine.

/// xorshift64* generator; never zero.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        // SplitMix64 step so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length biased towards small values: 1, 2, 4, … up to `max`.
    pub fn small_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        let bits = self.below(usize::BITS as usize - max.leading_zeros() as usize + 1);
        let cap = 1usize.checked_shl(bits as u32).unwrap_or(usize::MAX);
        1 + self.below(cap.min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn small_lengths_stay_in_range() {
        let mut rng = Rng::new(5);
        for max in [1, 2, 3, 1000, usize::MAX] {
            for _ in 0..1000 {
                let n = rng.small_len(max);
                assert!((1..=max).contains(&n));
            }
        }
    }
}

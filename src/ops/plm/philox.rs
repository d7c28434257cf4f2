//! Philox4x32-10, the counter-based random number generator of Salmon,
//! Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3"
//! (SC'11), and the uniforms that PLM masks are drawn from.
//!
//! A counter-based generator has no sequential state: the output is a pure
//! function `philox(counter, key)`. The uniform for element `e` of mask
//! number `t` is therefore computable on its own, by any thread of a GPU
//! kernel, and resuming from a checkpoint only needs `t`.

/// First round multiplier.
const M0: u32 = 0xD251_1F53;
/// Second round multiplier.
const M1: u32 = 0xCD9E_8D57;
/// Key increment for word 0 (the golden ratio, 2^32 / φ).
const W0: u32 = 0x9E37_79B9;
/// Key increment for word 1 (√3 − 1, scaled by 2^32).
const W1: u32 = 0xBB67_AE85;

/// The high and low 32-bit halves of the 64-bit product `a · b`.
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let product = u64::from(a) * u64::from(b);
    ((product >> 32) as u32, product as u32)
}

/// Philox4x32 with 10 rounds: maps a 128-bit `counter` and a 64-bit `key`
/// to four 32-bit random words.
///
/// Each round multiplies words 0 and 2 by fixed constants, swaps the word
/// pairs and XORs the high halves with the other words and the round key;
/// the key is bumped by a Weyl increment between rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut x = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, x[0]);
        let (hi1, lo1) = mulhilo(M1, x[2]);
        x = [hi1 ^ x[1] ^ k[0], lo1, hi0 ^ x[3] ^ k[1], lo0];
    }
    x
}

/// A uniform in [0, 1) from 32 random bits: the top 24 bits scaled by
/// 2^-24, `(x >> 8) · 2^-24`.
///
/// Every result is an exact multiple of 2^-24, hence exactly representable
/// in f32 as well as f64, so a GPU kernel computing in f32 gets the same
/// value. The largest is `1 − 2^-24`, so `u < 1` always holds.
pub fn uniform_from_bits(x: u32) -> f64 {
    f64::from(x >> 8) * (1.0 / 16_777_216.0)
}

/// The four uniforms of one Philox block, for elements `4·block .. 4·block + 4`
/// of mask number `batch`.
///
/// Layout: key = (seed low 32 bits, seed high 32 bits); counter =
/// (block low, block high, batch low, batch high). Element `e` uses word
/// `e mod 4` of block `⌊e / 4⌋`.
pub fn uniform_block(seed: u64, batch: u64, block: u64) -> [f64; 4] {
    let key = [seed as u32, (seed >> 32) as u32];
    let counter = [
        block as u32,
        (block >> 32) as u32,
        batch as u32,
        (batch >> 32) as u32,
    ];
    philox4x32_10(counter, key).map(uniform_from_bits)
}

/// The uniform for element `element` (row-major index in the batch) of mask
/// number `batch` under `seed`: word `element mod 4` of
/// [`uniform_block`]`(seed, batch, element / 4)`.
pub fn mask_uniform(seed: u64, batch: u64, element: u64) -> f64 {
    uniform_block(seed, batch, element / 4)[(element % 4) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_covers_the_unit_interval() {
        assert_eq!(uniform_from_bits(0), 0.0);
        assert_eq!(uniform_from_bits(0xFF), 0.0);
        assert_eq!(uniform_from_bits(0x100), 1.0 / 16_777_216.0);
        assert_eq!(uniform_from_bits(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
    }

    #[test]
    fn single_uniforms_match_their_block() {
        let block = uniform_block(7, 3, 2);
        for lane in 0..4 {
            assert_eq!(mask_uniform(7, 3, 8 + lane), block[lane as usize]);
        }
    }
}

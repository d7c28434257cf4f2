//! CPU kernels for softmax and log-softmax over the last dimension of a
//! `rows × len` buffer.
//!
//! Numerically stable: each row's maximum is subtracted before `exp`, so no
//! term overflows and the largest term is exactly 1. Rows run in parallel
//! above the size threshold.

use crate::backend::cpu::pool::take;
use crate::backend::cpu::{fill_rows, simd};
use crate::error::Result;
use crate::ops::dispatch::float_dispatch;
use crate::ops::elementwise::cpu::map1;
use crate::ops::reduce::cpu::{max_lanes, sum_block};
use crate::tensor::{CpuStorage, Float, Layout};

fn softmax_rows<T: Float>(v: &[T], l: &Layout, log: bool) -> Result<Vec<T>> {
    // The caller arranges for the softmax dim to be the last one.
    let len = *l.shape().last().unwrap_or(&1);
    let strided;
    let data: &[T] = if l.is_contiguous() {
        &v[l.offset()..l.offset() + l.numel()]
    } else {
        strided = map1(v, l, |x| x)?;
        &strided
    };
    let mut out = take::<T>(data.len())?;
    let isa = simd::detect();
    fill_rows(&mut out, len, |i, row| {
        // SAFETY: `isa` comes from `detect`, so this CPU runs it.
        unsafe { softmax_row_on(isa, row, &data[i * len..(i + 1) * len], log) }
    });
    Ok(out)
}

/// One row of (log-)softmax: `row = softmax(x)` or `log_softmax(x)`.
///
/// Separate passes (max, exp, sum, scale) keep each loop free of
/// cross-iteration dependencies except the laned ones, so they vectorise;
/// the exp pass, a polynomial, dominates. Always inlined, so that each
/// instruction-set variant below compiles it for its own vector width.
#[inline(always)]
fn softmax_row<T: Float>(row: &mut [T], x: &[T], log: bool) {
    let max = max_lanes(x);
    // An all -inf row would give NaN from (-inf) - (-inf): shift by 0.
    let shift = if max == T::NEG_INFINITY { T::ZERO } else { max };
    for (o, &v) in row.iter_mut().zip(x) {
        *o = (v - shift).exp();
    }
    let sum = T::from_f64(sum_block(row));
    if log {
        // (v − max) − ln Σ, not v − (ln Σ + max): at large logits the
        // rounding of ln Σ + max would swamp ln Σ (|max| ≫ ln Σ ≥ 0), while
        // v − max is exact for the entries that matter.
        let log_sum = sum.ln();
        for (o, &v) in row.iter_mut().zip(x) {
            *o = (v - shift) - log_sum;
        }
    } else {
        let inv = T::ONE / sum;
        for o in row.iter_mut() {
            *o = *o * inv;
        }
    }
}

/// [`softmax_row`] compiled for `isa`. All variants give identical bits.
///
/// # Safety
/// The CPU must run `isa` ([`simd::VectorIsa::is_available`]; callers pass
/// [`simd::detect`]'s answer): its instructions are executed unchecked.
unsafe fn softmax_row_on<T: Float>(isa: simd::VectorIsa, row: &mut [T], x: &[T], log: bool) {
    debug_assert!(isa.is_available());
    match isa {
        // SAFETY: the caller guarantees `isa` is available, which is all
        // the target_feature functions require.
        #[cfg(target_arch = "x86_64")]
        simd::VectorIsa::Avx512 => unsafe { softmax_row_avx512(row, x, log) },
        #[cfg(target_arch = "x86_64")]
        simd::VectorIsa::Avx2 => unsafe { softmax_row_avx2(row, x, log) },
        _ => softmax_row(row, x, log),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2<T: Float>(row: &mut [T], x: &[T], log: bool) {
    softmax_row(row, x, log)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512<T: Float>(row: &mut [T], x: &[T], log: bool) {
    softmax_row(row, x, log)
}

/// Softmax (or log-softmax) along the last dimension of a float view;
/// returns a contiguous buffer of the same shape.
pub fn softmax_last_dim(s: &CpuStorage, l: &Layout, log: bool) -> Result<CpuStorage> {
    let name = if log { "log_softmax" } else { "softmax" };
    float_dispatch!(name, s, l, |v, lay| softmax_rows(v, lay, log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::simd::VectorIsa;

    /// Every instruction-set variant this CPU runs gives the baseline's
    /// bits, on rows with ordinary, extreme, infinite and NaN values and
    /// lengths that leave vector tails.
    #[test]
    fn every_vector_width_gives_identical_bits() {
        let mut state = 0x9e37_79b9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 60.0
        };
        for len in [1, 7, 16, 33, 1000] {
            let mut x: Vec<f32> = (0..len).map(|_| next()).collect();
            x[0] = 95.0; // beyond exp's overflow point before the shift
            if len > 2 {
                x[1] = f32::NEG_INFINITY;
                x[len - 1] = -120.0;
            }
            for log in [false, true] {
                let mut expect = vec![0.0f32; len];
                softmax_row(&mut expect, &x, log);
                for isa in [VectorIsa::Avx2, VectorIsa::Avx512] {
                    if !isa.is_available() {
                        continue;
                    }
                    let mut got = vec![0.0f32; len];
                    // SAFETY: checked available just above.
                    unsafe { softmax_row_on(isa, &mut got, &x, log) };
                    let same = got
                        .iter()
                        .zip(&expect)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa:?} len {len} log {log}: {got:?} vs {expect:?}");
                }
            }
        }
        let nan_row = [1.0f32, f32::NAN, 2.0];
        let mut expect = [0.0f32; 3];
        softmax_row(&mut expect, &nan_row, false);
        let mut got = [0.0f32; 3];
        // SAFETY: `detect` names an available ISA.
        unsafe { softmax_row_on(simd::detect(), &mut got, &nan_row, false) };
        assert_eq!(got.map(f32::to_bits), expect.map(f32::to_bits));
    }
}

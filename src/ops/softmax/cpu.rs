//! CPU kernels for softmax and log-softmax over the last dimension of a
//! `rows × len` buffer.
//!
//! Numerically stable: each row's maximum is subtracted before `exp`, so no
//! term overflows and the largest term is exactly 1. Rows run in parallel
//! above the size threshold.

use crate::backend::cpu::fill_chunks_weighted;
use crate::error::Result;
use crate::ops::elementwise::cpu::{float_dispatch, map1};
use crate::tensor::{CpuStorage, Float, Layout};

fn softmax_rows<T: Float>(v: &[T], l: &Layout, log: bool) -> Vec<T> {
    // The caller arranges for the softmax dim to be the last one.
    let len = *l.shape().last().unwrap_or(&1);
    let data: Vec<T> = if l.is_contiguous() {
        v[l.offset()..l.offset() + l.numel()].to_vec()
    } else {
        map1(v, l, |x| x)
    };
    let mut out = data;
    if len == 0 {
        return out;
    }
    // Process whole rows: chunk boundaries must fall on row boundaries, so
    // hand out rows as units of `len` elements.
    let mut row_slices: Vec<&mut [T]> = out.chunks_mut(len).collect();
    fill_chunks_weighted(&mut row_slices, len, |_, chunk| {
        for row in chunk.iter_mut() {
            let max = row
                .iter()
                .fold(T::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            // An all -inf row would give NaN from (-inf) - (-inf): shift by 0.
            let shift = if max == T::NEG_INFINITY { T::ZERO } else { max };
            if log {
                let sum: T = row.iter().map(|&x| (x - shift).exp()).sum();
                let lse = sum.ln() + shift;
                for x in row.iter_mut() {
                    *x = *x - lse;
                }
            } else {
                let mut sum = T::ZERO;
                for x in row.iter_mut() {
                    *x = (*x - shift).exp();
                    sum += *x;
                }
                let inv = T::ONE / sum;
                for x in row.iter_mut() {
                    *x = *x * inv;
                }
            }
        }
    });
    out
}

/// Softmax (or log-softmax) along the last dimension of a float view;
/// returns a contiguous buffer of the same shape.
pub fn softmax_last_dim(s: &CpuStorage, l: &Layout, log: bool) -> Result<CpuStorage> {
    let name = if log { "log_softmax" } else { "softmax" };
    float_dispatch!(name, s, l, |v, lay| softmax_rows(v, lay, log))
}

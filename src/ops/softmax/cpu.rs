//! CPU kernels for softmax and log-softmax over the last dimension of a
//! `rows × len` buffer.
//!
//! Numerically stable: each row's maximum is subtracted before `exp`, so no
//! term overflows and the largest term is exactly 1. Rows run in parallel
//! above the size threshold.

use crate::backend::cpu::fill_rows;
use crate::backend::cpu::pool::take;
use crate::error::Result;
use crate::ops::elementwise::cpu::{float_dispatch, map1};
use crate::ops::reduce::cpu::{max_lanes, sum_block};
use crate::tensor::{CpuStorage, Float, Layout};

fn softmax_rows<T: Float>(v: &[T], l: &Layout, log: bool) -> Vec<T> {
    // The caller arranges for the softmax dim to be the last one.
    let len = *l.shape().last().unwrap_or(&1);
    let strided;
    let data: &[T] = if l.is_contiguous() {
        &v[l.offset()..l.offset() + l.numel()]
    } else {
        strided = map1(v, l, |x| x);
        &strided
    };
    let mut out = take::<T>(data.len());
    fill_rows(&mut out, len, |i, row| {
        let x = &data[i * len..(i + 1) * len];
        // Separate passes (max, exp, sum, scale) keep each loop free of
        // cross-iteration dependencies except the laned ones, so they vectorise.
        let max = max_lanes(x);
        // An all -inf row would give NaN from (-inf) - (-inf): shift by 0.
        let shift = if max == T::NEG_INFINITY { T::ZERO } else { max };
        for (o, &v) in row.iter_mut().zip(x) {
            *o = (v - shift).exp();
        }
        let sum = T::from_f64(sum_block(row));
        if log {
            let lse = sum.ln() + shift;
            for (o, &v) in row.iter_mut().zip(x) {
                *o = v - lse;
            }
        } else {
            let inv = T::ONE / sum;
            for o in row.iter_mut() {
                *o = *o * inv;
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

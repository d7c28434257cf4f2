//! Fused optimizer updates on raw slices: one pass over a parameter, its
//! gradient and its state, in the operation order PyTorch's single-tensor
//! implementations use (so trajectories match to rounding).
//!
//! Each element's update reads and writes only that element, so large
//! parameters are updated in parallel chunks ([`PARALLEL_MIN_ELEMENTS`]
//! and up) with the same bits as one pass.

use super::{AdamStep, SgdStep};
use crate::backend::cpu::{num_threads, PARALLEL_MIN_ELEMENTS};
use crate::tensor::Float;
use rayon::prelude::*;

/// Elements per parallel chunk of an update.
const CHUNK: usize = 1 << 15;

/// Whether an update of `len` elements is split over threads.
fn parallel(len: usize) -> bool {
    len >= PARALLEL_MIN_ELEMENTS && num_threads() > 1
}

/// SGD with optional weight decay, momentum (dampening, Nesterov):
/// `d = g + wd·p`; `buf = d` on the first step, else `buf = μ·buf + (1 − τ)·d`;
/// `d = d + μ·buf` (Nesterov) or `d = buf`; `p −= lr·d`.
pub fn sgd<T: Float>(p: &mut [T], g: &[T], buf: Option<&mut [T]>, h: &SgdStep) {
    if !parallel(p.len()) {
        return sgd_serial(p, g, buf, h);
    }
    let chunks = p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK));
    match buf {
        None => chunks.for_each(|(p, g)| sgd_serial(p, g, None, h)),
        Some(buf) => chunks
            .zip(buf.par_chunks_mut(CHUNK))
            .for_each(|((p, g), b)| sgd_serial(p, g, Some(b), h)),
    }
}

/// [`sgd`] in one pass.
fn sgd_serial<T: Float>(p: &mut [T], g: &[T], buf: Option<&mut [T]>, h: &SgdStep) {
    let c = T::from_f64;
    let (lr, wd, mu, damp) = (
        c(h.lr),
        c(h.weight_decay),
        c(h.momentum),
        c(1.0 - h.dampening),
    );
    match buf {
        None => {
            for (p, &g) in p.iter_mut().zip(g) {
                let d = g + wd * *p;
                *p = *p - lr * d;
            }
        }
        Some(buf) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                let d = g + wd * *p;
                *b = if h.first_step { d } else { mu * *b + damp * d };
                let d = if h.nesterov { d + mu * *b } else { *b };
                *p = *p - lr * d;
            }
        }
    }
}

/// Adam / AdamW: optional decoupled decay `p *= 1 − lr·wd` (AdamW) or L2
/// `g += wd·p` (Adam); `m = m + (1 − β1)(g − m)`; `v = β2·v + (1 − β2)·g²`;
/// `p −= (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)`.
pub fn adam<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: &AdamStep) {
    if !parallel(p.len()) {
        return adam_serial(p, g, m, v, h);
    }
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| adam_serial(p, g, m, v, h));
}

/// [`adam`] in one pass.
fn adam_serial<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: &AdamStep) {
    let c = T::from_f64;
    let t = h.step as i32;
    let bc1 = 1.0 - h.beta1.powi(t);
    let bc2_sqrt = c((1.0 - h.beta2.powi(t)).sqrt());
    let step_size = c(h.lr / bc1);
    let (one_m_b1, b2, one_m_b2, eps) = (c(1.0 - h.beta1), c(h.beta2), c(1.0 - h.beta2), c(h.eps));
    let decay = c(1.0 - h.lr * h.weight_decay);
    let wd = c(h.weight_decay);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if h.decoupled {
            *p = *p * decay;
            g
        } else {
            g + wd * *p
        };
        *m = *m + one_m_b1 * (g - *m);
        *v = b2 * *v + one_m_b2 * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p = *p - step_size * (*m / denom);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters of `n` elements, large enough to be split over threads.
    fn state(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32 ^ seed) % 97) as f32 / 97.0 - 0.5)
            .collect()
    }

    #[test]
    fn chunked_updates_match_one_pass_bit_for_bit() {
        let n = 3 * PARALLEL_MIN_ELEMENTS + 5;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let sgd_h = SgdStep {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 1e-4,
            nesterov: true,
            first_step: false,
        };
        let (mut p1, g, mut b1) = (state(n, 1), state(n, 2), state(n, 3));
        let (mut p2, mut b2) = (p1.clone(), b1.clone());
        pool.install(|| sgd(&mut p1, &g, Some(&mut b1), &sgd_h));
        sgd_serial(&mut p2, &g, Some(&mut b2), &sgd_h);
        assert!(p1 == p2 && b1 == b2);
        assert_ne!(p1, state(n, 1), "the update changed nothing");
        let adam_h = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            decoupled: true,
            step: 3,
        };
        let (mut m1, mut v1) = (
            state(n, 4),
            state(n, 5).iter().map(|x| x * x).collect::<Vec<_>>(),
        );
        let (mut p3, mut m2, mut v2) = (p1.clone(), m1.clone(), v1.clone());
        pool.install(|| adam(&mut p1, &g, &mut m1, &mut v1, &adam_h));
        adam_serial(&mut p3, &g, &mut m2, &mut v2, &adam_h);
        assert!(p1 == p3 && m1 == m2 && v1 == v2);
    }
}

//! Helpers shared by the unit tests of the CPU convolution routes: random
//! operands, geometries, a thread pool, the checks of a forward against
//! the definition and im2col and of a weight gradient against im2col in
//! f64, and the kernels this CPU runs.

use super::cpu::{conv2d_backward_weight_im2col, conv2d_direct, conv2d_forward_im2col};
use super::geom::ConvGeom;
use super::Conv2dParams;
use crate::ops::matmul::sgemm::Kernel;
use rand::{Rng, SeedableRng};

/// `len` values uniform in [−1, 1) from `seed`.
pub(super) fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `f()` on a pool of `threads` threads.
pub(super) fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    pool.install(f)
}

/// Asserts that `got`, a forward of `g` with `x`, `w` and `bias`, is the
/// f64 definition's result and the im2col route's, within 1e-4 relative
/// (`label` names the case).
pub(super) fn assert_forward_matches(
    got: &[f32],
    (x, w, bias): (&[f32], &[f32], Option<&[f32]>),
    g: &ConvGeom,
    label: &str,
) {
    let im2col = conv2d_forward_im2col(x, w, bias, g).unwrap();
    let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let want = conv2d_direct(&wide(x), &wide(w), bias.map(wide).as_deref(), g).unwrap();
    assert_eq!(
        (got.len(), im2col.len()),
        (want.len(), want.len()),
        "{label}"
    );
    for (i, ((&a, &c), &e)) in got.iter().zip(&im2col).zip(&want).enumerate() {
        let tol = 1e-4 * (1.0 + e.abs());
        assert!((a as f64 - e).abs() < tol, "{label}: y[{i}] {a} vs {e}");
        assert!(
            ((a - c).abs() as f64) < tol,
            "{label}: y[{i}] {a} vs im2col {c}"
        );
    }
}

/// Asserts that `got`, a weight gradient of `g` with `x` and `dy`, is the
/// f64 im2col route's result within 1e-4 relative (`label` names the
/// case).
pub(super) fn assert_weight_grad_matches(
    got: &[f32],
    (x, dy): (&[f32], &[f32]),
    g: &ConvGeom,
    label: &str,
) {
    let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let want = conv2d_backward_weight_im2col(&wide(x), &wide(dy), g).unwrap();
    assert_eq!(got.len(), want.len(), "{label}");
    for (i, (&a, &e)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a as f64 - e).abs() < 1e-4 * (1.0 + e.abs()),
            "{label}: dw[{i}] {a} vs {e}"
        );
    }
}

/// A geometry: `[n, c, h, w]` input, `[o, k_h, k_w]` kernel, stride,
/// padding, dilation (rows, columns) and groups.
pub(super) fn geom(
    [n, c, h, w]: [usize; 4],
    [o, kh, kw]: [usize; 3],
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> ConvGeom {
    let p = Conv2dParams {
        stride,
        padding,
        dilation,
        groups,
    };
    ConvGeom::new([n, c, h, w], [o, c / groups, kh, kw], &p).expect("a valid geometry")
}

/// Whether the tests of the routes built on ferrite's sgemm are skipped
/// (the CPU has neither AVX2 and FMA nor AVX-512), saying so.
pub(super) fn skip() -> bool {
    if !super::implicit::available() {
        eprintln!("skipped: the CPU has neither AVX2 and FMA nor AVX-512");
        return true;
    }
    false
}

/// The sgemm kernels this CPU runs (each is tested).
pub(super) fn kernels() -> Vec<Kernel> {
    crate::ops::matmul::sgemm::kernels_on_this_cpu()
}

//! Unit tests of the stride-2 Winograd forward against the definition.
use super::*;
use crate::ops::conv::cpu::conv2d_direct;
use rand::{Rng, SeedableRng};

fn geom(n: usize, c: usize, o: usize, (h, w): (usize, usize), pad: usize) -> ConvGeom {
    ConvGeom {
        n,
        c_in: c,
        h,
        w,
        c_out: o,
        kh: 3,
        kw: 3,
        stride: (2, 2),
        padding: (pad, pad),
        dilation: (1, 1),
        groups: 1,
        oh: (h + 2 * pad - 3) / 2 + 1,
        ow: (w + 2 * pad - 3) / 2 + 1,
    }
}

fn random(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Even and odd inputs and outputs, padding 0, 1 and 2, non-square
/// planes, a one-pixel output, a single image, an empty input plane whose
/// padding still gives outputs, channel counts that are not multiples of
/// a vector, and (the last) a batch large enough to run in parallel over
/// several chunks.
fn shapes() -> Vec<ConvGeom> {
    vec![
        geom(2, 5, 7, (8, 8), 1),
        geom(3, 6, 4, (7, 9), 1),
        geom(1, 3, 5, (9, 4), 0),
        geom(2, 4, 3, (5, 6), 2),
        geom(2, 3, 2, (3, 3), 0),
        geom(1, 2, 3, (14, 14), 1),
        geom(2, 4, 3, (0, 3), 2),
        geom(16, 33, 40, (16, 12), 1),
    ]
}

#[test]
fn one_tile_is_the_strided_correlation_exactly() {
    // One 5×5 patch and one channel pair, small integers: every output is
    // an exact sum, so the regrouped one must equal it to the bit.
    let g = geom(1, 1, 1, (5, 5), 0);
    let x: Vec<f64> = (0..25).map(|i| (i * i % 7) as f64 - 3.0).collect();
    let w: Vec<f64> = (0..9).map(|i| (i % 4) as f64 - 1.5).collect();
    let y = conv2d_forward(&x, &w, None, &g).unwrap();
    assert_eq!(y.len(), 4);
    for (oy, ox) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let mut want = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                want += x[(2 * oy + i) * 5 + 2 * ox + j] * w[i * 3 + j];
            }
        }
        assert_eq!(y[oy * 2 + ox], want, "output ({oy}, {ox})");
    }
}

#[test]
fn forward_matches_the_definition_in_f64() {
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.c_in * g.h * g.w, 10 + s as u64);
        let w = random(g.c_out * g.c_in * 9, 20 + s as u64);
        let b = random(g.c_out, 30 + s as u64);
        let want = conv2d_direct(&x, &w, Some(&b), &g).unwrap();
        let got = conv2d_forward(&x, &w, Some(&b), &g).unwrap();
        let err = max_diff(&got, &want);
        assert!(err < 1e-12, "{g:?}: max error {err}");
        let unbiased = conv2d_forward(&x, &w, None, &g).unwrap();
        let want = conv2d_direct(&x, &w, None, &g).unwrap();
        assert!(max_diff(&unbiased, &want) < 1e-12, "{g:?} without bias");
    }
}

#[test]
fn forward_matches_the_definition_in_f32() {
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.c_in * g.h * g.w, 60 + s as u64);
        let w = random(g.c_out * g.c_in * 9, 70 + s as u64);
        let want = conv2d_direct(&x, &w, None, &g).unwrap();
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let got = conv2d_forward(&f32s(&x), &f32s(&w), None, &g).unwrap();
        let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        // Sums of at most 9·33 products of size ≤ 1, |y| ≲ 20.
        let err = max_diff(&got, &want);
        assert!(err < 1e-4, "{g:?}: max error {err}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let g = geom(16, 64, 64, (16, 16), 1);
    let x: Vec<f32> = random(g.n * g.c_in * g.h * g.w, 1)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let w: Vec<f32> = random(g.c_out * g.c_in * 9, 2)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| conv2d_forward(&x, &w, None, &g).unwrap())
    };
    let (one, two) = (run(1), run(2));
    assert!(one
        .iter()
        .zip(&two)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn short_buffers_and_other_geometries_are_errors() {
    let g = geom(2, 4, 4, (8, 8), 1);
    let x = vec![0.0f64; g.n * g.c_in * g.h * g.w];
    let w = vec![0.0f64; g.c_out * g.c_in * 9];
    assert!(conv2d_forward(&x[1..], &w, None, &g).is_err());
    assert!(conv2d_forward(&x, &w[1..], None, &g).is_err());
    assert!(conv2d_forward(&x, &w, Some(&[0.0; 3]), &g).is_err());
    for other in [
        ConvGeom {
            stride: (1, 1),
            ..g
        },
        ConvGeom {
            stride: (2, 1),
            ..g
        },
        ConvGeom {
            dilation: (2, 2),
            ..g
        },
        ConvGeom { kh: 1, kw: 1, ..g },
        ConvGeom { groups: 2, ..g },
    ] {
        assert!(!supports(&other), "{other:?}");
        assert!(conv2d_forward(&x, &w, None, &other).is_err(), "{other:?}");
    }
}

#[test]
fn only_large_planes_with_many_channels_apply() {
    // torchvision ResNet-50's 256-channel stride-2 layer at batch 32:
    // 28×28 in, 14×14 out, 32·7·7 = 1,568 tiles.
    let g = geom(32, 256, 256, (28, 28), 1);
    assert!(supports(&g) && applies(&g));
    assert!(
        !applies(&ConvGeom { c_in: 64, ..g }),
        "too few input channels"
    );
    assert!(
        !applies(&ConvGeom { c_out: 64, ..g }),
        "too few output channels"
    );
    assert!(!applies(&ConvGeom { n: 8, ..g }), "392 tiles");
    assert!(!applies(&geom(32, 256, 512, (14, 14), 1)), "7×7 outputs");
    assert!(!applies(&geom(32, 128, 256, (16, 16), 1)), "8×8 outputs");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_vector_row_mix_gives_the_portable_bits() {
    if !super::avx512::available() {
        return; // nothing to compare on this CPU
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for (w, pw) in [
        (28, 1),
        (14, 1),
        (7, 1),
        (56, 1),
        (9, 0),
        (4, 2),
        (1, 1),
        (31, 0),
    ] {
        let tw = (w + 2 * pw - 3) / 2 / 2 + 1;
        let line: Vec<f32> = (0..w).map(|_| rng.random_range(-1.0..1.0)).collect();
        let offsets = [0, tw + 3, 2 * tw + 5, 3 * tw + 9, 4 * tw + 11];
        let mut want = vec![7.0f32; 5 * tw + 11];
        let mut got = want.clone();
        super::transforms::mix_row(Some(&line), pw, tw, &mut want, offsets);
        // SAFETY: the CPU runs AVX-512 (checked above).
        unsafe { super::avx512::mix_row(&line, pw, tw, &mut got, offsets) };
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "width {w}, padding {pw}"
        );
    }
}

#[test]
fn routed_layers_match_im2col() {
    // A layer the CPU forward sends here (128 channels, 28² in, 14² out,
    // 1,568 tiles), through the public entry point, against im2col.
    let g = geom(32, 128, 128, (28, 28), 1);
    assert!(applies(&g));
    assert_eq!(
        crate::ops::conv::plan::algorithm(&g, crate::ops::conv::plan::Pass::Forward),
        "winograd stride 2"
    );
    let x: Vec<f32> = random(g.n * g.c_in * g.h * g.w, 3)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let w: Vec<f32> = random(g.c_out * g.c_in * 9, 4)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let b: Vec<f32> = random(g.c_out, 5).iter().map(|&v| v as f32).collect();
    let got = crate::ops::conv::cpu::conv2d_forward(&x, &w, Some(&b), &g).unwrap();
    let want = crate::ops::conv::cpu::conv2d_forward_im2col(&x, &w, Some(&b), &g).unwrap();
    // Sums of 1,152 products of size ≤ 1 in another order: |y| ≲ 40.
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 1e-3, "max difference {err}");
}

//! The pixel-lane weight gradient on every vector set the CPU runs,
//! against the im2col route in f64, on shapes that exercise its masks and
//! blocks: padding 0, 1 and 2 (also different per axis), output rows
//! shorter than a vector, exactly a vector and one past it, kernel heights
//! 1, 3 and 5 (also taller than the input), rows narrower than the
//! kernel, groups (with padding, and depthwise), output-channel counts
//! that leave remainders of 4, 2 and 1 after the register blocks (8 on
//! AVX-512, 3 on AVX2), and batches large enough to run in
//! parallel; and layers with no channels.

use super::*;
use crate::ops::conv::test_support::{assert_weight_grad_matches, random};
use crate::ops::conv::Conv2dParams;

/// `[n, c, h, w]` input, `[o, kh]` kernel (3 wide), padding, groups.
fn geom(
    [n, c, h, w]: [usize; 4],
    [o, kh]: [usize; 2],
    padding: (usize, usize),
    groups: usize,
) -> ConvGeom {
    let p = Conv2dParams {
        stride: (1, 1),
        padding,
        dilation: (1, 1),
        groups,
    };
    ConvGeom::new([n, c, h, w], [o, c / groups, kh, 3], &p).expect("a valid geometry")
}

fn shapes() -> Vec<ConvGeom> {
    vec![
        geom([2, 3, 32, 32], [16, 3], (1, 1), 1),
        geom([3, 16, 9, 7], [16, 3], (1, 1), 1),
        geom([2, 5, 11, 14], [15, 3], (2, 2), 1),
        geom([2, 4, 13, 17], [7, 3], (0, 0), 1),
        geom([1, 3, 10, 33], [11, 5], (0, 2), 1),
        geom([2, 6, 8, 16], [6, 1], (2, 0), 2),
        geom([2, 2, 6, 3], [3, 3], (1, 1), 1),
        geom([8, 3, 32, 32], [64, 3], (1, 1), 1),
        // Output rows one past a vector on each set (17 and 9 pixels).
        geom([2, 3, 5, 17], [5, 3], (1, 1), 1),
        geom([2, 3, 5, 9], [5, 3], (1, 1), 1),
        // A kernel taller than the input, and rows narrower than the
        // kernel (only padding makes them fit).
        geom([2, 2, 2, 6], [3, 5], (2, 1), 1),
        geom([2, 2, 4, 2], [3, 3], (1, 1), 1),
        // Groups with padding and more output channels per group than a
        // register block; depthwise (one channel per group).
        geom([2, 8, 7, 12], [22, 3], (1, 1), 2),
        geom([2, 6, 9, 20], [6, 3], (1, 1), 6),
    ]
}

/// The vector sets this CPU runs (each is tested).
fn sets() -> Vec<VectorIsa> {
    [VectorIsa::Avx512, VectorIsa::Avx2]
        .into_iter()
        .filter(|isa| isa.cpu_has())
        .collect()
}

#[test]
fn every_set_matches_im2col_in_f64() {
    if sets().is_empty() {
        eprintln!("skipped: the CPU has neither AVX2 and FMA nor AVX-512");
        return;
    }
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.image_len(), 10 + s as u64);
        let dy = random(g.n * g.out_image_len(), 20 + s as u64);
        for isa in sets() {
            let got = backward_weight_on(isa, &x, &dy, &g).unwrap();
            assert_weight_grad_matches(&got, (&x, &dy), &g, &format!("{g:?} on {isa:?}"));
        }
    }
}

#[test]
fn other_geometries_are_refused_with_an_error() {
    let p = Conv2dParams {
        stride: (2, 2),
        padding: (1, 1),
        dilation: (1, 1),
        groups: 1,
    };
    let strided = ConvGeom::new([1, 3, 8, 8], [4, 3, 3, 3], &p).unwrap();
    let tall = geom([1, 3, 8, 8], [4, 5], (1, 1), 1);
    let five_wide = ConvGeom::new([1, 3, 8, 8], [4, 3, 3, 5], &Conv2dParams::default()).unwrap();
    let many = geom([1, 32, 8, 8], [32, 3], (1, 1), 1);
    assert!(applies(&tall) == available());
    for g in [strided, five_wide, many] {
        assert!(!applies(&g), "{g:?}");
        let (x, dy) = (
            random(g.n * g.image_len(), 1),
            random(g.n * g.out_image_len(), 2),
        );
        assert!(conv2d_backward_weight(&x, &dy, &g).is_err(), "{g:?}");
        assert!(try_backward_weight(&x, &dy, &g).is_none(), "{g:?}");
    }
    // Not f32: the caller runs another route.
    let g = geom([1, 3, 8, 8], [4, 3], (1, 1), 1);
    let (x, dy) = (
        vec![0.0f64; g.n * g.image_len()],
        vec![0.0f64; g.n * g.out_image_len()],
    );
    assert!(try_backward_weight(&x, &dy, &g).is_none());
}

#[test]
fn no_channels_give_an_empty_gradient() {
    if !available() {
        return;
    }
    // No output channels and a very wide padded row: nothing to walk.
    let p = Conv2dParams {
        stride: (1, 1),
        padding: (0, 1 << 40),
        dilation: (1, 1),
        groups: 1,
    };
    let g = ConvGeom::new([1, 1, 1, 1], [0, 1, 1, 3], &p).unwrap();
    assert!(applies(&g));
    let dw = conv2d_backward_weight(&[0.5], &[], &g).unwrap();
    assert!(dw.is_empty());
}

#[test]
fn short_buffers_are_errors() {
    if !available() {
        return;
    }
    let g = geom([2, 3, 8, 8], [4, 3], (1, 1), 1);
    let x = random(g.n * g.image_len() - 1, 1);
    let dy = random(g.n * g.out_image_len(), 2);
    assert!(conv2d_backward_weight(&x, &dy, &g).is_err());
}

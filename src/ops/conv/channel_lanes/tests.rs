use super::*;
use crate::ops::conv::test_support::{
    assert_forward_matches, assert_weight_grad_matches, geom as any_geom, kernels, on_threads,
    random, skip,
};

/// A 3×3 layer with padding 1: `[n, c, h, w]` input, `o` outputs,
/// stride `(rows, columns)`.
fn geom(input: [usize; 4], o: usize, stride: (usize, usize)) -> ConvGeom {
    any_geom(input, [o, 3, 3], stride, (1, 1), (1, 1), 1)
}

/// Every output is one chain of sums in the same order on every
/// instruction set: AVX-512 and AVX2 give the same bits.
#[test]
fn instruction_sets_give_the_same_bits() {
    if skip() || kernels().len() < 2 {
        return;
    }
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.image_len(), 40 + s as u64);
        let w = random(g.c_out * g.col_rows(), 50 + s as u64);
        let b = random(g.c_out, 60 + s as u64);
        let [wide, narrow] = [Kernel::Avx512, Kernel::Avx2]
            .map(|isa| forward_on(isa, &x, &w, Some(&b), &g).unwrap());
        assert!(wide == narrow, "{g:?}: AVX-512 and AVX2 differ");
    }
}

/// Stride 2 on even planes (padding above and left only) and odd ones
/// (below and right too), stride 1 (both sides of every row), a vertical
/// stride of 3, rows of 1–16 pixels (tiles of 1 to 5, a lone pixel with
/// both edges), non-square planes, 1 and 3 input channels, output channels
/// that fill 1, 2 or 3 vectors of a block or run into a second block.
fn shapes() -> Vec<ConvGeom> {
    vec![
        geom([2, 8, 8, 8], 64, (2, 2)),
        geom([3, 19, 7, 9], 13, (2, 2)),
        geom([2, 5, 6, 11], 40, (1, 1)),
        geom([2, 3, 10, 12], 70, (3, 2)),
        geom([1, 1, 1, 1], 20, (1, 1)),
        geom([2, 4, 2, 2], 33, (2, 2)),
        geom([2, 16, 32, 32], 32, (2, 2)),
        geom([2, 6, 5, 13], 130, (1, 2)),
    ]
}

#[test]
fn forward_matches_the_definition_and_im2col() {
    if skip() {
        return;
    }
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.image_len(), 10 + s as u64);
        let w = random(g.c_out * g.col_rows(), 20 + s as u64);
        let b = random(g.c_out, 30 + s as u64);
        for (isa, bias) in kernels()
            .into_iter()
            .flat_map(|k| [(k, Some(&b[..])), (k, None)])
        {
            let got = forward_on(isa, &x, &w, bias, &g).unwrap();
            assert_forward_matches(&got, (&x, &w, bias), &g, &format!("{g:?} on {isa:?}"));
        }
    }
}

/// Each output is one chain of sums in a fixed order: the same bits on
/// any number of threads.
#[test]
fn bits_do_not_depend_on_threads() {
    if skip() {
        return;
    }
    let g = geom([8, 64, 16, 16], 96, (2, 2));
    assert!(parallel(&g));
    let (x, w) = (
        random(g.n * g.image_len(), 7),
        random(g.c_out * g.col_rows(), 8),
    );
    let run = |threads: usize| on_threads(threads, || conv2d_forward(&x, &w, None, &g).unwrap());
    assert!(run(1) == run(3), "not the same bits on 1 and 3 threads");
}

/// Kernels other than 3×3 with padding 1 (and dilation, groups, a
/// horizontal stride of 3, no input or no output channels) are refused
/// with an error.
#[test]
fn other_geometries_are_refused() {
    if skip() {
        return;
    }
    let refused = [
        any_geom([1, 4, 8, 8], [4, 3, 3], (1, 1), (0, 0), (1, 1), 1),
        any_geom([1, 4, 8, 8], [4, 3, 3], (1, 1), (2, 2), (1, 1), 1),
        any_geom([1, 4, 8, 8], [4, 1, 1], (1, 1), (1, 1), (1, 1), 1),
        any_geom([1, 4, 8, 8], [4, 3, 3], (1, 1), (1, 1), (2, 2), 1),
        any_geom([1, 4, 8, 8], [4, 3, 3], (1, 1), (1, 1), (1, 1), 2),
        any_geom([1, 4, 8, 8], [4, 3, 3], (1, 3), (1, 1), (1, 1), 1),
        any_geom([2, 0, 8, 8], [4, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        any_geom([2, 4, 8, 8], [0, 3, 3], (2, 2), (1, 1), (1, 1), 1),
    ];
    for g in refused {
        let x = random(g.n * g.image_len(), 1);
        let w = random(g.c_out * g.col_rows(), 2);
        assert!(!supports(&g), "{g:?}");
        let err = conv2d_forward(&x, &w, None, &g).unwrap_err().to_string();
        assert!(err.contains("channel-lane"), "{g:?}: {err}");
    }
}

/// Buffers shorter than the geometry are refused, not read past.
#[test]
fn short_buffers_are_refused() {
    if skip() {
        return;
    }
    let g = geom([2, 4, 6, 6], 8, (2, 2));
    let (x, w) = (
        random(g.n * g.image_len(), 1),
        random(g.c_out * g.col_rows(), 2),
    );
    assert!(conv2d_forward(&x[1..], &w, None, &g).is_err());
    assert!(conv2d_forward(&x, &w[1..], None, &g).is_err());
    assert!(conv2d_forward(&x, &w, Some(&[0.0; 7]), &g).is_err());
}

/// The row tiles cover each row once, at most 5 pixels each, within one
/// of each other; the kernel rows inside are those whose input row is.
#[test]
fn tiles_and_rows_inside() {
    for ow in 1..40 {
        let tiles: Vec<_> = row_tiles(ow).collect();
        let covered: Vec<usize> = tiles.iter().flat_map(|&(x, n)| x..x + n).collect();
        assert_eq!(covered, (0..ow).collect::<Vec<_>>());
        let (lo, hi) = (
            tiles.iter().map(|t| t.1).min(),
            tiles.iter().map(|t| t.1).max(),
        );
        assert!(
            hi.unwrap() <= MOST_PIXELS && hi.unwrap() - lo.unwrap() <= 1,
            "{ow}"
        );
    }
    for (h, sh) in [(1, 1), (2, 2), (7, 2), (8, 2), (10, 3), (5, 1)] {
        let g = geom([1, 1, h, 4], 1, (sh, 1));
        for oy in 0..g.oh {
            let inside: Vec<usize> = (0..3)
                .filter(|&i| (oy * sh + i).checked_sub(1).is_some_and(|iy| iy < h))
                .collect();
            let (first, rows) = rows_inside(&g, oy);
            assert_eq!(
                (first..first + rows).collect::<Vec<_>>(),
                inside,
                "h {h} oy {oy}"
            );
        }
    }
}

/// The CIFAR ResNets' stride-2 3×3 layers run here; 7-pixel output rows,
/// inputs beyond L2 and stride 1 keep the other routes.
#[test]
fn the_route_takes_small_stride_2_layers() {
    if skip() {
        return;
    }
    for (c, hw, o) in [
        (16, 32, 32),
        (32, 16, 64),
        (64, 32, 128),
        (128, 16, 256),
        (256, 8, 512),
    ] {
        let g = geom([32, c, hw, hw], o, (2, 2));
        assert!(pays(&g), "{g:?}");
        assert_eq!(
            crate::ops::conv::plan::algorithm(&g, crate::ops::conv::plan::Pass::Forward),
            "direct, channel lanes"
        );
    }
    let seven_wide = geom([32, 256, 14, 14], 512, (2, 2));
    let large_input = geom([32, 64, 56, 56], 128, (2, 2));
    let stride_1 = geom([32, 64, 8, 8], 64, (1, 1));
    for g in [seven_wide, large_input, stride_1] {
        assert!(!pays(&g), "{g:?}");
    }
}

/// The weight gradient's shapes: those of [`shapes`], plus a batch that
/// spans two groups of images, a lone output pixel whose right kernel
/// column lies on padding, and 8 output channels (one AVX2 tile).
fn weight_grad_shapes() -> Vec<ConvGeom> {
    let mut all = shapes();
    all.extend([
        geom([20, 3, 32, 32], 40, (2, 2)),
        geom([3, 2, 1, 1], 5, (2, 2)),
        geom([2, 7, 9, 9], 8, (2, 2)),
    ]);
    all
}

#[test]
fn weight_grad_matches_im2col_in_f64() {
    if skip() {
        return;
    }
    for (s, g) in weight_grad_shapes().into_iter().enumerate() {
        let x = random(g.n * g.image_len(), 70 + s as u64);
        let dy = random(g.n * g.out_image_len(), 80 + s as u64);
        for isa in kernels() {
            let got = weight_grad::backward_weight_on(isa, &x, &dy, &g).unwrap();
            assert_weight_grad_matches(&got, (&x, &dy), &g, &format!("{g:?} on {isa:?}"));
        }
    }
}

/// Each weight sums its terms in one order whatever the instruction set
/// and the threads: the same bits on AVX-512 and AVX2, and on 1 and 3
/// threads.
#[test]
fn weight_grad_bits_do_not_depend_on_the_set_or_threads() {
    if skip() {
        return;
    }
    for (s, g) in weight_grad_shapes().into_iter().enumerate() {
        let x = random(g.n * g.image_len(), 90 + s as u64);
        let dy = random(g.n * g.out_image_len(), 100 + s as u64);
        let on = |isa: Kernel, threads: usize| {
            on_threads(threads, || {
                weight_grad::backward_weight_on(isa, &x, &dy, &g).unwrap()
            })
        };
        let isas = kernels();
        let first = on(isas[0], 1);
        assert!(first == on(isas[0], 3), "{g:?}: 1 and 3 threads differ");
        for &isa in &isas[1..] {
            assert!(
                first == on(isa, 1),
                "{g:?}: {:?} and {isa:?} differ",
                isas[0]
            );
        }
    }
}

/// The weight gradient refuses what the forward refuses, and short
/// buffers.
#[test]
fn weight_grad_refuses_other_geometries_and_short_buffers() {
    if skip() {
        return;
    }
    let refused = [
        any_geom([1, 4, 8, 8], [4, 3, 3], (2, 2), (0, 0), (1, 1), 1),
        any_geom([1, 4, 8, 8], [4, 3, 3], (2, 2), (1, 1), (1, 1), 2),
        any_geom([1, 4, 8, 8], [4, 3, 3], (1, 3), (1, 1), (1, 1), 1),
        any_geom([2, 4, 8, 8], [0, 3, 3], (2, 2), (1, 1), (1, 1), 1),
    ];
    for g in refused {
        let x = random(g.n * g.image_len(), 1);
        let dy = random(g.n * g.out_image_len(), 2);
        let err = weight_grad::conv2d_backward_weight(&x, &dy, &g)
            .unwrap_err()
            .to_string();
        assert!(err.contains("channel-lane weight gradient"), "{g:?}: {err}");
        assert!(try_backward_weight(&x, &dy, &g).is_none(), "{g:?}");
    }
    let g = geom([2, 4, 6, 6], 8, (2, 2));
    let x = random(g.n * g.image_len(), 1);
    let dy = random(g.n * g.out_image_len(), 2);
    assert!(weight_grad::conv2d_backward_weight(&x[1..], &dy, &g).is_err());
    assert!(weight_grad::conv2d_backward_weight(&x, &dy[1..], &g).is_err());
    // Not f32: the caller takes another route.
    let (x, dy) = (vec![0.0f64; x.len()], vec![0.0f64; dy.len()]);
    assert!(try_backward_weight(&x, &dy, &g).is_none());
}

/// With AVX-512, the CIFAR ResNets' stride-2 3×3 weight gradients run
/// here, and their stride-1 ones of at most 32 KB of input per image and
/// rows of 8 pixels or more; larger stride-1 inputs and 4-pixel rows keep
/// Winograd, and inputs beyond L2 and 7-wide rows the implicit GEMM. With
/// AVX2, the stride-2 layers of at most 32 input channels.
#[test]
fn the_route_takes_its_weight_gradients() {
    if skip() {
        return;
    }
    let wide = Kernel::current() == Kernel::Avx512;
    let cases = [
        (geom([32, 16, 32, 32], 32, (2, 2)), true),
        (geom([32, 32, 16, 16], 64, (2, 2)), true),
        (geom([32, 64, 32, 32], 128, (2, 2)), wide),
        (geom([32, 128, 16, 16], 256, (2, 2)), wide),
        (geom([32, 256, 8, 8], 512, (2, 2)), wide),
        (geom([32, 32, 16, 16], 32, (1, 1)), wide),
        (geom([32, 64, 8, 8], 64, (1, 1)), wide),
        (geom([32, 512, 4, 4], 512, (1, 1)), false),
        (geom([32, 64, 56, 56], 128, (2, 2)), false),
        (geom([32, 256, 14, 14], 512, (2, 2)), false),
        (geom([32, 64, 32, 32], 64, (1, 1)), false),
        (geom([32, 128, 16, 16], 128, (1, 1)), false),
        (geom([32, 256, 8, 8], 256, (1, 1)), false),
        (geom([32, 4, 8, 8], 4, (1, 2)), false),
    ];
    for (g, taken) in cases {
        assert_eq!(pays_weight_grad(&g), taken, "{g:?}");
        if taken {
            assert_eq!(
                crate::ops::conv::plan::algorithm(&g, crate::ops::conv::plan::Pass::WeightGrad),
                "direct, channel lanes"
            );
        }
    }
}

/// A batch of no images has a zero weight gradient (no tile runs).
#[test]
fn an_empty_batch_has_a_zero_weight_gradient() {
    if skip() {
        return;
    }
    let g = geom([0, 5, 8, 8], 40, (2, 2));
    for isa in kernels() {
        let dw = weight_grad::backward_weight_on(isa, &[], &[], &g).unwrap();
        assert_eq!(dw.len(), 40 * 5 * 9);
        assert!(dw.iter().all(|&v| v == 0.0), "{isa:?}");
    }
}

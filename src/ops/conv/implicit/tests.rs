//! Unit tests of the implicit-GEMM convolution: the gathers against a
//! scalar reading of the definition, and both passes against the naive
//! convolution (f64) and, bit for bit, against the im2col route, which
//! sums the same terms in the same order.
use super::gather::{Layout, RunPlan};
use super::plans::Plans;
use super::split_columns::{reads_split_columns, split_columns, Source};
use super::*;
use crate::ops::conv::cpu::{conv2d_backward_weight_im2col, conv2d_direct, conv2d_forward_im2col};
use crate::ops::conv::test_support::{geom, kernels, random, skip};

/// Stride 1 and 2 (and a vertical stride of 3), padding 0, 1 and 2,
/// non-square planes, 1×1 kernels, output rows wider than a vector (so
/// segments split), dilation, groups, channel counts that are not
/// multiples of 16, batches that run as per-image products (planes of at
/// least 1024 / 256 pixels) and as tiles, in parallel, and 1×1 layers
/// whose per-image weight gradients read the input in place.
fn shapes() -> Vec<ConvGeom> {
    vec![
        geom([2, 3, 9, 7], [5, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([3, 16, 16, 16], [32, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([2, 17, 8, 8], [19, 1, 1], (2, 2), (0, 0), (1, 1), 1),
        geom([2, 4, 11, 13], [6, 3, 3], (2, 2), (2, 2), (1, 1), 1),
        geom([1, 6, 40, 38], [4, 3, 5], (1, 1), (0, 2), (1, 1), 1),
        geom([2, 5, 12, 10], [7, 3, 3], (3, 2), (1, 0), (2, 1), 1),
        geom([2, 8, 10, 10], [6, 3, 3], (1, 2), (2, 2), (2, 2), 2),
        geom([1, 3, 36, 36], [8, 3, 3], (1, 1), (1, 1), (1, 1), 1),
        // 1×1 stride-1 unpadded layers on planes large enough for one
        // weight-gradient product per image: the input is read in place.
        geom([2, 20, 33, 34], [24, 1, 1], (1, 1), (0, 0), (1, 1), 1),
        geom([2, 12, 32, 33], [8, 1, 1], (1, 1), (0, 0), (1, 1), 2),
        geom([8, 24, 32, 32], [16, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([16, 40, 4, 4], [36, 1, 1], (1, 1), (0, 0), (1, 1), 1),
        // A 1×1 layer whose parts run across rows and into the next image
        // (35-pixel planes).
        geom([5, 20, 7, 5], [24, 1, 1], (1, 1), (0, 0), (1, 1), 1),
        // Tile products, several per thread on up to 3 threads: the
        // weights packed once (a 2-thread pool below checks both forms).
        geom([130, 8, 7, 7], [16, 3, 3], (1, 1), (1, 1), (1, 1), 1),
        // Fewer unrolled rows than a micro-panel's columns: an RGB stem
        // (its weight gradient runs transposed), and small grouped planes.
        geom([4, 3, 32, 32], [64, 3, 3], (1, 1), (1, 1), (1, 1), 1),
        geom([3, 4, 9, 11], [64, 3, 3], (2, 2), (1, 1), (1, 1), 2),
        // More rows than columns fill the transposed tiles better: a
        // 16→32 stride-2 layer (dWᵀ 144 × 32), and the same per group.
        geom([2, 16, 32, 32], [32, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([2, 32, 32, 32], [64, 3, 3], (2, 2), (1, 1), (1, 1), 2),
        // Stride-2 segments of several rows: 4-pixel rows with padding
        // (ResNet-18's 8×8 → 4×4), and 7-pixel rows whose parts straddle
        // the halves of the loaded pair (14×14 → 7×7).
        geom([3, 16, 8, 8], [32, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([2, 8, 14, 14], [16, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        // Per-image weight gradients at stride 2, which gather from
        // column-split copies on AVX-512: odd widths, groups, padding 2,
        // and a dilated kernel at vertical stride 1.
        geom([2, 6, 33, 35], [8, 3, 3], (2, 2), (2, 1), (1, 1), 2),
        geom([1, 4, 34, 37], [4, 3, 3], (1, 2), (1, 2), (1, 2), 1),
    ]
}

/// The per-image weight gradients of the stride-2 shapes above read
/// column-split copies where the kernel is AVX-512 (their bits are
/// checked against im2col with the other shapes), and 1×1 and stride-1
/// layers never do.
#[test]
fn stride_2_weight_gradients_gather_from_split_columns() {
    let avx512 = Kernel::current() == Kernel::Avx512;
    for g in shapes().iter().filter(|g| g.col_cols() >= DIRECT_MIN_INNER) {
        let expected = avx512 && g.stride.1 == 2 && g.kw == 3;
        assert_eq!(reads_split_columns(g), expected, "{g:?}");
    }
    let pointwise = geom([2, 17, 8, 8], [19, 1, 1], (2, 2), (0, 0), (1, 1), 1);
    assert!(!reads_split_columns(&pointwise));
    let per_image = [
        geom([2, 6, 33, 35], [8, 3, 3], (2, 2), (2, 1), (1, 1), 2),
        geom([8, 24, 32, 32], [16, 3, 3], (2, 2), (1, 1), (1, 1), 1),
    ];
    for g in &per_image {
        assert!(!transposes_weight_gradient(g) && g.col_cols() >= DIRECT_MIN_INNER);
    }
}

#[test]
fn gathered_rows_are_the_unrolled_matrix() {
    if skip() {
        return;
    }
    for g in shapes() {
        let x = random(g.n * g.image_len(), 1);
        let (pixels, k) = (g.n * g.col_cols(), g.cg() * g.kh * g.kw);
        // Runs of 32 from a few starting pixels, and a run of them all;
        // rows from the first, and from the middle of a channel.
        let runs = [
            (0, 32.min(pixels)),
            (pixels / 3, 32.min(pixels - pixels / 3)),
        ];
        for (q0, len) in runs.into_iter().chain([(0, pixels)]) {
            for (source, input) in sources(&g, &x) {
                let plan = RunPlan::new(&g, q0, len, Layout::Run, None, source);
                for (k0, kernel) in [0, k / 2]
                    .into_iter()
                    .flat_map(|k0| kernels().into_iter().map(move |kn| (k0, kn)))
                {
                    let rows = k - k0;
                    let mut got = vec![f32::NAN; rows * len];
                    plan.fill(kernel, &input, (k0, rows), &mut got, len);
                    for (i, &v) in got.iter().enumerate() {
                        let (k, q) = (k0 + i / len, q0 + i % len);
                        let want = unrolled(&x, &g, k, q);
                        assert_eq!(v, want, "{g:?} {source:?} {kernel:?}: row {k}, pixel {q}");
                    }
                }
            }
        }
    }
}

/// The inputs a plan of `g` may read, with their sources: `x` as it is,
/// and at a horizontal stride of 2 its column-split copy (every row
/// split, which is what splitting each image's planes gives).
fn sources(g: &ConvGeom, x: &[f32]) -> Vec<(Source, Vec<f32>)> {
    let mut all = vec![(Source::Planes, x.to_vec())];
    if g.stride.1 == 2 && Kernel::Avx512.cpu_has() {
        let mut split = vec![f32::NAN; x.len()];
        split_columns(x, g.w, &mut split);
        all.push((Source::SplitColumns, split));
    }
    all
}

/// Segments take whole vectors of pixels across output rows and images
/// (never across a micro-panel), so the gathers above check the loads of
/// several parts per segment: at stride 2 rows of 4 pixels (four parts)
/// and 7 (parts of 7, 7 and 2, the last two straddling the pair's
/// halves), at stride 1 rows of 4 and 7.
#[test]
fn segments_fill_vectors_across_rows_and_images() {
    let panels = Layout::Panels {
        width: 32,
        depth: 1,
    };
    for g in [
        geom([3, 16, 8, 8], [32, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([2, 8, 14, 14], [16, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([16, 40, 4, 4], [36, 1, 1], (1, 1), (0, 0), (1, 1), 1),
        geom([2, 8, 7, 7], [16, 3, 3], (1, 1), (1, 1), (1, 1), 1),
    ] {
        let plan = RunPlan::new(&g, 0, 32, panels, None, Source::Planes);
        assert_eq!(plan.segment_pixels(), [16, 16], "{g:?}");
    }
    // A run of 40 pixels in panels of 32: 16, 16, then the next panel's 8.
    let g = geom([2, 8, 4, 4], [16, 1, 1], (1, 1), (0, 0), (1, 1), 1);
    let plan = RunPlan::new(&g, 0, 40, panels, None, Source::Planes);
    assert_eq!(plan.segment_pixels(), [16, 16, 8]);
    // From the middle of the first image: its last 4 pixels and the next
    // image's first 12 in one segment.
    let plan = RunPlan::new(&g, 12, 20, Layout::Run, None, Source::Planes);
    assert_eq!(plan.segment_pixels(), [16, 4]);
    // A 1×1 layer at stride 1 without padding reads a plane in order: a
    // part per image in a segment (two where one crosses into the next
    // image), where a 3×3 layer on the same planes has one per output row.
    let pointwise = geom([4, 8, 7, 7], [16, 1, 1], (1, 1), (0, 0), (1, 1), 1);
    assert_eq!(
        RunPlan::new(&pointwise, 0, 98, Layout::Run, None, Source::Planes).most_parts(),
        2
    );
    let three_by_three = geom([4, 8, 7, 7], [16, 3, 3], (1, 1), (1, 1), (1, 1), 1);
    assert_eq!(
        RunPlan::new(&three_by_three, 0, 98, Layout::Run, None, Source::Planes).most_parts(),
        4
    );
}

/// Plans are reused by key and kept up to 16 K loads in all: a 7×7
/// kernel over runs of 1024 pixels plans 49 taps × 64 segments = 3,136
/// loads each, so five are kept and a sixth drops them all.
#[test]
fn plans_are_kept_until_their_loads_fill_the_budget() {
    let g = geom([2, 3, 64, 64], [8, 7, 7], (1, 1), (3, 3), (1, 1), 1);
    let mut plans = Plans::default();
    let first: *const RunPlan = plans.get(&g, 0, 1024, Layout::Run);
    let again: *const RunPlan = plans.get(&g, 0, 1024, Layout::Run);
    assert!(std::ptr::eq(first, again));
    for (i, q0) in (1024..6144).step_by(1024).enumerate() {
        plans.get(&g, q0, 1024, Layout::Run);
        assert_eq!(plans.kept(), if i < 4 { i + 2 } else { 1 });
    }
}

/// Row `k`, column `q` of the unrolled matrix of `x`, by the definition.
fn unrolled(x: &[f32], g: &ConvGeom, k: usize, q: usize) -> f32 {
    let (c, ki, kj) = (k / (g.kh * g.kw), k / g.kw % g.kh, k % g.kw);
    let (n, oy, ox) = (q / g.col_cols(), q % g.col_cols() / g.ow, q % g.ow);
    match g.tap_input((oy, ox), (ki, kj)) {
        Some((iy, ix)) => x[n * g.image_len() + (c * g.h + iy) * g.w + ix],
        None => 0.0,
    }
}

#[test]
fn gathered_panels_are_the_unrolled_matrix() {
    if skip() {
        return;
    }
    // Micro-panels of 32 pixels, 5 rows deep, rows 32 apart: pixel q of
    // row r at (q / 32)·32·5 + r·32 + q % 32; a run of 70 pixels ends in a
    // partial panel, whose last lanes stay untouched.
    for g in shapes() {
        let x = random(g.n * g.image_len(), 2);
        let len = 70.min(g.n * g.col_cols());
        let panels = Layout::Panels {
            width: 32,
            depth: 5,
        };
        let rows = 5.min(g.cg() * g.kh * g.kw);
        for ((source, input), kernel) in sources(&g, &x)
            .into_iter()
            .flat_map(|s| kernels().into_iter().map(move |k| (s.clone(), k)))
        {
            let plan = RunPlan::new(&g, 0, len, panels, None, source);
            let mut got = vec![f32::NAN; len.div_ceil(32) * 32 * 5];
            plan.fill(kernel, &input, (0, rows), &mut got, 32);
            for r in 0..rows {
                for q in 0..len {
                    let v = got[q / 32 * 32 * 5 + r * 32 + q % 32];
                    assert_eq!(
                        v,
                        unrolled(&x, &g, r, q),
                        "{g:?} {source:?} {kernel:?}: row {r}, pixel {q}"
                    );
                }
                for q in len..len.div_ceil(32) * 32 {
                    assert!(
                        got[q / 32 * 32 * 5 + r * 32 + q % 32].is_nan(),
                        "{g:?} {kernel:?}: lane {q}"
                    );
                }
            }
        }
    }
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
        let got = conv2d_forward(&x, &w, Some(&b), &g).unwrap();
        let im2col = conv2d_forward_im2col(&x, &w, Some(&b), &g).unwrap();
        assert!(got == im2col, "{g:?}: not the bits of im2col");
        let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let want = conv2d_direct(&wide(&x), &wide(&w), Some(&wide(&b)), &g).unwrap();
        for (i, (&a, &e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a as f64 - e).abs() < 1e-4 * (1.0 + e.abs()),
                "{g:?}: y[{i}] {a} vs {e}"
            );
        }
    }
}

#[test]
fn weight_gradient_matches_the_definition_and_im2col() {
    if skip() {
        return;
    }
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.image_len(), 40 + s as u64);
        let dy = random(g.n * g.out_image_len(), 50 + s as u64);
        let got = conv2d_backward_weight(&x, &dy, &g).unwrap();
        let im2col = conv2d_backward_weight_im2col(&x, &dy, &g).unwrap();
        assert!(got == im2col, "{g:?}: not the bits of im2col");
        let want = weight_gradient_definition(&x, &dy, &g);
        for (i, (&a, &e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a as f64 - e).abs() < 1e-4 * (1.0 + e.abs()),
                "{g:?}: dw[{i}] {a} vs {e}"
            );
        }
    }
}

/// `dW[o, c, i, j] = Σ_n Σ_(oy, ox) dy[n, o, oy, ox] · x[n, gi·cg + c, iy, ix]`
/// in f64, loop by loop (`gi` the group of `o`; 0 outside the plane).
fn weight_gradient_definition(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f64> {
    let (cg, og) = (g.cg(), g.og());
    let mut dw = vec![0.0; g.c_out * g.col_rows()];
    for n in 0..g.n {
        for o in 0..g.c_out {
            for c in 0..cg {
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let mut acc = 0.0;
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let Some((iy, ix)) = g.tap_input((oy, ox), (i, j)) else {
                                    continue; // padding
                                };
                                let ch = o / og * cg + c;
                                let xv = x[((n * g.c_in + ch) * g.h + iy) * g.w + ix];
                                let dv = dy[((n * g.c_out + o) * g.oh + oy) * g.ow + ox];
                                acc += xv as f64 * dv as f64;
                            }
                        }
                        dw[((o * cg + c) * g.kh + i) * g.kw + j] += acc;
                    }
                }
            }
        }
    }
    dw
}

#[test]
fn unsupported_strides_are_errors() {
    let g = geom([1, 2, 9, 9], [2, 3, 3], (1, 3), (0, 0), (1, 1), 1);
    let x = random(g.n * g.image_len(), 1);
    let w = random(g.c_out * g.col_rows(), 2);
    assert!(conv2d_forward(&x, &w, None, &g).is_err());
    assert!(try_forward(&x, &w, None, &g).is_none());
}

#[test]
fn weight_gradient_runs_transposed_where_it_fills_the_tiles_better() {
    let stride2 =
        |c: usize, o: usize, hw: usize| geom([2, c, hw, hw], [o, 3, 3], (2, 2), (1, 1), (1, 1), 1);
    // dWᵀ 144 × 32 fills every tile; dW 32 × 144 fills 80 %.
    assert!(transposes_weight_gradient(&stride2(16, 32, 32)));
    // An RGB stem: 27 unrolled rows.
    assert!(transposes_weight_gradient(&geom(
        [2, 3, 32, 32],
        [64, 3, 3],
        (2, 2),
        (1, 1),
        (1, 1),
        1
    )));
    // 128 × 576 fills 97 % of its tiles already; 8×8 outputs (64 pixels)
    // are summed in tiles of images, not transposed per image.
    assert!(!transposes_weight_gradient(&stride2(64, 128, 64)));
    assert!(!transposes_weight_gradient(&stride2(32, 64, 16)));
    // ImageNet's stem (7.4 MB of X per image) and a 1×1 layer (X read in
    // place; 256 KB, and 256 × 64 fills 97 % of its tiles against 89 %):
    // better filled transposed, measured no faster.
    let stem = geom([2, 3, 224, 224], [64, 7, 7], (2, 2), (3, 3), (1, 1), 1);
    assert!(!transposes_weight_gradient(&stem));
    let pointwise = geom([2, 256, 16, 16], [64, 1, 1], (1, 1), (0, 0), (1, 1), 1);
    assert!(!transposes_weight_gradient(&pointwise));
}

/// The forward packs the weights once where products reuse them (per
/// image, or several tiles per thread) and packs them inside the product
/// where every thread has one tile; both give im2col's bits. On two
/// threads, so the tile counts do not depend on the machine.
#[test]
fn forward_packs_the_weights_where_products_reuse_them() {
    if skip() {
        return;
    }
    let one_tile = geom([16, 40, 4, 4], [36, 1, 1], (1, 1), (0, 0), (1, 1), 1);
    let one_per_thread = geom([64, 16, 6, 6], [32, 3, 3], (1, 1), (1, 1), (1, 1), 1);
    let tiles = geom([130, 8, 7, 7], [16, 3, 3], (1, 1), (1, 1), (1, 1), 1);
    let per_image = geom([3, 16, 16, 16], [32, 3, 3], (2, 2), (1, 1), (1, 1), 1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        for (g, want_in_place) in [
            (one_tile, true),
            (one_per_thread, true),
            (tiles, false),
            (per_image, false),
        ] {
            let (x, w) = (
                random(g.n * g.image_len(), 3),
                random(g.c_out * g.col_rows(), 4),
            );
            let tiles = image_tiles(&g).len();
            let direct = writes_planes_directly(&g);
            let weights = Weights::for_forward(&w, WeightOrder::Rows, &g, direct, tiles).unwrap();
            let in_place = matches!(weights, Weights::InPlace(..));
            assert_eq!(in_place, want_in_place, "{g:?}");
            let got = conv2d_forward(&x, &w, None, &g).unwrap();
            let im2col = conv2d_forward_im2col(&x, &w, None, &g).unwrap();
            assert!(got == im2col, "{g:?}: not the bits of im2col");
        }
    });
}

/// The transposed weight gradient sums the batch in the untransposed
/// route's tiles of images, so the two agree bit for bit on any thread
/// count: on 3 threads, 32 images run as three runs (11, 11 and 10
/// images) of two tiles each, the runs of single images the transposed
/// route would otherwise sum.
#[test]
fn transposed_weight_gradient_matches_im2col_on_three_threads() {
    if skip() {
        return;
    }
    let g = geom([32, 16, 32, 32], [32, 3, 3], (2, 2), (1, 1), (1, 1), 1);
    assert!(transposes_weight_gradient(&g));
    let x = random(g.n * g.image_len(), 70);
    let dy = random(g.n * g.out_image_len(), 71);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let (got, im2col) = pool.install(|| {
        (
            conv2d_backward_weight(&x, &dy, &g).unwrap(),
            conv2d_backward_weight_im2col(&x, &dy, &g).unwrap(),
        )
    });
    assert!(got == im2col, "not the bits of im2col on 3 threads");
}

/// The 1×1 input gradient that reads `W` in place as its transpose gives
/// the bits of the flipped copy's forward, with the weights packed inside
/// the product (one tile per thread), packed once (several tiles, or one
/// product per image), and per group; and the definition's values to
/// rounding. Other geometries are refused. On two threads, so the tile
/// counts do not depend on the machine.
#[test]
fn pointwise_input_gradient_reads_the_weights_transposed() {
    if skip() {
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        for g in [
            geom([16, 40, 4, 4], [36, 1, 1], (1, 1), (0, 0), (1, 1), 1),
            geom([130, 24, 7, 7], [40, 1, 1], (1, 1), (0, 0), (1, 1), 1),
            geom([3, 20, 14, 14], [52, 1, 1], (1, 1), (0, 0), (1, 1), 1),
            geom([2, 32, 32, 33], [8, 1, 1], (1, 1), (0, 0), (1, 1), 2),
            geom([4, 48, 9, 9], [30, 1, 1], (1, 1), (0, 0), (1, 1), 3),
            // Fewer than 16 channels per group: the input gradient takes
            // col2im, but the in-place product computes it all the same.
            geom([2, 12, 10, 10], [8, 1, 1], (1, 1), (0, 0), (1, 1), 2),
        ] {
            // The input-gradient convolution: dy's channels in, x's out.
            let t = ConvGeom {
                c_in: g.c_out,
                c_out: g.c_in,
                ..g
            };
            if g.cg() >= crate::ops::conv::plan::FLIPPED_MIN_CHANNELS {
                assert_eq!(crate::ops::conv::plan::flipped_geometry(&g), Some(t));
            }
            assert!(input_grad_in_place(&g), "{g:?}");
            let (dy, w) = (
                random(g.n * g.out_image_len(), 5),
                random(g.c_out * g.col_rows(), 6),
            );
            let flipped = crate::ops::conv::cpu::flip_kernel(&w, &g).unwrap();
            let want = conv2d_forward(&dy, &flipped, None, &t).unwrap();
            let got = conv2d_backward_input_pointwise(&dy, &w, &g).unwrap();
            assert!(got == want, "{g:?}: not the bits of the flipped forward");
            // The definition: dx[n, g·cg + c, p] = Σ_o W[g·og + o, c] ·
            // dy[n, g·og + o, p], in f64.
            let (og, cg, hw) = (g.og(), g.cg(), g.h * g.w);
            for (i, &v) in got.iter().enumerate() {
                let (n, ch, p) = (i / (g.c_in * hw), i / hw % g.c_in, i % hw);
                let (gi, c) = (ch / cg, ch % cg);
                let want: f64 = (0..og)
                    .map(|o| {
                        let oc = gi * og + o;
                        w[oc * cg + c] as f64 * dy[(n * g.c_out + oc) * hw + p] as f64
                    })
                    .sum();
                assert!(
                    (v as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{g:?} {i}: {v} {want}"
                );
            }
            let short = &w[..w.len() - 1];
            assert!(conv2d_backward_input_pointwise(&dy, short, &g).is_err());
        }
        for g in [
            geom([2, 8, 6, 6], [4, 3, 3], (1, 1), (1, 1), (1, 1), 1),
            geom([2, 8, 6, 6], [4, 1, 1], (2, 2), (0, 0), (1, 1), 1),
        ] {
            let (dy, w) = (
                random(g.n * g.out_image_len(), 5),
                random(g.c_out * g.col_rows(), 6),
            );
            assert!(!input_grad_in_place(&g), "{g:?}");
            assert!(
                conv2d_backward_input_pointwise(&dy, &w, &g).is_err(),
                "{g:?}"
            );
        }
    });
}

/// The transposed weight gradient's left operand packed straight from the
/// planes (`tap_triples`) holds the unrolled matrix by the definition,
/// in the sgemm's micro-panels, zeros past its rows: strides 1 and 2
/// (vertical 3), padding 0 to 2, kernel heights 1, 3 and 5, vertical
/// dilation, rows of 5, 7 and 16 pixels (partial chunks), blocks that
/// start inside an output row, and last panels of 1 to 3 triples.
#[test]
fn tap_triples_pack_the_unrolled_matrix() {
    use super::tap_triples::{applies, pack_block};
    use crate::ops::matmul::sgemm::ABlock;
    if !Kernel::Avx512.cpu_has() || Kernel::current() != Kernel::Avx512 {
        eprintln!("skipped: the tap-triple packer runs on AVX-512");
        return;
    }
    for g in [
        geom([1, 16, 32, 32], [32, 3, 3], (2, 2), (1, 1), (1, 1), 1),
        geom([1, 3, 9, 11], [8, 3, 3], (1, 1), (1, 1), (1, 1), 1),
        geom([1, 5, 14, 14], [4, 5, 3], (3, 2), (2, 2), (2, 1), 1),
        geom([1, 2, 6, 10], [4, 1, 3], (1, 2), (0, 0), (1, 1), 1),
        geom([1, 7, 13, 15], [4, 3, 3], (2, 1), (0, 2), (1, 1), 1),
    ] {
        assert!(applies(&g), "{g:?}");
        let x = random(g.image_len(), 7);
        let (k, cols) = (g.col_rows(), g.col_cols());
        let blocks = [
            (0, k, 0, cols),
            (3, k - 3, 5.min(cols - 1), cols - 5.min(cols - 1)),
        ];
        for (ic, mc, pc, kc) in blocks {
            let blk = ABlock { ic, mc, pc, kc };
            let mut out = vec![f32::NAN; mc.next_multiple_of(sgemm::MR) * kc];
            pack_block(&x, &g, &blk, &mut out);
            for (at, &v) in out.iter().enumerate() {
                let (panel, p, i) = (at / (sgemm::MR * kc), at / sgemm::MR % kc, at % sgemm::MR);
                let row = ic + panel * sgemm::MR + i;
                let want = if row < ic + mc {
                    unrolled(&x, &g, row, pc + p)
                } else {
                    0.0
                };
                assert_eq!(
                    v.to_bits(),
                    want.to_bits(),
                    "{g:?} block {ic}+{mc}, {pc}+{kc}: row {row}, pixel {}",
                    pc + p
                );
            }
        }
    }
}

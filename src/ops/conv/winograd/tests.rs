//! Unit tests of the Winograd F(2×2, 3×3) kernels: transforms, the
//! forward pass and the weight gradient against the definition.
use super::transforms::{
    transform_input_portable, transform_output_grad_portable, transform_output_portable,
};
use super::*;
use crate::ops::conv::cpu::{conv2d_backward_weight_im2col, conv2d_direct};
use rand::{Rng, SeedableRng};
use std::mem::MaybeUninit;

fn geom(n: usize, c: usize, o: usize, h: usize, w: usize, pad: usize) -> ConvGeom {
    ConvGeom {
        n,
        c_in: c,
        h,
        w,
        c_out: o,
        kh: 3,
        kw: 3,
        stride: (1, 1),
        padding: (pad, pad),
        dilation: (1, 1),
        groups: 1,
        oh: h + 2 * pad - 2,
        ow: w + 2 * pad - 2,
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

/// Shapes covering even and odd outputs, padding 0, 1 and 2,
/// non-square planes, a single image, unequal channel counts, and (the
/// last) a batch large enough to run in parallel, several chunks per
/// thread.
fn shapes() -> Vec<ConvGeom> {
    vec![
        geom(2, 16, 16, 6, 6, 1),
        geom(3, 16, 24, 5, 7, 1),
        geom(1, 20, 16, 9, 4, 0),
        geom(2, 16, 17, 3, 3, 2),
        geom(4, 32, 16, 1, 1, 1),
        geom(16, 32, 32, 16, 16, 1),
    ]
}

#[test]
fn transforms_are_exact_for_one_tile() {
    // One 4×4 patch, one channel pair: Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is the
    // 2×2 correlation of d with g, checked by hand-unrolled sums.
    let g = geom(1, 16, 16, 4, 4, 0);
    let mut x = vec![0.0; 16 * 16];
    let mut w = vec![0.0; 16 * 16 * 9];
    let d: Vec<f64> = (0..16).map(|i| (i * i % 7) as f64 - 3.0).collect();
    let k: Vec<f64> = (0..9).map(|i| (i % 4) as f64 - 1.5).collect();
    x[..16].copy_from_slice(&d);
    w[..9].copy_from_slice(&k);
    let y = conv2d_forward(&x, &w, None, &g).unwrap();
    for (oy, ox) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let mut want = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                want += d[(oy + i) * 4 + ox + j] * k[i * 3 + j];
            }
        }
        assert_eq!(y[oy * 2 + ox], want, "output ({oy}, {ox})");
    }
}

#[test]
fn forward_matches_the_definition() {
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.c_in * g.h * g.w, 10 + s as u64);
        let w = random(g.c_out * g.c_in * 9, 20 + s as u64);
        let b = random(g.c_out, 30 + s as u64);
        let want = conv2d_direct(&x, &w, Some(&b), &g).unwrap();
        let got = conv2d_forward(&x, &w, Some(&b), &g).unwrap();
        let err = max_diff(&got, &want);
        assert!(err < 1e-12, "{g:?}: max error {err}");
    }
}

/// Many channels on few tiles: on two threads the forward splits the work
/// by Winograd position; on one it runs by chunk. Both match the
/// definition, and each other bit for bit (f64, and f32 on the AVX-512
/// path); so does the input gradient, which runs the same forward.
#[test]
fn forward_by_position_gives_the_chunked_bits() {
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    for g in [geom(8, 64, 64, 4, 4, 1), geom(6, 48, 80, 5, 3, 1)] {
        assert!(pool(2).install(|| by_position(&g, &Tiles::of(&g))), "{g:?}");
        assert!(!pool(1).install(|| by_position(&g, &Tiles::of(&g))));
        let x = random(g.n * g.c_in * g.h * g.w, 7);
        let w = random(g.c_out * g.c_in * 9, 8);
        let b = random(g.c_out, 9);
        let dy = random(g.n * g.c_out * g.oh * g.ow, 10);
        let run = |threads| {
            pool(threads).install(|| {
                (
                    conv2d_forward(&x, &w, Some(&b), &g).unwrap(),
                    conv2d_backward_input(&dy, &w, &g).unwrap(),
                )
            })
        };
        let (by_position, by_chunk) = (run(2), run(1));
        assert_eq!(by_position, by_chunk, "{g:?}");
        let want = conv2d_direct(&x, &w, Some(&b), &g).unwrap();
        let err = max_diff(&by_position.0, &want);
        assert!(err < 1e-12, "{g:?}: max error {err}");
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (x32, w32, b32) = (f32s(&x), f32s(&w), f32s(&b));
        let run32 =
            |threads| pool(threads).install(|| conv2d_forward(&x32, &w32, Some(&b32), &g).unwrap());
        let (p32, c32) = (run32(2), run32(1));
        assert!(
            p32.iter()
                .zip(&c32)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{g:?}"
        );
    }
}

#[test]
fn f32_forward_stays_close_to_f64() {
    let g = geom(2, 64, 32, 8, 8, 1);
    let x = random(g.n * g.c_in * g.h * g.w, 1);
    let w = random(g.c_out * g.c_in * 9, 2);
    let want = conv2d_direct(&x, &w, None, &g).unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let got = conv2d_forward(&x32, &w32, None, &g).unwrap();
    let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
    // Outputs are sums of 576 products of size ≤ 1: |y| ≲ 10.
    let err = max_diff(&got, &want);
    assert!(err < 2e-5, "max error {err}");
}

#[test]
fn weight_gradient_matches_im2col() {
    for (s, g) in shapes().into_iter().enumerate() {
        let x = random(g.n * g.c_in * g.h * g.w, 40 + s as u64);
        let dy = random(g.n * g.c_out * g.oh * g.ow, 50 + s as u64);
        let want = conv2d_backward_weight_im2col(&x, &dy, &g).unwrap();
        let got = conv2d_backward_weight(&x, &dy, &g).unwrap();
        let err = max_diff(&got, &want);
        assert!(err < 1e-11, "{g:?}: max error {err}");
    }
}

#[test]
fn weight_transforms_are_adjoint() {
    // <transform(w), du> = <w, untransform(du)> for random w and du.
    let g = geom(1, 16, 16, 4, 4, 1);
    let w = random(16 * 16 * 9, 3);
    let du = random(POS * 16 * 16, 4);
    let lhs: f64 = transform_weights(&w, &g)
        .unwrap()
        .iter()
        .zip(&du)
        .map(|(a, b)| a * b)
        .sum();
    let rhs: f64 = w
        .iter()
        .zip(untransform_weights(&du, &g))
        .map(|(a, b)| a * b)
        .sum();
    assert!((lhs - rhs).abs() < 1e-10, "{lhs} vs {rhs}");
}

#[test]
fn only_3x3_stride_1_is_supported_and_only_wide_layers_apply() {
    let g = geom(32, 32, 32, 8, 8, 1);
    assert!(supports(&g) && applies(&g));
    assert!(!applies(&ConvGeom { c_in: 16, ..g }) && supports(&ConvGeom { c_in: 16, ..g }));
    assert!(!applies(&ConvGeom { c_out: 16, ..g }));
    // 32 images of 4×4: 128 tiles, enough only where the weights are
    // packed directly; 16 images of 4×4 (64 tiles) are never enough.
    let deep = ConvGeom { oh: 4, ow: 4, ..g };
    assert_eq!(applies(&deep), min_tiles() == MIN_TILES_PACKED);
    assert!(!applies(&ConvGeom { n: 16, ..deep }));
    for other in [
        ConvGeom {
            stride: (2, 2),
            ..g
        },
        ConvGeom {
            dilation: (2, 1),
            ..g
        },
        ConvGeom { groups: 2, ..g },
        ConvGeom { kh: 5, ..g },
    ] {
        assert!(!supports(&other) && !applies(&other), "{other:?}");
    }
}

/// Geometries for the transform comparisons: tile rows of 1 to 20 tiles
/// (one and two vectors, full and partial), odd and even sizes, padding
/// 0, 1 and 2, several images and channels.
#[cfg(target_arch = "x86_64")]
fn transform_shapes() -> Vec<ConvGeom> {
    let mut v = Vec::new();
    for (h, w) in [
        (1, 1),
        (2, 3),
        (4, 4),
        (5, 9),
        (8, 8),
        (7, 16),
        (16, 16),
        (3, 31),
        (6, 32),
        (9, 33),
        (2, 40),
        // Tile rows of 8 and 16 tiles (row loads) with padding 2.
        (4, 14),
        (5, 30),
    ] {
        for pad in 0..3 {
            if h + 2 * pad >= 3 && w + 2 * pad >= 3 {
                v.push(geom(2, 3, 2, h, w, pad));
            }
        }
    }
    v
}

fn random_f32(len: usize, seed: u64) -> Vec<f32> {
    random(len, seed).into_iter().map(|v| v as f32).collect()
}

/// Runs `f(portable)` then `f(vector)` on copies of a chunk's 16 matrices
/// of `channels × tb` (gaps included) filled with a sentinel, and checks
/// both wrote the same bits: every matrix value, and nothing in the gaps.
#[cfg(target_arch = "x86_64")]
fn same_bits(
    (channels, tb): (usize, usize),
    what: &str,
    g: &ConvGeom,
    f: impl Fn(bool, &mut [f32]),
) {
    let sentinel = f32::from_bits(0x7fc0_dead);
    let len = matrices_len(channels, tb);
    let (mut a, mut b) = (vec![sentinel; len], vec![sentinel; len]);
    f(false, &mut a);
    f(true, &mut b);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what} differs at {i} for {g:?}");
        let in_gap = i % matrix_stride(channels, tb) >= channels * tb;
        assert_eq!(
            x.to_bits() == sentinel.to_bits(),
            in_gap,
            "{what} wrote a gap or left a value unwritten at {i} for {g:?}"
        );
    }
}

/// The vector transforms, for [`vector_transforms_give_the_portable_bits`].
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
enum Set {
    Avx512,
    Avx2,
}

#[cfg(target_arch = "x86_64")]
impl Set {
    /// The sets this CPU runs.
    fn here() -> Vec<Set> {
        let mut sets = Vec::new();
        if avx512::available() {
            sets.push(Set::Avx512);
        }
        if avx2::available() {
            sets.push(Set::Avx2);
        }
        sets
    }

    /// # Safety
    /// As the transforms'.
    unsafe fn input(self, x: &[f32], g: &ConvGeom, t: &Tiles, rows: Range<usize>, v: &mut [f32]) {
        match self {
            Set::Avx512 => unsafe { avx512::transform_input(x, g, t, rows, v) },
            Set::Avx2 => unsafe { avx2::transform_input(x, g, t, rows, v) },
        }
    }

    /// # Safety
    /// As the transforms'.
    unsafe fn output_grad(
        self,
        dy: &[f32],
        g: &ConvGeom,
        t: &Tiles,
        rows: Range<usize>,
        dm: &mut [f32],
    ) {
        match self {
            Set::Avx512 => unsafe { avx512::transform_output_grad(dy, g, t, rows, dm) },
            Set::Avx2 => unsafe { avx2::transform_output_grad(dy, g, t, rows, dm) },
        }
    }

    /// # Safety
    /// As the transforms'.
    #[allow(clippy::too_many_arguments)]
    unsafe fn output(
        self,
        m: &[f32],
        b: Option<&[f32]>,
        g: &ConvGeom,
        t: &Tiles,
        rows: Range<usize>,
        out: SharedMut<MaybeUninit<f32>>,
    ) {
        match self {
            Set::Avx512 => unsafe { avx512::transform_output(m, b, g, t, rows, out) },
            Set::Avx2 => unsafe { avx2::transform_output(m, b, g, t, rows, out) },
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn vector_transforms_give_the_portable_bits() {
    for (set, g) in Set::here()
        .into_iter()
        .flat_map(|set| transform_shapes().into_iter().map(move |g| (set, g)))
    {
        let tiles = Tiles::of(&g);
        let x = random_f32(g.n * g.c_in * g.h * g.w, 1);
        let dy = random_f32(g.n * g.c_out * g.oh * g.ow, 2);
        // Every chunk the kernels use, plus one of all tile rows but the first.
        let mut chunks = chunk_rows(&g, &tiles);
        chunks.push(1.min(tiles.rows)..tiles.rows);
        for rows in chunks {
            let tb = rows.len() * tiles.tw;
            same_bits((g.c_in, tb), "input transform", &g, |fast, v| unsafe {
                if fast {
                    set.input(&x, &g, &tiles, rows.clone(), v)
                } else {
                    transform_input_portable(&x, &g, &tiles, rows.clone(), v)
                }
            });
            same_bits(
                (g.c_out, tb),
                "output-gradient transform",
                &g,
                |fast, dm| unsafe {
                    if fast {
                        set.output_grad(&dy, &g, &tiles, rows.clone(), dm)
                    } else {
                        transform_output_grad_portable(&dy, &g, &tiles, rows.clone(), dm)
                    }
                },
            );
            let m = random_f32(matrices_len(g.c_out, tb), 3);
            let bias = random_f32(g.c_out, 4);
            for b in [None, Some(&bias[..])] {
                // Only this chunk's output rows are written: compare those.
                let len = g.n * g.c_out * g.oh * g.ow;
                let sentinel = f32::from_bits(0x7fc0_dead);
                let run = |fast: bool| {
                    let mut out = vec![sentinel; len];
                    let ptr = SharedMut(out.as_mut_ptr().cast::<MaybeUninit<f32>>());
                    unsafe {
                        if fast {
                            set.output(&m, b, &g, &tiles, rows.clone(), ptr)
                        } else {
                            transform_output_portable(&m, b, &g, &tiles, rows.clone(), ptr)
                        }
                    }
                    out
                };
                let (p, q) = (run(false), run(true));
                for (i, (x, y)) in p.iter().zip(&q).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{set:?} output transform differs at {i} for {g:?}"
                    );
                }
                let written = p
                    .iter()
                    .filter(|v| v.to_bits() != sentinel.to_bits())
                    .count();
                let oh_rows: usize = rows
                    .clone()
                    .map(|r| (g.oh - 2 * (r % tiles.th)).min(2))
                    .sum();
                assert_eq!(
                    written,
                    oh_rows * g.c_out * g.ow,
                    "output rows written for {g:?}"
                );
            }
        }
    }
}

#[test]
fn weights_packed_directly_give_the_same_bits() {
    // Channel counts off the packing's blocks: output channels not a
    // multiple of the 12-row micro-panel and past one 192-row block, input
    // channels not a multiple of 16 and past one 256-deep block.
    for g in [
        geom(2, 20, 13, 5, 5, 1),
        geom(1, 300, 200, 3, 4, 1),
        geom(3, 16, 16, 4, 4, 0),
    ] {
        let x = random_f32(g.n * g.c_in * g.h * g.w, 5);
        let w = random_f32(g.c_out * g.c_in * 9, 6);
        let b = random_f32(g.c_out, 7);
        let direct = conv2d_forward(&x, &w, Some(&b), &g).unwrap();
        let two_steps = forward_two_step_packing(&x, &w, Some(&b), &g).unwrap();
        assert_eq!(direct.len(), two_steps.len());
        for (i, (p, q)) in direct.iter().zip(&two_steps).enumerate() {
            assert_eq!(p.to_bits(), q.to_bits(), "element {i} for {g:?}");
        }
    }
}

#[test]
fn input_gradient_from_the_unflipped_weights_matches_f64() {
    // f32 packs the flipped kernel's matrices straight from `w` (on
    // AVX-512); f64 flips the kernel and transforms it. Padding 0, 1 and 2
    // (flipped padding 2, 1 and 0), channel counts off the packing blocks.
    for g in [
        geom(2, 20, 13, 5, 5, 1),
        geom(1, 300, 200, 3, 4, 1),
        geom(3, 16, 16, 4, 4, 0),
        geom(2, 17, 33, 6, 7, 2),
    ] {
        let dy = random(g.n * g.c_out * g.oh * g.ow, 8);
        let w = random(g.c_out * g.c_in * 9, 9);
        let exact = conv2d_backward_input(&dy, &w, &g).unwrap();
        let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let fast = conv2d_backward_input(&to_f32(&dy), &to_f32(&w), &g).unwrap();
        let fast: Vec<f64> = fast.iter().map(|&x| x as f64).collect();
        let scale = exact.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let err = max_diff(&fast, &exact);
        assert!(err <= 1e-5 * scale, "{g:?}: error {err} at scale {scale}");
        assert_eq!(exact.len(), g.n * g.c_in * g.h * g.w);
    }
    // And the f64 route against the definition, through the forward
    // convolution's adjoint: <conv(x, w), dy> = <x, dx>.
    let g = geom(2, 20, 16, 5, 6, 1);
    let (x, dy, w) = (
        random(2 * 20 * 30, 10),
        random(2 * 16 * 30, 11),
        random(16 * 20 * 9, 12),
    );
    let y = conv2d_direct(&x, &w, None, &g).unwrap();
    let dx = conv2d_backward_input(&dy, &w, &g).unwrap();
    let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
    let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
    assert!(
        (lhs - rhs).abs() <= 1e-9 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );
}

#[test]
fn input_gradient_refuses_geometries_without_a_flipped_convolution() {
    let mut g = geom(1, 20, 20, 6, 6, 1);
    g.padding = (3, 3);
    g.oh = 10;
    g.ow = 10;
    let err =
        conv2d_backward_input(&vec![0.0f32; 20 * 100], &vec![0.0f32; 20 * 20 * 9], &g).unwrap_err();
    assert!(err.to_string().contains("flipped"), "{err}");
}

/// The chunks cover the tile rows in order, and the runs the weight
/// gradient sums per thread (`thread_runs`) hold as many rows as one
/// another, give or take one: on two threads ResNet-50's 256-channel
/// 14×14 layer (224 tile rows) runs as 112 + 112, not 120 + 104.
#[test]
fn chunks_give_every_thread_an_even_share_of_rows() {
    use crate::ops::conv::cpu::thread_runs;
    for (g, threads) in [
        (geom(32, 256, 256, 14, 14, 1), 2),
        (geom(32, 64, 64, 56, 56, 1), 2),
        (geom(32, 128, 128, 28, 28, 1), 3),
        (geom(5, 32, 32, 9, 9, 1), 4),
        (geom(2, 32, 32, 4, 4, 1), 2),
    ] {
        let tiles = Tiles::of(&g);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (chunks, runs) = pool.install(|| {
            let chunks = chunk_rows(&g, &tiles);
            let runs: Vec<(usize, usize)> = thread_runs(chunks.len()).collect();
            (chunks, runs)
        });
        let mut next = 0;
        for c in &chunks {
            assert!(c.start == next && !c.is_empty(), "{g:?}: {chunks:?}");
            next = c.end;
        }
        assert_eq!(next, tiles.rows);
        let rows: Vec<usize> = runs
            .iter()
            .map(|&(start, n)| chunks[start..start + n].iter().map(|c| c.len()).sum())
            .collect();
        let (lo, hi) = (rows.iter().min().unwrap(), rows.iter().max().unwrap());
        assert!(hi - lo <= 1, "{g:?} on {threads} threads: {rows:?}");
    }
}

/// Many channels on few tiles on two threads: the weight gradient splits
/// by position (`weight_by_position`), matches im2col's, and gives the
/// same bits on every call.
#[test]
fn weight_gradient_by_position_matches_im2col() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for g in [geom(8, 64, 64, 4, 4, 1), geom(6, 48, 80, 5, 3, 1)] {
        assert!(pool.install(|| by_position(&g, &Tiles::of(&g))), "{g:?}");
        let x = random(g.n * g.c_in * g.h * g.w, 11);
        let dy = random(g.n * g.c_out * g.oh * g.ow, 12);
        let want = conv2d_backward_weight_im2col(&x, &dy, &g).unwrap();
        let got = pool.install(|| conv2d_backward_weight(&x, &dy, &g).unwrap());
        let err = max_diff(&got, &want);
        assert!(err < 1e-11, "{g:?}: max error {err}");
        let again = pool.install(|| conv2d_backward_weight(&x, &dy, &g).unwrap());
        assert_eq!(got, again, "{g:?}");
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let got32 = pool.install(|| conv2d_backward_weight(&f32s(&x), &f32s(&dy), &g).unwrap());
        let got32: Vec<f64> = got32.iter().map(|&v| v as f64).collect();
        let err = max_diff(&got32, &want);
        assert!(err < 1e-3, "{g:?}: f32 max error {err}");
    }
}

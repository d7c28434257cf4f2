//! Unit tests of the CPU convolution's shared pieces: the tiles of
//! images and the flipped kernel.
use super::*;
use crate::ops::Conv2dParams;

/// The tiles cover the batch in order, no tile over the limit, and the
/// runs `sum_in_fixed_runs` gives the threads ([`thread_runs`]) hold as
/// many images as one another, give or take one: the shares.
#[test]
fn image_tiles_give_every_thread_an_even_share() {
    let params = Conv2dParams::default();
    for (n, hw, threads) in [
        (32, 14, 2),
        (32, 28, 2),
        (33, 14, 2),
        (32, 7, 3),
        (64, 28, 3),
        (70, 28, 4),
        (3, 56, 4),
    ] {
        let g = ConvGeom::new([n, 64, hw, hw], [64, 64, 1, 1], &params).unwrap();
        assert!(parallel(&g));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (tiles, runs) = pool.install(|| {
            let tiles = image_tiles(&g);
            let runs: Vec<(usize, usize)> = thread_runs(tiles.len()).collect();
            (tiles, runs)
        });
        let most = TILE_COLUMNS.div_ceil(hw * hw);
        let mut next = 0;
        for &(n0, t) in &tiles {
            assert_eq!(n0, next, "{n} {hw} {threads}: {tiles:?}");
            assert!(t >= 1 && t <= most, "{n} {hw} {threads}: {tiles:?}");
            next += t;
        }
        assert_eq!(next, n);
        assert_eq!(runs.len(), threads.min(n));
        let images: Vec<usize> = runs
            .iter()
            .map(|&(start, len)| tiles[start..start + len].iter().map(|t| t.1).sum())
            .collect();
        let (lo, hi) = (images.iter().min().unwrap(), images.iter().max().unwrap());
        assert!(
            hi - lo <= 1,
            "{n} {hw} {threads}: {tiles:?} in runs {images:?}"
        );
    }
    // The case that motivated the shares: 3 tiles of 11 for 2 threads
    // before, now 2 tiles of 8 each.
    let g = ConvGeom::new([32, 1024, 14, 14], [256, 1024, 1, 1], &params).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    assert_eq!(
        pool.install(|| image_tiles(&g)),
        [(0, 8), (8, 8), (16, 8), (24, 8)]
    );
    // A job too small to spread is one share.
    let small = ConvGeom::new([5, 4, 4, 4], [4, 4, 1, 1], &params).unwrap();
    assert!(!parallel(&small));
    assert_eq!(pool.install(|| image_tiles(&small)), [(0, 5)]);
}

/// `flip_kernel` against its definition, element by element: groups,
/// output channels past one task's 16 and not a multiple of it, 1×1
/// kernels (the plain transpose) and wider ones, non-square.
#[test]
fn flip_kernel_swaps_channels_and_reverses_taps() {
    let cases = [
        (1, 1, 1, 1, 1),
        (1, 20, 40, 1, 1),
        (2, 17, 5, 3, 3),
        (3, 33, 2, 2, 3),
        (2, 16, 64, 1, 1),
        (1, 0, 4, 3, 3),
    ];
    for (groups, og, cg, kh, kw) in cases {
        let params = Conv2dParams::default().groups(groups);
        let g = ConvGeom::new([1, groups * cg, 4, 4], [groups * og, cg, kh, kw], &params).unwrap();
        let w: Vec<f32> = (0..groups * og * cg * kh * kw).map(|v| v as f32).collect();
        let flipped = flip_kernel(&w, &g).unwrap();
        assert_eq!(flipped.len(), w.len());
        if let Some(short) = w.len().checked_sub(1) {
            assert!(flip_kernel(&w[..short], &g).is_err(), "{groups} {og} {cg}");
        }
        let taps = kh * kw;
        for gi in 0..groups {
            for o in 0..og {
                for c in 0..cg {
                    for t in 0..taps {
                        let want = w[((gi * og + o) * cg + c) * taps + t];
                        let at = ((gi * cg + c) * og + o) * taps + (taps - 1 - t);
                        assert_eq!(flipped[at], want, "{groups} {og} {cg} {kh}x{kw}");
                    }
                }
            }
        }
    }
}

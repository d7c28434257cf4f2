//! ferrite's real kernels on the emulated GPU, launched with the shapes of
//! `launch.rs` and compared with simple Rust references.

use crate::backend::cuda::emulator::tests::{bytes_of, download, emu, run, upload};
use crate::backend::cuda::launch;
use crate::ops::elementwise::params::ElementwiseParams;
use crate::ops::matmul::params::GemmParams;
use crate::ops::reduce::params::RowParams;
use cudarc::driver::LaunchConfig;
use half::{bf16, f16};

/// Deterministic pseudo-random floats in [-1, 1) (xorshift).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs `name` with a launch config of `launch.rs`.
fn run_config(
    name: &str,
    c: LaunchConfig,
    args: &[&[u8]],
) -> crate::backend::cuda::emulator::LaunchReport {
    run(name, c.grid_dim, c.block_dim, args).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn add_matches_the_cpu_bit_for_bit_contiguous_and_broadcast() {
    let n = 10_000;
    let (a, b) = (noise(n, 1), noise(n, 2));
    let (ad, bd, out) = (upload(&a), upload(&b), upload(&vec![0f32; n]));
    let p = ElementwiseParams::flat(n);
    let args = [bytes_of(&p), bytes_of(&ad), bytes_of(&bd), bytes_of(&out)];
    let report = run_config("add_fwd_f32", launch::elementwise(n).unwrap(), &args);
    assert_eq!(report.grid, (3, 1, 1), "40 blocks clamped to 3");
    assert!(!report.synchronised);
    let got: Vec<f32> = download(out, n);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(got, want);

    // [3, 4] = [3, 4] + [4] (the rhs row broadcast over dim 0: stride 0).
    let mut p = ElementwiseParams::flat(12);
    p.ndim = 2;
    p.contiguous = 0;
    p.shape[..2].copy_from_slice(&[3, 4]);
    p.strides[0][..2].copy_from_slice(&[4, 1]);
    p.strides[1][..2].copy_from_slice(&[0, 1]);
    let args = [bytes_of(&p), bytes_of(&ad), bytes_of(&bd), bytes_of(&out)];
    run_config("add_fwd_f32", launch::elementwise(12).unwrap(), &args);
    let got: Vec<f32> = download(out, 12);
    let want: Vec<f32> = (0..12).map(|i| a[i] + b[i % 4]).collect();
    assert_eq!(got, want);
    for ptr in [ad, bd, out] {
        emu().free(ptr).unwrap();
    }
}

#[test]
fn f16_casts_round_like_the_half_crate_for_every_value() {
    // f16 -> f32 for all 65,536 bit patterns.
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let n = bits.len();
    let (src, dst) = (upload(&bits), upload(&vec![0f32; n]));
    let p = ElementwiseParams::flat(n);
    let c = launch::elementwise(n).unwrap();
    run_config(
        "cast_f16_to_f32",
        c,
        &[bytes_of(&p), bytes_of(&src), bytes_of(&dst)],
    );
    let wide: Vec<f32> = download(dst, n);
    for (&b, &w) in bits.iter().zip(&wide) {
        let want = f16::from_bits(b).to_f32();
        assert!(
            w.to_bits() == want.to_bits() || (w.is_nan() && want.is_nan()),
            "{b:#06x}"
        );
    }
    // f32 -> f16 on the midpoints between neighbouring f16 values (ties),
    // just above and below them, and on every f16 value itself.
    let mut xs: Vec<f32> = Vec::new();
    for &w in wide.iter().filter(|w| w.is_finite()) {
        let next = f16::from_f32(w).to_bits().wrapping_add(1);
        let up = f16::from_bits(next).to_f32();
        let mid = ((w as f64 + up as f64) / 2.0) as f32;
        xs.extend([
            w,
            mid,
            f32::from_bits(mid.to_bits() + 1),
            f32::from_bits(mid.to_bits() - 1),
        ]);
    }
    xs.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        65520.0,
        65519.99,
        1e-8,
        -3e-8,
        f32::MAX,
    ]);
    let n = xs.len();
    let (src, out) = (upload(&xs), upload(&vec![0u16; n]));
    let p = ElementwiseParams::flat(n);
    let c = launch::elementwise(n).unwrap();
    run_config(
        "cast_f32_to_f16",
        c,
        &[bytes_of(&p), bytes_of(&src), bytes_of(&out)],
    );
    let got: Vec<u16> = download(out, n);
    for (&x, &h) in xs.iter().zip(&got) {
        if x.is_nan() {
            // PTX's canonical NaN (the half crate keeps the payload instead).
            assert_eq!(h, 0x7fff, "NaN");
        } else {
            assert_eq!(h, f16::from_f32(x).to_bits(), "{x:e}");
        }
    }
    for ptr in [src, out, dst] {
        emu().free(ptr).unwrap();
    }
}

#[test]
fn row_sums_reduce_with_shuffles_and_shared_memory() {
    for (rows, cols) in [(7, 1000), (4, 33), (5, 1)] {
        let x = noise(rows * cols, 3);
        let (xd, out) = (upload(&x), upload(&vec![0f32; rows]));
        let p = RowParams::contiguous(rows, cols);
        let c = launch::rows(rows, cols).unwrap();
        let report = run_config(
            "sum_fwd_f32",
            c,
            &[bytes_of(&p), bytes_of(&xd), bytes_of(&out)],
        );
        assert!(report.synchronised && report.race_checked);
        let got: Vec<f32> = download(out, rows);
        for (r, g) in got.iter().enumerate() {
            let want: f64 = x[r * cols..(r + 1) * cols].iter().map(|&v| v as f64).sum();
            assert!(
                (*g as f64 - want).abs() < 1e-4,
                "row {r} of {rows}x{cols}: {g} vs {want}"
            );
        }
        emu().free(xd).unwrap();
        emu().free(out).unwrap();
    }
}

/// `C = A·B` for row-major batches, in f64.
fn reference_gemm(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0f64; batch * m * n];
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                c[(bi * m + i) * n + j] = (0..k)
                    .map(|l| a[(bi * m + i) * k + l] as f64 * b[(bi * k + l) * n + j] as f64)
                    .sum();
            }
        }
    }
    c
}

#[test]
fn sgemm_covers_edge_tiles_and_batches() {
    // 5 × 3 tiles of 128 × 128 and 4 batch items, on a grid clamped to 3 in
    // every dimension (each one a grid-stride loop).
    let (batch, m, k, n) = (4, 300, 37, 520);
    let (a, b) = (noise(batch * m * k, 4), noise(batch * k * n, 5));
    let (ad, bd, cd) = (upload(&a), upload(&b), upload(&vec![0f32; batch * m * n]));
    let p = GemmParams::row_major(batch, m, k, n);
    let args = [bytes_of(&p), bytes_of(&ad), bytes_of(&bd), bytes_of(&cd)];
    let report = run_config("gemm_fwd_f32", launch::sgemm(m, n, batch).unwrap(), &args);
    assert_eq!(report.grid, (3, 3, 3));
    assert!(report.race_checked);
    let got: Vec<f32> = download(cd, batch * m * n);
    let want = reference_gemm(&a, &b, batch, m, k, n);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((*g as f64 - w).abs() < 1e-4, "element {i}: {g} vs {w}");
    }
    for ptr in [ad, bd, cd] {
        emu().free(ptr).unwrap();
    }
}

#[test]
fn tensor_core_gemms_follow_the_mma_fragment_layout() {
    // 2 × 4 tiles of 64 × 64 (more column tiles than the clamped grid has).
    let (batch, m, k, n) = (2, 70, 40, 200);
    let a32 = noise(batch * m * k, 6);
    let b32 = noise(batch * k * n, 7);
    for (kernel, to_bits, from_bits) in [
        (
            "gemm_fwd_bf16",
            (|x: f32| bf16::from_f32(x).to_bits()) as fn(f32) -> u16,
            (|h: u16| bf16::from_bits(h).to_f32()) as fn(u16) -> f32,
        ),
        (
            "gemm_fwd_f16",
            |x: f32| f16::from_f32(x).to_bits(),
            |h: u16| f16::from_bits(h).to_f32(),
        ),
    ] {
        let a: Vec<u16> = a32.iter().map(|&x| to_bits(x)).collect();
        let b: Vec<u16> = b32.iter().map(|&x| to_bits(x)).collect();
        let (ad, bd, cd) = (upload(&a), upload(&b), upload(&vec![0u16; batch * m * n]));
        let p = GemmParams::row_major(batch, m, k, n);
        let args = [bytes_of(&p), bytes_of(&ad), bytes_of(&bd), bytes_of(&cd)];
        let c = launch::tensor_core_gemm(m, n, batch).unwrap();
        let report = run_config(kernel, c, &args);
        assert!(report.race_checked, "{kernel}");
        let got: Vec<u16> = download(cd, batch * m * n);
        let widen = |v: &[u16]| v.iter().map(|&h| from_bits(h)).collect::<Vec<f32>>();
        let want = reference_gemm(&widen(&a), &widen(&b), batch, m, k, n);
        for (i, (&g, w)) in got.iter().zip(&want).enumerate() {
            // One rounding to the 16-bit type: a relative error of 2^-8 (bf16).
            let g = from_bits(g) as f64;
            assert!(
                (g - w).abs() <= 1e-2 * w.abs() + 1e-3,
                "{kernel} element {i}: {g} vs {w}"
            );
        }
        for ptr in [ad, bd, cd] {
            emu().free(ptr).unwrap();
        }
    }
}

#[test]
fn mixed_tensor_core_gemm_writes_f32_from_bf16_inputs() {
    // Edge tiles in m, n and k (none a multiple of 64, 64 or 32), more
    // column tiles than the clamped grid, a batch, and a transposed B.
    let (batch, m, k, n) = (2, 67, 37, 203);
    let a: Vec<bf16> = noise(batch * m * k, 11)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let b: Vec<bf16> = noise(batch * k * n, 12)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let widen = |v: &[bf16]| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
    // B stored n × k, read through swapped strides.
    let bt: Vec<bf16> = (0..batch * n * k)
        .map(|i| {
            let (bi, j, l) = (i / (n * k), (i / k) % n, i % k);
            b[(bi * k + l) * n + j]
        })
        .collect();
    let want = reference_gemm(&widen(&a), &widen(&b), batch, m, k, n);
    let mut transposed = GemmParams::row_major(batch, m, k, n);
    (transposed.b_row, transposed.b_col) = (1, k as i64);
    for (what, p, b_host) in [
        ("row-major B", GemmParams::row_major(batch, m, k, n), &b),
        ("transposed B", transposed, &bt),
    ] {
        let (ad, bd, cd) = (
            upload(&a),
            upload(b_host),
            upload(&vec![0f32; batch * m * n]),
        );
        let args = [bytes_of(&p), bytes_of(&ad), bytes_of(&bd), bytes_of(&cd)];
        let c = launch::tensor_core_gemm(m, n, batch).unwrap();
        let report = run_config("gemm_fwd_bf16_to_f32", c, &args);
        assert!(report.race_checked, "{what}");
        let got: Vec<f32> = download(cd, batch * m * n);
        // The products of bf16 values are exact in f32: only the f32 sums
        // of k = 37 terms in [-1, 1] round (at most ~37 · 2⁻²⁴ · Σ|terms|,
        // under 1e-5), far below a bf16 rounding of the output (~1e-3).
        let mut not_bf16 = 0;
        for (i, (&g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5,
                "{what} element {i}: {g} vs {w}"
            );
            not_bf16 += usize::from(bf16::from_f32(g).to_f32() != g);
        }
        // An output rounded to bf16 would fail the bound above; most f32
        // sums of bf16 products need more than bf16's 8 bits.
        assert!(
            not_bf16 > got.len() / 2,
            "{what}: {not_bf16} f32-only values"
        );
        for ptr in [ad, bd, cd] {
            emu().free(ptr).unwrap();
        }
    }
}

#[test]
fn plm_histogram_counts_with_atomics() {
    let (classes, n_bins, numel) = (5usize, 10usize, 2003usize);
    let mut probs: Vec<f32> = noise(numel, 8).iter().map(|v| (v + 1.0) / 2.0).collect();
    probs[7] = f32::NAN;
    probs[11] = 1.5;
    probs[12] = 1.0;
    let targets: Vec<f32> = noise(numel, 9)
        .iter()
        .map(|&v| (v > 0.0) as u8 as f32)
        .collect();
    let zeros = |n: usize| upload(&vec![0u64; n]);
    let (pd, td) = (upload(&probs), upload(&targets));
    let bufs = [
        zeros(n_bins * classes),
        zeros(n_bins * classes),
        zeros(classes),
        zeros(classes),
        zeros(1),
    ];
    /// The layout of `PlmHistogramParams` (`kernels/plm.cu`; its Rust
    /// mirror lives with the PLM family, above the backend).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct HistogramArgs {
        numel: i64,
        classes: i64,
        n_bins: i64,
    }
    // Safety: three i64, no padding, the kernel's struct.
    unsafe impl crate::backend::cuda::driver::KernelArg for HistogramArgs {}
    let p = HistogramArgs {
        numel: numel as i64,
        classes: classes as i64,
        n_bins: n_bins as i64,
    };
    let mut args = vec![bytes_of(&p), bytes_of(&pd), bytes_of(&td)];
    args.extend(bufs.iter().map(bytes_of));
    run_config(
        "plm_histogram_fwd_f32",
        launch::elementwise(numel).unwrap(),
        &args,
    );

    let mut want = [
        vec![0u64; n_bins * classes],
        vec![0; n_bins * classes],
        vec![0; classes],
        vec![0; classes],
        vec![0; 1],
    ];
    for e in 0..numel {
        let (c, pos) = (e % classes, targets[e] == 1.0);
        want[if pos { 2 } else { 3 }][c] += 1;
        let pr = probs[e] as f64;
        if !(0.0..=1.0).contains(&pr) {
            want[4][0] += 1;
            continue;
        }
        let bin = ((pr * n_bins as f64) as usize).min(n_bins - 1);
        want[if pos { 0 } else { 1 }][bin * classes + c] += 1;
    }
    for (i, (&buf, w)) in bufs.iter().zip(&want).enumerate() {
        assert_eq!(download::<u64>(buf, w.len()), *w, "histogram {i}");
        emu().free(buf).unwrap();
    }
    emu().free(pd).unwrap();
    emu().free(td).unwrap();
}

/// The emulated speed of a 256³ f32 GEMM and a 1M-element add, with and
/// without the race check: `cargo test --release --features cuda-emulator
/// emulated_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn emulated_speed() {
    use std::time::Instant;
    let time = |name: &str, c: LaunchConfig, args: &[&[u8]]| {
        for race_check in [true, false] {
            let options = crate::backend::cuda::emulator::LaunchOptions {
                race_check,
                ..crate::backend::cuda::emulator::tests::strict()
            };
            let start = Instant::now();
            let reps = 5;
            for _ in 0..reps {
                emu()
                    .launch_with(name, c.grid_dim, c.block_dim, 0, args, options)
                    .unwrap();
            }
            let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
            println!(
                "{name} {:?}×{:?} race_check={race_check}: {ms:.2} ms",
                c.grid_dim, c.block_dim
            );
        }
    };
    let s = 256;
    let (a, b) = (noise(s * s, 10), noise(s * s, 11));
    let (ad, bd, cd) = (upload(&a), upload(&b), upload(&vec![0f32; s * s]));
    let p = GemmParams::row_major(1, s, s, s);
    let args = [bytes_of(&p), bytes_of(&ad), bytes_of(&bd), bytes_of(&cd)];
    time("gemm_fwd_f32", launch::sgemm(s, s, 1).unwrap(), &args);
    let n = 1 << 20;
    let (xd, yd, od) = (
        upload(&noise(n, 12)),
        upload(&noise(n, 13)),
        upload(&vec![0f32; n]),
    );
    let p = ElementwiseParams::flat(n);
    let args = [bytes_of(&p), bytes_of(&xd), bytes_of(&yd), bytes_of(&od)];
    time("add_fwd_f32", launch::elementwise(n).unwrap(), &args);
    let (rows, cols) = (1024, 1024);
    let p = RowParams::contiguous(rows, cols);
    let args = [bytes_of(&p), bytes_of(&xd), bytes_of(&od)];
    time("sum_fwd_f32", launch::rows(rows, cols).unwrap(), &args);
    for ptr in [ad, bd, cd, xd, yd, od] {
        emu().free(ptr).unwrap();
    }
}

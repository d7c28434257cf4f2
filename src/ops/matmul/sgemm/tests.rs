//! Unit tests of the sgemm against a plain f64 triple loop: edge tiles,
//! block boundaries (`KC`, `MC`, `NC`), strided and transposed operands,
//! and every `beta` case (0 must not read `c`), each on every kernel the
//! CPU runs; and the kernels' bits against each other and matrixmultiply.
use super::*;
use rand::{Rng, SeedableRng};

/// A strided matrix for the tests: `rows × cols` values at
/// `data[i * rs + j * cs]`.
struct Strided {
    data: Vec<f32>,
    rs: usize,
    cs: usize,
}

impl Strided {
    /// Random values in [-1, 1); `transposed` stores it column-major,
    /// `spread` leaves gaps of one element between neighbours.
    fn random(rows: usize, cols: usize, transposed: bool, spread: usize, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (rs, cs) = if transposed {
            (spread, rows * spread)
        } else {
            (cols * spread, spread)
        };
        let data = (0..rows * cols * spread)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Strided { data, rs, cs }
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.rs + j * self.cs] as f64
    }
}

/// `c = a · b + beta · c` on `kernel` (row stride `ldc`).
fn product(
    kernel: Kernel,
    a: &Strided,
    b: &Strided,
    (m, k, n): (usize, usize, usize),
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(kernel.cpu_has() && c.len() >= m * ldc);
    let lhs = Lhs::Strided {
        m,
        k,
        a: a.data.as_ptr(),
        strides: (a.rs as isize, a.cs as isize),
    };
    let b_strides = (b.rs as isize, b.cs as isize);
    // Safety: the strided matrices hold their elements; c holds m rows.
    unsafe {
        strided_on(
            kernel,
            lhs,
            n,
            b.data.as_ptr(),
            b_strides,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
        )
    }
}

/// Runs `c = a · b + beta · c0` on every kernel this CPU runs, checks
/// that they agree bit for bit, and compares with the f64 reference;
/// returns the largest error relative to the sum of |terms|.
fn check(m: usize, k: usize, n: usize, ta: bool, tb: bool, spread: usize, beta: f32) -> f64 {
    let kernels = kernels_on_this_cpu();
    let runs: Vec<(f64, Vec<f32>)> = kernels
        .iter()
        .map(|&kn| check_on(kn, m, k, n, ta, tb, spread, beta))
        .collect();
    for (kn, (_, c)) in kernels.iter().zip(&runs).skip(1) {
        let same = c
            .iter()
            .zip(&runs[0].1)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "{m}x{k}x{n} beta {beta}: {kn:?} differs from {:?}",
            kernels[0]
        );
    }
    runs.iter().map(|r| r.0).fold(0.0, f64::max)
}

/// [`check`] on one kernel; also returns `c`.
#[allow(clippy::too_many_arguments)]
fn check_on(
    kernel: Kernel,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    spread: usize,
    beta: f32,
) -> (f64, Vec<f32>) {
    let a = Strided::random(m, k, ta, spread, 1 + m as u64);
    let b = Strided::random(k, n, tb, spread, 2 + n as u64);
    let ldc = n + 3;
    let c0: Vec<f32> = (0..m * ldc).map(|i| (i % 7) as f32 - 3.0).collect();
    // beta = 0 must not read c: fill it with NaN, which would poison sums.
    let mut c = if beta == 0.0 {
        vec![f32::NAN; m * ldc]
    } else {
        c0.clone()
    };
    product(kernel, &a, &b, (m, k, n), beta, &mut c, ldc);
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut mag) = (beta as f64 * c0[i * ldc + j] as f64, 0.0);
            if beta == 0.0 {
                sum = 0.0;
            }
            for p in 0..k {
                sum += a.at(i, p) * b.at(p, j);
                mag += (a.at(i, p) * b.at(p, j)).abs();
            }
            let err = (c[i * ldc + j] as f64 - sum).abs() / (mag + 1.0);
            assert!(
                err.is_finite(),
                "({i}, {j}) is not finite: {}",
                c[i * ldc + j]
            );
            worst = worst.max(err);
        }
        // The padding columns of c past n are never written.
        for j in n..ldc {
            let expect = if beta == 0.0 {
                f32::NAN
            } else {
                c0[i * ldc + j]
            };
            let got = c[i * ldc + j];
            assert!(
                got.to_bits() == expect.to_bits(),
                "{kernel:?}: column {j} past n was written"
            );
        }
    }
    (worst, c)
}

fn skip() -> bool {
    if !available() {
        eprintln!("skipped: this CPU has neither AVX2 and FMA nor AVX-512; the sgemm is not used");
        return true;
    }
    false
}

#[test]
fn edge_tiles_and_small_products() {
    if skip() {
        return;
    }
    for &(m, k, n) in &[
        (1, 1, 1),
        (11, 3, 31),
        (12, 7, 32),
        (13, 5, 33),
        (25, 17, 65),
        (2, 40, 100),
    ] {
        let err = check(m, k, n, false, false, 1, 0.0);
        assert!(err < 1e-6, "{m}x{k}x{n}: {err}");
    }
}

/// Panels of 1–4 and 5–8 last rows, and of at most 16 last columns (one
/// vector of the AVX-512 kernel), run narrower kernels; every row count
/// mod 12, with partial columns (last panels of 20, 17, 16, 12 and 1
/// columns), overwriting and adding to `c`.
#[test]
fn last_row_panels_of_every_height() {
    if skip() {
        return;
    }
    for m in [3, 4, 5, 8, 9, 16, 20, 27, 64, 203] {
        for &(k, n) in &[(9, 20), (300, 64), (3, 17), (9, 48), (300, 44), (5, 33)] {
            for beta in [0.0, 1.0, 0.5] {
                let err = check(m, k, n, false, false, 1, beta);
                assert!(err < 1e-6, "{m}x{k}x{n} beta {beta}: {err}");
            }
        }
    }
}

#[test]
fn block_boundaries() {
    if skip() {
        return;
    }
    // k crosses KC, m crosses MC, n crosses NC (one at a time).
    for &(m, k, n) in &[
        (20, 2 * KC + 5, 40),
        (MC + MR + 1, 9, 35),
        (3, 6, NC + NR + 7),
    ] {
        let err = check(m, k, n, false, false, 1, 1.0);
        assert!(err < 1e-6, "{m}x{k}x{n}: {err}");
    }
}

#[test]
fn strided_and_transposed_operands() {
    if skip() {
        return;
    }
    for (ta, tb, spread) in [
        (true, false, 1),
        (false, true, 1),
        (true, true, 1),
        (false, false, 2),
        (true, true, 2),
    ] {
        let err = check(29, 300, 70, ta, tb, spread, 0.0);
        assert!(err < 1e-6, "ta {ta} tb {tb} spread {spread}: {err}");
    }
}

#[test]
fn beta_cases() {
    if skip() {
        return;
    }
    for beta in [0.0, 1.0, 0.5, -2.0] {
        let err = check(14, 33, 45, false, false, 1, beta);
        assert!(err < 1e-6, "beta {beta}: {err}");
    }
    // k = 0: c = beta · c.
    for beta in [0.0, 1.0, 0.5] {
        assert!(check(5, 0, 9, false, false, 1, beta) < 1e-7);
    }
}

#[test]
fn packed_left_operand_matches_the_unpacked_product_bit_for_bit() {
    if skip() {
        return;
    }
    // m crosses MC (a padded last row block), k crosses KC, a transposed.
    for &(m, k, n, ta) in &[
        (MC + 7, KC + 3, 45, false),
        (30, 2 * KC + 1, 33, true),
        (5, 9, 70, false),
    ] {
        let a = Strided::random(m, k, ta, 1, 7);
        let b = Strided::random(k, n, false, 1, 8);
        let (astr, bstr) = (
            (a.rs as isize, a.cs as isize),
            (b.rs as isize, b.cs as isize),
        );
        let packed = unsafe { PackedA::new(m, k, a.data.as_ptr(), astr) }.expect("packed");
        assert_eq!((packed.rows(), packed.cols()), (m, k));
        for (beta, kernel) in [0.0f32, 1.0]
            .into_iter()
            .flat_map(|beta| kernels_on_this_cpu().into_iter().map(move |kn| (beta, kn)))
        {
            let mut plain = vec![0.25f32; m * n];
            let mut from_packed = plain.clone();
            product(kernel, &a, &b, (m, k, n), beta, &mut plain, n);
            let (bp, cp) = (b.data.as_ptr(), from_packed.as_mut_ptr());
            // Safety: b holds k × n values, from_packed m × n.
            unsafe {
                strided_on(
                    kernel,
                    Lhs::Packed(&packed),
                    n,
                    bp,
                    bstr,
                    beta,
                    cp,
                    n as isize,
                )
            };
            // Same blocks, same kernel, same order: identical bits.
            assert!(
                plain
                    .iter()
                    .zip(&from_packed)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{k}x{n} beta {beta} {kernel:?}"
            );
        }
        // And right against the reference.
        assert!(check(m, k, n, ta, false, 1, 1.0) < 1e-6);
    }
}

/// A left operand in side-by-side blocks of columns (`Lhs::Planes`, a
/// weight gradient's `dY` over a tile of images) gives the bits of the
/// same matrix copied row-major first: blocks of 7, 49 and 196 columns
/// (KC blocks start and end inside them), 5 to `MC + 7` rows (partial row
/// panels), gaps between the blocks and between rows.
#[test]
fn planes_left_operand_matches_the_row_major_copy_bit_for_bit() {
    if skip() {
        return;
    }
    for &(m, cols, planes, n) in &[(5, 7, 40, 33), (MC + 7, 49, 11, 20), (24, 196, 3, 70)] {
        let (row_stride, plane_stride) = (cols + 3, m * (cols + 3) + 5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let data: Vec<f32> = (0..planes * plane_stride)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let k = cols * planes;
        let copy = Strided {
            data: (0..m * k)
                .map(|e| {
                    let (i, q) = (e / k, e % k);
                    data[q / cols * plane_stride + i * row_stride + q % cols]
                })
                .collect(),
            rs: k,
            cs: 1,
        };
        let b = Strided::random(k, n, false, 1, 12);
        for (beta, kernel) in [0.0f32, 1.0]
            .into_iter()
            .flat_map(|beta| kernels_on_this_cpu().into_iter().map(move |kn| (beta, kn)))
        {
            let mut want = vec![0.25f32; m * n];
            let mut got = want.clone();
            product(kernel, &copy, &b, (m, k, n), beta, &mut want, n);
            let lhs = Lhs::Planes {
                m,
                cols,
                planes,
                a: data.as_ptr(),
                row_stride: row_stride as isize,
                plane_stride: plane_stride as isize,
            };
            let (bp, cp) = (b.data.as_ptr(), got.as_mut_ptr());
            // Safety: the planes lie inside `data`, b holds k × n values,
            // got m × n.
            unsafe { strided_on(kernel, lhs, n, bp, (n as isize, 1), beta, cp, n as isize) };
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{cols}x{planes} beta {beta} {kernel:?}"
            );
        }
    }
}

/// A left operand packed block by block by the caller (`Lhs::Blocks`,
/// here with the strided packer) gives the bits of the strided product,
/// and (with `n` under one `NC` block) its packer sees every block of
/// `MC` rows and `KC` columns once, rows past the matrix's included in
/// the padded panels: 5 to `MC + 13` rows and depths across a `KC` block
/// boundary.
#[test]
fn caller_packed_left_operand_matches_the_strided_product_bit_for_bit() {
    if skip() {
        return;
    }
    for &(m, k, n) in &[(5, 7, 33), (MC + 13, KC + 9, 20), (36, 256, 32)] {
        let a = Strided::random(m, k, false, 1, 21);
        let b = Strided::random(k, n, false, 1, 22);
        for kernel in kernels_on_this_cpu() {
            let mut want = vec![0.5f32; m * n];
            let mut got = want.clone();
            product(kernel, &a, &b, (m, k, n), 1.0, &mut want, n);
            let blocks = std::cell::RefCell::new(Vec::new());
            let pack = |blk: &ABlock, out: &mut [f32]| {
                assert_eq!(out.len(), blk.mc.next_multiple_of(MR) * blk.kc);
                blocks.borrow_mut().push((blk.ic, blk.mc, blk.pc, blk.kc));
                // Safety: the block lies inside `a`; `out` holds its panels.
                unsafe {
                    let block = a.data.as_ptr().add(blk.ic * k + blk.pc);
                    pack::pack_a(
                        kernel,
                        blk.mc,
                        blk.kc,
                        block,
                        (k as isize, 1),
                        out.as_mut_ptr(),
                    )
                };
            };
            let lhs = Lhs::Blocks { m, k, pack: &pack };
            let (bp, cp) = (b.data.as_ptr(), got.as_mut_ptr());
            // Safety: b holds k × n values, got m × n.
            unsafe { strided_on(kernel, lhs, n, bp, (n as isize, 1), 1.0, cp, n as isize) };
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{k}x{n} {kernel:?}"
            );
            let mut seen = blocks.into_inner();
            seen.sort_unstable();
            let expected: Vec<_> = (0..m)
                .step_by(MC)
                .flat_map(|ic| (0..k).step_by(KC).map(move |pc| (ic, pc)))
                .map(|(ic, pc)| (ic, MC.min(m - ic), pc, KC.min(k - pc)))
                .collect();
            assert_eq!(seen, expected, "{m}x{k}x{n}");
        }
    }
}

#[test]
fn same_bits_as_matrixmultiply() {
    if skip() {
        return;
    }
    // Both sum each output over k in order, one FMA per term, in blocks of
    // 256 added to c in order: switching kernels changes no result.
    let shapes = [(13, 600, 70, 0.0f32), (40, 257, 33, 1.0), (7, 31, 5, 0.0)];
    for (&(m, k, n, beta), kernel) in shapes
        .iter()
        .flat_map(|s| kernels_on_this_cpu().into_iter().map(move |kn| (s, kn)))
    {
        let a = Strided::random(m, k, false, 1, 3);
        let b = Strided::random(k, n, true, 1, 4);
        let mut ours = vec![0.5f32; m * n];
        let mut theirs = ours.clone();
        product(kernel, &a, &b, (m, k, n), beta, &mut ours, n);
        unsafe {
            let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
            let (rsa, csa, rsb, csb) = (a.rs as isize, a.cs as isize, b.rs as isize, b.cs as isize);
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                ap,
                rsa,
                csa,
                bp,
                rsb,
                csb,
                beta,
                theirs.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        let same = ours
            .iter()
            .zip(&theirs)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{m}x{k}x{n} beta {beta} {kernel:?}");
    }
}

/// A product whose micro-panels of `b` leave out the zero steps that
/// their pattern names: the same bits as running every step (the left-out
/// terms are zeros), and the values of the f64 product. `b` has 9 steps
/// per channel (`k = 9·60`, past one depth block of 252); panel `p` of its
/// 100 columns (past `NR`, with a partial last panel) gets pattern `p %
/// 4`, and its columns are zeros at those taps; 30 rows of `a` (a partial
/// last row panel, which runs every step).
#[test]
fn skipping_product_leaves_out_zero_steps() {
    if skip() || !Kernel::Avx512.cpu_has() {
        return;
    }
    let (m, k, n) = (30, 9 * 60, 100);
    let patterns = [Skip::None, Skip::TopRow, Skip::LeftColumn, Skip::Corner];
    let pattern = |col: usize| patterns[col / NR % 4];
    let a = Strided::random(m, k, false, 1, 91);
    let mut b = Strided::random(k, n, false, 1, 92);
    for p in 0..k {
        for j in 0..n {
            if pattern(j).taps() >> (p % 9) & 1 == 1 {
                b.data[p * n + j] = 0.0;
            }
        }
    }
    let run = |skip: &dyn Fn(usize) -> Skip| {
        let mut c = vec![f32::NAN; m * n];
        let lhs = Lhs::Strided {
            m,
            k,
            a: a.data.as_ptr(),
            strides: (k as isize, 1),
        };
        // Safety: AVX-512 (checked); a and b hold their elements, c holds
        // m × n; the panels' patterns name zeros of b.
        unsafe {
            let pack = strided_b(Kernel::Avx512, b.data.as_ptr(), (n as isize, 1));
            sgemm_skipping(
                Kernel::Avx512,
                lhs,
                n,
                pack,
                skip,
                c.as_mut_ptr(),
                n as isize,
            )
        };
        c
    };
    let (skipped, every) = (run(&pattern), run(&|_| Skip::None));
    assert!(skipped == every, "leaving out zero steps changed the bits");
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|p| a.at(i, p) * b.at(p, j)).sum();
            let got = skipped[i * n + j] as f64;
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "c[{i}][{j}] {got} vs {want}"
            );
        }
    }
}

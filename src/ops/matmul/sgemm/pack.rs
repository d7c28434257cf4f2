//! The packing routines of the sgemm: blocks of `a` into [`MR`]-row
//! micro-panels, panels of `b` into [`NR`]-column micro-panels, and the
//! register transposes (16 × 16 in AVX-512, 8 × 8 in AVX) both use when
//! the operand's runs lie across the panel.

use super::{Kernel, MR, NR};
use std::arch::x86_64::*;

/// Packs an `mc × kc` block of `a` into micro-panels of [`MR`] rows, each
/// `[k][MR]`, rows past `mc` zero (so the kernel's loop has no edge case).
/// Reads along rows when `a` is row-major and along columns when it is a
/// transposed view (`rsa == 1`), so the reads are contiguous either way.
pub(super) unsafe fn pack_a(
    kernel: Kernel,
    mc: usize,
    kc: usize,
    a: *const f32,
    (rsa, csa): (isize, isize),
    out: *mut f32,
) {
    if rsa == 1 && csa != 1 {
        // Safety: the caller's contract.
        unsafe { pack_a_by_columns(mc, kc, a, csa, out) };
        return;
    }
    for ib in (0..mc).step_by(MR) {
        let rows = MR.min(mc - ib);
        let panel = unsafe { out.add(ib * kc) };
        let src = unsafe { a.offset(ib as isize * rsa) };
        if rows == MR && csa == 1 {
            // A full panel of a row-major block: its rows are runs along k.
            // Safety: the MR rows' kc values lie inside `a`; the panel
            // holds kc × MR values.
            unsafe { pack_runs::<MR>(kernel, kc, |i| src.offset(i as isize * rsa), panel) };
        } else {
            for i in 0..MR {
                // Rows past the block are zeros; their addresses would lie
                // outside `a`, so they are never formed.
                if i >= rows {
                    (0..kc).for_each(|p| unsafe { *panel.add(p * MR + i) = 0.0 });
                    continue;
                }
                let row = unsafe { src.offset(i as isize * rsa) };
                for p in 0..kc {
                    unsafe { *panel.add(p * MR + i) = *row.offset(p as isize * csa) };
                }
            }
        }
    }
}

/// [`pack_a`] for a block whose columns are contiguous (`a`'s row stride
/// 1, column stride `csa`, e.g. a transposed view): column by column, each
/// one read whole (`mc` values in a row) and cut into the panels' steps.
/// Walking a panel's `MR` values down `kc` columns instead read one cache
/// line per `csa` apart, a stride the prefetchers do not follow: 6.6 % of
/// ResNet-50's 512→2048 1×1 input gradient at 7² (`perf`), its `Wᵀ` read
/// in place.
///
/// # Safety
/// The block's `mc × kc` elements lie inside `a`; `out` holds the
/// block's panels (`mc` rounded up to [`MR`], × `kc`).
unsafe fn pack_a_by_columns(mc: usize, kc: usize, a: *const f32, csa: isize, out: *mut f32) {
    for p in 0..kc {
        // Safety: column p's mc values lie inside `a`.
        let col = unsafe { std::slice::from_raw_parts(a.offset(p as isize * csa), mc) };
        for (ib, rows) in col.chunks(MR).enumerate() {
            // Safety: step p of panel ib, MR values inside `out`.
            let step = unsafe { &mut *out.add((ib * kc + p) * MR).cast::<[f32; MR]>() };
            match <&[f32; MR]>::try_from(rows) {
                Ok(full) => *step = *full, // a fixed-size copy, inlined
                Err(_) => {
                    step.fill(0.0);
                    step[..rows.len()].copy_from_slice(rows);
                }
            }
        }
    }
}

/// A left operand in side-by-side blocks of columns (see
/// [`Lhs::Planes`](super::Lhs::Planes)), from its first row to pack.
pub(super) struct Planes {
    pub(super) a: *const f32,
    pub(super) cols: usize,
    pub(super) row_stride: isize,
    pub(super) plane_stride: isize,
}

/// [`pack_a`] for an operand in blocks of columns: the `mc × kc` block of
/// rows `0..mc` (from `planes.a`), columns `pc..pc + kc`, cut at the
/// blocks' edges into runs of contiguous columns, each transposed into
/// its steps of the panels as [`pack_runs`] does for a row-major block.
///
/// # Safety
/// The CPU runs `kernel`; the block's elements lie inside live buffers;
/// `out` holds the block's panels (`mc` rounded up to [`MR`], × `kc`).
pub(super) unsafe fn pack_a_planes(
    kernel: Kernel,
    mc: usize,
    (pc, kc): (usize, usize),
    planes: Planes,
    out: *mut f32,
) {
    let Planes {
        a,
        cols,
        row_stride,
        plane_stride,
    } = planes;
    for ib in (0..mc).step_by(MR) {
        let rows = MR.min(mc - ib);
        let mut q = pc;
        while q < pc + kc {
            let (plane, col) = (q / cols, q % cols);
            let len = (cols - col).min(pc + kc - q);
            // Row ib + i of the run, and where its steps go in the panel.
            let run = |i: usize| unsafe {
                a.offset(
                    (ib + i) as isize * row_stride + plane as isize * plane_stride + col as isize,
                )
            };
            let steps = unsafe { out.add(ib * kc + (q - pc) * MR) };
            if rows == MR {
                // Safety: MR rows of len values each, and the panel's
                // len steps of MR values.
                unsafe { pack_runs::<MR>(kernel, len, run, steps) };
            } else {
                for p in 0..len {
                    for i in 0..MR {
                        // Rows past the block are zeros, their addresses
                        // never formed.
                        let v = if i < rows {
                            unsafe { *run(i).add(p) }
                        } else {
                            0.0
                        };
                        unsafe { *steps.add(p * MR + i) = v };
                    }
                }
            }
            q += len;
        }
    }
}

/// Packs `W` (12 or 32) runs of `kc` contiguous values into one
/// micro-panel `[k][W]`: `panel[p·W + i] = run(i)[p]`, the transposition
/// both packings need when the operand's rows (of `a`) or columns (of a
/// transposed `b`) are contiguous. Blocks of runs × steps are transposed
/// in registers (16 × 16 on AVX-512, 8 × 8 on AVX2); element by element,
/// the writes land `W` values apart, which measured 15-20 % of a Winograd
/// weight gradient.
///
/// # Safety
/// The CPU runs `kernel`; each `run(i)`, `i < W`, points at `kc` readable
/// values; `panel` holds `kc × W` writable values.
pub(crate) unsafe fn pack_runs<const W: usize>(
    kernel: Kernel,
    kc: usize,
    run: impl Fn(usize) -> *const f32,
    panel: *mut f32,
) {
    // Safety: the caller's contract.
    unsafe {
        match kernel {
            Kernel::Avx512 => pack_runs_avx512::<W>(kc, run, panel),
            Kernel::Avx2 => pack_runs_avx2::<W>(kc, run, panel),
        }
    }
}

/// [`pack_runs`] with 16 × 16 transposes.
///
/// # Safety
/// AVX-512F, and as [`pack_runs`].
#[target_feature(enable = "avx512f")]
unsafe fn pack_runs_avx512<const W: usize>(
    kc: usize,
    run: impl Fn(usize) -> *const f32,
    panel: *mut f32,
) {
    let mut p0 = 0;
    while p0 + 16 <= kc {
        for i0 in (0..W).step_by(16) {
            let width = 16.min(W - i0);
            // Safety: steps p0..p0 + 16 of runs i0..i0 + width are readable.
            let rows: [__m512; 16] = std::array::from_fn(|i| {
                if i < width {
                    unsafe { _mm512_loadu_ps(run(i0 + i).add(p0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let mask = ((1u32 << width) - 1) as __mmask16;
            for (q, step) in transpose16(rows).into_iter().enumerate() {
                // Safety: values i0..i0 + width of step p0 + q of the panel.
                unsafe { _mm512_mask_storeu_ps(panel.add((p0 + q) * W + i0), mask, step) };
            }
        }
        p0 += 16;
    }
    for p in p0..kc {
        for i in 0..W {
            // Safety: as above, for the last steps.
            unsafe { *panel.add(p * W + i) = *run(i).add(p) };
        }
    }
}

/// The transpose of the 16 × 16 block whose rows are `r`: element `i` of
/// result `c` is element `c` of `r[i]`. Pairs of rows are interleaved
/// (4 × 4 blocks within each 128-bit lane), then the lanes are gathered
/// across the four groups of four rows: 64 shuffles.
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + j]: column j (and j + 4, j + 8, j + 12, one per lane) of rows
    // 4g .. 4g + 4.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, j) = (i / 4, i % 4);
        let (lo, hi) = (t[4 * g + j / 2], t[4 * g + 2 + j / 2]);
        if j % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(lo, hi)
        } else {
            _mm512_shuffle_ps::<0xEE>(lo, hi)
        }
    });
    let mut out = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        let v3 = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
        out[j] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        out[8 + j] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
        out[4 + j] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        out[12 + j] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
    }
    out
}

/// [`pack_runs`] with 8 × 8 transposes.
///
/// # Safety
/// AVX2, and as [`pack_runs`].
#[target_feature(enable = "avx2")]
unsafe fn pack_runs_avx2<const W: usize>(
    kc: usize,
    run: impl Fn(usize) -> *const f32,
    panel: *mut f32,
) {
    let mut p0 = 0;
    while p0 + 8 <= kc {
        for i0 in (0..W).step_by(8) {
            let width = 8.min(W - i0);
            // Safety: steps p0..p0 + 8 of runs i0..i0 + width are readable.
            let rows: [__m256; 8] = std::array::from_fn(|i| {
                if i < width {
                    unsafe { _mm256_loadu_ps(run(i0 + i).add(p0)) }
                } else {
                    _mm256_setzero_ps()
                }
            });
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(width as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            for (q, step) in transpose8(rows).into_iter().enumerate() {
                // Safety: values i0..i0 + width of step p0 + q of the panel.
                // Plain stores where whole vectors or halves fit: AMD's
                // cores run AVX2's masked store as a slow microcode
                // sequence (it took 30 % of a CIFAR stride-2 weight
                // gradient's time on an EPYC).
                unsafe {
                    let at = panel.add((p0 + q) * W + i0);
                    match width {
                        8 => _mm256_storeu_ps(at, step),
                        4 => _mm_storeu_ps(at, _mm256_castps256_ps128(step)),
                        _ => _mm256_maskstore_ps(at, mask, step),
                    }
                }
            }
        }
        p0 += 8;
    }
    for p in p0..kc {
        for i in 0..W {
            // Safety: as above, for the last steps.
            unsafe { *panel.add(p * W + i) = *run(i).add(p) };
        }
    }
}

/// The transpose of the 8 × 8 block whose rows are `r`: element `i` of
/// result `c` is element `c` of `r[i]`. Pairs of rows are interleaved,
/// then pairs of pairs (4 × 4 blocks within each 128-bit lane), then the
/// lanes are exchanged: 24 shuffles.
#[target_feature(enable = "avx2")]
pub(crate) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // u[4g + j], lane half h: column j + 4h of rows 4g .. 4g + 4.
    let u: [__m256; 8] = std::array::from_fn(|i| {
        let (g, j) = (i / 4, i % 4);
        let (lo, hi) = (t[4 * g + j / 2], t[4 * g + 2 + j / 2]);
        if j % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(lo, hi)
        } else {
            _mm256_shuffle_ps::<0xEE>(lo, hi)
        }
    });
    std::array::from_fn(|c| {
        let (j, h) = (c % 4, c / 4);
        if h == 0 {
            _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j])
        } else {
            _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j])
        }
    })
}

/// Packs a `kc × nc` panel of `b` into micro-panels of [`NR`] columns,
/// each `[k][NR]`, columns past `nc` zero. Reads rows contiguously when
/// `b` is row-major and columns contiguously when it is a transposed view.
pub(super) unsafe fn pack_b(
    kernel: Kernel,
    kc: usize,
    nc: usize,
    b: *const f32,
    (rsb, csb): (isize, isize),
    out: *mut f32,
) {
    for jb in (0..nc).step_by(NR) {
        let cols = NR.min(nc - jb);
        let panel = unsafe { out.add(jb * kc) };
        let src = unsafe { b.offset(jb as isize * csb) };
        if rsb == 1 && csb != 1 && cols == NR {
            // A full panel of a transposed view (a weight gradient's
            // `colᵀ`): its columns are runs along k.
            // Safety: the NR columns' kc values lie inside `b`; the panel
            // holds kc × NR values.
            unsafe { pack_runs::<NR>(kernel, kc, |j| src.offset(j as isize * csb), panel) };
        } else if csb == 1 && cols == NR {
            for p in 0..kc {
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.offset(p as isize * rsb),
                        panel.add(p * NR),
                        NR,
                    )
                };
            }
        } else {
            for j in 0..NR {
                // Columns past the panel are zeros, their addresses never
                // formed (they would lie outside `b`).
                if j >= cols {
                    (0..kc).for_each(|p| unsafe { *panel.add(p * NR + j) = 0.0 });
                    continue;
                }
                let col = unsafe { src.offset(j as isize * csb) };
                for p in 0..kc {
                    unsafe { *panel.add(p * NR + j) = *col.offset(p as isize * rsb) };
                }
            }
        }
    }
}

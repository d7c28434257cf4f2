//! The packing routines of the AVX-512 sgemm: blocks of `a` into
//! [`MR`]-row micro-panels, panels of `b` into [`NR`]-column micro-panels,
//! and the 16 × 16 register transpose both use when the operand's runs
//! lie across the panel.

use super::{MR, NR};
use std::arch::x86_64::*;

/// Packs an `mc × kc` block of `a` into micro-panels of [`MR`] rows, each
/// `[k][MR]`, rows past `mc` zero (so the kernel's loop has no edge case).
/// Reads along rows when `a` is row-major and along columns when it is a
/// transposed view (`rsa == 1`), so the reads are contiguous either way.
pub(super) unsafe fn pack_a(
    mc: usize,
    kc: usize,
    a: *const f32,
    (rsa, csa): (isize, isize),
    out: *mut f32,
) {
    for ib in (0..mc).step_by(MR) {
        let rows = MR.min(mc - ib);
        let panel = unsafe { out.add(ib * kc) };
        let src = unsafe { a.offset(ib as isize * rsa) };
        if rsa == 1 && csa != 1 {
            for p in 0..kc {
                let col = unsafe { src.offset(p as isize * csa) };
                for i in 0..MR {
                    let v = if i < rows {
                        unsafe { *col.add(i) }
                    } else {
                        0.0
                    };
                    unsafe { *panel.add(p * MR + i) = v };
                }
            }
        } else if rows == MR && csa == 1 {
            // A full panel of a row-major block: its rows are runs along k.
            // Safety: the MR rows' kc values lie inside `a`; the panel
            // holds kc × MR values.
            unsafe { pack_runs::<MR>(kc, |i| src.offset(i as isize * rsa), panel) };
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

/// Packs `W` (12 or 32) runs of `kc` contiguous values into one
/// micro-panel `[k][W]`: `panel[p·W + i] = run(i)[p]`, the transposition
/// both packings need when the operand's rows (of `a`) or columns (of a
/// transposed `b`) are contiguous. Blocks of 16 runs × 16 steps are
/// transposed in registers; element by element, the writes land `W`
/// values apart, which measured 15-20 % of a Winograd weight gradient.
///
/// # Safety
/// AVX-512F; each `run(i)`, `i < W`, points at `kc` readable values;
/// `panel` holds `kc × W` writable values.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_runs<const W: usize>(
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
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
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

/// Packs a `kc × nc` panel of `b` into micro-panels of [`NR`] columns,
/// each `[k][NR]`, columns past `nc` zero. Reads rows contiguously when
/// `b` is row-major and columns contiguously when it is a transposed view.
pub(super) unsafe fn pack_b(
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
            unsafe { pack_runs::<NR>(kc, |j| src.offset(j as isize * csb), panel) };
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

//! Winograd's transformed weights `U = G g Gᵀ` written straight into the
//! packed layout of ferrite's sgemm (`PackedA`), on AVX-512 or AVX2.

use super::avx512::first_lanes;
use crate::ops::conv::geom::ConvGeom;
use crate::ops::matmul::sgemm::{Kernel, PackedA, Panel, MR};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// `U = G g Gᵀ` for every (output, input) channel pair of `w` (O×C×3×3),
/// written straight into the GEMM's packed layout: the 16 O × C matrices
/// that [`super::weights::transform_weights`] computes, as [`PackedA::new`] would
/// pack them (same values, same bits), without the unpacked copy in
/// between. `None` when the memory cannot be reserved, or when `w` is too
/// large for the gathers' 32-bit offsets.
///
/// `flipped`: instead, the matrices of the input gradient's kernel, `w`
/// with its taps reversed and its channel axes swapped (16 C × O
/// matrices). Reversing a kernel row reverses the rows of `G g`
/// (`G·rev(g)` is `G g` with rows 0 and 3 swapped), so these are the
/// matrices of `w` transposed, matrix `4i + j` moved to `4p(i) + p(j)`
/// with `p` = (3, 1, 2, 0). (The middle rows then sum the taps in the
/// other order, so the bits may differ from transforming the flipped
/// kernel.)
///
/// Each micro-panel (`MR` rows, up to `KC` columns) takes 16 columns at a
/// time: their kernels are gathered tap by tap into 9 arrays, transformed
/// as whole arrays (as the portable transform does), and written `MR`
/// apart through a block small enough for L1. The body is compiled once
/// per vector set the sgemm has a kernel for (`kernel`).
pub(super) fn packed_weights(
    kernel: Kernel,
    w: &[f32],
    g: &ConvGeom,
    flipped: bool,
) -> Option<Vec<PackedA>> {
    let (o_n, c_n) = (g.c_out, g.c_in);
    let (rows, cols, column_stride) = if flipped {
        (c_n, o_n, 9 * c_n)
    } else {
        (o_n, c_n, 9)
    };
    i32::try_from(column_stride * STEP).ok()?;
    assert!(kernel.cpu_has());
    // Safety: the fills write all `depth × MR` values of each of the 16
    // slices (every (column, row) of the panel's block, zeros for the rows
    // past `panel.rows` included), and the CPU runs `kernel` (asserted).
    unsafe {
        PackedA::from_panels(super::POS, rows, cols, |panel, outs| {
            match (kernel, flipped) {
                (Kernel::Avx512, false) => fill_panel_avx512::<false>(w, c_n, panel, outs),
                (Kernel::Avx512, true) => fill_panel_avx512::<true>(w, c_n, panel, outs),
                (Kernel::Avx2, false) => fill_panel_avx2::<false>(w, c_n, panel, outs),
                (Kernel::Avx2, true) => fill_panel_avx2::<true>(w, c_n, panel, outs),
            }
        })
    }
}

/// [`fill_panel`] in AVX-512, taps split with gathers.
///
/// # Safety
/// AVX-512F; as [`fill_panel`].
#[target_feature(enable = "avx512f")]
unsafe fn fill_panel_avx512<const FLIPPED: bool>(
    w: &[f32],
    c_n: usize,
    panel: &Panel,
    outs: &mut [&mut [MaybeUninit<f32>]],
) {
    // Safety: AVX-512F; the caller's contract for the rest.
    let split = |k: &[f32], stride, count, taps: &mut _| unsafe {
        split_taps_avx512(k, stride, count, taps)
    };
    fill_panel::<FLIPPED>(w, c_n, panel, outs, split)
}

/// [`fill_panel`] in AVX2.
///
/// # Safety
/// AVX2 and FMA; as [`fill_panel`].
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_panel_avx2<const FLIPPED: bool>(
    w: &[f32],
    c_n: usize,
    panel: &Panel,
    outs: &mut [&mut [MaybeUninit<f32>]],
) {
    fill_panel::<FLIPPED>(w, c_n, panel, outs, split_taps)
}

/// One micro-panel of [`packed_weights`] (`FLIPPED`: of the input
/// gradient's matrices), for `w` with `c_n` input channels, with
/// `split_taps` as [`split_taps`] computes it. Inlined into the callers,
/// which compile it for their vector set.
///
/// Panics unless the panel lies inside the packed matrices of `w`.
#[inline(always)]
fn fill_panel<const FLIPPED: bool>(
    w: &[f32],
    c_n: usize,
    panel: &Panel,
    outs: &mut [&mut [MaybeUninit<f32>]],
    split_taps: impl Fn(&[f32], usize, usize, &mut [[f32; STEP]; 9]),
) {
    // Where the kernel of (row, column) starts, how far apart consecutive
    // columns' kernels lie, and where matrix e of `w` goes.
    let kernel_at = |row: usize, col: usize| {
        if FLIPPED {
            (col * c_n + row) * 9
        } else {
            (row * c_n + col) * 9
        }
    };
    let column_stride = if FLIPPED { 9 * c_n } else { 9 };
    const REVERSED: [usize; 4] = [3, 1, 2, 0];
    let place: [usize; 16] = std::array::from_fn(|e| {
        if FLIPPED {
            4 * REVERSED[e / 4] + REVERSED[e % 4]
        } else {
            e
        }
    });
    for cb in (0..panel.depth).step_by(STEP) {
        let nc = STEP.min(panel.depth - cb);
        let mut block = [[[0f32; STEP]; super::POS]; MR]; // [row][e][column]
        for (r, matrices) in block.iter_mut().enumerate().take(panel.rows) {
            let first = kernel_at(panel.row + r, panel.col + cb);
            let kernels = &w[first..first + (nc - 1) * column_stride + 9];
            let mut taps = [[0f32; STEP]; 9];
            // The slice holds the nc kernels, column_stride apart, and
            // column_stride · STEP fits in an i32 (`packed_weights`).
            split_taps(kernels, column_stride, nc, &mut taps);
            // G g: four rows of three columns b (taps b, 3 + b, 6 + b).
            let gg: [[[f32; STEP]; 3]; 4] = {
                let cols: [[[f32; STEP]; 4]; 3] =
                    std::array::from_fn(|b| g_rows(&taps[b], &taps[3 + b], &taps[6 + b]));
                std::array::from_fn(|i| [cols[0][i], cols[1][i], cols[2][i]])
            };
            // (G g) Gᵀ: row i gives matrices 4i .. 4i + 4.
            for (i, [c0, c1, c2]) in gg.iter().enumerate() {
                for (j, u) in g_rows(c0, c1, c2).into_iter().enumerate() {
                    matrices[place[4 * i + j]] = u;
                }
            }
        }
        // Rows side by side: [column][row], the packed order.
        for (e, out) in outs.iter_mut().enumerate() {
            let dst = &mut out[cb * MR..(cb + nc) * MR];
            for (q, d) in dst.chunks_exact_mut(MR).enumerate() {
                for (v, matrices) in d.iter_mut().zip(&block) {
                    v.write(matrices[e][q]);
                }
            }
        }
    }
}

/// The 9 taps of `count` (at most [`STEP`]) 3×3 kernels that start
/// `stride` values apart in `kernels`, tap by tap: `taps[t][q]` = tap `t`
/// of kernel `q`, 0 past the last kernel.
#[inline(always)]
fn split_taps(kernels: &[f32], stride: usize, count: usize, taps: &mut [[f32; STEP]; 9]) {
    for (q, kernel) in kernels.chunks(stride).take(count).enumerate() {
        for (tap, &v) in taps.iter_mut().zip(&kernel[..9]) {
            tap[q] = v;
        }
    }
    for tap in taps.iter_mut() {
        tap[count..].fill(0.0);
    }
}

/// [`split_taps`] with one AVX-512 gather per tap.
///
/// # Safety
/// AVX-512F; `kernels` holds `(count − 1)·stride + 9` values and
/// `stride · STEP` fits in an i32.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn split_taps_avx512(
    kernels: &[f32],
    stride: usize,
    count: usize,
    taps: &mut [[f32; STEP]; 9],
) {
    let index = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(stride as i32),
    );
    let lanes = first_lanes(count);
    for (t, tap) in taps.iter_mut().enumerate() {
        // Safety: lane q reads kernels[stride·q + t], inside the slice for
        // the lanes q < count that the mask keeps; the store writes 16 f32.
        unsafe {
            let v = _mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                lanes,
                index,
                kernels.as_ptr().wrapping_add(t),
            );
            _mm512_storeu_ps(tap.as_mut_ptr(), v);
        }
    }
}

/// Input channels a weight-transform step takes at once.
const STEP: usize = 16;

/// The four rows of `G` applied to three arrays of taps, element by
/// element: `(a, (a + b + c)/2, (a − b + c)/2, c)`, as [`super::weights::g_row`].
#[inline(always)]
fn g_rows(a: &[f32; STEP], b: &[f32; STEP], c: &[f32; STEP]) -> [[f32; STEP]; 4] {
    let mut out = [*a, [0.0; STEP], [0.0; STEP], *c];
    for q in 0..STEP {
        out[1][q] = (a[q] + b[q] + c[q]) * 0.5;
        out[2][q] = (a[q] - b[q] + c[q]) * 0.5;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::Conv2dParams;
    use crate::ops::matmul::sgemm::kernels_on_this_cpu;

    #[test]
    fn every_kernel_packs_the_same_bits() {
        // Channel counts off the blocks: rows past one 192-row block and
        // not a multiple of 12, columns past one 256-deep block and not a
        // multiple of 16; both orientations.
        for (o, c) in [(20, 13), (200, 300), (7, 33)] {
            let g = ConvGeom::new([1, c, 5, 5], [o, c, 3, 3], &Conv2dParams::default()).unwrap();
            let w: Vec<f32> = (0..o * c * 9)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            for flipped in [false, true] {
                let packs: Vec<Vec<PackedA>> = kernels_on_this_cpu()
                    .into_iter()
                    .map(|k| packed_weights(k, &w, &g, flipped).expect("memory"))
                    .collect();
                for other in &packs[1..] {
                    for (e, (a, b)) in packs[0].iter().zip(other).enumerate() {
                        let same = a
                            .values()
                            .iter()
                            .zip(b.values())
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{o}x{c} flipped {flipped}: matrix {e} differs");
                    }
                }
            }
        }
    }
}

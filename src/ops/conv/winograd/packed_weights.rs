//! Winograd's transformed weights `U = G g Gᵀ` written straight into the
//! packed layout of ferrite's sgemm (`PackedA`), with AVX2 gathers.

use super::avx2::first_lanes;
use crate::backend::cpu::simd::VectorIsa;
use crate::ops::conv::geom::ConvGeom;
use crate::ops::matmul::sgemm::{PackedA, Panel, MR};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// `U = G g Gᵀ` for every (output, input) channel pair of `w` (O×C×3×3),
/// written straight into the GEMM's packed layout: the 16 O × C matrices
/// that [`super::weights::transform_weights`] computes, as [`PackedA::new`]
/// would pack them (same values, same bits), without the unpacked copy in
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
/// The packed layout keeps, for each column of a micro-panel, its `MR`
/// rows side by side, so the vectors run along the rows: for each column
/// the rows' kernels are gathered tap by tap into vectors (one kernel per
/// lane), transformed lane-wise, and each of the 16 results is stored as
/// that column's `MR` packed values, with no transpose in between.
/// Unflipped, a column's kernels lie `9·C` values apart and each row's
/// follow each other along the columns (`MR` streams); flipped, a
/// column's kernels lie together and the columns `9·C` apart. Neither
/// pattern is one the hardware prefetchers follow, so [`fill_panel`]
/// prefetches. (Running the vectors along the columns instead, as an
/// earlier version did, needed a scalar `MR × 16` transpose per matrix:
/// 4–5 ms per call for ResNet-18's 512 × 512 layer on one thread, `perf`;
/// this takes about 2, most of it the 26 MB read and written.) The
/// gathers are AVX2's: `None` on a CPU without AVX2 and FMA.
pub(super) fn packed_weights(w: &[f32], g: &ConvGeom, flipped: bool) -> Option<Vec<PackedA>> {
    let (o_n, c_n) = (g.c_out, g.c_in);
    let (rows, cols, row_stride) = if flipped {
        (c_n, o_n, 9)
    } else {
        (o_n, c_n, 9 * c_n)
    };
    i32::try_from(row_stride * MR).ok()?;
    if !VectorIsa::Avx2.cpu_has() {
        return None;
    }
    // Safety: the fills write all `depth × MR` values of each of the 16
    // slices (every (column, row) of the panel's block, zeros for the rows
    // past `panel.rows` included), and the CPU has AVX2 and FMA (checked
    // above).
    unsafe {
        PackedA::from_panels(super::POS, rows, cols, |panel, outs| {
            if flipped {
                fill_panel::<true>(w, c_n, panel, outs)
            } else {
                fill_panel::<false>(w, c_n, panel, outs)
            }
        })
    }
}

/// Rows of a micro-panel that one gather covers: its `MR` = 12 rows are
/// two vectors, rows 0–7 and rows 8–11 (the second vector's upper half
/// unused). Both are written for every panel, zeros past its rows.
const HALF: usize = 8;
const _: () = assert!(MR == HALF + 4);

/// How many columns ahead [`fill_panel`] prefetches kernels. Neither
/// orientation's reads are found by the hardware prefetchers (the
/// flipped columns lie 9·C values apart; the others are 12 streams, one
/// per row): on ResNet-18's 512-channel layer (one thread, AVX-512) the
/// prefetches took the forward from 15.0–16.9 to 13.3–13.9 ms and the
/// input gradient from 18.2–19.0 to 13.4–14.4 ms. 4 and 16 measured
/// level with 8.
const PREFETCH_COLUMNS: usize = 8;

/// One micro-panel of [`packed_weights`] (`FLIPPED`: of the input
/// gradient's matrices), for `w` with `c_n` input channels.
///
/// Panics unless the panel lies inside the packed matrices of `w`.
///
/// # Safety
/// AVX2 and FMA; `outs` holds 16 slices of `panel.depth × MR` values, and
/// `MR · (row stride)` fits in an i32 (`packed_weights`).
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_panel<const FLIPPED: bool>(
    w: &[f32],
    c_n: usize,
    panel: &Panel,
    outs: &mut [&mut [MaybeUninit<f32>]],
) {
    // Where the kernel of (row, column) starts, and how far apart
    // consecutive rows' kernels lie.
    let kernel_at = |row: usize, col: usize| {
        if FLIPPED {
            (col * c_n + row) * 9
        } else {
            (row * c_n + col) * 9
        }
    };
    let row_stride = if FLIPPED { 9 } else { 9 * c_n } as i32;
    const REVERSED: [usize; 4] = [3, 1, 2, 0];
    let place: [usize; 16] = std::array::from_fn(|e| {
        if FLIPPED {
            4 * REVERSED[e / 4] + REVERSED[e % 4]
        } else {
            e
        }
    });
    if panel.rows == 0 || panel.depth == 0 {
        return;
    }
    // Both offsets grow with the row and the column: the last kernel of
    // the panel's block ends last.
    let last = kernel_at(panel.row + panel.rows - 1, panel.col + panel.depth - 1);
    assert!(last + 9 <= w.len() && outs.len() == 16);
    assert!(outs.iter().all(|o| o.len() >= panel.depth * MR));
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let index = [
        _mm256_mullo_epi32(lane, _mm256_set1_epi32(row_stride)),
        _mm256_mullo_epi32(
            _mm256_add_epi32(lane, _mm256_set1_epi32(HALF as i32)),
            _mm256_set1_epi32(row_stride),
        ),
    ];
    let rows_in = |h: usize| panel.rows.saturating_sub(h * HALF).min(HALF);
    let mask = [0, 1].map(|h| _mm256_castsi256_ps(first_lanes(rows_in(h))));
    let half = _mm256_set1_ps(0.5);
    // Row i of G on three vectors, as `super::weights::g_row`.
    let g_rows = |a: __m256, b: __m256, c: __m256| {
        [
            a,
            _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(a, b), c), half),
            _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(a, b), c), half),
            c,
        ]
    };
    for q in 0..panel.depth {
        let first = kernel_at(panel.row, panel.col + q);
        if q + PREFETCH_COLUMNS < panel.depth {
            // Fetch a later column's kernels ahead: the flipped ones lie
            // together (MR·9 values, a few lines), the others one per row.
            let ahead = |row: usize| {
                let at = kernel_at(panel.row + row, panel.col + q + PREFETCH_COLUMNS);
                w.as_ptr().wrapping_add(at)
            };
            if FLIPPED {
                for line in (0..MR * 9).step_by(16) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead(0).wrapping_add(line).cast::<i8>());
                }
            } else {
                for r in 0..panel.rows {
                    _mm_prefetch::<_MM_HINT_T0>(ahead(r).cast::<i8>());
                }
            }
        }
        for h in 0..2 {
            // Tap t of the half's rows; zeros in the lanes past the panel.
            let taps: [__m256; 9] = std::array::from_fn(|t| {
                // Safety: lane l reads w[kernel_at(row + 8h + l, col + q)
                // + t] for the rows inside the panel (the mask), at most
                // `last + 8` (asserted inside `w`).
                unsafe {
                    _mm256_mask_i32gather_ps::<4>(
                        _mm256_setzero_ps(),
                        w.as_ptr().add(first + t),
                        index[h],
                        mask[h],
                    )
                }
            });
            // G g: four rows of three columns b (taps b, 3 + b, 6 + b).
            let cols: [[__m256; 4]; 3] =
                std::array::from_fn(|b| g_rows(taps[b], taps[3 + b], taps[6 + b]));
            // (G g) Gᵀ: row i gives matrices 4i .. 4i + 4.
            for i in 0..4 {
                for (j, u) in g_rows(cols[0][i], cols[1][i], cols[2][i])
                    .into_iter()
                    .enumerate()
                {
                    let dst = outs[place[4 * i + j]][q * MR + h * HALF..].as_mut_ptr();
                    // Safety: the column's MR values lie inside the slice
                    // (asserted); the first half stores 8 of them, the
                    // second the other 4 (its lower half).
                    unsafe {
                        let dst = dst.cast::<f32>();
                        if h == 0 {
                            _mm256_storeu_ps(dst, u);
                        } else {
                            _mm_storeu_ps(dst, _mm256_castps256_ps128(u));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::winograd::weights::transform_weights;
    use crate::ops::conv::Conv2dParams;
    use crate::ops::matmul::sgemm;

    #[test]
    fn packs_the_bits_of_the_portable_transform() {
        if !(sgemm::available() && VectorIsa::Avx2.cpu_has()) {
            return;
        }
        // Channel counts off the blocks: rows past one 192-row block and
        // not a multiple of 12 (a last panel of 8 rows and of 1 row),
        // columns past one 256-deep block; both orientations.
        for (o, c) in [(20, 13), (200, 300), (7, 33), (13, 5)] {
            let g = ConvGeom::new([1, c, 5, 5], [o, c, 3, 3], &Conv2dParams::default()).unwrap();
            let w: Vec<f32> = (0..o * c * 9)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            // The portable transform: 16 O × C matrices.
            let u = transform_weights(&w, &g).unwrap();
            for flipped in [false, true] {
                // Matrix m of the flipped set is matrix p(m) transposed
                // (the placement is its own inverse).
                const REVERSED: [usize; 4] = [3, 1, 2, 0];
                let expected: Vec<PackedA> = (0..16)
                    .map(|m| {
                        let (e, rows, cols, strides) = if flipped {
                            (4 * REVERSED[m / 4] + REVERSED[m % 4], c, o, (1, c as isize))
                        } else {
                            (m, o, c, (c as isize, 1))
                        };
                        let at = u[e * o * c..].as_ptr();
                        // Safety: the sgemm runs here (checked); matrix e
                        // holds o × c values, read either way round.
                        unsafe { PackedA::new(rows, cols, at, strides) }.unwrap()
                    })
                    .collect();
                let packed = packed_weights(&w, &g, flipped).expect("AVX2 and memory");
                for (m, (a, b)) in packed.iter().zip(&expected).enumerate() {
                    assert_eq!(a.values().len(), b.values().len());
                    let same = a
                        .values()
                        .iter()
                        .zip(b.values())
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{o}x{c} flipped {flipped}: matrix {m} differs");
                }
            }
        }
    }
}

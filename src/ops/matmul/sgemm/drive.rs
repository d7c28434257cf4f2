//! The blocked loops of the sgemm (over `NC` columns of `b`, depth
//! blocks, `MC` rows of `a`, then micro-panels), and [`sgemm_skipping`]:
//! a product whose micro-panels of `b` leave out the depth steps that are
//! zeros in all their columns (a convolution's padding).

use super::kernels::{self, kernel_avx2, kernel_avx512, kernel_avx512_skipping, Tile};
use super::{apply_beta, pack, reserve, ABlock, BBlock, Kernel, Lhs, KC, MC, MR, NC, NR, PACK};

/// The sizes of a product: `a` is `m × k`, `b` is `k × n`.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
}

/// Depth steps that a micro-panel of `b` leaves out, for a depth ordered
/// channel by channel with the 9 taps of a 3×3 kernel each (`k = 9·c +
/// 3·ki + kj`): the steps of the taps that read padding for every column
/// (output pixel) of the panel. The patterns of a stride-2 layer on even
/// planes, whose padding lies above and left of the input: none, the top
/// kernel row (output row 0), the left kernel column (output column 0),
/// or both (the corner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Every step runs.
    None,
    /// Taps 0, 1, 2 left out.
    TopRow,
    /// Taps 0, 3, 6 left out.
    LeftColumn,
    /// Taps 0, 1, 2, 3, 6 left out.
    Corner,
}

impl Skip {
    /// The taps left out, as bits.
    pub(crate) const fn taps(self) -> u32 {
        match self {
            Skip::None => 0,
            Skip::TopRow => TOP_ROW,
            Skip::LeftColumn => LEFT_COLUMN,
            Skip::Corner => TOP_ROW | LEFT_COLUMN,
        }
    }

    /// The pattern that leaves out the most of the taps `padded` (bits),
    /// and no others.
    pub(crate) fn within(padded: u32) -> Skip {
        [Skip::Corner, Skip::TopRow, Skip::LeftColumn]
            .into_iter()
            .find(|s| padded & s.taps() == s.taps())
            .unwrap_or(Skip::None)
    }
}

/// Taps of a 3×3 kernel's top row and left column.
const TOP_ROW: u32 = 0b000_000_111;
const LEFT_COLUMN: u32 = 0b001_001_001;

/// Taps per input channel of the depth order [`Skip`] describes.
pub(crate) const SKIP_TAPS: usize = 9;

/// The blocked loops: for each `NC` columns and each `depth`-deep block
/// `(pc, kc)` of the depth (`depth` ≤ `KC`), has `b_block` pack that
/// block of `b` (it returns the packed panel), asks `a_block(ic, pc, mc,
/// kc)` for the packed `mc × kc` block of `a` at rows `ic..`, and runs
/// the micro-kernel over the tiles; `add_to_c`: add the product to `c`
/// (beta 1) rather than overwrite it (beta 0). Full tiles of the AVX-512
/// kernel leave out the depth steps `skip(first column of the panel)`
/// names (`depth` must then be a multiple of [`SKIP_TAPS`]); the caller
/// vouches that `b` is zero there in every column of the panel, so the
/// sums are the same as without the skip (up to the sign of a zero).
///
/// # Safety
/// The CPU runs `kernel`; the packed blocks hold `kc` steps of the rows
/// and columns asked for; `c` holds `m` rows of `n` writable elements
/// `ldc` apart.
#[allow(clippy::too_many_arguments)]
unsafe fn drive_blocks(
    kernel: Kernel,
    Dims { m, k, n }: Dims,
    depth: usize,
    mut a_block: impl FnMut(usize, usize, usize, usize) -> *const f32,
    b_block: &mut impl FnMut(&BBlock) -> *const f32,
    skip: impl Fn(usize) -> Skip,
    add_to_c: bool,
    c: *mut f32,
    ldc: isize,
) {
    debug_assert!(0 < depth && depth <= KC);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(depth) {
            let kc = depth.min(k - pc);
            let b_pack = b_block(&BBlock { pc, kc, jc, nc });
            let accumulate = pc > 0 || add_to_c;
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                let a_pack = a_block(ic, pc, mc, kc);
                for jr in (0..nc).step_by(NR) {
                    let pattern = skip(jc + jr);
                    for ir in (0..mc).step_by(MR) {
                        // Safety (this block): the tile lies inside `c`; the
                        // packed panels hold kc steps of the tile's rows and
                        // columns.
                        unsafe {
                            let tile = c.offset((ic + ir) as isize * ldc + (jc + jr) as isize);
                            let t = Tile {
                                c: tile,
                                ldc,
                                rows: MR.min(mc - ir),
                                cols: NR.min(nc - jr),
                                accumulate,
                            };
                            if jr + NR < nc {
                                kernels::prefetch_rows(tile.wrapping_add(NR), ldc, t.rows);
                            }
                            let (a, b) = (a_pack.add(ir * kc), b_pack.add(jr * kc));
                            // A panel of the last rows or columns runs the
                            // AVX-512 kernel for the fewest rows and
                            // half-panels that cover them (all steps).
                            match (kernel, t.rows, t.cols, pattern) {
                                (Kernel::Avx2, ..) => kernel_avx2(kc, a, b, t),
                                (_, 1..=4, 1..=16, _) => kernel_avx512::<4, 1>(kc, a, b, t),
                                (_, 5..=8, 1..=16, _) => kernel_avx512::<8, 1>(kc, a, b, t),
                                (_, _, 1..=16, _) => kernel_avx512::<MR, 1>(kc, a, b, t),
                                (_, 1..=4, ..) => kernel_avx512::<4, 2>(kc, a, b, t),
                                (_, 5..=8, ..) => kernel_avx512::<8, 2>(kc, a, b, t),
                                (.., Skip::None) => kernel_avx512::<MR, 2>(kc, a, b, t),
                                (.., Skip::TopRow) => {
                                    kernel_avx512_skipping::<TOP_ROW>(kc, a, b, t)
                                }
                                (.., Skip::LeftColumn) => {
                                    kernel_avx512_skipping::<LEFT_COLUMN>(kc, a, b, t)
                                }
                                (.., Skip::Corner) => {
                                    kernel_avx512_skipping::<{ TOP_ROW | LEFT_COLUMN }>(kc, a, b, t)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `c = a · b` for an `m × k` matrix `a` read with element strides
/// (packed block by block) and a `b` (`k × n`) that exists only as what
/// `pack_b` writes for each [`BBlock`] (as in [`super::sgemm_with`]),
/// with the depth in blocks of whole groups of [`SKIP_TAPS`] steps (`KC`
/// rounded down) and each micro-panel of `b` leaving out the steps
/// `skip(first column)` names ([`Skip`]): the caller vouches that `b` is
/// zero there in every column of the panel. A 3×3 convolution with its
/// output pixels ordered so that whole micro-panels share their padding
/// leaves those products out. Every element of `c` is written (beta 0):
/// a sum over `k` in order, in blocks of `KC − KC mod 9`.
///
/// # Safety
/// The CPU runs `kernel`; `lhs` is [`Lhs::Strided`] (anything else is
/// refused with a panic) and its addressed elements lie inside a live
/// buffer; `c` holds `m` rows of `n` writable elements `ldc` apart and
/// aliases neither operand. Panics unless `k` is a multiple of
/// [`SKIP_TAPS`].
pub(crate) unsafe fn sgemm_skipping(
    kernel: Kernel,
    lhs: Lhs,
    n: usize,
    pack_b: impl FnMut(&BBlock, &mut [f32]),
    skip: impl Fn(usize) -> Skip,
    c: *mut f32,
    ldc: isize,
) {
    assert!(
        matches!(lhs, Lhs::Strided { .. }),
        "sgemm_skipping packs a strided left operand"
    );
    assert!(
        lhs.dims().1.is_multiple_of(SKIP_TAPS),
        "a depth of whole channels of 9 taps"
    );
    let depth = KC - KC % SKIP_TAPS;
    // Safety: the caller's contract; the depth blocks are whole channels.
    unsafe { product(kernel, lhs, n, pack_b, depth, skip, 0.0, c, ldc) }
}

/// `c = lhs · b + beta · c` for [`super::sgemm_with`] (depth blocks of
/// `KC`, nothing skipped) and [`sgemm_skipping`]: the packing buffers of
/// this thread, the left operand packed block by block (or read packed),
/// `depth`-deep blocks (at most `KC`; a [`Lhs::Packed`] operand is packed
/// in blocks of `KC`, so it needs `depth` = `KC`), and the steps `skip`
/// names left out of full AVX-512 tiles ([`drive_blocks`]).
///
/// # Safety
/// As [`super::sgemm_with`], and as [`drive_blocks`] for `skip`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product(
    kernel: Kernel,
    lhs: Lhs,
    n: usize,
    mut pack_b: impl FnMut(&BBlock, &mut [f32]),
    depth: usize,
    skip: impl Fn(usize) -> Skip,
    beta: f32,
    c: *mut f32,
    ldc: isize,
) {
    assert!(0 < depth && depth <= KC && (depth == KC || !matches!(lhs, Lhs::Packed(_))));
    let (m, k) = lhs.dims();
    let dims = Dims { m, k, n };
    if !unsafe { apply_beta(dims, beta, c, ldc) } {
        return;
    }
    PACK.with(|pack| {
        let mut pack = pack.borrow_mut();
        let (a_buf, b_buf) = &mut *pack;
        let b_len = depth.min(k) * NC.min(n.next_multiple_of(NR));
        reserve(b_buf, b_len);
        // Safety: `reserve` made `b_buf` hold b_len initialised f32 (a
        // `Line` is 16 plain f32).
        let b_pack = unsafe { std::slice::from_raw_parts_mut(b_buf.as_mut_ptr().cast(), b_len) };
        let mut pack_b_block = |blk: &BBlock| {
            let len = blk.kc * blk.nc.next_multiple_of(NR);
            pack_b(blk, &mut b_pack[..len]);
            b_pack.as_ptr()
        };
        // Runs the blocked loops with `a_block` giving the left operand's
        // blocks; called once per block of MC rows and KC steps, so the
        // dynamic dispatch costs nothing.
        let mut drive = |a_block: &mut dyn FnMut(usize, usize, usize, usize) -> *const f32| {
            // Safety: the caller's contract; `a_block` packs (or reads
            // packed) the rows and steps asked for.
            unsafe {
                drive_blocks(
                    kernel,
                    dims,
                    depth,
                    a_block,
                    &mut pack_b_block,
                    &skip,
                    beta != 0.0,
                    c,
                    ldc,
                )
            }
        };
        let a_len = MC.min(m.next_multiple_of(MR)) * depth.min(k);
        match lhs {
            Lhs::Strided { a, strides, .. } => {
                let a_pack = reserve(a_buf, a_len);
                drive(&mut |ic, pc, mc, kc| {
                    // Safety: the block lies inside `a`; `a_pack` holds MC ×
                    // depth.
                    unsafe {
                        let block = a.offset(ic as isize * strides.0 + pc as isize * strides.1);
                        pack::pack_a(kernel, mc, kc, block, strides, a_pack);
                    }
                    a_pack.cast_const()
                })
            }
            Lhs::Planes {
                cols,
                a,
                row_stride,
                plane_stride,
                ..
            } => {
                let a_pack = reserve(a_buf, a_len);
                drive(&mut |ic, pc, mc, kc| {
                    // Safety: the block lies inside the planes; `a_pack`
                    // holds MC × depth.
                    unsafe {
                        let planes = pack::Planes {
                            a: a.offset(ic as isize * row_stride),
                            cols,
                            row_stride,
                            plane_stride,
                        };
                        pack::pack_a_planes(kernel, mc, (pc, kc), planes, a_pack);
                    }
                    a_pack.cast_const()
                })
            }
            Lhs::Blocks { pack, .. } => {
                let a_pack = reserve(a_buf, a_len);
                drive(&mut |ic, pc, mc, kc| {
                    let len = mc.next_multiple_of(MR) * kc;
                    // Safety: `a_pack` holds MC × depth initialised f32
                    // (`reserve`), at least `len`.
                    let out = unsafe { std::slice::from_raw_parts_mut(a_pack, len) };
                    pack(&ABlock { ic, mc, pc, kc }, out);
                    a_pack.cast_const()
                })
            }
            Lhs::Packed(a) => drive(&mut |ic, pc, _, _| a.block(ic, pc)),
        }
    });
}

//! The weight gradient of the implicit GEMM computed transposed,
//! `dWᵀ = X · dYᵀ`, where that fills the GEMM's tiles better
//! ([`transposes_weight_gradient`]).

use super::super::cpu::{image_tiles, parallel, sum_in_fixed_runs};
use super::super::geom::ConvGeom;
use super::gather::Layout;
use super::plans::Plans;
use super::{group_base, is_pointwise, tap_triples, NR};
use crate::backend::cpu::pool::{recycle, take_empty};
use crate::backend::cpu::scratch::with_scratch;
use crate::error::Result;
use crate::ops::conv::plan::DIRECT_MIN_INNER;
use crate::ops::matmul::sgemm::{self, strided_on, ABlock, Kernel, Lhs};

/// Most bytes of an image's gathered `X` (`k × pixels` f32) for which
/// [`transposes_weight_gradient`] weighs the tiles' fill: the gather then
/// stays in L2 for the product.
const TRANSPOSED_GATHER_BYTES: usize = 1 << 19;

/// Whether the weight gradient runs transposed
/// (`backward_weight_transposed`), on planes of at least
/// [`DIRECT_MIN_INNER`] pixels with at least [`NR`] output channels per
/// group: where `k` < [`NR`] (an RGB stem, 27 unrolled rows), and where
/// `dWᵀ`'s tiles (`k` rows of taps, `og` columns) are filled more than
/// 5 % better than `dW`'s (`og` rows, `k` columns) with an image's
/// gathered `X` within [`TRANSPOSED_GATHER_BYTES`] and no in-place 1×1
/// path to lose. The CIFAR ResNets' 16→32 stride-2 layer (`dW` 32 × 144
/// fills 80 % of its 12 × 32 tiles, `dWᵀ` 144 × 32 all of them) went from
/// 0.95–1.02 to 0.85–0.94 ms (one thread, AVX-512; level with AVX2).
/// ImageNet's 7×7 stem (7.4 MB gathered per image) measured level and its
/// 1×1 256→64 layer 17 % slower transposed, hence the two limits.
pub(super) fn transposes_weight_gradient(g: &ConvGeom) -> bool {
    // The share of a product's tiles that `m × n` fills.
    let fill = |m: usize, n: usize| {
        (m * n) as f64 / (m.next_multiple_of(sgemm::MR) * n.next_multiple_of(NR)) as f64
    };
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let gather_bytes = k
        .saturating_mul(cols)
        .saturating_mul(std::mem::size_of::<f32>());
    let fills_better = !is_pointwise(g)
        && gather_bytes <= TRANSPOSED_GATHER_BYTES
        && fill(k, og) > 1.05 * fill(og, k);
    cols >= DIRECT_MIN_INNER && og >= NR && (k < NR || fills_better)
}

/// The weight gradient computed transposed, where
/// [`transposes_weight_gradient`]: `dWᵀ (k × og) += X (k × pixels) · dYᵀ`,
/// one image at a time (planes of at least [`DIRECT_MIN_INNER`] pixels
/// are summed one image at a time either way), `X` gathered whole (`k`
/// rows of the image's pixels, `k = cg·kh·kw`). For an RGB stem
/// (`k` = 27), `dW = dY · Xᵀ` would fill 27 of each tile's 32 columns and
/// repack all of `dY` as its left operand; transposed, the output
/// channels fill the columns and `X`'s few rows are the packed side.
/// Same sums in the same order (pixels in blocks of `KC`, images in
/// order, the threads' partial sums over the same tiles of images), so
/// the same bits on any thread count. For 3-wide kernels on AVX-512 `X`
/// is packed into the GEMM's panels straight from the planes
/// (`tap_triples`, the same values), not gathered then packed.
pub(super) fn backward_weight_transposed(x: &[f32], dy: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    // The untransposed route's tiles of images (one image at a time
    // within each), so the threads' partial sums group the same images.
    let tiles = image_tiles(g);
    let add_tile = |mut dwt: Vec<f32>, &(n0, t): &(usize, usize)| {
        let mut plans = Plans::default();
        let packs_planes = tap_triples::applies(g);
        let col_len = if packs_planes { 0 } else { k * cols };
        with_scratch(col_len, |col: &mut [f32]| {
            for (n, gi) in (n0..n0 + t).flat_map(|n| (0..g.groups).map(move |gi| (n, gi))) {
                let x = &x[group_base(g, n, gi)..];
                let at = n * g.out_image_len() + gi * og * cols;
                let grad = &dy[at..at + og * cols];
                let dwt_g = &mut dwt[gi * og * k..(gi + 1) * og * k];
                if packs_planes {
                    let pack =
                        |blk: &ABlock, out: &mut [f32]| tap_triples::pack_block(x, g, blk, out);
                    let lhs = Lhs::Blocks {
                        m: k,
                        k: cols,
                        pack: &pack,
                    };
                    // Safety: the sgemm is available (`supports`); `grad`
                    // holds og × cols values (read transposed), `dwt_g` k ×
                    // og, row stride og, its own buffer.
                    unsafe {
                        strided_on(
                            Kernel::current(),
                            lhs,
                            og,
                            grad.as_ptr(),
                            (1, cols as isize),
                            1.0,
                            dwt_g.as_mut_ptr(),
                            og as isize,
                        )
                    };
                    continue;
                }
                let col = &mut col[..k * cols];
                let plan = plans.get(g, 0, cols, Layout::Run);
                plan.fill(Kernel::current(), x, (0, k), col, cols);
                // Safety: the sgemm is available (`supports`); `col` holds
                // k × cols values, `grad` og × cols (read transposed), and
                // `dwt_g` k × og, row stride og, its own buffer.
                unsafe {
                    sgemm::sgemm(
                        k,
                        cols,
                        og,
                        col.as_ptr(),
                        (cols as isize, 1),
                        grad.as_ptr(),
                        (1, cols as isize),
                        1.0,
                        dwt_g.as_mut_ptr(),
                        og as isize,
                    )
                };
            }
        });
        dwt
    };
    let dwt = sum_in_fixed_runs(&tiles, g.c_out * k, parallel(g), add_tile)?;
    let mut dw = take_empty::<f32>(dwt.len())?;
    for gi in 0..g.groups {
        let dwt_g = &dwt[gi * og * k..(gi + 1) * og * k];
        dw.extend((0..og * k).map(|i| dwt_g[i % k * og + i / k]));
    }
    recycle(dwt);
    Ok(dw)
}

//! The implicit-GEMM forward of a 3×3 layer on small planes with its
//! output pixels ordered by the taps that fall on padding, so that whole
//! micro-panels leave those products out.
//!
//! ResNet-18's 256→512 stride-2 layer maps 8×8 planes to 4×4, and the top
//! kernel row of output row 0 and the left kernel column of output column
//! 0 read padding: 23 of the 144 (pixel, tap) pairs, 16 % of the products
//! (oneDNN leaves them out). The depth keeps im2col's order (channel, then
//! tap), but the tile's output pixels are put in classes by the taps they
//! lose (none, the top row, the left column, both), each class's pixels
//! of every image side by side, so that most micro-panels of `NR` pixels
//! belong to one class. The product then runs depth blocks of whole
//! channels (`KC` rounded down to 9 steps) and, for a panel of a padded
//! class, a micro-kernel that leaves out those taps' steps
//! (`sgemm_skipping`). Gathering the panels in that order costs more
//! than in pixel order: the classes in runs along output rows take a
//! masked load per run (3 pixels of a 4-pixel row where whole rows took
//! one), and the single-pixel classes (the left column, the corner) take
//! AVX-512 gathers; and the product is scattered back to the planes in
//! pixel order. On ResNet-18's layer (one thread) the products fell by
//! the 16 %, the gathers and the scatter took back about half of it.
//!
//! Each output is the same sum as the im2col route's, less zero terms,
//! but in blocks of 252 rather than 256 steps: other bits (tested against
//! the naive convolution), the same on any thread count.

use super::gather::Layout;
use super::plans::Plans;
use super::{check_supported, group_base, writes_planes_directly, NR};
use crate::backend::cpu::pool::take_empty;
use crate::backend::cpu::scratch::with_scratch;
use crate::error::{Error, Result};
use crate::ops::conv::cpu::{for_each_tile, image_tiles, SharedMut};
use crate::ops::conv::geom::ConvGeom;
use crate::ops::matmul::sgemm::{sgemm_skipping, BBlock, Kernel, Lhs, Skip};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Fewest input channels per group for [`pays`].
const MIN_CHANNELS: usize = 64;

/// Smallest share of a tile's products left out for [`pays`].
const MIN_SKIPPED_SHARE: f64 = 0.05;

/// Whether the f32 forward of `g` runs here: a 3×3 kernel (dilation 1,
/// one group) in a tile product (planes too small for one product per
/// image, `writes_planes_directly`) of at least [`MIN_CHANNELS`] input
/// channels, on the AVX-512 kernel, where the tile order leaves out at
/// least [`MIN_SKIPPED_SHARE`] of the products.
pub(super) fn pays(g: &ConvGeom) -> bool {
    orders_if_it_pays(g).is_some()
}

/// The tile orders of `g` ([`tile_orders`]) where [`pays`] holds (judged
/// on the largest tile), for [`forward_in`]; `None` otherwise.
pub(super) fn orders_if_it_pays(g: &ConvGeom) -> Option<TileOrders> {
    if !runs_here(g) || g.cg() < MIN_CHANNELS || writes_planes_directly(g) {
        return None;
    }
    let orders = tile_orders(g)?;
    let (_, largest) = orders.last()?;
    (largest.skipped_share() >= MIN_SKIPPED_SHARE).then_some(orders)
}

/// Whether this route can compute `g` at all: the implicit GEMM supports
/// it, the CPU runs the AVX-512 kernel, and the kernel is 3×3 without
/// dilation or groups.
fn runs_here(g: &ConvGeom) -> bool {
    super::supports(g)
        && Kernel::current() == Kernel::Avx512
        && (g.kh, g.kw, g.dilation, g.groups) == (3, 3, (1, 1), 1)
}

/// One [`TileOrder`] per tile size of `g`'s tiles (`image_tiles`), by
/// increasing size.
pub(super) type TileOrders = Vec<(usize, TileOrder)>;

/// The [`TileOrders`] of a 3×3 `g`; `None` when one does not fit the
/// gathers' 32-bit numbers.
fn tile_orders(g: &ConvGeom) -> Option<TileOrders> {
    let mut sizes: Vec<usize> = image_tiles(g).iter().map(|&(_, t)| t).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .map(|t| TileOrder::new(g, t).map(|o| (t, o)))
        .collect()
}

/// For each output pixel of an image, the taps that read inside the
/// input plane: bit `t = ki·kw + kj` set where row `oy·sh − ph + ki·dh`
/// and column `ox·sw − pw + kj·dw` lie inside it. Needs at most 64 taps.
fn tap_masks(g: &ConvGeom) -> Vec<u64> {
    let inside = |o: usize, s: usize, p: usize, k: usize, d: usize, len: usize| {
        (o * s + k * d).checked_sub(p).is_some_and(|i| i < len)
    };
    let mut masks = Vec::with_capacity(g.col_cols());
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let mut mask = 0u64;
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let row = inside(oy, g.stride.0, g.padding.0, ki, g.dilation.0, g.h);
                    let col = inside(ox, g.stride.1, g.padding.1, kj, g.dilation.1, g.w);
                    if row && col {
                        mask |= 1 << (ki * g.kw + kj);
                    }
                }
            }
            masks.push(mask);
        }
    }
    masks
}

/// The column order of one tile of `t` images: pixels grouped by the
/// taps they lose (pixels in runs along output rows first), each group's
/// pixels of image 0, then of image 1, and so on.
pub(super) struct TileOrder {
    /// Column `j` is pixel `columns[j]` (`i·oh·ow + p`, image `i` of the
    /// tile).
    columns: Vec<u32>,
    /// For each micro-panel of `NR` columns, the steps it leaves out.
    panel_skips: Vec<Skip>,
    /// Where the classes of single pixels start (a multiple of `NR`):
    /// the columns before are gathered by `RunPlan`s (masked loads of runs
    /// along input rows), those from here on by gather instructions.
    split: usize,
    /// `offsets[t·len + j]`: where column `split + j` reads tap `t` in
    /// channel 0, from the tile's first image (`i·image_len + iy·w +
    /// ix`), or −1 on padding (and past the last column); `len` is the
    /// columns from `split` on, rounded up to `NR`.
    offsets: Vec<i32>,
    /// One past the largest of `offsets`.
    read_end: usize,
    /// For each column, where its value goes in the tile's output: `i ·
    /// out_image_len + p` for pixel `p` of image `i` (channel 0).
    dest: Vec<u32>,
}

impl TileOrder {
    /// The order for tiles of `t` images of a 3×3 `g`. `None` when the
    /// pixels do not fit the gathers' 32-bit numbers.
    pub(super) fn new(g: &ConvGeom, t: usize) -> Option<Self> {
        let cols = g.col_cols();
        u32::try_from(t.checked_mul(cols)?).ok()?;
        let masks = tap_masks(g);
        let mut classes: Vec<u64> = masks.clone();
        classes.sort_unstable();
        classes.dedup();
        // Each class's pixels, and whether they lie in runs along output
        // rows (else mostly single pixels, e.g. a column's).
        let mut classes: Vec<(bool, u64, Vec<usize>)> = classes
            .into_iter()
            .map(|class| {
                let pixels: Vec<usize> = (0..cols).filter(|&p| masks[p] == class).collect();
                let starts = (0..pixels.len())
                    .filter(|&j| {
                        j == 0 || pixels[j] != pixels[j - 1] + 1 || pixels[j].is_multiple_of(g.ow)
                    })
                    .count();
                (pixels.len() >= 2 * starts, class, pixels)
            })
            .collect();
        classes.sort_by_key(|(in_runs, class, _)| {
            (!in_runs, std::cmp::Reverse(class.count_ones()), *class)
        });
        let mut columns = Vec::with_capacity(t * cols);
        let mut split = None;
        for (in_runs, _, pixels) in &classes {
            let start = columns.len();
            if !in_runs && split.is_none() {
                split = Some(start - start % NR);
            }
            for i in 0..t {
                columns.extend(pixels.iter().map(|&p| (i * cols + p) as u32));
            }
        }
        let all = (1u64 << (g.kh * g.kw)) - 1;
        let panel_skips = columns
            .chunks(NR)
            .map(|panel| {
                let padded = panel
                    .iter()
                    .fold(all, |padded, &q| padded & !masks[q as usize % cols]);
                Skip::within(padded as u32)
            })
            .collect();
        let split = split.unwrap_or(columns.len());
        let single = (columns.len() - split).next_multiple_of(NR);
        let mut offsets = vec![-1; 9 * single];
        for (t, tap) in offsets.chunks_exact_mut(single.max(1)).enumerate() {
            let (ki, kj) = (t / 3, t % 3);
            for (at, &q) in tap.iter_mut().zip(&columns[split..]) {
                let (i, p) = (q as usize / cols, q as usize % cols);
                let iy = ((p / g.ow) * g.stride.0 + ki).checked_sub(g.padding.0);
                let ix = ((p % g.ow) * g.stride.1 + kj).checked_sub(g.padding.1);
                if let (Some(iy), Some(ix)) = (iy, ix) {
                    if iy < g.h && ix < g.w {
                        *at = i32::try_from(i * g.image_len() + iy * g.w + ix).ok()?;
                    }
                }
            }
        }
        let read_end = offsets.iter().map(|&o| o + 1).max().unwrap_or(0).max(0) as usize;
        let dest = columns
            .iter()
            .map(|&q| {
                let (i, p) = (q as usize / cols, q as usize % cols);
                u32::try_from(i * g.out_image_len() + p).ok()
            })
            .collect::<Option<_>>()?;
        Some(TileOrder {
            split,
            offsets,
            read_end,
            dest,
            columns,
            panel_skips,
        })
    }

    /// The share of the tile's products that the panels leave out.
    fn skipped_share(&self) -> f64 {
        let left_out: u32 = self.panel_skips.iter().map(|s| s.taps().count_ones()).sum();
        let panels = self.panel_skips.len() as f64;
        f64::from(left_out) / (9.0 * panels.max(1.0))
    }

    /// The tile's output planes (`t` images of `og × oh·ow` values, from
    /// its first image on) from its product (`og` rows, `ld` apart), plus
    /// the bias: each column's value scattered to its pixel.
    fn write_planes(
        &self,
        prod: &[f32],
        ld: usize,
        g: &ConvGeom,
        bias: Option<&[f32]>,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let cols = g.col_cols();
        let last = self.dest.iter().max().map_or(0, |&d| d as usize + 1);
        assert!(self.dest.is_empty() || (g.og() - 1) * cols + last <= dst.len());
        for o in 0..g.og() {
            let bv = bias.map_or(0.0, |b| b[o]);
            let plane = &mut dst[o * cols..];
            for (&d, &v) in self.dest.iter().zip(&prod[o * ld..(o + 1) * ld]) {
                plane[d as usize].write(v + bv);
            }
        }
    }

    /// Fills the packed block `blk`'s micro-panels from column `split` on
    /// (`out` from the first of them), rows `(c, t)` of the depth from
    /// `blk.pc`, from `x` (the tile's first image, planes `plane` values
    /// apart): each row of a panel two masked 16-lane gathers at the
    /// tap's offsets, shifted by the channel's plane (single pixels scattered
    /// over the images, which a load per pixel took twice as long to
    /// gather). Zeros on padding and past the last column.
    ///
    /// # Panics
    /// When the rows reach past `x` or the block past `out`.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn gather_single(&self, x: &[f32], plane: usize, blk: &BBlock, out: &mut [f32]) {
        let single = (self.columns.len() - self.split).next_multiple_of(NR);
        let from = blk.jc.max(self.split) - self.split;
        let panels = (blk.jc + blk.nc)
            .saturating_sub(self.split.max(blk.jc))
            .div_ceil(NR);
        let kc = blk.kc;
        if panels == 0 || kc == 0 {
            return;
        }
        let last_channel = (blk.pc + kc - 1) / 9;
        assert!(
            self.read_end + last_channel * plane <= x.len(),
            "gather past the input"
        );
        assert!(panels * NR * kc <= out.len() && from + panels * NR <= single);
        let zero = _mm512_setzero_si512();
        for r in 0..kc {
            let (c, t) = ((blk.pc + r) / 9, (blk.pc + r) % 9);
            let base = x.as_ptr().wrapping_add(c * plane);
            let idx = &self.offsets[t * single + from..][..panels * NR];
            for (p, idx) in idx.chunks_exact(NR).enumerate() {
                // Safety: lanes with an offset read x[offset + c·plane],
                // below read_end + c·plane ≤ x.len() (asserted); the
                // panel's row r lies inside `out` (asserted).
                unsafe {
                    let i0 = _mm512_loadu_si512(idx.as_ptr().cast());
                    let i1 = _mm512_loadu_si512(idx.as_ptr().add(16).cast());
                    let m0 = _mm512_cmpge_epi32_mask(i0, zero);
                    let m1 = _mm512_cmpge_epi32_mask(i1, zero);
                    let z = _mm512_setzero_ps();
                    let v0 = _mm512_mask_i32gather_ps::<4>(z, m0, i0, base);
                    let v1 = _mm512_mask_i32gather_ps::<4>(z, m1, i1, base);
                    let o = out.as_mut_ptr().add(p * NR * kc + r * NR);
                    _mm512_storeu_ps(o, v0);
                    _mm512_storeu_ps(o.add(16), v1);
                }
            }
        }
    }
}

/// Forward of a 3×3 layer (dilation 1, one group): `x` (N×C×H×W), `w`
/// (O×C×3×3), optional `bias` (O), all contiguous; returns N×O×oh×ow,
/// with the products over padding left out where whole micro-panels share
/// them, on any such geometry (the tests' entry; the forward takes this
/// route through [`orders_if_it_pays`] and [`forward_in`]). Errors unless
/// the route runs `g`, when a buffer is shorter than the geometry needs,
/// or when memory runs out.
#[cfg(test)]
fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Result<Vec<f32>> {
    check_supported(g)?;
    let orders = runs_here(g).then(|| tile_orders(g)).flatten();
    let orders = orders.ok_or_else(|| {
        Error::invalid(
            "conv2d",
            "the padding skip takes 3×3 kernels without dilation or groups, on AVX-512, \
             with tiles whose pixels fit 32-bit offsets",
        )
    })?;
    forward_in(orders, x, w, bias, g)
}

/// [`conv2d_forward`] with `g`'s tile orders built ([`orders_if_it_pays`]).
/// Errors unless the route runs `g`, when a buffer is shorter than the
/// geometry needs, or when memory runs out.
pub(super) fn forward_in(
    orders: TileOrders,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
) -> Result<Vec<f32>> {
    check_supported(g)?;
    let (x, w, bias) = g.forward_operands(x, w, bias)?;
    let kernel = Kernel::current();
    if !runs_here(g) {
        return Err(Error::invalid(
            "conv2d",
            "the padding skip takes 3×3 kernels without dilation or groups, on AVX-512",
        ));
    }
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let tiles = image_tiles(g);
    let len = g.n * g.out_image_len();
    let mut out = take_empty::<f32>(len)?;
    let out_ptr = SharedMut(out.spare_capacity_mut().as_mut_ptr());
    let largest = orders.last().map_or(0, |(t, _)| *t);
    for_each_tile(g, &tiles, |n0, t| {
        let order = &orders[orders.partition_point(|(size, _)| *size < t)].1;
        let mut plans = Plans::in_order(order.columns.clone());
        let ld = t * cols;
        with_scratch(og * largest * cols, |prod: &mut [f32]| {
            let prod = &mut prod[..og * ld];
            let x = &x[group_base(g, n0, 0)..];
            let pack = |blk: &BBlock, out: &mut [f32]| {
                let layout = Layout::Panels {
                    width: NR,
                    depth: blk.kc,
                };
                let in_runs = order.split.clamp(blk.jc, blk.jc + blk.nc) - blk.jc;
                if in_runs > 0 {
                    let plan = plans.get(g, blk.jc, in_runs, layout);
                    plan.fill(kernel, x, (blk.pc, blk.kc), out, NR);
                }
                let out = &mut out[in_runs * blk.kc..];
                // Safety: the CPU runs the AVX-512 kernel (checked above).
                unsafe { order.gather_single(x, g.h * g.w, blk, out) };
            };
            let lhs = Lhs::Strided {
                m: og,
                k,
                a: w.as_ptr(),
                strides: (k as isize, 1),
            };
            let skip = |col: usize| order.panel_skips[col / NR];
            // Safety: the CPU runs `kernel` (checked); `w` holds og × k
            // (`forward_operands`), k is 9 steps per channel; `prod`
            // holds og × ld values, row stride ld, its own buffer; the
            // panels a skip names are zeros in those steps (their pixels'
            // taps fall on padding, which the gather fills with zeros).
            unsafe { sgemm_skipping(kernel, lhs, ld, pack, skip, prod.as_mut_ptr(), ld as isize) };
            // Safety: in range, and the tile's images are written by this
            // task only (tiles hold disjoint images).
            let planes = unsafe { out_ptr.slice(n0 * g.out_image_len(), t * g.out_image_len()) };
            order.write_planes(prod, ld, g, bias, planes);
        })
    });
    // SAFETY: the tiles cover images 0..n, and each tile writes all og ×
    // oh·ow values of each of its images: `dest` maps the product's
    // columns one to one onto the tile's pixels (each pixel is in one
    // class), and `write_planes` writes every column of every row.
    unsafe { out.set_len(len) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::cpu::parallel;
    use crate::ops::conv::test_support::{
        assert_forward_matches, geom as any_geom, on_threads, random,
    };

    /// A 3×3 layer: `[n, c, h, w]` input, `o` outputs, stride, padding.
    fn geom(input: [usize; 4], o: usize, stride: usize, padding: usize) -> ConvGeom {
        let (s, p) = ((stride, stride), (padding, padding));
        any_geom(input, [o, 3, 3], s, p, (1, 1), 1)
    }

    /// The route runs the AVX-512 kernel only.
    fn skip() -> bool {
        if !super::super::available() || Kernel::current() != Kernel::Avx512 {
            eprintln!("skipped: the CPU does not run the AVX-512 kernel");
            return true;
        }
        false
    }

    /// Stride 2 on even planes (padding above and left only: the four
    /// classes, panels of one class and panels that mix two), on odd and
    /// non-square planes (padding on every side: classes the skip patterns
    /// do not name run every step), stride 1, padding 2 and 3 (whole
    /// pixels of padding: the corner pixels' every tap), channel counts
    /// that are not multiples of the vector width or of the 28 channels
    /// of a depth block, output channels past a multiple of the 12-row
    /// panels, single images and tiles of 32.
    fn shapes() -> Vec<ConvGeom> {
        vec![
            geom([3, 40, 8, 8], 20, 2, 1),
            geom([2, 19, 7, 9], 13, 2, 1),
            geom([2, 300, 6, 6], 14, 2, 1),
            geom([2, 9, 5, 4], 7, 1, 2),
            geom([2, 6, 2, 3], 5, 1, 3),
            geom([1, 30, 10, 12], 25, 2, 1),
            geom([32, 24, 8, 8], 40, 2, 1),
            geom([5, 64, 14, 14], 17, 2, 1),
        ]
    }

    #[test]
    fn forward_matches_the_definition_and_im2col() {
        if skip() {
            return;
        }
        for (s, g) in shapes().into_iter().enumerate() {
            let x = random(g.n * g.image_len(), 100 + s as u64);
            let w = random(g.c_out * g.col_rows(), 200 + s as u64);
            let b = random(g.c_out, 300 + s as u64);
            let got = conv2d_forward(&x, &w, Some(&b), &g).unwrap();
            assert_forward_matches(&got, (&x, &w, Some(&b)), &g, &format!("{g:?}"));
        }
    }

    /// The tiles (and so the micro-panels and what they leave out) depend
    /// on the thread count; the sums do not.
    #[test]
    fn bits_do_not_depend_on_threads() {
        if skip() {
            return;
        }
        let g = geom([32, 128, 8, 8], 24, 2, 1);
        assert!(parallel(&g));
        let (x, w) = (
            random(g.n * g.image_len(), 7),
            random(g.c_out * g.col_rows(), 8),
        );
        let run = |threads: usize| {
            on_threads(threads, || {
                (image_tiles(&g), conv2d_forward(&x, &w, None, &g).unwrap())
            })
        };
        let (one, three) = (run(1), run(3));
        assert_ne!(one.0, three.0, "the tiles should differ");
        assert!(one.1 == three.1, "not the same bits on 1 and 3 threads");
    }

    /// ResNet-18's 256→512 stride-2 layer at 8² (4×4 outputs): in a tile
    /// of 32 images each class fills whole micro-panels (9, 3, 3 and 1
    /// panels), so all 23 padded taps of 144 are left out. Layers without
    /// padding, with few channels or with one product per image, and
    /// kernels other than 3×3, keep the other routes.
    #[test]
    fn padding_is_skipped_where_it_pays() {
        if skip() {
            return;
        }
        let resnet18 = geom([32, 256, 8, 8], 512, 2, 1);
        assert!(pays(&resnet18));
        let order = TileOrder::new(&resnet18, 32).unwrap();
        let count = |s: Skip| order.panel_skips.iter().filter(|&&p| p == s).count();
        assert_eq!(
            [Skip::None, Skip::TopRow, Skip::LeftColumn, Skip::Corner].map(count),
            [9, 3, 3, 1]
        );
        assert!((order.skipped_share() - 23.0 / 144.0).abs() < 1e-12);
        let unpadded = geom([32, 256, 8, 8], 512, 1, 0);
        let few_channels = geom([32, 32, 8, 8], 64, 2, 1);
        let per_image = geom([32, 128, 32, 32], 128, 2, 1);
        for g in [unpadded, few_channels, per_image] {
            assert!(!pays(&g), "{g:?}");
        }
        let pointwise = any_geom([32, 256, 8, 8], [512, 1, 1], (2, 2), (0, 0), (1, 1), 1);
        assert!(!pays(&pointwise));
    }
}

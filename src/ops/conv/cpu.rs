//! CPU kernels of 2-D convolution: im2col + GEMM, and its two backward
//! passes on the same machinery.
//!
//! For one image and one group, `im2col` unrolls every receptive field into
//! a column: `col[(c·kh + i)·kw + j, oy·ow + ox] = x[c, oy·sh − ph + i·dh, ox·sw − pw + j·dw]`
//! (0 in the padding). The convolution is then one GEMM,
//! `out[g] = W[g] (og × cg·kh·kw) · col (cg·kh·kw × oh·ow)`. Backward reuses it:
//! `dcol = W[g]ᵀ · dy[g]` folded back with `col2im`, and `dW[g] += dy[g] · colᵀ`.
//!
//! Images are processed in tiles: the columns of several images sit side by
//! side in one `col` (`cg·kh·kw × tile·oh·ow`), so one GEMM serves the whole
//! tile and the weights are packed once per tile instead of once per image.
//! That matters for the deep layers of a ResNet, whose 4×4 or 8×8 outputs
//! give per-image GEMMs only 16–64 columns. Tiles run in parallel (rayon),
//! each task with its own buffers and single-threaded GEMMs; the weight
//! gradient is accumulated per task and summed at the end.
//!
//! Large output planes skip the tile layout where it costs a copy: with at
//! least [`DIRECT_MIN_COLUMNS`] pixels per plane, the forward GEMM runs once
//! per image and writes straight into the NCHW output, and with at least
//! [`DIRECT_MIN_INNER`] the weight-gradient GEMMs read `dy` in place, one
//! image at a time. Outputs are not zero-filled before they are written,
//! and the tile buffers are per-thread scratch reused across calls
//! (`backend::cpu::scratch`).
//! [`conv2d_direct`] is the naive seven-loop definition, kept as the test
//! oracle.
//!
//! [`conv2d_forward`] and [`conv2d_backward_weight`] hand 3×3 stride-1
//! layers with enough channels to [`winograd`] (F(2×2, 3×3), 2.25× fewer
//! multiplies); the input gradient reaches it through the flipped-kernel
//! forward. The `_im2col` functions compute any geometry.

pub use super::direct::conv2d_direct;
pub use super::geom::ConvGeom;
pub use super::plan::{DIRECT_MIN_COLUMNS, DIRECT_MIN_INNER};
use super::unroll::{col2im, im2col};
use super::{plan, winograd, winograd_stride2};
use crate::backend::cpu::pool::{recycle, take_empty, take_zeroed};
use crate::backend::cpu::scratch::with_scratch;
use crate::backend::cpu::{num_threads, PARALLEL_MIN_ELEMENTS};
use crate::error::{Error, Result};
use crate::ops::matmul::cpu::{gemm_serial, gemm_serial_uninit, Gemm, MatRef};
use crate::tensor::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Most columns (output pixels, image after image) a tile GEMM is given.
const TILE_COLUMNS: usize = 2048;

/// The tiles of images a convolution's batch is cut into, as `(first
/// image, images)`: the batch split evenly into one share per thread
/// (when the job is big enough to spread, [`parallel`]), and every share
/// evenly into the same number of tiles, the fewest that keep the largest
/// share's within [`TILE_COLUMNS`] columns. So every thread gets as many
/// images (give or take one) in as many tiles as the others, and the runs
/// of [`thread_runs`] over the tiles are the shares. Cutting the whole
/// batch into tiles of one size instead left one of two threads 2 of 3
/// tiles (22 of 32 images) on ResNet-50's 14×14 layers, which then ran
/// 1.36× faster on two threads than on one.
pub(super) fn image_tiles(g: &ConvGeom) -> Vec<(usize, usize)> {
    image_tiles_of(g, TILE_COLUMNS.div_ceil(g.col_cols().max(1)))
}

/// [`image_tiles`] with tiles of at most `most` images.
fn image_tiles_of(g: &ConvGeom, most: usize) -> Vec<(usize, usize)> {
    let shares = if parallel(g) { num_threads() } else { 1 };
    shares_in_pieces(g.n, shares, most)
}

/// `len` items split evenly into `shares` shares (at most one per item),
/// and every share evenly into the same number of pieces, the fewest that
/// keep the largest share's within `most` items, as `(start, length)`.
/// [`thread_runs`] over the pieces then gives back the shares when there
/// is one share per thread. The image tiles and Winograd's chunks of tile
/// rows are cut this way.
pub(super) fn shares_in_pieces(len: usize, shares: usize, most: usize) -> Vec<(usize, usize)> {
    let shares = shares.clamp(1, len.max(1));
    let per_share = len.div_ceil(shares).div_ceil(most.max(1));
    even_runs(len, shares)
        .flat_map(|(s0, n)| even_runs(n, per_share.min(n)).map(move |(p0, p)| (s0 + p0, p)))
        .collect()
}

/// The runs of `len` items that [`sum_in_fixed_runs`] gives its threads,
/// as `(start, length)`: one per thread (none empty), lengths within one.
pub(super) fn thread_runs(len: usize) -> impl Iterator<Item = (usize, usize)> {
    even_runs(len, num_threads().min(len))
}

/// `len` items cut into `parts` runs whose lengths differ by at most one
/// (the longer ones first), as `(start, length)`.
fn even_runs(len: usize, parts: usize) -> impl Iterator<Item = (usize, usize)> {
    let (base, extra) = (
        len.checked_div(parts).unwrap_or(0),
        len.checked_rem(parts).unwrap_or(0),
    );
    (0..parts).map(move |i| (i * base + i.min(extra), base + usize::from(i < extra)))
}

/// Images in the largest of `tiles` (1 when there are none): what scratch
/// buffers are sized for.
pub(super) fn largest(tiles: &[(usize, usize)]) -> usize {
    tiles.iter().map(|t| t.1).max().unwrap_or(1)
}

/// True when the whole job is big enough to spread tiles over threads.
pub(super) fn parallel(g: &ConvGeom) -> bool {
    g.n > 1 && g.macs() >= 1 << 21
}

/// Runs `f(first_image, images)` for every tile (of [`image_tiles`] or
/// [`image_tiles_of`]), in parallel when worth it.
pub(super) fn for_each_tile(
    g: &ConvGeom,
    tiles: &[(usize, usize)],
    f: impl Fn(usize, usize) + Sync,
) {
    let run = |&(n0, t): &(usize, usize)| f(n0, t);
    if parallel(g) {
        tiles.par_iter().for_each(run);
    } else {
        tiles.iter().for_each(run);
    }
}

/// A raw pointer that may cross threads; every task writes a disjoint part.
#[derive(Clone, Copy)]
pub(super) struct SharedMut<T>(pub(super) *mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The slice `start..start + len`.
    ///
    /// # Safety
    /// The range must lie inside the buffer and no other live slice may
    /// overlap it.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }

    /// The pointer `offset` elements on, for tasks whose parts interleave
    /// (rows' runs) where a slice of each part's span would overlap
    /// another's.
    ///
    /// # Safety
    /// `offset` must lie inside the buffer (or one past its end).
    pub(super) unsafe fn add(&self, offset: usize) -> *mut T {
        self.0.add(offset)
    }
}

/// The `cg·kh·kw × oh·ow` columns of image `i` of a tile inside `col`,
/// whose rows are `ld` long.
fn image_columns<'a, T>(col: &'a [T], g: &ConvGeom, i: usize, ld: usize) -> MatRef<'a, T> {
    MatRef::rows_strided(col, i * g.col_cols(), g.col_rows(), g.col_cols(), ld)
}

/// Forward: `x` (N×C×H×W), `w` (O×C/g×kh×kw), optional `bias` (O), all
/// contiguous; returns N×O×oh×ow. 3×3 stride-1 kernels with enough
/// channels go to [`winograd`], 3×3 stride-2 kernels with many channels on
/// large planes to [`winograd_stride2`], f32 3×3 stride-2 kernels on
/// small planes on AVX2 or AVX-512 to the direct channel-lane kernels
/// (`channel_lanes`), other f32 on AVX2 or AVX-512 to the implicit GEMM
/// (`implicit`), the rest to im2col + GEMM.
/// Errors when a buffer is shorter than the geometry needs.
pub fn conv2d_forward<T: Gemm>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    if winograd::applies(g) {
        return winograd::conv2d_forward(x, w, bias, g);
    }
    if winograd_stride2::applies(g) {
        return winograd_stride2::conv2d_forward(x, w, bias, g);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(out) = super::channel_lanes::try_forward(x, w, bias, g) {
        return out;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(out) = super::implicit::try_forward(x, w, bias, g) {
        return out;
    }
    conv2d_forward_im2col(x, w, bias, g)
}

/// The forward pass through im2col + GEMM, for any geometry.
/// Errors when a buffer is shorter than the geometry needs.
pub fn conv2d_forward_im2col<T: Gemm>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    let (x, w, bias) = g.forward_operands(x, w, bias)?;
    let len = g.n * g.out_image_len();
    let mut out = take_empty::<T>(len)?;
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let direct = cols >= DIRECT_MIN_COLUMNS;
    let tiles = image_tiles(g);
    let max_ld = largest(&tiles) * cols;
    let prod_len = if direct { 0 } else { og * max_ld };
    let out_ptr = SharedMut(out.spare_capacity_mut().as_mut_ptr());
    // The planes of group `gi` of image `n`, not yet written.
    let planes = |n: usize, gi: usize| -> &mut [MaybeUninit<T>] {
        // Safety: in range, and each (image, group) pair is written by one
        // task only (tiles hold disjoint images).
        unsafe { out_ptr.slice(n * g.out_image_len() + gi * og * cols, og * cols) }
    };
    for_each_tile(g, &tiles, |n0, t| {
        with_scratch(k * max_ld + prod_len, |scratch: &mut [T]| {
            let (col, prod) = scratch.split_at_mut(k * max_ld);
            let ld = t * cols;
            for gi in 0..g.groups {
                im2col_tile(x, g, gi, n0, t, col);
                let weights = MatRef::row_major(w, gi * og * k, og, k);
                if direct {
                    for i in 0..t {
                        let cols_i = image_columns(col, g, i, ld);
                        let dst = gemm_serial_uninit(weights, cols_i, planes(n0 + i, gi));
                        if let Some(b) = bias {
                            for (o, plane) in dst.chunks_exact_mut(cols).enumerate() {
                                let bv = b[gi * og + o];
                                plane.iter_mut().for_each(|v| *v += bv);
                            }
                        }
                    }
                    continue;
                }
                let prod = &mut prod[..og * ld];
                gemm_serial(weights, MatRef::row_major(col, 0, k, ld), prod, false);
                for i in 0..t {
                    write_planes(prod, ld, i * cols, g, gi, bias, planes(n0 + i, gi));
                }
            }
        })
    });
    // SAFETY: `for_each_tile` runs every tile, and the tiles cover images
    // 0..n. For each of its images and each group, a tile writes all
    // `og × oh·ow` elements of that group's planes: through a GEMM with
    // beta = 0 (direct), or through the copy loop, which writes each plane
    // element once. Groups cover the `c_out` channels, so all
    // `n × c_out × oh × ow` elements are written. (A panic in a tile
    // propagates before this line; `out` is then dropped with length 0.)
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Writes image `i`'s part of a tile GEMM's product into its planes of
/// group `gi`: `dst[o·cols + p] = prod[o·ld + off + p] + bias[gi·og + o]`
/// (the image's columns start at `off`), every element of `dst` once.
pub(super) fn write_planes<T: Float>(
    prod: &[T],
    ld: usize,
    off: usize,
    g: &ConvGeom,
    gi: usize,
    bias: Option<&[T]>,
    dst: &mut [MaybeUninit<T>],
) {
    let (og, cols) = (g.og(), g.col_cols());
    for o in 0..og {
        let src = &prod[o * ld + off..o * ld + off + cols];
        let plane = dst[o * cols..(o + 1) * cols].iter_mut();
        match bias.map(|b| b[gi * og + o]) {
            Some(bv) => plane.zip(src).for_each(|(d, &v)| {
                d.write(v + bv);
            }),
            None => plane.zip(src).for_each(|(d, &v)| {
                d.write(v);
            }),
        }
    }
}

/// Unrolls group `gi` of the tile's images `n0..n0 + t` side by side
/// into `col` (`cg·kh·kw × t·oh·ow`), the layout of a tile GEMM.
fn im2col_tile<T: Float>(x: &[T], g: &ConvGeom, gi: usize, n0: usize, t: usize, col: &mut [T]) {
    let (cols, len) = (g.col_cols(), g.image_len());
    for i in 0..t {
        let image = &x[(n0 + i) * len..(n0 + i + 1) * len];
        im2col(image, g, gi * g.cg(), col, t * cols, i * cols);
    }
}

/// Copies the output-gradient planes of a tile's images, group `gi`, side
/// by side into `dst` (`og × t·cols`), the layout of a tile GEMM.
pub(super) fn gather_tile<T: Copy>(
    dy: &[T],
    g: &ConvGeom,
    gi: usize,
    n0: usize,
    t: usize,
    dst: &mut [T],
) {
    let (og, cols) = (g.og(), g.col_cols());
    let ld = t * cols;
    for i in 0..t {
        let base = (n0 + i) * g.out_image_len() + gi * og * cols;
        for o in 0..og {
            dst[o * ld + i * cols..o * ld + (i + 1) * cols]
                .copy_from_slice(&dy[base + o * cols..base + (o + 1) * cols]);
        }
    }
}

/// Input gradient: `dy` (N×O×oh×ow) and `w` → `dx` (N×C×H×W).
///
/// For stride 1 this is itself a convolution: `dx = conv(dy, W')` with the
/// kernel flipped and its channel axes swapped,
/// `W'[g·cg + c, o, i, j] = W[g·og + o, c, kh−1−i, kw−1−j]`, and padding
/// `d·(k−1) − p`. Its GEMMs have `og·kh·kw` as inner dimension instead of
/// `og`, which suits the GEMM kernel better than the `col2im` route (inner
/// dimension `og`, often 64), kept for strided convolutions and inputs with
/// few channels.
///
/// Errors when a buffer is shorter than the geometry needs.
pub fn conv2d_backward_input<T: Gemm>(dy: &[T], w: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    let (dy, w) = g.input_grad_operands(dy, w)?;
    if let Some(transposed) = plan::flipped_geometry(g) {
        if winograd::applies(&transposed) {
            return winograd::conv2d_backward_input(dy, w, g);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(dx) = super::implicit::try_backward_input_pointwise(dy, w, g) {
            return dx;
        }
        let flipped = flip_kernel(w, g)?;
        return conv2d_forward(dy, &flipped, None, &transposed);
    }
    conv2d_backward_input_col2im(dy, w, g)
}

/// The kernel of the input-gradient convolution: `W'[g·cg + c, o, i, j] =
/// W[g·og + o, c, kh−1−i, kw−1−j]`, channel axes swapped and taps reversed
/// (reversing the flattened `kh·kw` taps reverses both axes).
///
/// A transpose of `og × cg` blocks of taps, done in tasks of
/// [`FLIP_OUTPUTS`] output channels: each walks its rows of `W` from end
/// to end side by side (one sequential stream per row, which the hardware
/// prefetchers follow) and writes, per input channel, one contiguous run
/// of `FLIP_OUTPUTS·kh·kw` values of `W'`. Reading `W` in short runs a page
/// apart instead left every line a cache miss: that version took 17.6 % of
/// the input gradient of ResNet-50's 2048→512 1×1 layer at 7² (`perf`).
/// Errors when `w` holds fewer values than the geometry's weights (the
/// tasks write through a raw pointer, so the length is checked first).
pub(super) fn flip_kernel<T: Float>(w: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    let (og, cg, taps) = (g.og(), g.cg(), g.kh * g.kw);
    let len = g.c_out * cg * taps;
    let w = w.get(..len).ok_or_else(|| {
        Error::bad_shape(
            "conv2d",
            format!(
                "weight buffer holds {} elements, the kernel needs {len}",
                w.len()
            ),
        )
    })?;
    let mut flipped = take_empty::<T>(w.len())?;
    if w.is_empty() {
        return Ok(flipped); // no output or input channels: nothing to flip
    }
    let chunks = og.div_ceil(FLIP_OUTPUTS);
    let out = SharedMut(flipped.spare_capacity_mut().as_mut_ptr());
    (0..g.groups * chunks).into_par_iter().for_each(|task| {
        let (gi, o0) = (task / chunks, task % chunks * FLIP_OUTPUTS);
        let outs = FLIP_OUTPUTS.min(og - o0);
        let rows = (gi * og + o0) * cg * taps; // W[g·og + o0, 0, ..]
        for c in 0..cg {
            // Safety: W' row g·cg + c, output channels o0..o0 + outs: in
            // range (W' has the `len` = groups·cg·og·taps values reserved
            // above), and each task's runs are its own (distinct groups or
            // output channels).
            let dst = unsafe { out.slice(((gi * cg + c) * og + o0) * taps, outs * taps) };
            if taps == 1 {
                // A plain transpose: one value per output channel, without
                // the loop over taps (half the time of the general loop).
                for (o, d) in dst.iter_mut().enumerate() {
                    d.write(w[rows + o * cg + c]);
                }
                continue;
            }
            for (o, d) in dst.chunks_exact_mut(taps).enumerate() {
                let src = &w[rows + (o * cg + c) * taps..][..taps];
                for (d, &v) in d.iter_mut().zip(src.iter().rev()) {
                    d.write(v);
                }
            }
        }
    });
    // SAFETY: the tasks cover every (group, output channel, input channel)
    // triple once, and write all `taps` values of each: all `w.len()`.
    unsafe { flipped.set_len(w.len()) };
    Ok(flipped)
}

/// Output channels per task of [`flip_kernel`], so rows of `W` read side by
/// side: 16, as many streams as the prefetchers follow well.
const FLIP_OUTPUTS: usize = 16;

/// Input gradient through `dcol = Wᵀ · dy` and `col2im`, for any stride.
///
/// `dcol` has `cg·kh·kw` rows (nine per input channel for a 3×3 kernel),
/// so tiles are kept to about [`COL2IM_TILE_COLUMNS`] columns for it to
/// stay in L2 between the product and `col2im`; `Wᵀ` is packed once
/// per call (where the GEMM has a packed form), so narrow tiles do not
/// repack it.
fn conv2d_backward_input_col2im<T: Gemm>(dy: &[T], w: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    let len = g.n * g.image_len();
    let mut dx = take_empty::<T>(len)?;
    dx.resize(len, T::ZERO); // col2im adds into zeroed planes
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let most = COL2IM_TILE_COLUMNS
        .div_ceil(cols.max(1))
        .clamp(1, largest(&image_tiles(g)));
    let tiles = image_tiles_of(g, most);
    let max_ld = largest(&tiles) * cols;
    // Safety: each group's og × k weights lie inside `w` (checked by the
    // caller's operand checks), read transposed.
    let packed: Vec<Option<T::Packed>> = (0..g.groups)
        .map(|gi| unsafe { T::pack(k, og, w.as_ptr().add(gi * og * k), (1, k as isize)) })
        .collect();
    let dx_ptr = SharedMut(dx.as_mut_ptr());
    for_each_tile(g, &tiles, |n0, t| {
        with_scratch(k * max_ld + og * max_ld, |scratch: &mut [T]| {
            let (col, dyt) = scratch.split_at_mut(k * max_ld);
            let ld = t * cols;
            for (gi, packed_gi) in packed.iter().enumerate() {
                gather_tile(dy, g, gi, n0, t, dyt);
                let col = &mut col[..k * ld];
                match packed_gi {
                    // Safety: `dyt` holds og × ld values, `col` k × ld.
                    Some(wt) => unsafe {
                        T::gemm_packed(
                            wt,
                            ld,
                            dyt.as_ptr(),
                            (ld as isize, 1),
                            T::ZERO,
                            col.as_mut_ptr(),
                            ld as isize,
                        )
                    },
                    None => {
                        let weights_t = MatRef::row_major(w, gi * og * k, og, k).t();
                        gemm_serial(weights_t, MatRef::row_major(dyt, 0, og, ld), col, false);
                    }
                }
                for i in 0..t {
                    // Safety: tile images are disjoint, so their gradients are.
                    let dx_n = unsafe { dx_ptr.slice((n0 + i) * g.image_len(), g.image_len()) };
                    col2im(col, g, gi * g.cg(), dx_n, ld, i * cols);
                }
            }
        })
    });
    Ok(dx)
}

/// Columns of a `col2im` tile (see `conv2d_backward_input_col2im`).
const COL2IM_TILE_COLUMNS: usize = 256;

/// Weight gradient: `x` and `dy` → `dw` (O×C/g×kh×kw), summed over images.
/// f32 on AVX2 or AVX-512 goes to the pixel-lane kernels where
/// `pixel_lanes::applies` (3-wide stride-1 layers with few channels), to
/// the channel-lane kernels where they pay (`channel_lanes`: 3×3
/// stride-2 layers on small planes, and small stride-1 ones with
/// AVX-512); then geometries that [`winograd::applies`] to go there, other
/// f32 on AVX2 or AVX-512 to the implicit GEMM (`implicit`), the rest
/// through im2col + GEMM. Errors when a buffer is shorter than the
/// geometry needs.
pub fn conv2d_backward_weight<T: Gemm>(x: &[T], dy: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    #[cfg(target_arch = "x86_64")]
    if let Some(dw) = super::pixel_lanes::try_backward_weight(x, dy, g) {
        return dw;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(dw) = super::channel_lanes::try_backward_weight(x, dy, g) {
        return dw;
    }
    if winograd::applies(g) {
        return winograd::conv2d_backward_weight(x, dy, g);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(dw) = super::implicit::try_backward_weight(x, dy, g) {
        return dw;
    }
    conv2d_backward_weight_im2col(x, dy, g)
}

/// The weight gradient through im2col + GEMM, for any geometry.
/// Errors when a buffer is shorter than the geometry needs.
pub fn conv2d_backward_weight_im2col<T: Gemm>(x: &[T], dy: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    let (x, dy) = g.weight_grad_operands(x, dy)?;
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let wlen = g.c_out * k;
    let tiles = image_tiles(g);
    let max_ld = largest(&tiles) * cols;
    let direct = cols >= DIRECT_MIN_INNER;
    let dyt_len = if direct { 0 } else { og * max_ld };
    // Adds the weight gradient of the `t` images from `n0` on to `dw`.
    let add_tile = |mut dw: Vec<T>, &(n0, t): &(usize, usize)| {
        let ld = t * cols;
        with_scratch(k * max_ld + dyt_len, |scratch: &mut [T]| {
            let (col, dyt) = scratch.split_at_mut(k * max_ld);
            for gi in 0..g.groups {
                im2col_tile(x, g, gi, n0, t, col);
                let dw_g = &mut dw[gi * og * k..(gi + 1) * og * k];
                if direct {
                    for i in 0..t {
                        let base = (n0 + i) * g.out_image_len() + gi * og * cols;
                        let grad = MatRef::row_major(dy, base, og, cols);
                        gemm_serial(grad, image_columns(col, g, i, ld).t(), dw_g, true);
                    }
                } else {
                    gather_tile(dy, g, gi, n0, t, dyt);
                    let grad = MatRef::row_major(dyt, 0, og, ld);
                    let cols_t = MatRef::row_major(col, 0, k, ld).t();
                    gemm_serial(grad, cols_t, dw_g, true);
                }
            }
        });
        dw
    };
    sum_in_fixed_runs(&tiles, wlen, parallel(g), add_tile)
}

/// Folds `items` into a zeroed accumulator of `len` elements with `add`.
/// In parallel, the items are split into one fixed run per thread
/// ([`thread_runs`]) and the runs' sums are added in run order, so the result is the same on every
/// call (rayon's adaptive fold/reduce would change the order of the
/// additions). Weight gradients are summed this way.
///
/// The accumulators come from the buffer pool and the partial sums go
/// back to it: a Winograd weight gradient's are 16 MB per thread for 512
/// channels, and fresh ones page-faulted on every call (measured: the
/// 512-channel 4×4 layers' weight gradient took twice as long inside a
/// training step as alone).
pub(super) fn sum_in_fixed_runs<T: Float, I: Sync>(
    items: &[I],
    len: usize,
    parallel: bool,
    add: impl Fn(Vec<T>, &I) -> Vec<T> + Sync,
) -> Result<Vec<T>> {
    if !parallel {
        return Ok(items.iter().fold(take_zeroed(len)?, &add));
    }
    let runs: Vec<&[I]> = thread_runs(items.len())
        .map(|(start, n)| &items[start..start + n])
        .collect();
    let partials: Vec<Vec<T>> = runs
        .par_iter()
        .map(|run| Ok(run.iter().fold(take_zeroed(len)?, &add)))
        .collect::<Result<_>>()?;
    let mut parts = partials.into_iter();
    let mut sum = match parts.next() {
        Some(first) => first,
        None => take_zeroed(len)?,
    };
    for p in parts {
        // Large sums (Winograd's 16 MB of transformed weight gradients
        // for 512 channels) are added in parallel chunks: elementwise, so
        // the same bits.
        let chunk = (len / num_threads()).max(PARALLEL_MIN_ELEMENTS);
        sum.par_chunks_mut(chunk)
            .zip(p.par_chunks(chunk))
            .for_each(|(s, p)| s.iter_mut().zip(p).for_each(|(x, &y)| *x += y));
        recycle(p);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests;

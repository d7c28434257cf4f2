//! CPU kernels of 2-D convolution: im2col + GEMM, and its two backward
//! passes on the same machinery.
//!
//! For one image and one group, `im2col` unrolls every receptive field into
//! a column: `col[(c·kh + i)·kw + j, oy·ow + ox] = x[c, oy·sh − ph + i·dh, ox·sw − pw + j·dw]`
//! (0 in the padding). The convolution is then one GEMM,
//! `out[g] = W[g] (og × cg·kh·kw) · col (cg·kh·kw × oh·ow)`. Backward reuses it:
//! `dcol = W[g]ᵀ · dy[g]` folded back with `col2im`, and `dW[g] += dy[g] · colᵀ`.
//! A 1×1, stride-1, unpadded convolution skips the unrolling: the image is
//! already its own `col`.
//!
//! Images run in parallel (rayon), each task with its own `col` buffer and
//! single-threaded GEMMs; the weight gradient is accumulated per task and
//! summed at the end. [`conv2d_direct`] is the naive seven-loop definition,
//! kept as the test oracle.

use crate::backend::cpu::pool::take;
use crate::ops::matmul::cpu::{gemm_serial, Gemm, MatRef};
use crate::tensor::Float;
use rayon::prelude::*;

/// Shapes and hyper-parameters of one convolution, with derived sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of `col`: one per (channel, kernel row, kernel column).
    pub fn col_rows(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Columns of `col`: one per output pixel.
    pub fn col_cols(&self) -> usize {
        self.oh * self.ow
    }
    /// True when `col` would equal the input (1×1, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.padding == (0, 0)
    }
    fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_image_len(&self) -> usize {
        self.c_out * self.oh * self.ow
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> usize {
        self.n * self.c_out * self.oh * self.ow * self.col_rows()
    }
}

/// The output positions `o` in `0..out_len` whose input coordinate
/// `o·stride − pad + offset` falls inside `0..in_len`.
fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    pad: usize,
    offset: usize,
) -> std::ops::Range<usize> {
    // o·stride + offset ≥ pad  and  o·stride + offset < pad + in_len
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    let hi = if pad + in_len > offset {
        (pad + in_len - offset).div_ceil(stride)
    } else {
        0
    };
    lo.min(out_len)..hi.min(out_len).max(lo.min(out_len))
}

/// Unrolls channels `c0..c0 + cg` of one image (`x`: C×H×W) into `col`.
fn im2col<T: Float>(x: &[T], g: &ConvGeom, c0: usize, col: &mut [T]) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let cols = g.col_cols();
    let mut row = 0;
    for c in c0..c0 + g.cg() {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            let ys = valid_range(g.oh, g.h, sh, ph, i * dh);
            for j in 0..g.kw {
                let xs = valid_range(g.ow, g.w, sw, pw, j * dw);
                let dst = &mut col[row * cols..(row + 1) * cols];
                for oy in 0..g.oh {
                    let out_row = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                    if !ys.contains(&oy) || xs.is_empty() {
                        out_row.fill(T::ZERO);
                        continue;
                    }
                    let iy = oy * sh + i * dh - ph;
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    out_row[..xs.start].fill(T::ZERO);
                    out_row[xs.end..].fill(T::ZERO);
                    let ix0 = xs.start * sw + j * dw - pw;
                    if sw == 1 {
                        out_row[xs.clone()].copy_from_slice(&src[ix0..ix0 + xs.len()]);
                    } else {
                        for (k, o) in out_row[xs.clone()].iter_mut().enumerate() {
                            *o = src[ix0 + k * sw];
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Adds `col` back into channels `c0..c0 + cg` of one image gradient
/// (`dx`: C×H×W): the adjoint of [`im2col`].
fn col2im<T: Float>(col: &[T], g: &ConvGeom, c0: usize, dx: &mut [T]) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let cols = g.col_cols();
    let mut row = 0;
    for c in c0..c0 + g.cg() {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            let ys = valid_range(g.oh, g.h, sh, ph, i * dh);
            for j in 0..g.kw {
                let xs = valid_range(g.ow, g.w, sw, pw, j * dw);
                let src = &col[row * cols..(row + 1) * cols];
                for oy in ys.clone() {
                    let iy = oy * sh + i * dh - ph;
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let ix0 = xs.start * sw + j * dw - pw;
                    for (k, &v) in src[oy * g.ow + xs.start..oy * g.ow + xs.end]
                        .iter()
                        .enumerate()
                    {
                        dst[ix0 + k * sw] += v;
                    }
                }
                row += 1;
            }
        }
    }
}

/// True when the whole job is big enough to spread images over threads.
fn parallel(g: &ConvGeom) -> bool {
    g.n > 1 && g.macs() >= 1 << 18
}

/// Forward: `x` (N×C×H×W), `w` (O×C/g×kh×kw), optional `bias` (O), all
/// contiguous; returns N×O×oh×ow.
pub fn conv2d_forward<T: Gemm>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let mut out = take::<T>(g.n * g.out_image_len());
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let one_image = |col: &mut Vec<T>, (n, out_n): (usize, &mut [T])| {
        let image = &x[n * g.image_len()..(n + 1) * g.image_len()];
        for gi in 0..g.groups {
            let weights = MatRef::row_major(w, gi * og * k, og, k);
            let dst = &mut out_n[gi * og * cols..(gi + 1) * og * cols];
            if g.is_pointwise() {
                let src = MatRef::row_major(image, gi * g.cg() * cols, g.cg(), cols);
                gemm_serial(weights, src, dst, false);
            } else {
                im2col(image, g, gi * g.cg(), col);
                gemm_serial(weights, MatRef::row_major(col, 0, k, cols), dst, false);
            }
        }
        if let Some(b) = bias {
            for (plane, &bv) in out_n.chunks_mut(cols).zip(b) {
                plane.iter_mut().for_each(|v| *v += bv);
            }
        }
    };
    let col_len = if g.is_pointwise() { 0 } else { k * cols };
    if parallel(g) {
        out.par_chunks_mut(g.out_image_len())
            .enumerate()
            .for_each_init(|| vec![T::ZERO; col_len], one_image);
    } else {
        let mut col = vec![T::ZERO; col_len];
        out.chunks_mut(g.out_image_len().max(1))
            .enumerate()
            .for_each(|item| one_image(&mut col, item));
    }
    out
}

/// Input gradient: `dy` (N×O×oh×ow) and `w` → `dx` (N×C×H×W).
pub fn conv2d_backward_input<T: Gemm>(dy: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    let mut dx = take::<T>(g.n * g.image_len());
    dx.fill(T::ZERO); // col2im accumulates
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let one_image = |col: &mut Vec<T>, (n, dx_n): (usize, &mut [T])| {
        let dy_n = &dy[n * g.out_image_len()..(n + 1) * g.out_image_len()];
        for gi in 0..g.groups {
            let weights_t = MatRef::row_major(w, gi * og * k, og, k).t();
            let grad = MatRef::row_major(dy_n, gi * og * cols, og, cols);
            if g.is_pointwise() {
                let dst = &mut dx_n[gi * g.cg() * cols..(gi + 1) * g.cg() * cols];
                gemm_serial(weights_t, grad, dst, false);
            } else {
                gemm_serial(weights_t, grad, col, false);
                col2im(col, g, gi * g.cg(), dx_n);
            }
        }
    };
    let col_len = if g.is_pointwise() { 0 } else { k * cols };
    if parallel(g) {
        dx.par_chunks_mut(g.image_len())
            .enumerate()
            .for_each_init(|| vec![T::ZERO; col_len], one_image);
    } else {
        let mut col = vec![T::ZERO; col_len];
        dx.chunks_mut(g.image_len().max(1))
            .enumerate()
            .for_each(|item| one_image(&mut col, item));
    }
    dx
}

/// Weight gradient: `x` and `dy` → `dw` (O×C/g×kh×kw), summed over images.
pub fn conv2d_backward_weight<T: Gemm>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let (og, k, cols) = (g.og(), g.col_rows(), g.col_cols());
    let wlen = g.c_out * k;
    let col_len = if g.is_pointwise() { 0 } else { k * cols };
    // Accumulates image `n` into `dw` using the scratch `col`.
    let add_image = |dw: &mut Vec<T>, col: &mut Vec<T>, n: usize| {
        let image = &x[n * g.image_len()..(n + 1) * g.image_len()];
        let dy_n = &dy[n * g.out_image_len()..(n + 1) * g.out_image_len()];
        for gi in 0..g.groups {
            let grad = MatRef::row_major(dy_n, gi * og * cols, og, cols);
            let dst = &mut dw[gi * og * k..(gi + 1) * og * k];
            if g.is_pointwise() {
                let src = MatRef::row_major(image, gi * g.cg() * cols, g.cg(), cols);
                gemm_serial(grad, src.t(), dst, true);
            } else {
                im2col(image, g, gi * g.cg(), col);
                gemm_serial(grad, MatRef::row_major(col, 0, k, cols).t(), dst, true);
            }
        }
    };
    if parallel(g) {
        (0..g.n)
            .into_par_iter()
            .fold(
                || (vec![T::ZERO; wlen], vec![T::ZERO; col_len]),
                |(mut dw, mut col), n| {
                    add_image(&mut dw, &mut col, n);
                    (dw, col)
                },
            )
            .map(|(dw, _)| dw)
            .reduce(
                || vec![T::ZERO; wlen],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, &y)| *x += y);
                    a
                },
            )
    } else {
        let (mut dw, mut col) = (vec![T::ZERO; wlen], vec![T::ZERO; col_len]);
        (0..g.n).for_each(|n| add_image(&mut dw, &mut col, n));
        dw
    }
}

/// The definition, loop by loop: the oracle the fast paths are tested against.
pub fn conv2d_direct<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let mut out = vec![T::ZERO; g.n * g.out_image_len()];
    let (cg, og) = (g.cg(), g.og());
    for n in 0..g.n {
        for o in 0..g.c_out {
            let grp = o / og;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias.map_or(T::ZERO, |b| b[o]);
                    for c in 0..cg {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let iy = (oy * g.stride.0 + i * g.dilation.0) as isize
                                    - g.padding.0 as isize;
                                let ix = (ox * g.stride.1 + j * g.dilation.1) as isize
                                    - g.padding.1 as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * g.c_in + grp * cg + c) * g.h + iy as usize) * g.w
                                    + ix as usize;
                                let wi = ((o * cg + c) * g.kh + i) * g.kw + j;
                                acc += x[xi] * w[wi];
                            }
                        }
                    }
                    out[((n * g.c_out + o) * g.oh + oy) * g.ow + ox] = acc;
                }
            }
        }
    }
    out
}

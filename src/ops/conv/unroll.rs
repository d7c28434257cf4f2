//! Unrolling for the im2col route (`cpu.rs`): [`im2col`] writes every
//! receptive field of an image as a column, and [`col2im`] is its adjoint,
//! adding the columns of an input gradient back into the image's pixels.

use super::geom::ConvGeom;
use crate::tensor::Float;

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

/// Unrolls channels `c0..c0 + cg` of one image (`x`: C×H×W) into `col`,
/// whose rows are `ld` long; this image's columns start at `off`.
pub(super) fn im2col<T: Float>(
    x: &[T],
    g: &ConvGeom,
    c0: usize,
    col: &mut [T],
    ld: usize,
    off: usize,
) {
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
                let dst = &mut col[row * ld + off..row * ld + off + cols];
                if (sh, sw) == (1, 1) && g.ow == g.w {
                    shifted_plane(plane, dst, g.w, (&ys, &xs), (i * dh, j * dw), (ph, pw));
                    row += 1;
                    continue;
                }
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

/// One `col` row of a stride-1 convolution whose output rows are as long
/// as the input's (`w`, e.g. a 3×3 kernel with padding 1): then
/// `dst[oy·w + ox] = plane[(oy + di − ph)·w + ox + dj − pw]` is the plane
/// shifted by a constant offset, so the valid rows `ys` are one contiguous
/// copy, after which the columns outside `xs` (which the copy filled with
/// neighbouring rows' pixels) and the rows outside `ys` are set to zero.
/// One long copy instead of one short copy per output row.
fn shifted_plane<T: Float>(
    plane: &[T],
    dst: &mut [T],
    w: usize,
    (ys, xs): (&std::ops::Range<usize>, &std::ops::Range<usize>),
    (di, dj): (usize, usize),
    (ph, pw): (usize, usize),
) {
    dst[..ys.start * w].fill(T::ZERO);
    dst[ys.end * w..].fill(T::ZERO);
    if ys.is_empty() || xs.is_empty() {
        dst[ys.start * w..ys.end * w].fill(T::ZERO);
        return;
    }
    // Output range of the copy, and where it starts in the plane:
    // (first valid oy, first valid ox) maps to (iy, ix) = (oy + di − ph, ox + dj − pw).
    let lo = ys.start * w + xs.start;
    let hi = (ys.end - 1) * w + xs.end;
    let src = (ys.start + di - ph) * w + xs.start + dj - pw;
    dst[lo..hi].copy_from_slice(&plane[src..src + (hi - lo)]);
    for oy in ys.clone() {
        dst[oy * w..oy * w + xs.start].fill(T::ZERO);
        dst[oy * w + xs.end..(oy + 1) * w].fill(T::ZERO);
    }
}

/// Folds `col` (rows `ld` long, this image's columns from `off`) back into
/// channels `c0..c0 + cg` of one image's input gradient (`dx`: C×H×W,
/// those planes zero on entry): the adjoint of [`im2col`], each pixel the
/// sum of the terms its kernel taps give it.
///
/// A tap `(i, j)` sends output pixel `(oy, ox)` to input pixel
/// `(oy·sh + i·dh − ph, ox·sw + j·dw − pw)`, always in the same phase of
/// the plane: the pixels whose row is `(i·dh − ph) mod sh` and whose
/// column is `(j·dw − pw) mod sw`, modulo the stride. With a stride above
/// 1 and at least as many taps as phases (a strided 3×3 kernel), each
/// channel's gradient is summed in its phases, kept apart in a buffer
/// where a tap's pixels form a rectangle, added row by row (or in one run
/// where the rectangle spans whole rows); the phases are then interleaved
/// into the plane, overwriting its zeros. Otherwise (stride 1, or a
/// strided 1×1 kernel that reaches one pixel in four) the taps are added
/// into the plane directly. Either way the terms of a pixel are added one
/// at a time from zero in the order of the taps, row by row, so the two
/// give the same bits. The ResNets' strided 3×3 layers (padding 1, even
/// planes) skip both: [`col2im_even_stride2_3x3`] writes each pixel's
/// known terms' sum directly, in the same order.
///
/// Measured on the input gradients of the CIFAR ResNets' strided 3×3
/// layers (batch 32, one thread, `ferrite bench --conv-layers`, three
/// alternating rounds against one scalar add per element at a stride):
/// 16→32 1.41 → 1.03 ms, 32→64 1.10 → 0.90, 64→128 11.6 → 9.7; the
/// strided 1×1 layers, which add directly, within 2 % either way. The
/// phase buffer holds at most `kh·kw` phases (`sh·sw` ≤ taps), each
/// about `h·w / (sh·sw)` values.
pub(super) fn col2im<T: Float>(
    col: &[T],
    g: &ConvGeom,
    c0: usize,
    dx: &mut [T],
    ld: usize,
    off: usize,
) {
    let cols = g.col_cols();
    let plane_len = g.h * g.w;
    if plane_len == 0 {
        return; // an empty plane (padding alone gives outputs): nothing to add
    }
    let planes = &mut dx[c0 * plane_len..(c0 + g.cg()) * plane_len];
    if is_even_stride2_3x3(g) {
        for (c, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
            let src = |t: usize| &col[(c * 9 + t) * ld + off..][..cols];
            col2im_even_stride2_3x3(src, plane, (g.oh, g.ow));
        }
        return;
    }
    let (sh, sw) = g.stride;
    let taps: Vec<Tap> = (0..g.kh)
        .flat_map(|i| (0..g.kw).map(move |j| (i, j)))
        .map(|(i, j)| Tap::new(g, i, j))
        .collect();
    let phased = (sh, sw) != (1, 1) && taps.len() >= sh * sw;
    // The phases' rows and columns (rounded up: every phase gets the same
    // size, and positions past the plane are never written).
    let (rows, width) = (g.h.div_ceil(sh), g.w.div_ceil(sw));
    let phase_len = rows * width;
    let mut phases = vec![T::ZERO; if phased { sh * sw * phase_len } else { 0 }];
    for (c, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
        let src = |t: usize| &col[(c * taps.len() + t) * ld + off..][..cols];
        if !phased {
            for (t, tap) in taps.iter().enumerate() {
                tap.add_to_plane(src(t), plane, g);
            }
            continue;
        }
        phases.fill(T::ZERO);
        for (t, tap) in taps.iter().enumerate() {
            let (iy, ix) = tap.start;
            let phase = (iy % sh) * sw + ix % sw;
            let dst = &mut phases[phase * phase_len..][..phase_len];
            tap.add_to_phase(src(t), dst, g.ow, (iy / sh, ix / sw, width));
        }
        merge_phases(&phases, plane, g, (rows, width));
    }
}

/// Whether [`col2im_even_stride2_3x3`] folds `g`'s columns: a 3×3
/// kernel at stride 2 with padding 1 and no dilation on a plane of even
/// height and width (every strided 3×3 layer of the ResNets), whose
/// output is then exactly half the plane each way.
fn is_even_stride2_3x3(g: &ConvGeom) -> bool {
    (g.kh, g.kw, g.stride, g.padding, g.dilation) == (3, 3, (2, 2), (1, 1), (1, 1))
        && (g.h, g.w) == (2 * g.oh, 2 * g.ow)
}

/// [`col2im`] of one channel for [`is_even_stride2_3x3`] geometries:
/// `tap(t)` is the `oh × ow` column block of tap `t = 3·i + j`, `plane`
/// the `2·oh × 2·ow` gradient, every value of which is written.
///
/// Input pixel `(2a + p, 2b + q)` takes kernel row 1 from output row `a`
/// when `p` = 0, and rows 0 and 2 from output rows `a + 1` and `a` when
/// `p` = 1 (the first only below the last output row); the same for the
/// columns. So each pixel is the sum of one, two or four known terms,
/// added here from zero in the order of the taps, which is what the
/// general route's scatter over taps and phases gives, bit for bit
/// (tested), without its phase buffer, its zero fill and its short
/// row loops. On ResNet-18's 256→512 stride-2 input gradient (4×4
/// outputs) those took 17.5 % of the pass (`perf`, one thread); with
/// this the CIFAR stride-2 input gradients took 0.75–0.96 of their time
/// (four alternating runs, one thread, AVX-512 host), the ImageNet ones
/// at 14² to 56² 0.97–1.03.
fn col2im_even_stride2_3x3<'a, T: Float + 'a>(
    tap: impl Fn(usize) -> &'a [T],
    plane: &mut [T],
    (oh, ow): (usize, usize),
) {
    let t: [&[T]; 9] = std::array::from_fn(|i| &tap(i)[..oh * ow]);
    let w = 2 * ow;
    assert_eq!(plane.len(), 4 * oh * ow);
    let zero = T::ZERO;
    for a in 0..oh {
        let (even, odd) = plane[2 * a * w..(2 * a + 2) * w].split_at_mut(w);
        let row = |i: usize, r: usize| &t[i][r * ow..(r + 1) * ow];
        let (c3, c4, c5, c6, c7, c8) = (
            row(3, a),
            row(4, a),
            row(5, a),
            row(6, a),
            row(7, a),
            row(8, a),
        );
        // Pixel pairs (2b, 2b + 1) of rows 2a and 2a + 1; the odd column
        // takes kernel column 0 from output column b + 1, except the last.
        let (Some((even_last, even_pairs)), Some((odd_last, odd_pairs))) =
            (even.split_last_mut(), odd.split_last_mut())
        else {
            return; // no columns (ow = 0): nothing to write
        };
        // Row 2a: kernel row 1.
        for (b, pair) in even_pairs.chunks_exact_mut(2).enumerate() {
            pair[0] = zero + c4[b];
            pair[1] = (zero + c3[b + 1]) + c5[b];
        }
        even_pairs[w - 2] = zero + c4[ow - 1];
        *even_last = zero + c5[ow - 1];
        // Row 2a + 1: kernel row 2, and kernel row 0 from output row
        // a + 1 where there is one.
        if a + 1 < oh {
            let (c0, c1, c2) = (row(0, a + 1), row(1, a + 1), row(2, a + 1));
            for (b, pair) in odd_pairs.chunks_exact_mut(2).enumerate() {
                pair[0] = (zero + c1[b]) + c7[b];
                pair[1] = (((zero + c0[b + 1]) + c2[b]) + c6[b + 1]) + c8[b];
            }
            odd_pairs[w - 2] = (zero + c1[ow - 1]) + c7[ow - 1];
            *odd_last = (zero + c2[ow - 1]) + c8[ow - 1];
        } else {
            for (b, pair) in odd_pairs.chunks_exact_mut(2).enumerate() {
                pair[0] = zero + c7[b];
                pair[1] = (zero + c6[b + 1]) + c8[b];
            }
            odd_pairs[w - 2] = zero + c7[ow - 1];
            *odd_last = zero + c8[ow - 1];
        }
    }
}

/// Where one kernel tap's terms go in [`col2im`].
struct Tap {
    /// The output rows and columns whose input pixel is inside the plane.
    ys: std::ops::Range<usize>,
    xs: std::ops::Range<usize>,
    /// The input pixel of output pixel `(ys.start, xs.start)`.
    start: (usize, usize),
}

impl Tap {
    /// Kernel tap `(i, j)` of `g`.
    fn new(g: &ConvGeom, i: usize, j: usize) -> Tap {
        let (di, dj) = (i * g.dilation.0, j * g.dilation.1);
        let (ph, pw) = g.padding;
        let ys = valid_range(g.oh, g.h, g.stride.0, ph, di);
        let xs = valid_range(g.ow, g.w, g.stride.1, pw, dj);
        // 0 when no output is valid (then nothing is added).
        let start = (
            (ys.start * g.stride.0 + di).saturating_sub(ph),
            (xs.start * g.stride.1 + dj).saturating_sub(pw),
        );
        Tap { ys, xs, start }
    }

    /// Adds the tap's terms, `src` (the `oh × ow` column block), into the
    /// `h × w` plane, at its stride.
    fn add_to_plane<T: Float>(&self, src: &[T], plane: &mut [T], g: &ConvGeom) {
        let (ys, xs) = (&self.ys, &self.xs);
        if xs.is_empty() {
            return;
        }
        let ((iy, ix), (sh, sw)) = (self.start, g.stride);
        for (r, oy) in ys.clone().enumerate() {
            let src = &src[oy * g.ow + xs.start..][..xs.len()];
            let row = &mut plane[(iy + r * sh) * g.w + ix..][..(xs.len() - 1) * sw + 1];
            if sw == 1 {
                row.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
            } else {
                row.iter_mut()
                    .step_by(sw)
                    .zip(src)
                    .for_each(|(d, &v)| *d += v);
            }
        }
    }

    /// Adds the tap's terms, `src` (the `oh × ow` column block), into its
    /// phase `dst` (rows of `width`), output pixel `(ys.start, xs.start)`
    /// at row `u0`, column `v0`.
    fn add_to_phase<T: Float>(
        &self,
        src: &[T],
        dst: &mut [T],
        ow: usize,
        (u0, v0, width): (usize, usize, usize),
    ) {
        let (ys, xs) = (&self.ys, &self.xs);
        if ys.is_empty() || xs.is_empty() {
            return;
        }
        if xs.len() == ow && ow == width && v0 == 0 {
            // Whole rows on both sides: one run.
            let n = ys.len() * ow;
            let src = &src[ys.start * ow..][..n];
            dst[u0 * width..][..n]
                .iter_mut()
                .zip(src)
                .for_each(|(d, &v)| *d += v);
            return;
        }
        for (r, oy) in ys.clone().enumerate() {
            let src = &src[oy * ow + xs.start..][..xs.len()];
            let row = &mut dst[(u0 + r) * width + v0..][..xs.len()];
            row.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
        }
    }
}

/// Interleaves the `sh × sw` phases (each `rows × width`) into `plane`
/// (`g.h × g.w`): pixel `(y, x)` is phase `(y mod sh, x mod sw)`'s
/// element `(y / sh, x / sw)`.
fn merge_phases<T: Float>(
    phases: &[T],
    plane: &mut [T],
    g: &ConvGeom,
    (rows, width): (usize, usize),
) {
    let (sh, sw) = g.stride;
    let phase_len = rows * width;
    for (y, out) in plane.chunks_exact_mut(g.w).enumerate() {
        let at = |b: usize| &phases[((y % sh) * sw + b) * phase_len + (y / sh) * width..][..width];
        if sw == 2 {
            let (even, odd) = (at(0), at(1));
            let mut pairs = out.chunks_exact_mut(2);
            for ((pair, &e), &o) in pairs.by_ref().zip(even).zip(odd) {
                pair[0] = e;
                pair[1] = o;
            }
            if let [last] = pairs.into_remainder() {
                *last = even[width - 1];
            }
        } else {
            for (x, v) in out.iter_mut().enumerate() {
                *v = at(x % sw)[x / sw];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Conv2dParams;
    use rand::{Rng, SeedableRng};

    /// Geometries (`[c, h, w]`, kernel, stride, padding, dilation) for
    /// [`col2im_is_the_adjoint_of_im2col`]: strides 1, 2 and 3, unequal
    /// strides and paddings, dilation with a stride, 1×1 kernels whose
    /// stride leaves pixels no tap reaches, kernels past the plane's edge,
    /// odd plane sizes, an empty plane.
    type Geometry = (
        [usize; 3],
        (usize, usize),
        (usize, usize),
        (usize, usize),
        (usize, usize),
    );
    const GEOMETRIES: [Geometry; 12] = [
        ([3, 16, 16], (3, 3), (2, 2), (1, 1), (1, 1)),
        // Even planes at stride 2 (`col2im_even_stride2_3x3`): non-square,
        // and one output row.
        ([2, 8, 6], (3, 3), (2, 2), (1, 1), (1, 1)),
        ([1, 2, 4], (3, 3), (2, 2), (1, 1), (1, 1)),
        ([2, 7, 6], (3, 3), (2, 2), (1, 1), (1, 1)),
        ([2, 9, 8], (3, 3), (1, 1), (2, 2), (2, 2)),
        ([2, 7, 9], (2, 3), (2, 1), (1, 0), (1, 2)),
        ([1, 11, 11], (7, 7), (2, 2), (3, 3), (1, 1)),
        ([3, 6, 6], (1, 1), (2, 2), (0, 0), (1, 1)),
        ([2, 7, 7], (1, 1), (3, 3), (0, 0), (1, 1)),
        ([1, 5, 5], (3, 3), (3, 3), (2, 2), (1, 1)),
        ([2, 10, 9], (3, 3), (2, 3), (2, 1), (2, 1)),
        // No input rows: the padding alone gives two output rows.
        ([1, 0, 4], (1, 1), (1, 1), (1, 0), (1, 1)),
    ];

    /// The one-image, one-output-channel geometry of `geometry`.
    fn conv_geom(&([c, h, w], (kh, kw), stride, padding, dilation): &Geometry) -> ConvGeom {
        let params = Conv2dParams {
            stride,
            padding,
            dilation,
            ..Conv2dParams::default()
        };
        ConvGeom::new([1, c, h, w], [1, c, kh, kw], &params).unwrap()
    }

    fn random(len: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// `⟨im2col(x), r⟩ = ⟨x, col2im(r)⟩` for random `x` and `r`, in f64,
    /// with the image's columns at an offset inside wider rows (as in a
    /// tile).
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (s, geometry) in GEOMETRIES.iter().enumerate() {
            let g = conv_geom(geometry);
            let (c, h, w) = (g.c_in, g.h, g.w);
            let (k, cols) = (g.col_rows(), g.col_cols());
            let (ld, off) = (cols + 5, 3);
            let x = random(c * h * w, 2 * s as u64);
            let r = random(k * ld, 2 * s as u64 + 1);
            let mut col = vec![f64::NAN; k * ld];
            im2col(&x, &g, 0, &mut col, ld, off);
            let mut dx = vec![0.0; c * h * w];
            col2im(&r, &g, 0, &mut dx, ld, off);
            let lhs: f64 = (0..k)
                .flat_map(|row| (0..cols).map(move |j| row * ld + off + j))
                .map(|i| col[i] * r[i])
                .sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
                "{g:?}: {lhs} vs {rhs}"
            );
        }
    }

    /// Each input pixel's gradient is its terms added one at a time from
    /// zero, in the order of the kernel taps: what the scatter-add over
    /// taps in order gives, bit for bit (f32).
    #[test]
    fn col2im_sums_in_tap_order() {
        for geometry in &GEOMETRIES {
            let g = conv_geom(geometry);
            let ([c, h, w], (kh, kw), stride, padding, dilation) = *geometry;
            let (k, cols) = (g.col_rows(), g.col_cols());
            let r: Vec<f32> = random(k * cols, 7).into_iter().map(|v| v as f32).collect();
            let mut want = vec![0f32; c * h * w];
            for ci in 0..c {
                for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
                    let row = (ci * kh + i) * kw + j;
                    for (oy, ox) in (0..g.oh).flat_map(|y| (0..g.ow).map(move |x| (y, x))) {
                        let iy = (oy * stride.0 + i * dilation.0) as isize - padding.0 as isize;
                        let ix = (ox * stride.1 + j * dilation.1) as isize - padding.1 as isize;
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            want[(ci * h + iy as usize) * w + ix as usize] +=
                                r[row * cols + oy * g.ow + ox];
                        }
                    }
                }
            }
            let mut dx = vec![0f32; c * h * w];
            col2im(&r, &g, 0, &mut dx, cols, 0);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dx), bits(&want), "{g:?}");
        }
    }
}

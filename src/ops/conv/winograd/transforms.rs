//! The per-tile transforms of Winograd F(2×2, 3×3), portable versions
//! and the dispatch to the AVX-512 and AVX2 ones: the input transform
//! `Bᵀ d B`, the output transform `Aᵀ M A` and its adjoint `A dY Aᵀ`,
//! each over the tile rows of one chunk.

#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512, f32_slice, f32_slice_mut};
use super::{matrices_len, matrix_stride, ConvGeom, SharedMut, Tiles};
use crate::tensor::Float;
use std::mem::MaybeUninit;
use std::ops::Range;

/// `V = Bᵀ d B` for the tile rows `rows` (see [`transform_input_portable`]),
/// in AVX-512 or AVX2 for f32 where the CPU has it.
pub(super) fn transform_input<T: Float>(
    x: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    v: &mut [T],
) {
    assert!(v.len() >= matrices_len(g.c_in, rows.len() * tiles.tw));
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(v)) = (f32_slice(x), f32_slice_mut(v)) {
        // Safety (both): the CPU runs the kernels (checked); the buffers
        // are the ones the portable transform takes (and their offsets
        // fit the AVX2 gathers, checked).
        if avx512::available() {
            return unsafe { avx512::transform_input(x, g, tiles, rows, v) };
        }
        if avx2::available() && avx2::fits_offsets(x.len()) {
            return unsafe { avx2::transform_input(x, g, tiles, rows, v) };
        }
    }
    transform_input_portable(x, g, tiles, rows, v)
}

/// `Y = Aᵀ M A` (+ bias) for the tile rows `rows` (see
/// [`transform_output_portable`]), in AVX-512 or AVX2 for f32 where the
/// CPU has it.
pub(super) fn transform_output<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
) {
    assert!(m.len() >= matrices_len(g.c_out, rows.len() * tiles.tw));
    #[cfg(target_arch = "x86_64")]
    if let Some(m) = f32_slice(m) {
        let bias = bias.map(|b| f32_slice(b).expect("bias has the element type of m"));
        let out = SharedMut(out.0.cast::<MaybeUninit<f32>>());
        // Safety (both): the CPU runs the kernels (checked); T is f32, so
        // `out` points at the f32 output the caller vouched for (whose
        // offsets fit the AVX2 gathers, checked).
        if avx512::available() {
            return unsafe { avx512::transform_output(m, bias, g, tiles, rows, out) };
        }
        if avx2::available() && avx2::fits_offsets(g.n * g.out_image_len()) {
            return unsafe { avx2::transform_output(m, bias, g, tiles, rows, out) };
        }
    }
    transform_output_portable(m, bias, g, tiles, rows, out)
}

/// `dM = A dY Aᵀ` for the tile rows `rows` (see
/// [`transform_output_grad_portable`]), in AVX-512 or AVX2 for f32 where
/// the CPU has it.
pub(super) fn transform_output_grad<T: Float>(
    dy: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    dm: &mut [T],
) {
    assert!(dm.len() >= matrices_len(g.c_out, rows.len() * tiles.tw));
    #[cfg(target_arch = "x86_64")]
    if let (Some(dy), Some(dm)) = (f32_slice(dy), f32_slice_mut(dm)) {
        // Safety (both): the CPU runs the kernels (checked); the buffers
        // are the portable ones (and their offsets fit the gathers).
        if avx512::available() {
            return unsafe { avx512::transform_output_grad(dy, g, tiles, rows, dm) };
        }
        if avx2::available() && avx2::fits_offsets(dy.len()) {
            return unsafe { avx2::transform_output_grad(dy, g, tiles, rows, dm) };
        }
    }
    transform_output_grad_portable(dy, g, tiles, rows, dm)
}

/// `dst[i] = f(a[i], b[i])`: the shape of every transform step below.
#[inline(always)]
fn combine2<T: Float>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(x, y);
    }
}

/// `dst[i] = f(a[i], b[i], c[i])`.
#[inline(always)]
fn combine3<T: Float>(dst: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d = f(x, y, z);
    }
}

/// Splits one input row into the even and odd columns of a zero-padded
/// strip: strip column `s` holds input column `s − pad` (0 outside the
/// row), `even[q]` is strip column `2q` and `odd[q]` is `2q + 1`.
fn split_even_odd<T: Float>(src: &[T], pad: usize, even: &mut [T], odd: &mut [T]) {
    let n = even.len();
    let pixel = |s: usize| {
        s.checked_sub(pad)
            .and_then(|x| src.get(x))
            .copied()
            .unwrap_or(T::ZERO)
    };
    // Pairs q whose columns 2q and 2q + 1 both lie inside the row.
    let q_lo = pad.div_ceil(2).min(n);
    let q_hi = ((pad + src.len()) / 2).clamp(q_lo, n);
    let inside = src[2 * q_lo - pad.min(2 * q_lo)..].chunks_exact(2);
    for ((e, o), pair) in even[q_lo..q_hi]
        .iter_mut()
        .zip(&mut odd[q_lo..q_hi])
        .zip(inside)
    {
        *e = pair[0];
        *o = pair[1];
    }
    for q in (0..q_lo).chain(q_hi..n) {
        even[q] = pixel(2 * q);
        odd[q] = pixel(2 * q + 1);
    }
}

/// `V = Bᵀ d B` for every input channel and every tile of the tile rows
/// `rows`, laid out as 16 row-major C × tb matrices [`matrix_stride`] apart:
/// `v[e·stride + c·tb + t]`, with `t` the tile's index inside the chunk.
///
/// Per tile row and channel, the 4 input rows its tiles read are split
/// into the even and odd columns of a zero-padded strip; tile `tx` then
/// reads `even[tx], odd[tx], even[tx + 1], odd[tx + 1]`. `Bᵀ` combines the
/// strip's rows and `B` those four columns, each as an elementwise
/// operation on whole arrays.
pub(super) fn transform_input_portable<T: Float>(
    x: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    v: &mut [T],
) {
    let (c_n, tw) = (g.c_in, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(c_n, tb);
    let (ph, pw) = g.padding;
    let half = tw + 1;
    let sub = |a: T, b: T| a - b;
    // Even and odd halves of the 4 strip rows, then of the 4 rows of Bᵀ d.
    let mut strip = vec![T::ZERO; 16 * half];
    let (d, bt_d) = strip.split_at_mut(8 * half);
    // Channel by channel, then down the chunk's tile rows: consecutive
    // tile rows read neighbouring input rows, which keeps the reads of
    // x sequential (the other order jumps between planes and stalls on
    // memory latency).
    for c in 0..c_n {
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let plane = &x[(n * c_n + c) * g.h * g.w..(n * c_n + c + 1) * g.h * g.w];
            for (k, pair) in d.chunks_exact_mut(2 * half).enumerate() {
                let (even, odd) = pair.split_at_mut(half);
                let iy = (2 * ty + k).wrapping_sub(ph);
                if iy < g.h {
                    split_even_odd(&plane[iy * g.w..(iy + 1) * g.w], pw, even, odd);
                } else {
                    pair.fill(T::ZERO); // above or below the image: padding
                }
            }
            // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3), both halves.
            let [d0, d1, d2, d3]: [&[T]; 4] =
                std::array::from_fn(|k| &d[k * 2 * half..][..2 * half]);
            let (t0, rest) = bt_d.split_at_mut(2 * half);
            let (t1, rest) = rest.split_at_mut(2 * half);
            let (t2, t3) = rest.split_at_mut(2 * half);
            combine2(t0, d0, d2, sub);
            combine2(t1, d1, d2, |a, b| a + b);
            combine2(t2, d2, d1, sub);
            combine2(t3, d1, d3, sub);
            // (Bᵀ d) B: each row's tile columns (a, b, c, d) =
            // (even[tx], odd[tx], even[tx+1], odd[tx+1]) become
            // (a − c, b + c, c − b, b − d), into the 16 matrices.
            for (i, pair) in bt_d.chunks_exact(2 * half).enumerate() {
                let (even, odd) = pair.split_at(half);
                let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
                let start = |j: usize| (4 * i + j) * stride + c * tb + ri * tw;
                combine2(&mut v[start(0)..][..tw], e0, e1, sub);
                combine2(&mut v[start(1)..][..tw], o0, e1, |a, b| a + b);
                combine2(&mut v[start(2)..][..tw], e1, o0, sub);
                combine2(&mut v[start(3)..][..tw], o0, o1, sub);
            }
        }
    }
}

/// `Y = Aᵀ M A` (+ bias) for every output channel and tile of the tile
/// rows `rows`, from the 16 O × tb product matrices `m` ([`matrix_stride`]
/// apart), written into the
/// N×O×oh×ow output behind `out`. Tiles that overhang an odd-sized output
/// drop their last row or column.
pub(super) fn transform_output_portable<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
) {
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(o_n, tb);
    // Aᵀ M (2 rows of 4 arrays), then (Aᵀ M) A: the even and odd output
    // columns of the tile row's two output rows.
    let mut buf = vec![T::ZERO; 12 * tw];
    let (s, y) = buf.split_at_mut(8 * tw);
    // Channel by channel, then down the tile rows: sequential writes.
    for o in 0..o_n {
        let bias_o = bias.map_or(T::ZERO, |b| b[o]);
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let out_rows = if 2 * ty + 1 < g.oh { 2 } else { 1 };
            let m_e = |e: usize| &m[e * stride + o * tb + ri * tw..][..tw];
            // Aᵀ M: rows (m0 + m1 + m2, m1 − m2 − m3), column by column.
            for (a, dst) in s.chunks_exact_mut(tw).enumerate() {
                let j = a % 4;
                if a < 4 {
                    combine3(dst, m_e(j), m_e(4 + j), m_e(8 + j), |x, y, z| x + y + z);
                } else {
                    combine3(dst, m_e(4 + j), m_e(8 + j), m_e(12 + j), |x, y, z| {
                        x - y - z
                    });
                }
            }
            // (Aᵀ M) A: columns (s0 + s1 + s2, s1 − s2 − s3) of each row.
            for (a, dst) in y.chunks_exact_mut(tw).enumerate() {
                let sj = |j: usize| &s[(4 * (a / 2) + j) * tw..][..tw];
                if a % 2 == 0 {
                    combine3(dst, sj(0), sj(1), sj(2), |x, y, z| x + y + z + bias_o);
                } else {
                    combine3(dst, sj(1), sj(2), sj(3), |x, y, z| x - y - z + bias_o);
                }
            }
            // Safety: tile row `r` is in this chunk only, so output rows
            // 2ty and 2ty + 1 of image n are written by this call alone,
            // and they lie inside the N×O×oh×ow buffer.
            let dst = unsafe { out.slice(((n * o_n + o) * g.oh + 2 * ty) * g.ow, out_rows * g.ow) };
            for (row, line) in dst.chunks_exact_mut(g.ow).enumerate() {
                let (even, odd) = (&y[2 * row * tw..][..tw], &y[(2 * row + 1) * tw..][..tw]);
                let mut pairs = line.chunks_exact_mut(2);
                for ((pair, &e), &od) in pairs.by_ref().zip(even).zip(odd) {
                    pair[0].write(e);
                    pair[1].write(od);
                }
                if let [last] = pairs.into_remainder() {
                    last.write(even[tw - 1]); // odd width: a tile's first column only
                }
            }
        }
    }
}

/// `dM = A dY Aᵀ` for every output channel and tile of the tile rows
/// `rows`: the adjoint of [`transform_output`], laid out like its input
/// (`dm[e·stride + o·tb + t]`). Outside the output, `dY` counts as 0.
pub(super) fn transform_output_grad_portable<T: Float>(
    dy: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    rows: Range<usize>,
    dm: &mut [T],
) {
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(o_n, tb);
    let plane_len = g.oh * g.ow;
    // Even and odd columns of the tile row's two dY rows, then the even (p)
    // and odd (q) columns of the 4 rows of A dY.
    let mut buf = vec![T::ZERO; 12 * tw];
    let (dy_rows, ady) = buf.split_at_mut(4 * tw);
    // Channel by channel, then down the tile rows: sequential reads.
    for o in 0..o_n {
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let plane = &dy[(n * o_n + o) * plane_len..(n * o_n + o + 1) * plane_len];
            for (k, pair) in dy_rows.chunks_exact_mut(2 * tw).enumerate() {
                let (even, odd) = pair.split_at_mut(tw);
                match plane.get((2 * ty + k) * g.ow..(2 * ty + k + 1) * g.ow) {
                    Some(src) => split_even_odd(src, 0, even, odd),
                    None => pair.fill(T::ZERO), // below an odd-sized output
                }
            }
            // A dY: rows (y0, y0 + y1, y0 − y1, −y1), both halves at once.
            let (y0, y1) = dy_rows.split_at(2 * tw);
            let (r0, rest) = ady.split_at_mut(2 * tw);
            let (r1, rest) = rest.split_at_mut(2 * tw);
            let (r2, r3) = rest.split_at_mut(2 * tw);
            r0.copy_from_slice(y0);
            combine2(r1, y0, y1, |a, b| a + b);
            combine2(r2, y0, y1, |a, b| a - b);
            combine2(r3, y1, y1, |_, b| -b);
            // (A dY) Aᵀ: each row's (p, q) becomes (p, p + q, p − q, −q).
            for (i, pair) in ady.chunks_exact(2 * tw).enumerate() {
                let (p, q) = pair.split_at(tw);
                let start = |j: usize| (4 * i + j) * stride + o * tb + ri * tw;
                dm[start(0)..][..tw].copy_from_slice(p);
                combine2(&mut dm[start(1)..][..tw], p, q, |a, b| a + b);
                combine2(&mut dm[start(2)..][..tw], p, q, |a, b| a - b);
                combine2(&mut dm[start(3)..][..tw], q, q, |_, b| -b);
            }
        }
    }
}

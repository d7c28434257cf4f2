//! The tile transforms of the stride-2 Winograd forward: `Bᵀ d B` over a
//! chunk's input patches and `Aᵀ M A` back into the NCHW output. Both are
//! written as elementwise operations on arrays of a chunk's tiles, and
//! compiled again for AVX2 and AVX-512 (the baseline build vectorises
//! them to SSE only), with the input's row mix in AVX-512 intrinsics
//! (`avx512.rs`); every variant computes the same values.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::{matrix_stride, ConvGeom, SharedMut, Tiles, POS};
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::simd::VectorIsa;
#[cfg(target_arch = "x86_64")]
use crate::ops::conv::winograd::{f32_slice, f32_slice_mut};
use crate::tensor::Float;
use std::mem::MaybeUninit;
use std::ops::Range;

/// `dst[i] = a[i] − b[i]`.
#[inline(always)]
fn sub_into<T: Float>(dst: &mut [T], a: &[T], b: &[T]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = x - y;
    }
}

/// `dst[i] = a[i] + b[i] + c[i]`.
#[inline(always)]
fn sum3_into<T: Float>(dst: &mut [T], a: &[T], b: &[T], c: &[T]) {
    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d = x + y + z;
    }
}

/// `dst[i] = a[i] + b[i] + c[i] + bias`.
#[inline(always)]
fn sum3_plus_into<T: Float>(dst: &mut [T], a: &[T], b: &[T], c: &[T], bias: T) {
    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d = x + y + z + bias;
    }
}

/// `V = Bᵀ d B` for every input channel and every tile of the tile rows
/// `rows`: 25 row-major C × tb matrices ([`matrix_stride`] apart), `v[e·stride
/// + c·tb + t]` with `e = 5i + j` and `t` the tile's index in the chunk.
///
/// Tile `(ty, tx)` reads the 5×5 patch at input row `4·ty − ph` and column
/// `4·tx − pw`. Each of its five input rows `k` is mixed across its
/// columns (`d ↦ Bᵀ d`, [`mix_row`]); `Bᵀ` down the rows keeps rows 1, 2
/// and 3 as they are (as matrix rows `i` = 3, 1 and 4), so those are
/// written straight into `v`, and rows 0 and 4 into `tmp`, from which
/// `i = 0` and `i = 2` are formed as `row0 − row2` and `row4 − row2`
/// once a channel's tile rows are done.
pub(super) fn transform_input<T: Float>(
    x: &[T],
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    v: &mut [T],
    tmp: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if let (Some(x), Some(v), Some(tmp)) = (f32_slice(x), f32_slice_mut(v), f32_slice_mut(tmp))
        {
            if avx512::available() {
                // SAFETY: the CPU runs AVX-512 (checked).
                return unsafe { transform_input_avx512(x, g, tiles, rows, v, tmp) };
            }
        }
        if VectorIsa::Avx2.is_available() {
            // SAFETY: the CPU runs AVX2 and FMA (checked).
            return unsafe { transform_input_avx2(x, g, tiles, rows, v, tmp) };
        }
    }
    transform_input_with(x, g, tiles, rows, v, tmp, mix_row)
}

/// [`transform_input`] compiled for AVX-512, rows mixed by
/// `avx512::mix_row` (the same values).
///
/// # Safety
/// The CPU must run AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_input_avx512(
    x: &[f32],
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    v: &mut [f32],
    tmp: &mut [f32],
) {
    transform_input_with(x, g, tiles, rows, v, tmp, |line, pw, tw, dst, offsets| {
        match line {
            // SAFETY: this function runs only where AVX-512F does.
            Some(line) => unsafe { avx512::mix_row(line, pw, tw, dst, offsets) },
            None => mix_row(None, pw, tw, dst, offsets),
        }
    })
}

/// [`transform_input`] compiled for AVX2 (the same values).
///
/// # Safety
/// The CPU must run AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_input_avx2<T: Float>(
    x: &[T],
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    v: &mut [T],
    tmp: &mut [T],
) {
    transform_input_with(x, g, tiles, rows, v, tmp, mix_row)
}

/// The body of [`transform_input`], with the row mix `mix`.
#[inline(always)]
fn transform_input_with<T: Float>(
    x: &[T],
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    v: &mut [T],
    tmp: &mut [T],
    mix: impl Fn(Option<&[T]>, usize, usize, &mut [T], [usize; 5]),
) {
    let (c_n, tw) = (g.c_in, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(c_n, tb);
    assert!(v.len() >= POS * stride, "transform_input: v too short");
    assert!(tmp.len() >= 10 * tb, "transform_input: tmp too short");
    let ph = g.padding.0;
    let plane_len = g.h * g.w;
    let (row0, row4) = tmp[..10 * tb].split_at_mut(5 * tb);
    for c in 0..c_n {
        let base = c * tb;
        if c + PREFETCH_AHEAD < c_n {
            prefetch_rows(x, g, tiles, rows.clone(), c + PREFETCH_AHEAD);
        }
        for (ri, r) in rows.clone().enumerate() {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let plane = &x[(n * c_n + c) * plane_len..][..plane_len];
            let col = ri * tw;
            for k in 0..5 {
                let iy = (4 * ty + k).wrapping_sub(ph);
                let line = (iy < g.h).then(|| &plane[iy * g.w..][..g.w]);
                let (dst, offsets): (&mut [T], [usize; 5]) = match k {
                    0 => (row0, std::array::from_fn(|j| j * tb + col)),
                    4 => (row4, std::array::from_fn(|j| j * tb + col)),
                    _ => {
                        let i = [0, 3, 1, 4][k];
                        (
                            &mut *v,
                            std::array::from_fn(|j| (5 * i + j) * stride + base + col),
                        )
                    }
                };
                mix(line, g.padding.1, tw, dst, offsets);
            }
        }
        // Bᵀ down the rows: matrix rows 0 and 2 are row0 − row2, row4 − row2.
        for j in 0..5 {
            let (below, rest) = v.split_at_mut((5 + j) * stride);
            let (middle, above) = rest.split_at_mut(5 * stride);
            let d2 = &middle[base..][..tb];
            sub_into(
                &mut below[j * stride + base..][..tb],
                &row0[j * tb..][..tb],
                d2,
            );
            sub_into(&mut above[base..][..tb], &row4[j * tb..][..tb], d2);
        }
    }
}

/// Channels ahead whose input rows [`transform_input`] prefetches.
const PREFETCH_AHEAD: usize = 2;

/// Asks the cache for the input rows that the tile rows `rows` read in
/// channel `c`. A chunk reads each image's plane of a channel at once, a
/// plane apart from the next image's, and the next channel's planes lie a
/// whole image further on: without this, the transform waited on memory
/// at the start of every plane (`perf`: half of the AVX-512 transform's
/// time on its loads).
fn prefetch_rows<T>(x: &[T], g: &ConvGeom, tiles: Tiles, rows: Range<usize>, c: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let plane_len = g.h * g.w;
        let line = 64 / std::mem::size_of::<T>().max(1);
        for r in rows {
            let (n, ty) = (r / tiles.th, r % tiles.th);
            let first = (4 * ty).saturating_sub(g.padding.0).min(g.h);
            let end = (4 * ty + 5).saturating_sub(g.padding.0).min(g.h);
            let plane = (n * g.c_in + c) * plane_len;
            for i in (plane + first * g.w..plane + end * g.w).step_by(line) {
                // SAFETY: a prefetch is a hint: it reads nothing into the
                // program and cannot fault; the address is inside `x`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(x[i..].as_ptr().cast()) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, g, tiles, rows, c);
}

/// Mixes one input row across the columns of its `tw` tiles: tile `tx`
/// reads columns `4·tx − pw …` as `d0…d4` (0 outside the row, or
/// everywhere when `line` is `None`, a row of padding) and writes `d0 −
/// d2, d2, d4 − d2, d1, d3` at `dst[offsets[j] + tx]`.
#[inline(always)]
pub(super) fn mix_row<T: Float>(
    line: Option<&[T]>,
    pw: usize,
    tw: usize,
    dst: &mut [T],
    offsets: [usize; 5],
) {
    let Some(line) = line else {
        for o in offsets {
            dst[o..][..tw].fill(T::ZERO);
        }
        return;
    };
    let w = line.len();
    let at = |s: usize| s.wrapping_sub(pw);
    let value = |s: usize| line.get(at(s)).copied().unwrap_or(T::ZERO);
    // Tiles whose five columns all lie inside the row.
    let lo = pw.div_ceil(4).min(tw);
    let hi = if w + pw >= 5 {
        ((w + pw - 5) / 4 + 1).clamp(lo, tw)
    } else {
        lo
    };
    let mut put = |tx: usize, d: [T; 5]| {
        dst[offsets[0] + tx] = d[0] - d[2];
        dst[offsets[1] + tx] = d[2];
        dst[offsets[2] + tx] = d[4] - d[2];
        dst[offsets[3] + tx] = d[1];
        dst[offsets[4] + tx] = d[3];
    };
    for tx in (0..lo).chain(hi..tw) {
        put(tx, std::array::from_fn(|q| value(4 * tx + q)));
    }
    for tx in lo..hi {
        let d: [T; 5] = line[4 * tx - pw..][..5].try_into().expect("five columns");
        put(tx, d);
    }
}

/// Scratch values [`transform_input`] and [`transform_output`] need for a
/// chunk of `tb` tiles.
pub(super) fn scratch_len(tb: usize) -> usize {
    14 * tb
}

/// `Y = Aᵀ M A` (+ bias) for every output channel and tile of the tile
/// rows `rows`, from the 25 O × tb product matrices `m` ([`matrix_stride`]
/// apart), written into the N×O×oh×ow output behind `out`: per tile,
/// `y00 = Σ m_ij` over rows i and columns j in {0, 1, 3}, `y01` over rows
/// {0, 1, 3} and columns {1, 2, 4}, `y10` and `y11` likewise with rows
/// {1, 2, 4}. Tiles that overhang an odd-sized output drop their last row
/// or column.
pub(super) fn transform_output<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
    tmp: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if VectorIsa::Avx512.is_available() {
            // SAFETY: the CPU runs AVX-512 (checked).
            return unsafe { transform_output_avx512(m, bias, g, tiles, rows, out, tmp) };
        }
        if VectorIsa::Avx2.is_available() {
            // SAFETY: the CPU runs AVX2 and FMA (checked).
            return unsafe { transform_output_avx2(m, bias, g, tiles, rows, out, tmp) };
        }
    }
    transform_output_body(m, bias, g, tiles, rows, out, tmp)
}

/// [`transform_output`] compiled for AVX-512 (the same values).
///
/// # Safety
/// The CPU must run AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_output_avx512<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
    tmp: &mut [T],
) {
    transform_output_body(m, bias, g, tiles, rows, out, tmp)
}

/// [`transform_output`] compiled for AVX2 (the same values).
///
/// # Safety
/// The CPU must run AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_output_avx2<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
    tmp: &mut [T],
) {
    transform_output_body(m, bias, g, tiles, rows, out, tmp)
}

/// The body of [`transform_output`].
#[inline(always)]
fn transform_output_body<T: Float>(
    m: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: Tiles,
    rows: Range<usize>,
    out: SharedMut<MaybeUninit<T>>,
    tmp: &mut [T],
) {
    let (o_n, tw) = (g.c_out, tiles.tw);
    let tb = rows.len() * tw;
    let stride = matrix_stride(o_n, tb);
    assert!(m.len() >= POS * stride, "transform_output: m too short");
    {
        let (s, rest) = tmp.split_at_mut(10 * tb);
        let y = &mut rest[..4 * tb];
        for o in 0..o_n {
            let bias_o = bias.map_or(T::ZERO, |b| b[o]);
            let m_e = |e: usize| &m[e * stride + o * tb..][..tb];
            // Aᵀ M: s[a][j] = rows {0, 1, 3} (a = 0) or {1, 2, 4} (a = 1).
            for j in 0..5 {
                sum3_into(&mut s[j * tb..][..tb], m_e(j), m_e(5 + j), m_e(15 + j));
                let dst = &mut s[(5 + j) * tb..][..tb];
                sum3_into(dst, m_e(5 + j), m_e(10 + j), m_e(20 + j));
            }
            // (Aᵀ M) A, plus the bias: y[2a + b].
            for a in 0..2 {
                let sj = |j: usize| &s[(5 * a + j) * tb..][..tb];
                sum3_plus_into(&mut y[2 * a * tb..][..tb], sj(0), sj(1), sj(3), bias_o);
                sum3_plus_into(
                    &mut y[(2 * a + 1) * tb..][..tb],
                    sj(1),
                    sj(2),
                    sj(4),
                    bias_o,
                );
            }
            for (ri, r) in rows.clone().enumerate() {
                let (n, ty) = (r / tiles.th, r % tiles.th);
                for a in 0..2 {
                    let oy = 2 * ty + a;
                    if oy >= g.oh {
                        break; // the last tile row of an odd-height output
                    }
                    // SAFETY: tile row `r` belongs to this chunk alone, so
                    // output row `oy` of channel `o` of image `n` is
                    // written by this call alone, and it lies inside the
                    // N×O×oh×ow buffer.
                    let line = unsafe { out.slice(((n * o_n + o) * g.oh + oy) * g.ow, g.ow) };
                    let even = &y[2 * a * tb + ri * tw..][..tw];
                    let odd = &y[(2 * a + 1) * tb + ri * tw..][..tw];
                    let mut pairs = line.chunks_exact_mut(2);
                    for ((pair, &e), &od) in pairs.by_ref().zip(even).zip(odd) {
                        pair[0].write(e);
                        pair[1].write(od);
                    }
                    if let [last] = pairs.into_remainder() {
                        last.write(even[tw - 1]); // odd width: the tile's first column
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A chunk of ResNet-like geometry with odd sizes: 2 images of 11×9
    /// (6×5 outputs, a tile row and column half outside), 20 channels in,
    /// 7 out, padding 1.
    fn chunk() -> (ConvGeom, Tiles, Range<usize>) {
        let g = ConvGeom {
            n: 2,
            c_in: 20,
            h: 11,
            w: 9,
            c_out: 7,
            kh: 3,
            kw: 3,
            stride: (2, 2),
            padding: (1, 1),
            dilation: (1, 1),
            groups: 1,
            oh: 6,
            ow: 5,
        };
        let tiles = Tiles::of(&g);
        (g, tiles, 1..tiles.rows)
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    #[test]
    fn every_compiled_variant_gives_the_portable_bits() {
        let (g, tiles, rows) = chunk();
        let tb = rows.len() * tiles.tw;
        let x = random(g.n * g.c_in * g.h * g.w, 1);
        let input = |variant: usize| {
            let mut v = vec![f32::NAN; POS * matrix_stride(g.c_in, tb)];
            let mut tmp = vec![0.0; scratch_len(tb)];
            let r = rows.clone();
            match variant {
                0 => transform_input_with(&x, &g, tiles, r, &mut v, &mut tmp, mix_row),
                // SAFETY (both): run only where the CPU has the set.
                1 => unsafe { transform_input_avx2(&x, &g, tiles, r, &mut v, &mut tmp) },
                _ => unsafe { transform_input_avx512(&x, &g, tiles, r, &mut v, &mut tmp) },
            }
            v
        };
        let m = random(POS * matrix_stride(g.c_out, tb), 2);
        let bias = random(g.c_out, 3);
        let output = |variant: usize| {
            let len = g.n * g.c_out * g.oh * g.ow;
            let mut out = vec![MaybeUninit::new(f32::NAN); len];
            let mut tmp = vec![0.0; scratch_len(tb)];
            let ptr = SharedMut(out.as_mut_ptr());
            let (b, r) = (Some(&bias[..]), rows.clone());
            match variant {
                0 => transform_output_body(&m, b, &g, tiles, r, ptr, &mut tmp),
                // SAFETY (both): run only where the CPU has the set.
                1 => unsafe { transform_output_avx2(&m, b, &g, tiles, r, ptr, &mut tmp) },
                _ => unsafe { transform_output_avx512(&m, b, &g, tiles, r, ptr, &mut tmp) },
            }
            // SAFETY: every element was initialised (NaN or written).
            out.iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect::<Vec<u32>>()
        };
        let bits = |v: Vec<f32>| v.iter().map(|a| a.to_bits()).collect::<Vec<u32>>();
        let (want_in, want_out) = (bits(input(0)), output(0));
        let written = want_out
            .iter()
            .filter(|&&b| !f32::from_bits(b).is_nan())
            .count();
        assert_eq!(
            written,
            g.c_out * g.n * g.oh * g.ow - g.c_out * 2 * g.ow,
            "tile rows 1.. only"
        );
        let sets = [(1, VectorIsa::Avx2), (2, VectorIsa::Avx512)];
        for (variant, isa) in sets.into_iter().filter(|(_, isa)| isa.cpu_has()) {
            assert_eq!(bits(input(variant)), want_in, "{isa:?} input transform");
            assert_eq!(output(variant), want_out, "{isa:?} output transform");
        }
    }
}

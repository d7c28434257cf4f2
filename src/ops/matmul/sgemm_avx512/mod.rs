//! ferrite's own f32 GEMM for CPUs with AVX-512: `c = a · b + beta · c`
//! with arbitrary element strides, single-threaded (callers split work
//! over rayon tasks).
//!
//! The design is the classic one of GotoBLAS and BLIS. The product is cut
//! into blocks that fit the caches: a `KC × NC` panel of `b` is packed once
//! into micro-panels of [`NR`] columns (`[k][NR]`, zero-padded), and for
//! each `MC × KC` block of `a`, packed into micro-panels of [`MR`] rows
//! (`[k][MR]`), a register-blocked micro-kernel multiplies one `a`
//! micro-panel by one `b` micro-panel: an `MR × NR` = 12 × 32 tile of `c`
//! held in 24 zmm registers, updated per step of `k` by two vector loads of
//! `b`, twelve broadcasts of `a` and 24 fused multiply-adds.
//!
//! Why not matrixmultiply's AVX-512 kernel (16 × 16, one vector of `b` and
//! sixteen broadcasts per step, `KC` = 256, `MC` = 64): on the development
//! machine (AMD EPYC, AVX-512, 247 GFLOP/s f32 FMA peak on one core) this
//! kernel reaches 236 GFLOP/s with its operands in L1; on one thread,
//! whole products of most convolution shapes run 5–15 % faster than with
//! matrixmultiply (a few with 64–128 rows and a very wide `b`, 5–10 %
//! slower), and on two threads square products 1.1–2× faster
//! (`benches/RESULTS.md` and the Performance section of the README).
//!
//! Summation order: each element of `c` is a sum over `k` in increasing
//! order, one fused multiply-add per term, blocks of `KC` = 256 added to
//! `c` in order. matrixmultiply's kernel sums in the same order with the
//! same block depth, so the two give the same bits (tested): switching
//! kernels changes speed, not results.

use std::arch::x86_64::*;
use std::cell::RefCell;

mod packed_a;
pub use packed_a::{PackedA, Panel};

/// Rows of the `c` tile a micro-kernel call computes (broadcast from `a`).
pub const MR: usize = 12;
/// Columns of the `c` tile (two 16-lane vectors of `b`).
pub const NR: usize = 32;
/// Depth of a packed block: an `a` micro-panel (12 KB) and a `b`
/// micro-panel (32 KB) stay in a 48 KB L1 data cache together.
const KC: usize = 256;
/// Rows of `a` packed per block (a multiple of [`MR`]; 192 KB, in L2).
const MC: usize = 192;
/// Columns of `b` packed per panel (a multiple of [`NR`]; 2 MB, in L3).
const NC: usize = 2048;

/// One cache line of f32, so packed buffers are 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

thread_local! {
    /// This thread's packing buffers (`a` block, `b` panel), grown on
    /// demand and kept: products run back to back on the same threads.
    static PACK: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether [`sgemm`] can run on this CPU (AVX-512F and the crate's
/// `avx512` feature).
pub fn available() -> bool {
    crate::backend::cpu::simd::VectorIsa::Avx512.is_available()
}

/// A pointer to `len` f32 of `buf`, grown (never shrunk) to hold them.
fn reserve(buf: &mut Vec<Line>, len: usize) -> *mut f32 {
    let lines = len.div_ceil(16);
    if buf.len() < lines {
        buf.resize(lines, Line([0.0; 16]));
    }
    buf.as_mut_ptr().cast::<f32>()
}

/// `c = a · b + beta · c` for an `m × k` matrix `a` and a `k × n` matrix
/// `b` with element strides `(row, column)`, into a row-major `c` with row
/// stride `ldc`. With `beta = 0` `c` is only written, never read (it may be
/// uninitialised).
///
/// # Safety
/// [`available`] must be true; every element the strides address must lie
/// inside live buffers; `c` must not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    (rsa, csa): (isize, isize),
    b: *const f32,
    (rsb, csb): (isize, isize),
    beta: f32,
    c: *mut f32,
    ldc: isize,
) {
    if !unsafe { apply_beta(Dims { m, k, n }, beta, c, ldc) } {
        return;
    }
    PACK.with(|pack| {
        let mut pack = pack.borrow_mut();
        let (a_buf, b_buf) = &mut *pack;
        let a_pack = reserve(a_buf, MC.min(m.next_multiple_of(MR)) * KC.min(k));
        let b_pack = reserve(b_buf, KC.min(k) * NC.min(n.next_multiple_of(NR)));
        let pack_block = |ic: usize, pc: usize, mc: usize, kc: usize| {
            // Safety: the block lies inside `a`; `a_pack` holds MC × KC.
            unsafe {
                let block = a.offset(ic as isize * rsa + pc as isize * csa);
                pack_a(mc, kc, block, (rsa, csa), a_pack);
            }
            a_pack.cast_const()
        };
        let dims = Dims { m, k, n };
        unsafe { drive(dims, pack_block, b, (rsb, csb), beta != 0.0, c, ldc, b_pack) };
    });
}

/// `c = a · b + beta · c` as [`sgemm`] does, with `a` packed beforehand
/// ([`PackedA`]): products that share a left operand (a convolution's
/// weights against many tiles of columns) pack it once.
///
/// # Safety
/// As [`sgemm`]; `b` is `a.k × n`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_packed(
    a: &PackedA,
    n: usize,
    b: *const f32,
    (rsb, csb): (isize, isize),
    beta: f32,
    c: *mut f32,
    ldc: isize,
) {
    let (m, k) = (a.rows(), a.cols());
    if !unsafe { apply_beta(Dims { m, k, n }, beta, c, ldc) } {
        return;
    }
    PACK.with(|pack| {
        let mut pack = pack.borrow_mut();
        let b_pack = reserve(&mut pack.1, KC.min(k) * NC.min(n.next_multiple_of(NR)));
        let dims = Dims { m, k, n };
        let block = |ic: usize, pc: usize, _: usize, _: usize| a.block(ic, pc);
        unsafe { drive(dims, block, b, (rsb, csb), beta != 0.0, c, ldc, b_pack) };
    });
}

/// The sizes of a product: `a` is `m × k`, `b` is `k × n`.
#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    k: usize,
    n: usize,
}

/// The blocked loops shared by [`sgemm`] and [`sgemm_packed`]: packs each
/// `KC × NC` panel of `b`, asks `a_block(ic, pc, mc, kc)` for the packed
/// `mc × kc` block of `a` at rows `ic..`, depth `pc..`, and runs the
/// micro-kernel over the tiles. `add_to_c`: add the product to `c` (beta
/// 1) rather than overwrite it (beta 0).
#[allow(clippy::too_many_arguments)]
unsafe fn drive(
    Dims { m, k, n }: Dims,
    mut a_block: impl FnMut(usize, usize, usize, usize) -> *const f32,
    b: *const f32,
    (rsb, csb): (isize, isize),
    add_to_c: bool,
    c: *mut f32,
    ldc: isize,
    b_pack: *mut f32,
) {
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // Safety (this block): the offsets stay inside the operands the
            // caller vouched for; the packed buffers hold the largest block.
            unsafe {
                let b_block = b.offset(pc as isize * rsb + jc as isize * csb);
                pack_b(kc, nc, b_block, (rsb, csb), b_pack);
                let accumulate = pc > 0 || add_to_c;
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    let a_pack = a_block(ic, pc, mc, kc);
                    for jr in (0..nc).step_by(NR) {
                        for ir in (0..mc).step_by(MR) {
                            let tile = c.offset((ic + ir) as isize * ldc + (jc + jr) as isize);
                            kernel(
                                kc,
                                a_pack.add(ir * kc),
                                b_pack.add(jr * kc),
                                Tile {
                                    c: tile,
                                    ldc,
                                    rows: MR.min(mc - ir),
                                    cols: NR.min(nc - jr),
                                    accumulate,
                                },
                            );
                        }
                    }
                }
            }
        }
    }
}

/// What both entry points do before packing: nothing when `c` is empty;
/// `c = beta · c` when `k` is 0 (then done) or when `beta` is neither 0
/// nor 1, so that the blocked loops only overwrite (beta 0, `c` unread) or
/// add to `c` (beta 1, and the scaled case). Returns whether a product
/// remains to be added.
///
/// # Safety
/// `c` holds `m` rows of `n` writable elements, `ldc` apart.
unsafe fn apply_beta(Dims { m, k, n }: Dims, beta: f32, c: *mut f32, ldc: isize) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 || (beta != 0.0 && beta != 1.0) {
        unsafe { scale_c(m, n, beta, c, ldc) };
    }
    k > 0
}

/// `c *= beta` over an `m × n` block (`c = 0` when beta is 0, without
/// reading it).
unsafe fn scale_c(m: usize, n: usize, beta: f32, c: *mut f32, ldc: isize) {
    for i in 0..m {
        let row = unsafe { c.offset(i as isize * ldc) };
        for j in 0..n {
            unsafe {
                let v = row.add(j);
                *v = if beta == 0.0 { 0.0 } else { *v * beta };
            }
        }
    }
}

/// Packs an `mc × kc` block of `a` into micro-panels of [`MR`] rows, each
/// `[k][MR]`, rows past `mc` zero (so the kernel's loop has no edge case).
/// Reads along rows when `a` is row-major and along columns when it is a
/// transposed view (`rsa == 1`), so the reads are contiguous either way.
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, (rsa, csa): (isize, isize), out: *mut f32) {
    for ib in (0..mc).step_by(MR) {
        let rows = MR.min(mc - ib);
        let panel = unsafe { out.add(ib * kc) };
        let src = unsafe { a.offset(ib as isize * rsa) };
        if rsa == 1 && csa != 1 {
            for p in 0..kc {
                let col = unsafe { src.offset(p as isize * csa) };
                for i in 0..MR {
                    let v = if i < rows {
                        unsafe { *col.add(i) }
                    } else {
                        0.0
                    };
                    unsafe { *panel.add(p * MR + i) = v };
                }
            }
        } else if rows == MR && csa == 1 {
            // A full panel of a row-major block: its rows are runs along k.
            // Safety: the MR rows' kc values lie inside `a`; the panel
            // holds kc × MR values.
            unsafe { pack_runs::<MR>(kc, |i| src.offset(i as isize * rsa), panel) };
        } else {
            for i in 0..MR {
                // Rows past the block are zeros; their addresses would lie
                // outside `a`, so they are never formed.
                if i >= rows {
                    (0..kc).for_each(|p| unsafe { *panel.add(p * MR + i) = 0.0 });
                    continue;
                }
                let row = unsafe { src.offset(i as isize * rsa) };
                for p in 0..kc {
                    unsafe { *panel.add(p * MR + i) = *row.offset(p as isize * csa) };
                }
            }
        }
    }
}

/// Packs `W` (12 or 32) runs of `kc` contiguous values into one
/// micro-panel `[k][W]`: `panel[p·W + i] = run(i)[p]`, the transposition
/// both packings need when the operand's rows (of `a`) or columns (of a
/// transposed `b`) are contiguous. Blocks of 16 runs × 16 steps are
/// transposed in registers; element by element, the writes land `W`
/// values apart, which measured 15-20 % of a Winograd weight gradient.
///
/// # Safety
/// AVX-512F; each `run(i)`, `i < W`, points at `kc` readable values;
/// `panel` holds `kc × W` writable values.
#[target_feature(enable = "avx512f")]
unsafe fn pack_runs<const W: usize>(kc: usize, run: impl Fn(usize) -> *const f32, panel: *mut f32) {
    let mut p0 = 0;
    while p0 + 16 <= kc {
        for i0 in (0..W).step_by(16) {
            let width = 16.min(W - i0);
            // Safety: steps p0..p0 + 16 of runs i0..i0 + width are readable.
            let rows: [__m512; 16] = std::array::from_fn(|i| {
                if i < width {
                    unsafe { _mm512_loadu_ps(run(i0 + i).add(p0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let mask = ((1u32 << width) - 1) as __mmask16;
            for (q, step) in transpose16(rows).into_iter().enumerate() {
                // Safety: values i0..i0 + width of step p0 + q of the panel.
                unsafe { _mm512_mask_storeu_ps(panel.add((p0 + q) * W + i0), mask, step) };
            }
        }
        p0 += 16;
    }
    for p in p0..kc {
        for i in 0..W {
            // Safety: as above, for the last steps.
            unsafe { *panel.add(p * W + i) = *run(i).add(p) };
        }
    }
}

/// The transpose of the 16 × 16 block whose rows are `r`: element `i` of
/// result `c` is element `c` of `r[i]`. Pairs of rows are interleaved
/// (4 × 4 blocks within each 128-bit lane), then the lanes are gathered
/// across the four groups of four rows: 64 shuffles.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + j]: column j (and j + 4, j + 8, j + 12, one per lane) of rows
    // 4g .. 4g + 4.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, j) = (i / 4, i % 4);
        let (lo, hi) = (t[4 * g + j / 2], t[4 * g + 2 + j / 2]);
        if j % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(lo, hi)
        } else {
            _mm512_shuffle_ps::<0xEE>(lo, hi)
        }
    });
    let mut out = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        let v3 = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
        out[j] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        out[8 + j] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
        out[4 + j] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        out[12 + j] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
    }
    out
}

/// Packs a `kc × nc` panel of `b` into micro-panels of [`NR`] columns,
/// each `[k][NR]`, columns past `nc` zero. Reads rows contiguously when
/// `b` is row-major and columns contiguously when it is a transposed view.
unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, (rsb, csb): (isize, isize), out: *mut f32) {
    for jb in (0..nc).step_by(NR) {
        let cols = NR.min(nc - jb);
        let panel = unsafe { out.add(jb * kc) };
        let src = unsafe { b.offset(jb as isize * csb) };
        if rsb == 1 && csb != 1 && cols == NR {
            // A full panel of a transposed view (a weight gradient's
            // `colᵀ`): its columns are runs along k.
            // Safety: the NR columns' kc values lie inside `b`; the panel
            // holds kc × NR values.
            unsafe { pack_runs::<NR>(kc, |j| src.offset(j as isize * csb), panel) };
        } else if csb == 1 && cols == NR {
            for p in 0..kc {
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.offset(p as isize * rsb),
                        panel.add(p * NR),
                        NR,
                    )
                };
            }
        } else {
            for j in 0..NR {
                // Columns past the panel are zeros, their addresses never
                // formed (they would lie outside `b`).
                if j >= cols {
                    (0..kc).for_each(|p| unsafe { *panel.add(p * NR + j) = 0.0 });
                    continue;
                }
                let col = unsafe { src.offset(j as isize * csb) };
                for p in 0..kc {
                    unsafe { *panel.add(p * NR + j) = *col.offset(p as isize * rsb) };
                }
            }
        }
    }
}

/// Where a micro-kernel call writes: the top-left element of its tile of
/// `c`, the row stride, how many of the `MR × NR` rows and columns are
/// inside `c`, and whether to add to `c` rather than overwrite it.
struct Tile {
    c: *mut f32,
    ldc: isize,
    rows: usize,
    cols: usize,
    accumulate: bool,
}

/// The micro-kernel: `tile (+)= a_panel · b_panel` over `kc` steps, the
/// `MR × NR` products accumulated in 24 zmm registers.
///
/// # Safety
/// AVX-512F; `a` holds `kc × MR` and `b` (64-byte aligned) `kc × NR`
/// packed values; the tile's `rows × cols` elements are writable.
#[target_feature(enable = "avx512f")]
unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, t: Tile) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if t.accumulate && t.rows == MR && t.cols == NR {
        // The tile is read after the loop; start fetching it now, so that
        // products with a deep `k` (many KC blocks, `c` beyond L2) do not
        // wait for it at the end of every call.
        for i in 0..MR {
            // Safety: prefetches do not fault; the tile lies inside c anyway.
            unsafe {
                let ci = t.c.offset(i as isize * t.ldc).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(ci);
                _mm_prefetch::<_MM_HINT_T0>(ci.add(64));
            }
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // Safety: the packed panels hold kc steps of MR and NR values.
        unsafe {
            let b0 = _mm512_load_ps(b);
            let b1 = _mm512_load_ps(b.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    if t.rows == MR && t.cols == NR {
        for (i, row) in acc.iter().enumerate() {
            // Safety: a full tile lies inside c.
            unsafe {
                let ci = t.c.offset(i as isize * t.ldc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if t.accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_loadu_ps(ci));
                    v1 = _mm512_add_ps(v1, _mm512_loadu_ps(ci.add(16)));
                }
                _mm512_storeu_ps(ci, v0);
                _mm512_storeu_ps(ci.add(16), v1);
            }
        }
    } else {
        // An edge tile: spill the registers, then write the part inside c.
        let mut spill = [Line([0.0; 16]); 2 * MR];
        for (i, row) in acc.iter().enumerate() {
            unsafe {
                _mm512_store_ps(spill[2 * i].0.as_mut_ptr(), row[0]);
                _mm512_store_ps(spill[2 * i + 1].0.as_mut_ptr(), row[1]);
            }
        }
        for i in 0..t.rows {
            for j in 0..t.cols {
                let v = spill[2 * i + j / 16].0[j % 16];
                // Safety: (i, j) is inside the tile's valid part.
                unsafe {
                    let cij = t.c.offset(i as isize * t.ldc + j as isize);
                    *cij = if t.accumulate { *cij + v } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

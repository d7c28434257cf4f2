//! ferrite's own f32 GEMM for x86-64 CPUs with AVX-512 or AVX2 and FMA:
//! `c = a · b + beta · c` with arbitrary element strides, single-threaded
//! (callers split work over rayon tasks).
//!
//! The design is the classic one of GotoBLAS and BLIS. The product is cut
//! into blocks that fit the caches: a `KC × NC` panel of `b` is packed once
//! into micro-panels of [`NR`] columns (`[k][NR]`, zero-padded), and for
//! each `MC × KC` block of `a`, packed into micro-panels of [`MR`] rows
//! (`[k][MR]`), a register-blocked micro-kernel multiplies one `a`
//! micro-panel by one `b` micro-panel: an `MR × NR` = 12 × 32 tile of `c`
//! held in 24 zmm registers, updated per step of `k` by two vector loads of
//! `b`, twelve broadcasts of `a` and 24 fused multiply-adds. A last panel
//! of at most 16 columns skips the right half (one load, twelve
//! broadcasts, 12 multiply-adds): a convolution's 196-pixel planes are
//! `6·32 + 4` columns per image, and their products took 6–7 % less time
//! with it. CPUs without AVX-512 run the same packed panels through an
//! AVX2 kernel that computes the tile in 6 × 16 sub-tiles (12 of the 16
//! ymm registers), so the packing, the blocking and everything built on
//! them (packed weights, implicit-GEMM convolution) are the same on both
//! (`kernels.rs`). On the Xeon held to AVX2 (`FERRITE_ISA=avx2`, one
//! thread, 129–130 GFLOP/s FMA peak) square products of n = 256 … 2048
//! ran at 106–109 GFLOP/s against 77–94 with matrixmultiply's AVX2 kernel.
//!
//! A 14 × 32 tile (28 accumulators, 31 of the 32 registers) was tried: on
//! an Intel Xeon (AVX-512, 248 GFLOP/s FMA peak on one core) it ran at
//! 94 % of the peak with its operands in L1 against 12 × 32's 87 %, but
//! whole convolutions were 1–7 % slower with it (`ferrite bench
//! --conv-layers --filter _cifar`, alternating builds): rows of 16, 32 or
//! 64 channels fill 57 / 76 / 91 % of its 14-row panels against 67 / 89 /
//! 89 % of 12-row ones, and outside L1 the packing and the `c` tiles bound
//! the rest first.
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
//! same block depth, so the two give the same bits (tested), and so do
//! the AVX-512 and AVX2 kernels: switching kernels changes speed, not
//! results.

use crate::backend::cpu::simd::VectorIsa;
use drive::Dims;
use std::cell::RefCell;

mod drive;
mod kernels;
mod pack;
mod packed_a;
pub(crate) use drive::{sgemm_skipping, Skip};
pub(crate) use pack::{pack_runs, transpose16, transpose8};
pub use packed_a::{PackedA, Panel};

/// Rows of the `c` tile a micro-kernel call computes (broadcast from `a`).
pub const MR: usize = 12;
/// Columns of the `c` tile (two 16-lane vectors of `b`).
pub const NR: usize = 32;
/// Depth of a packed block: an `a` micro-panel (12 KB) and a `b`
/// micro-panel (32 KB) fit a 48 KB L1 data cache together.
pub(crate) const KC: usize = 256;
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

/// The instruction set of the micro-kernel and the packing transposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// 12 × 32 tiles in zmm registers.
    Avx512,
    /// The same tiles as 6 × 16 sub-tiles in ymm registers.
    Avx2,
}

impl Kernel {
    /// The widest kernel [`simd::detect`](crate::backend::cpu::simd::detect)
    /// allows on this CPU; `None` without AVX2 and FMA (or below the
    /// limit).
    pub(crate) fn detect() -> Option<Kernel> {
        match crate::backend::cpu::simd::detect() {
            VectorIsa::Avx512 => Some(Kernel::Avx512),
            VectorIsa::Avx2 => Some(Kernel::Avx2),
            VectorIsa::Baseline => None,
        }
    }

    /// The kernel a product runs once [`available`] was true: the one
    /// [`Kernel::detect`] names, or AVX2 if the limit was lowered since
    /// (the CPU still has it).
    pub(crate) fn current() -> Kernel {
        Kernel::detect().unwrap_or(Kernel::Avx2)
    }

    /// Whether this CPU runs the kernel's instructions.
    pub(crate) fn cpu_has(self) -> bool {
        match self {
            Kernel::Avx512 => VectorIsa::Avx512.cpu_has(),
            Kernel::Avx2 => VectorIsa::Avx2.cpu_has(),
        }
    }
}

/// The kernels this CPU runs, widest first, whatever the limit (tests
/// run each).
#[cfg(test)]
pub(crate) fn kernels_on_this_cpu() -> Vec<Kernel> {
    [Kernel::Avx512, Kernel::Avx2]
        .into_iter()
        .filter(|k| k.cpu_has())
        .collect()
}

/// Whether [`sgemm`] can run on this CPU: AVX2 and FMA, or AVX-512F with
/// the crate's `avx512` feature (within the limit of
/// [`simd::set_isa_limit`](crate::backend::cpu::simd::set_isa_limit)).
pub fn available() -> bool {
    Kernel::detect().is_some()
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
    a_strides: (isize, isize),
    b: *const f32,
    b_strides: (isize, isize),
    beta: f32,
    c: *mut f32,
    ldc: isize,
) {
    let lhs = Lhs::Strided {
        m,
        k,
        a,
        strides: a_strides,
    };
    // Safety: the caller's contract.
    unsafe { strided_on(Kernel::current(), lhs, n, b, b_strides, beta, c, ldc) }
}

/// `c = a · b + beta · c` as [`sgemm`] does, with `a` packed beforehand
/// ([`PackedA`]): products that share a left operand (a convolution's
/// weights against many tiles of columns) pack it once.
///
/// # Safety
/// As [`sgemm`]; `b` is `a.k × n`.
pub unsafe fn sgemm_packed(
    a: &PackedA,
    n: usize,
    b: *const f32,
    b_strides: (isize, isize),
    beta: f32,
    c: *mut f32,
    ldc: isize,
) {
    // Safety: the caller's contract.
    unsafe {
        strided_on(
            Kernel::current(),
            Lhs::Packed(a),
            n,
            b,
            b_strides,
            beta,
            c,
            ldc,
        )
    }
}

/// `c = lhs · b + beta · c` for a strided `b` (`k × n`), on `kernel`:
/// [`sgemm`] and [`sgemm_packed`] with the kernel chosen by the caller.
///
/// # Safety
/// As [`sgemm`], with the CPU running `kernel` ([`Kernel::cpu_has`]).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn strided_on(
    kernel: Kernel,
    lhs: Lhs,
    n: usize,
    b: *const f32,
    b_strides: (isize, isize),
    beta: f32,
    c: *mut f32,
    ldc: isize,
) {
    // Safety: the caller's contract; `strided_b` packs inside `b`.
    unsafe {
        sgemm_with(
            kernel,
            lhs,
            n,
            strided_b(kernel, b, b_strides),
            beta,
            c,
            ldc,
        )
    }
}

/// The packer of a strided `b` (see [`BBlock`]).
///
/// # Safety
/// The packer reads `b` through the strides: every element of every
/// block it is handed must lie inside a live buffer.
unsafe fn strided_b(
    kernel: Kernel,
    b: *const f32,
    (rsb, csb): (isize, isize),
) -> impl FnMut(&BBlock, &mut [f32]) {
    move |blk, out| {
        // Safety: the block lies inside `b` (the callers' contract); `out`
        // holds kc × nc rounded up to NR.
        unsafe {
            let block = b.offset(blk.pc as isize * rsb + blk.jc as isize * csb);
            pack::pack_b(kernel, blk.kc, blk.nc, block, (rsb, csb), out.as_mut_ptr());
        }
    }
}

/// The left operand of [`sgemm_with`]: an `m × k` matrix at `a` with
/// element strides, packed block by block as the product needs it, or one
/// packed beforehand.
#[derive(Clone, Copy)]
pub enum Lhs<'a> {
    /// Packed on the fly.
    Strided {
        /// Rows.
        m: usize,
        /// Columns (the inner dimension).
        k: usize,
        /// First element.
        a: *const f32,
        /// Element strides `(row, column)`.
        strides: (isize, isize),
    },
    /// Packed on the fly from `planes` blocks of `cols` columns side by
    /// side (`k = planes · cols`): element `(i, q)` at `a + (q / cols) ·
    /// plane_stride + i · row_stride + q % cols`. A weight gradient's `dY`
    /// over a tile of images (rows: output channels; columns: each
    /// image's pixels in turn), read where it lies instead of copied side
    /// by side first.
    Planes {
        /// Rows.
        m: usize,
        /// Columns of each block.
        cols: usize,
        /// Blocks.
        planes: usize,
        /// Element (0, 0).
        a: *const f32,
        /// Element stride between rows of a block.
        row_stride: isize,
        /// Element stride between blocks.
        plane_stride: isize,
    },
    /// Packed once by [`PackedA`].
    Packed(&'a PackedA),
    /// Packed block by block by the caller: `pack(&block, out)` writes
    /// the block's rows and columns as [`sgemm`] packs them, micro-panels
    /// of [`MR`] rows one after another (`out[ir·kc + p·MR + i]` = row
    /// `ic + ir + i`, column `pc + p`; rows past `m` zeros). A weight
    /// gradient's unrolled input, packed straight from the planes.
    Blocks {
        /// Rows.
        m: usize,
        /// Columns (the inner dimension).
        k: usize,
        /// The packer.
        pack: &'a dyn Fn(&ABlock, &mut [f32]),
    },
}

/// A block of the left operand for the packer of [`Lhs::Blocks`]: rows
/// `ic .. ic + mc`, columns (depth) `pc .. pc + kc`. The packer fills
/// `mc.next_multiple_of(MR) × kc` values.
pub struct ABlock {
    /// First row.
    pub ic: usize,
    /// Rows in the block.
    pub mc: usize,
    /// First column.
    pub pc: usize,
    /// Columns in the block (at most 256).
    pub kc: usize,
}

impl Lhs<'_> {
    /// Rows and columns: `(m, k)`.
    pub fn dims(&self) -> (usize, usize) {
        match *self {
            Lhs::Strided { m, k, .. } => (m, k),
            Lhs::Planes {
                m, cols, planes, ..
            } => (m, cols * planes),
            Lhs::Packed(p) => (p.rows(), p.cols()),
            Lhs::Blocks { m, k, .. } => (m, k),
        }
    }
}

/// A block of the right operand for the packer of [`sgemm_with`] to
/// write: depth (rows of `b`) `pc .. pc + kc`, columns `jc .. jc + nc`.
/// The packer fills `kc × nc.next_multiple_of(NR)` values: for each
/// micro-panel of [`NR`] columns, in order, its `kc` steps of `NR` values
/// (`out[jb·kc + p·NR + j] = b[pc + p][jc + jb + j]`), 0 past column `nc`.
pub struct BBlock {
    /// First row of `b`.
    pub pc: usize,
    /// Rows of `b` in the block (at most 256).
    pub kc: usize,
    /// First column.
    pub jc: usize,
    /// Columns in the block.
    pub nc: usize,
}

/// `c = a · b + beta · c` on `kernel`, where `b` (`k × n`) exists only as
/// what `pack_b` writes for each [`BBlock`]: an implicit right operand, e.g. a
/// convolution's receptive fields gathered straight from its input, with
/// no unrolled copy in memory. [`sgemm`] and [`sgemm_packed`] are this
/// with a packer that copies from a strided matrix.
///
/// A packer that leaves values of its slice unwritten leaves stale values
/// of an earlier block there (wrong results, no undefined behaviour).
///
/// # Safety
/// The CPU runs `kernel` ([`Kernel::cpu_has`]; [`Kernel::current`] once
/// [`available`] was true); the elements of `a` the strides address (for
/// [`Lhs::Strided`], [`Lhs::Planes`]) lie inside a live buffer; `c` holds
/// `m` rows of `n` writable elements `ldc` apart and aliases neither
/// operand.
pub(crate) unsafe fn sgemm_with(
    kernel: Kernel,
    lhs: Lhs,
    n: usize,
    pack_b: impl FnMut(&BBlock, &mut [f32]),
    beta: f32,
    c: *mut f32,
    ldc: isize,
) {
    // Safety: the caller's contract.
    unsafe { drive::product(kernel, lhs, n, pack_b, KC, |_| Skip::None, beta, c, ldc) }
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

#[cfg(test)]
mod tests;

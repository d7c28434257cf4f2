//! CPU GEMM: packed, cache-blocked kernels called on strided operands, so
//! transposed views need no copy. f32 runs ferrite's own kernels
//! ([`super::sgemm`]) where the CPU has AVX-512 or AVX2 and FMA, and
//! `matrixmultiply`'s sgemm elsewhere; f64 always runs matrixmultiply's
//! dgemm.
//!
//! Parallelism comes from rayon only, never from matrixmultiply's own
//! threading: a batch of products runs one product per task; a single large
//! product is split into row (or column) panels of the output, one task
//! per panel. Small products run serially on the calling thread.

use crate::backend::cpu::num_threads;
use crate::error::{Error, Result};
use crate::ops::dispatch::float_dispatch2;
use crate::tensor::{CpuStorage, Float, Layout};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Products below this many multiply-adds run serially (a split costs tens
/// of microseconds of thread wake-up, see `backend::cpu`).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// The operands of a (batched) product, already broadcast: `a` is
/// `[batch.., m, k]`, `b` is `[batch.., k, n]` with the same batch shape.
pub struct GemmArgs<'a> {
    /// Layout of the left operand, `[batch.., m, k]`.
    pub a: &'a Layout,
    /// Layout of the right operand, `[batch.., k, n]`.
    pub b: &'a Layout,
    /// Rows of `a` and of the output.
    pub m: usize,
    /// Columns of `a` and rows of `b` (the summed dim).
    pub k: usize,
    /// Columns of `b` and of the output.
    pub n: usize,
}

impl GemmArgs<'_> {
    /// Checks everything the unchecked GEMM calls of [`matmul`] rely on:
    /// `a` is `[batch.., m, k]` and `b` is `[batch.., k, n]` with one batch
    /// shape, both lie inside storages of `a_len` and `b_len` elements
    /// (checked arithmetic), every stride fits in `isize`, and the output's
    /// element count is addressable. Returns that count.
    fn validate(&self, a_len: usize, b_len: usize) -> Result<usize> {
        const OP: &str = "matmul";
        let (sa, sb) = (self.a.shape(), self.b.shape());
        let nd = sa.len();
        let shapes_agree = nd >= 2
            && sb.len() == nd
            && sa[..nd - 2] == sb[..nd - 2]
            && sa[nd - 2..] == [self.m, self.k]
            && sb[nd - 2..] == [self.k, self.n];
        if !shapes_agree {
            return Err(Error::bad_shape(
                OP,
                format!(
                    "operand layouts {sa:?} and {sb:?} do not match m = {}, k = {}, n = {}",
                    self.m, self.k, self.n
                ),
            ));
        }
        self.a.check_fits(OP, a_len)?;
        self.b.check_fits(OP, b_len)?;
        let strides_fit = |l: &Layout| l.strides().iter().all(|&s| s <= isize::MAX as usize);
        if !strides_fit(self.a) || !strides_fit(self.b) {
            return Err(Error::bad_shape(OP, "operand stride exceeds isize::MAX"));
        }
        let mut out_shape = sa[..nd - 2].to_vec();
        out_shape.extend([self.m, self.n]);
        crate::tensor::checked_numel(OP, &out_shape)
    }
}

/// An element type matrixmultiply multiplies natively.
pub trait Gemm: Float {
    /// `c[m×n] = a[m×k] · b[k×n] + beta · c` with arbitrary element strides
    /// for a and b and a row-major c with row stride `ldc`. With `beta = 0`
    /// c is only written, never read.
    ///
    /// # Safety
    /// Every element the strides address must lie inside live buffers, and
    /// c must not alias a or b.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        a_strides: (isize, isize),
        b: *const Self,
        b_strides: (isize, isize),
        beta: Self,
        c: *mut Self,
        ldc: isize,
    );

    /// A left operand packed once for many products
    /// ([`super::packed::PackedLhs`]); `Infallible` for types that have no
    /// packed form.
    type Packed: Send + Sync + 'static;

    /// Packs the `m × k` matrix at `a` for [`Gemm::gemm_packed`]; `None`
    /// when this type or CPU has no packed form or the copy cannot be
    /// allocated (products then read `a` unpacked).
    ///
    /// # Safety
    /// Every element the strides address must lie inside a live buffer.
    unsafe fn pack(
        m: usize,
        k: usize,
        a: *const Self,
        a_strides: (isize, isize),
    ) -> Option<Self::Packed>;

    /// `c[m×n] = a · b + beta · c` with `a` packed by [`Gemm::pack`].
    ///
    /// # Safety
    /// As [`Gemm::gemm`], with `b` holding `k × n` elements.
    unsafe fn gemm_packed(
        a: &Self::Packed,
        n: usize,
        b: *const Self,
        b_strides: (isize, isize),
        beta: Self,
        c: *mut Self,
        ldc: isize,
    );

    /// The `(rows, columns)` of a packed operand.
    fn packed_dims(a: &Self::Packed) -> (usize, usize);
}

/// The packed left operand of f32 products: ferrite's sgemm layout on
/// x86-64 (used only where that sgemm runs), none elsewhere.
#[cfg(target_arch = "x86_64")]
type PackedF32 = super::sgemm::PackedA;
#[cfg(not(target_arch = "x86_64"))]
type PackedF32 = std::convert::Infallible;

impl Gemm for f32 {
    unsafe fn gemm(
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
        #[cfg(target_arch = "x86_64")]
        if super::sgemm::available() {
            // Safety: the sgemm is available; the caller's contract is the same.
            return unsafe {
                super::sgemm::sgemm(m, k, n, a, (rsa, csa), b, (rsb, csb), beta, c, ldc)
            };
        }
        matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, ldc, 1);
    }

    type Packed = PackedF32;

    #[cfg(target_arch = "x86_64")]
    fn packed_dims(a: &PackedF32) -> (usize, usize) {
        (a.rows(), a.cols())
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn packed_dims(a: &PackedF32) -> (usize, usize) {
        match *a {}
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn pack(
        m: usize,
        k: usize,
        a: *const f32,
        strides: (isize, isize),
    ) -> Option<PackedF32> {
        if !super::sgemm::available() {
            return None;
        }
        // Safety: the caller's contract.
        unsafe { PackedF32::new(m, k, a, strides) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn pack(_: usize, _: usize, _: *const f32, _: (isize, isize)) -> Option<PackedF32> {
        None
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn gemm_packed(
        a: &PackedF32,
        n: usize,
        b: *const f32,
        b_strides: (isize, isize),
        beta: f32,
        c: *mut f32,
        ldc: isize,
    ) {
        // Safety: a packed operand exists only where the sgemm is available.
        unsafe { super::sgemm::sgemm_packed(a, n, b, b_strides, beta, c, ldc) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn gemm_packed(
        a: &PackedF32,
        _: usize,
        _: *const f32,
        _: (isize, isize),
        _: f32,
        _: *mut f32,
        _: isize,
    ) {
        match *a {}
    }
}

impl Gemm for f64 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f64,
        (rsa, csa): (isize, isize),
        b: *const f64,
        (rsb, csb): (isize, isize),
        beta: f64,
        c: *mut f64,
        ldc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, ldc, 1);
    }

    type Packed = std::convert::Infallible;

    fn packed_dims(a: &Self::Packed) -> (usize, usize) {
        match *a {}
    }

    unsafe fn pack(_: usize, _: usize, _: *const f64, _: (isize, isize)) -> Option<Self::Packed> {
        None
    }

    unsafe fn gemm_packed(
        a: &Self::Packed,
        _: usize,
        _: *const f64,
        _: (isize, isize),
        _: f64,
        _: *mut f64,
        _: isize,
    ) {
        match *a {}
    }
}

/// A strided matrix view into a slice: element `(i, j)` lives at
/// `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    /// The buffer holding the matrix.
    pub data: &'a [T],
    /// Index of element `(0, 0)` in `data`.
    pub offset: usize,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows × cols` matrix starting at `offset`.
    pub fn row_major(data: &'a [T], offset: usize, rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            offset,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// A `rows × cols` matrix starting at `offset` whose rows lie
    /// `row_stride` elements apart (a block of columns of a wider matrix).
    pub fn rows_strided(
        data: &'a [T],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        MatRef {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// True when every element of the view lies inside `data` and its
    /// strides fit in `isize` (checked arithmetic: no wrap-around).
    pub(super) fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(r, c)| r.checked_add(c)?.checked_add(self.offset));
        let strides_fit =
            self.row_stride <= isize::MAX as usize && self.col_stride <= isize::MAX as usize;
        strides_fit && last.is_some_and(|last| last < self.data.len())
    }
}

/// Panics (naming `op`) unless `a · b` is defined, fits an output of
/// `c_len` elements, and both views lie inside their slices: the checks
/// that make the unchecked [`gemm_raw`] call sound.
pub(super) fn check_operands<T>(op: &str, a: &MatRef<T>, b: &MatRef<T>, c_len: usize) {
    assert!(
        b.rows == a.cols && a.rows.checked_mul(b.cols) == Some(c_len),
        "{op}: inner dimensions or output size disagree"
    );
    assert!(
        a.in_bounds() && b.in_bounds(),
        "{op}: operand view out of bounds"
    );
}

/// `c = a · b` (or `c += a · b` when `accumulate`), single-threaded, for
/// kernels that run GEMMs inside their own rayon tasks (convolution).
/// `c` is row-major `a.rows × b.cols`. Bounds are checked before the
/// unchecked inner call.
pub fn gemm_serial<T: Gemm>(a: MatRef<T>, b: MatRef<T>, c: &mut [T], accumulate: bool) {
    super::packed::gemm_packed(&super::packed::PackedLhs::unpacked(a), b, c, accumulate)
}

/// The unchecked GEMM call shared by [`gemm_serial`],
/// [`gemm_serial_uninit`] and the packed products of [`super::packed`]: `c = a · b + beta · c`, `c` row-major
/// `a.rows × b.cols`.
///
/// # Safety
/// `a` and `b` must lie inside their slices (`in_bounds`), `b.rows` must
/// equal `a.cols`, and `c` must point to `a.rows × b.cols` writable
/// elements not aliased by `a` or `b` (initialised unless `beta` is 0).
pub(super) unsafe fn gemm_raw<T: Gemm>(a: MatRef<T>, b: MatRef<T>, beta: T, c: *mut T) {
    unsafe {
        T::gemm(
            a.rows,
            a.cols,
            b.cols,
            a.data.as_ptr().add(a.offset),
            (a.row_stride as isize, a.col_stride as isize),
            b.data.as_ptr().add(b.offset),
            (b.row_stride as isize, b.col_stride as isize),
            beta,
            c,
            b.cols as isize,
        );
    }
}

/// `c = a · b` into uninitialised memory, single-threaded; returns `c`
/// as the initialised slice it now is. `c` is row-major `a.rows × b.cols`.
pub fn gemm_serial_uninit<'c, T: Gemm>(
    a: MatRef<T>,
    b: MatRef<T>,
    c: &'c mut [MaybeUninit<T>],
) -> &'c mut [T] {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    check_operands("gemm_serial_uninit", &a, &b, c.len());
    if k == 0 {
        c.iter_mut().for_each(|v| {
            v.write(T::ZERO);
        });
    } else if m > 0 && n > 0 {
        // Safety: the views were checked to lie inside their slices, and
        // `c` is a distinct `&mut` slice of exactly m × n elements.
        // With beta = 0 the GEMM only writes c (matrixmultiply: "if β is
        // zero, then C does not need to be initialized").
        unsafe { gemm_raw(a, b, T::ZERO, c.as_mut_ptr().cast::<T>()) }
    }
    // SAFETY: every one of the m × n elements was written above, by the
    // zero fill (k = 0) or by the GEMM with beta = 0, which writes each
    // element of its row-major m × n output (nothing to write when m or n
    // is 0); `MaybeUninit<T>` has the layout of `T`.
    unsafe { &mut *(c as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Storage offsets of the first element of each batch matrix.
fn batch_offsets(l: &Layout) -> Result<Vec<usize>> {
    let nb = l.ndim() - 2;
    let batch_shape = &l.shape()[..nb];
    let count: usize = batch_shape.iter().product();
    let mut out = crate::backend::cpu::pool::try_with_capacity(count)?;
    let mut idx = vec![0usize; nb];
    for _ in 0..count {
        out.push(
            l.offset()
                + idx
                    .iter()
                    .zip(l.strides())
                    .map(|(i, s)| i * s)
                    .sum::<usize>(),
        );
        for d in (0..nb).rev() {
            idx[d] += 1;
            if idx[d] < batch_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

fn gemm_typed<T: Gemm>(a: &[T], b: &[T], args: &GemmArgs) -> Result<Vec<T>> {
    let total = args.validate(a.len(), b.len())?;
    let GemmArgs { m, k, n, .. } = *args;
    let (la, lb) = (args.a, args.b);
    let nd = la.ndim();
    let (rsa, csa) = (la.strides()[nd - 2] as isize, la.strides()[nd - 1] as isize);
    let (rsb, csb) = (lb.strides()[nd - 2] as isize, lb.strides()[nd - 1] as isize);
    let offs_a = batch_offsets(la)?;
    let offs_b = batch_offsets(lb)?;
    let batch = offs_a.len();
    if total == 0 || k == 0 {
        return crate::backend::cpu::pool::take_zeroed::<T>(total); // empty sum: zeros
    }
    // beta = 0 below: every element is written, so a recycled buffer is fine.
    let mut out = crate::backend::cpu::pool::take::<T>(total)?;
    let (pa, pb) = (a.as_ptr() as usize, b.as_ptr() as usize);
    // Safety (all calls below): offsets and strides come from layouts that
    // lie inside their storage, and every task writes a disjoint panel of `out`.
    let product = |bi: usize,
                   rows: std::ops::Range<usize>,
                   cols: std::ops::Range<usize>,
                   c: &mut [T],
                   ldc: usize| unsafe {
        let a0 = (pa as *const T).add(offs_a[bi] + rows.start * rsa as usize);
        let b0 = (pb as *const T).add(offs_b[bi] + cols.start * csb as usize);
        T::gemm(
            rows.len(),
            k,
            cols.len(),
            a0,
            (rsa, csa),
            b0,
            (rsb, csb),
            T::ZERO,
            c.as_mut_ptr(),
            ldc as isize,
        );
    };
    let macs = total.saturating_mul(k);
    let threads = num_threads();
    if macs < PARALLEL_MIN_MACS || threads == 1 {
        for (bi, c) in out.chunks_mut(m * n).enumerate() {
            product(bi, 0..m, 0..n, c, n);
        }
    } else if batch >= threads {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, c)| product(bi, 0..m, 0..n, c, n));
    } else if m >= n || m >= 2 * threads {
        // Row panels: each task computes `rows × n` of the output.
        let panel = m.div_ceil(threads);
        for (bi, c) in out.chunks_mut(m * n).enumerate() {
            c.par_chunks_mut(panel * n).enumerate().for_each(|(p, cp)| {
                let r0 = p * panel;
                product(bi, r0..r0 + cp.len() / n, 0..n, cp, n);
            });
        }
    } else {
        // Column panels for wide, short outputs: compute each `m × cols`
        // panel into its own buffer, then scatter it into place.
        let panel = n.div_ceil(threads);
        for (bi, c) in out.chunks_mut(m * n).enumerate() {
            let panels: Vec<(usize, Vec<T>)> = (0..n.div_ceil(panel))
                .into_par_iter()
                .map(|p| {
                    let cols = p * panel..((p + 1) * panel).min(n);
                    let mut buf = vec![T::default(); m * cols.len()];
                    let w = cols.len();
                    product(bi, 0..m, cols.clone(), &mut buf, w);
                    (cols.start, buf)
                })
                .collect();
            for (c0, buf) in panels {
                let w = buf.len() / m;
                for r in 0..m {
                    c[r * n + c0..r * n + c0 + w].copy_from_slice(&buf[r * w..(r + 1) * w]);
                }
            }
        }
    }
    Ok(out)
}

/// Batched matrix product of two float views; returns a contiguous
/// `[batch.., m, n]` buffer. Half types are multiplied in f32.
pub fn matmul(a: &CpuStorage, b: &CpuStorage, args: &GemmArgs) -> Result<CpuStorage> {
    // Half types are widened to contiguous f32 of the operands' (broadcast)
    // shapes, so the layouts the GEMM sees are those, not `args`'.
    args.a.check_fits("matmul", a.len())?;
    args.b.check_fits("matmul", b.len())?;
    float_dispatch2!("matmul", (a, args.a), (b, args.b), |x, lx, y, ly| {
        gemm_typed(
            x,
            y,
            &GemmArgs {
                a: lx,
                b: ly,
                ..*args
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "operand view out of bounds")]
    fn a_view_whose_extent_wraps_around_is_out_of_bounds() {
        // 9 rows 2^61 + 1 apart over 16 elements: the last row's offset,
        // 8·(2^61 + 1), wraps to 8 in unchecked arithmetic and "fits".
        let data = [1.0f32; 16];
        let a = MatRef::rows_strided(&data, 0, 9, 1, (1 << 61) + 1);
        let b = MatRef::row_major(&data, 0, 1, 1);
        let mut c = [0.0f32; 9];
        gemm_serial(a, b, &mut c, false);
    }

    #[test]
    fn matmul_refuses_layouts_outside_their_storage() {
        let a = CpuStorage::F32(vec![1.0; 4]);
        let fits = Layout::contiguous(&[2, 2]);
        let too_big = Layout::contiguous(&[3, 2]);
        let args = GemmArgs {
            a: &too_big,
            b: &fits,
            m: 3,
            k: 2,
            n: 2,
        };
        assert!(matmul(&a, &a, &args).is_err());
        // Shapes that disagree with m, k, n.
        let args = GemmArgs {
            a: &fits,
            b: &fits,
            m: 2,
            k: 3,
            n: 2,
        };
        assert!(matmul(&a, &a, &args).is_err());
        let args = GemmArgs {
            a: &fits,
            b: &fits,
            m: 2,
            k: 2,
            n: 2,
        };
        assert_eq!(
            matmul(&a, &a, &args).unwrap(),
            CpuStorage::F32(vec![2.0; 4])
        );
    }
}

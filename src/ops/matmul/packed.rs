//! A left operand packed once for many single-threaded products. Winograd
//! convolution multiplies each of its 16 transformed weight matrices by
//! every chunk of transformed patches (chunks of ~64 tiles, so that they
//! stay in cache); packing the weights into the GEMM kernel's layout once
//! per call instead of once per chunk made the CIFAR ResNet-18 Winograd
//! layers 5–12 % faster on one thread.
//!
//! im2col convolutions do not use it: their weights (up to 512 × 4,608
//! values, 9 MB) are multiplied by one or two large column tiles, and
//! reading a packed copy that size from memory inside the micro-kernel
//! measured 5–20 % slower than packing each cache block just before use.
//!
//! Where the element type or CPU has no packed form (f64; f32 without
//! AVX2 and FMA) the products read the strided view as [`gemm_serial`]
//! does.

use super::cpu::{check_operands, gemm_raw, Gemm, MatRef};

/// A left operand `a` (`m × k`) prepared for [`gemm_packed`]; shareable
/// between threads.
pub struct PackedLhs<'a, T: Gemm> {
    rows: usize,
    cols: usize,
    /// The matrix as a strided view, read where there is no packed copy.
    view: Option<MatRef<'a, T>>,
    packed: Option<T::Packed>,
}

impl<'a, T: Gemm> PackedLhs<'a, T> {
    /// Packs `a` (bounds checked first; an out-of-bounds view stays
    /// unpacked and is refused by the products, as [`gemm_serial`] does).
    pub fn new(a: MatRef<'a, T>) -> Self {
        let packed = if a.in_bounds() && a.rows > 0 && a.cols > 0 {
            // Safety: the view lies inside its slice.
            unsafe {
                T::pack(
                    a.rows,
                    a.cols,
                    a.data.as_ptr().add(a.offset),
                    (a.row_stride as isize, a.col_stride as isize),
                )
            }
        } else {
            None
        };
        PackedLhs {
            rows: a.rows,
            cols: a.cols,
            view: Some(a),
            packed,
        }
    }

    /// `a` as it is, read strided by every product (what
    /// [`gemm_serial`](super::cpu::gemm_serial) multiplies).
    pub fn unpacked(a: MatRef<'a, T>) -> Self {
        PackedLhs {
            rows: a.rows,
            cols: a.cols,
            view: Some(a),
            packed: None,
        }
    }

    /// An operand that was packed straight from its values (e.g.
    /// Winograd's transformed weights, written into the packed layout as
    /// they are computed), with no unpacked copy; its size is the packed
    /// matrix's own.
    pub fn from_packed(packed: T::Packed) -> Self {
        let (m, k) = T::packed_dims(&packed);
        PackedLhs {
            rows: m,
            cols: k,
            view: None,
            packed: Some(packed),
        }
    }

    /// `c = a · b + beta · c` on `c` of `a.rows × b.cols` row-major.
    ///
    /// # Safety
    /// `b` in bounds with `b.rows == a.cols`; `c` writable, not aliased,
    /// initialised unless beta is 0; the view (if any) in bounds.
    unsafe fn run(&self, b: MatRef<T>, beta: T, c: *mut T) {
        match (&self.packed, self.view) {
            (Some(p), _) => unsafe {
                T::gemm_packed(
                    p,
                    b.cols,
                    b.data.as_ptr().add(b.offset),
                    (b.row_stride as isize, b.col_stride as isize),
                    beta,
                    c,
                    b.cols as isize,
                )
            },
            (None, Some(view)) => unsafe { gemm_raw(view, b, beta, c) },
            (None, None) => unreachable!("a PackedLhs holds a packed copy or a view"),
        }
    }
}

/// `c = a · b` (or `c += a · b` when `accumulate`), single-threaded, as
/// [`gemm_serial`] with `a` packed once.
///
/// [`gemm_serial`]: super::cpu::gemm_serial
pub fn gemm_packed<T: Gemm>(a: &PackedLhs<T>, b: MatRef<T>, c: &mut [T], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    match &a.view {
        Some(view) => check_operands("gemm_packed", view, &b, c.len()),
        None => assert!(
            b.rows == k && m.checked_mul(n) == Some(c.len()) && b.in_bounds(),
            "gemm_packed: inner dimensions or output size disagree, or b out of bounds"
        ),
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::ZERO);
        }
        return;
    }
    let beta = if accumulate { T::ONE } else { T::ZERO };
    // Safety: both views were checked to lie inside their slices, and `c`
    // is a distinct `&mut` slice of exactly m × n elements.
    unsafe { a.run(b, beta, c.as_mut_ptr()) }
}

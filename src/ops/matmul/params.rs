//! Arguments of the GEMM kernels (`kernels/matmul.cu`).

use std::mem::size_of;

/// Arguments of `kernels/matmul.cu`: `C = alpha·A·B + beta·C` over strided,
/// batched matrices (see the kernel's comment for the stride meaning).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmParams {
    /// Rows of `A` and `C`.
    pub m: i64,
    /// Columns of `B` and `C`.
    pub n: i64,
    /// Columns of `A` and rows of `B` (the summed dim).
    pub k: i64,
    /// Number of matrix products in the batch.
    pub batch: i64,
    /// Row stride of `A` in elements.
    pub a_row: i64,
    /// Column stride of `A` in elements.
    pub a_col: i64,
    /// Row stride of `B` in elements.
    pub b_row: i64,
    /// Column stride of `B` in elements.
    pub b_col: i64,
    /// Row stride of `C` in elements.
    pub c_row: i64,
    /// Column stride of `C` in elements.
    pub c_col: i64,
    /// Elements between consecutive batch items of `A` (0 broadcasts one matrix).
    pub a_batch: i64,
    /// Elements between consecutive batch items of `B` (0 broadcasts one matrix).
    pub b_batch: i64,
    /// Elements between consecutive batch items of `C`.
    pub c_batch: i64,
    /// Scale of the product `A·B`.
    pub alpha: f32,
    /// Scale of the old `C`; with 0, `C` is only written, never read.
    pub beta: f32,
}
const _: () = assert!(size_of::<GemmParams>() == 112);

impl GemmParams {
    /// `C[b] = A[b]·B[b]` for contiguous row-major `A: batch×m×k`,
    /// `B: batch×k×n` and `C: batch×m×n` (alpha 1, beta 0).
    pub fn row_major(batch: usize, m: usize, k: usize, n: usize) -> Self {
        let (m, k, n) = (m as i64, k as i64, n as i64);
        GemmParams {
            m,
            n,
            k,
            batch: batch as i64,
            a_row: k,
            a_col: 1,
            b_row: n,
            b_col: 1,
            c_row: n,
            c_col: 1,
            a_batch: m * k,
            b_batch: k * n,
            c_batch: m * n,
            alpha: 1.0,
            beta: 0.0,
        }
    }
}

// Safety: #[repr(C)], plain integers and floats with no padding (sizes
// asserted above), mirroring the kernel's struct.
unsafe impl crate::backend::cuda::driver::KernelArg for GemmParams {}

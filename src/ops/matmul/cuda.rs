//! CUDA launcher of the batched matrix product (`kernels/matmul.cu`): the
//! f32 tiled SGEMM, or bf16/f16 on tensor cores with f32 accumulation and
//! an output in the input type or (bf16 inputs, mixed precision) in f32.
//! Operands are read through their strides (a transposed view is not
//! copied); batch dims that cannot be walked with one stride are compacted
//! first.

use crate::backend::cuda::{launch, CudaDevice};
use crate::error::{Error, Result};
use crate::ops::matmul::params::GemmParams;
use crate::ops::on_cuda::{operands, output};
use crate::tensor::{DType, Layout, Tensor};
use cudarc::driver::LaunchConfig;

/// The single batch stride of `l`'s leading dims (all but the last two),
/// if one stride walks them all (broadcast dims included).
fn batch_stride(l: &Layout) -> Option<usize> {
    let nb = l.ndim() - 2;
    let dims: Vec<(usize, usize)> = (0..nb)
        .map(|d| (l.shape()[d], l.strides()[d]))
        .filter(|&(size, _)| size != 1)
        .collect();
    match dims.as_slice() {
        [] => Some(0),
        [(_, s)] => Some(*s),
        _ => {
            let inner = dims.last().map(|&(_, s)| s)?;
            let ok = dims
                .windows(2)
                .all(|w| w[0].1 == w[1].1 * w[1].0 || (w[0].1 == 0 && w[1].1 == 0));
            ok.then_some(inner)
        }
    }
}

/// How a GEMM configures its launch from `(m, n, batch)`.
type ConfigOf = fn(usize, usize, usize) -> Option<LaunchConfig>;

/// The kernel and launch configuration of a GEMM reading `input` and
/// writing `output`: f32 → f32 (tiled SGEMM), bf16 → bf16 and f16 → f16
/// (tensor cores), or bf16 → f32 (tensor cores, the mixed-precision
/// product). Tensor cores need compute capability 8.0.
fn gemm_kernel(dev: &CudaDevice, input: DType, output: DType) -> Result<(&'static str, ConfigOf)> {
    const OP: &str = "matmul";
    let entry = match (input, output) {
        (DType::F32, DType::F32) => return Ok(("gemm_fwd_f32", launch::sgemm)),
        (DType::BF16, DType::BF16) => "gemm_fwd_bf16",
        (DType::F16, DType::F16) => "gemm_fwd_f16",
        (DType::BF16, DType::F32) => "gemm_fwd_bf16_to_f32",
        (DType::F32 | DType::BF16 | DType::F16, _) => {
            return Err(Error::invalid(
                OP,
                format!("no GEMM kernel reads {input:?} and writes {output:?}"),
            ))
        }
        (other, _) => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: other,
            })
        }
    };
    if dev.compute_capability() < (8, 0) {
        let (major, minor) = dev.compute_capability();
        return Err(Error::invalid(
            OP,
            format!(
                "{input:?} matmul uses tensor-core mma.sync, which needs compute capability \
                 8.0 or later; this GPU is {major}.{minor}"
            ),
        ));
    }
    Ok((entry, launch::tensor_core_gemm))
}

/// `A·B` for `a: [.., m, k]` and `b: [.., k, n]` (one dtype) viewed through
/// `la`, `lb` (already broadcast to the full batch shape); the output is a
/// contiguous `[batch.., m, n]` tensor of `out_dtype`, which is the
/// operands' dtype or, for bf16 operands, f32 (see [`gemm_kernel`]).
pub(super) fn matmul(
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    (m, k, n): (usize, usize, usize),
    (out_dtype, out_shape): (DType, &[usize]),
) -> Result<Tensor> {
    const OP: &str = "matmul";
    // Compact an operand whose batch dims need more than one stride.
    let compact = |t: &Tensor, l: &Layout| -> Result<(Tensor, Layout)> {
        if batch_stride(l).is_some() {
            Ok((t.clone(), l.clone()))
        } else {
            let c = t.detach().view_with(OP, l.clone())?.contiguous()?;
            let l = c.layout().clone();
            Ok((c, l))
        }
    };
    let (a, la) = compact(a, la)?;
    let (b, lb) = compact(b, lb)?;
    let [ad, bd] = operands(OP, [&a, &b])?;
    let dtype = a.dtype();
    let (entry, cfg_of) = gemm_kernel(&ad.dev, dtype, out_dtype)?;
    let batch: usize = out_shape[..out_shape.len() - 2].iter().product();
    let (out, c) = output(OP, &ad.dev, out_dtype, out_shape)?;
    let nd = la.ndim();
    let stride = |l: &Layout, d: usize| l.strides()[d] as i64;
    let params = GemmParams {
        m: m as i64,
        n: n as i64,
        k: k as i64,
        batch: batch as i64,
        a_row: stride(&la, nd - 2),
        a_col: stride(&la, nd - 1),
        b_row: stride(&lb, nd - 2),
        b_col: stride(&lb, nd - 1),
        c_row: n as i64,
        c_col: 1,
        a_batch: batch_stride(&la).unwrap_or(0) as i64,
        b_batch: batch_stride(&lb).unwrap_or(0) as i64,
        c_batch: (m * n) as i64,
        alpha: 1.0,
        beta: 0.0,
    };
    let size = dtype.size_in_bytes() as u64;
    let pa = ad.ptr + la.offset() as u64 * size;
    let pb = bd.ptr + lb.offset() as u64 * size;
    if k == 0 {
        // An empty sum: zeros, which the kernel would also write, but
        // without reading A or B.
        return Tensor::zeros_on(out_shape, out_dtype, a.device());
    }
    ad.dev.launch(
        "matmul",
        entry,
        cfg_of(m, n, batch),
        &[&params, &pa, &pb, &c],
    )?;
    Ok(out)
}

/// One operand of [`gemm`]: a device address and the row and column
/// strides (in elements) of the matrix it starts.
#[derive(Clone, Copy)]
pub(crate) struct MatrixArg {
    /// Address of element (0, 0).
    pub ptr: u64,
    /// Elements between consecutive rows.
    pub row: usize,
    /// Elements between consecutive columns.
    pub col: usize,
}

/// `C = A·B` for one product of `m × k` by `k × n` into the contiguous
/// `m × n` matrix at `c` (for ops built on the GEMM, such as convolution).
/// `A` and `B` hold `input` elements, `C` holds `output` ones: f32 → f32,
/// or bf16 → f32 on tensor cores (see [`gemm_kernel`]).
pub(crate) fn gemm(
    dev: &CudaDevice,
    (input, output): (DType, DType),
    (m, k, n): (usize, usize, usize),
    a: MatrixArg,
    b: MatrixArg,
    c: u64,
) -> Result<()> {
    let (entry, cfg_of) = gemm_kernel(dev, input, output)?;
    let params = GemmParams {
        m: m as i64,
        n: n as i64,
        k: k as i64,
        batch: 1,
        a_row: a.row as i64,
        a_col: a.col as i64,
        b_row: b.row as i64,
        b_col: b.col as i64,
        c_row: n as i64,
        c_col: 1,
        a_batch: 0,
        b_batch: 0,
        c_batch: 0,
        alpha: 1.0,
        beta: 0.0,
    };
    dev.launch(
        "matmul",
        entry,
        cfg_of(m, n, 1),
        &[&params, &a.ptr, &b.ptr, &c],
    )
}

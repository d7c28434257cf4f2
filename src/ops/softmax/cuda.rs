//! CUDA launcher of softmax and log-softmax over the last dim of a
//! contiguous `rows × cols` tensor (`kernels/reduce.cu`, one block per row:
//! max, sum of exponentials, write).

use crate::backend::cuda::launch;
use crate::error::Result;
use crate::ops::on_cuda::{operand, output, require_f32};
use crate::ops::reduce::params::RowParams;
use crate::tensor::Tensor;

/// (Log-)softmax of every row of `x` (contiguous, last dim the row),
/// as a new contiguous tensor of the same shape.
pub(super) fn softmax_rows(x: &Tensor, log: bool) -> Result<Tensor> {
    const OP: &str = "softmax";
    if matches!(
        x.dtype(),
        crate::tensor::DType::BF16 | crate::tensor::DType::F16
    ) {
        // Half types compute in f32 and round once, as on the CPU.
        let y = softmax_rows(&x.to_dtype(crate::tensor::DType::F32)?, log)?;
        return y.to_dtype(x.dtype());
    }
    require_f32(OP, x.dtype())?;
    let a = operand(OP, x)?;
    let cols = x.shape().last().copied().unwrap_or(1);
    let rows = x.numel().checked_div(cols).unwrap_or(0);
    let (out, y) = output(OP, &a.dev, x.dtype(), x.shape())?;
    let params = RowParams {
        rows: rows as i64,
        cols: cols as i64,
        row_stride: cols as i64,
    };
    let ptr = a.at(x);
    let entry = if log {
        "log_softmax_fwd_f32"
    } else {
        "softmax_fwd_f32"
    };
    a.dev.launch(
        "reduce",
        entry,
        launch::rows(rows, cols),
        &[&params, &ptr, &y],
    )?;
    Ok(out)
}

//! The affine layer `y = x·Wᵀ + b` (`torch.nn.functional.linear`), composed
//! from existing differentiable ops, so autodiff comes for free.
//!
//! `W` is stored `(out, in)` as in PyTorch; `Wᵀ` is a transposed *view*
//! (strides swapped), which the GEMM reads in place: no copy. The leading
//! dims of `x` are folded into the rows of one 2-D product when its layout
//! allows that as a view (always for contiguous inputs), so the forward and
//! both backward products are single GEMMs; otherwise the product is
//! batched over the leading dims (still without copying `x`).

use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// `x·Wᵀ + b` for `x` of shape `(*, in)`, `weight` of shape `(out, in)`
    /// and an optional `bias` of shape `(out)`; returns `(*, out)`. A 1-D
    /// `x` of shape `(in)` gives `(out)`.
    ///
    /// Gradients: `dx = dy·W`, `dW = dyᵀ·x` (summed over the leading dims),
    /// `db = Σ dy` over the leading dims, all by the ops it is built from.
    ///
    /// Errors: a 0-d `x`, a weight that is not 2-D, `x.shape[-1] ≠ in`, a
    /// bias whose shape is not `(out)` (each message names both shapes);
    /// dtype or device mismatch; non-float dtypes.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let _profile = crate::profile::scope("linear");
        if self.ndim() == 0
            || weight.ndim() != 2
            || self.shape()[self.ndim() - 1] != weight.shape()[1]
        {
            return Err(Error::ShapeMismatch {
                op: "linear (input (*, in), weight (out, in))",
                lhs: self.shape().to_vec(),
                rhs: weight.shape().to_vec(),
            });
        }
        self.check_same("linear", weight)?;
        self.check_float("linear")?;
        let (out_features, in_features) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = bias {
            self.check_same("linear", b)?;
            if b.shape() != [out_features] {
                return Err(Error::ShapeMismatch {
                    op: "linear (weight (out, in), bias (out))",
                    lhs: weight.shape().to_vec(),
                    rhs: b.shape().to_vec(),
                });
            }
        }
        let lead = &self.shape()[..self.ndim() - 1];
        let rows: usize = lead.iter().product();
        let out_shape: Vec<usize> = lead.iter().copied().chain([out_features]).collect();
        let wt = weight.t()?; // (in, out) view, no copy
        let y = if self.ndim() == 2 {
            self.matmul(&wt)?
        } else if self.layout().reshape(&[rows, in_features]).is_some() {
            // Fold the leading dims into rows: a view, one GEMM.
            self.reshape(&[rows, in_features])?.matmul(&wt)?
        } else {
            // Leading dims that cannot be folded without a copy: batched
            // product over them (Wᵀ broadcast with stride 0).
            self.matmul(&wt)?
        };
        let y = match bias {
            Some(b) => y.add(b)?,
            None => y,
        };
        y.reshape(&out_shape)
    }
}

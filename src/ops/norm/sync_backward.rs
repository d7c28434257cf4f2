//! The backward of synchronised batch norm ([`Tensor::sync_batch_norm`]).
//!
//! With `x̂ = (x − μ)·invstd` normalised by the global statistics and `M`
//! the global count per channel, one process running the whole batch has
//! `dx = w·invstd/M · (M·dy − Σdy − x̂·Σ(dy·x̂))`, the sums running over
//! the **global** batch. Each rank holds its slice's `dy`, so the two
//! per-channel sums are all-reduced (f64) before `dx` is formed.
//!
//! The weighting. In a data-parallel step rank `r` seeds backward with its
//! own loss `L_r`, the mean over its `n_r` samples, and the gradient
//! reducer scales every parameter gradient of rank `r` by `s_r = n_r/N`
//! before summing: the job minimises `L = Σ_r s_r·L_r`, the mean over the
//! global batch of `N` samples, and rank `r`'s backward computes the
//! gradients of `L` through its own samples divided by `s_r`. The true
//! upstream gradient at this layer's output on rank `r` is `s_r·dy_r`, so
//! the global sums are `Σ_r s_r·Σdy_r` (and alike for `Σdy·x̂`), and rank
//! `r`'s `dx`, divided by `s_r` like everything else it computes, is the
//! formula above with `Σdy = (Σ_q s_q·Σdy_q)/s_r`. The layer knows
//! `s_r = local count / global count` from its forward (the counts per
//! channel are `n·S`, so the spatial size cancels). With even slices every
//! `s_r` is the same and the weights cancel; with one rank `s_r = 1` and
//! everything is [`Tensor::batch_norm`]'s backward bit for bit.
//!
//! The weight and bias gradients stay local: `dw_r = Σ_r-slice dy·x̂`,
//! `db_r = Σ_r-slice dy`; the reducer's `Σ_r s_r·dw_r` is the global
//! `Σ s·dy·x̂`, the single-process gradient. A rank with an empty slice
//! contributes zeros (`s_r = 0`) and still takes part in the all-reduce.

use super::cpu::NcsShape;
use super::{grad_input, grad_sums, push_affine_grads};
use crate::autograd::GradFn;
use crate::distributed::{all_reduce_f64, Communicator, SyncGroup};
use crate::error::Result;
use crate::ops::dispatch::{compute_data, with_compute_type};
use crate::tensor::Tensor;

const OP: &str = "sync_batch_norm";

/// What the backward needs from the forward.
pub(super) struct SyncBatchNormBackward {
    pub input: Tensor,
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub group: SyncGroup,
    /// Global per-channel mean and `1/√(var + eps)`.
    pub mean: Vec<f64>,
    pub invstd: Vec<f64>,
    /// Values per channel on this rank and over every rank.
    pub local_count: usize,
    pub global_count: usize,
}

impl GradFn for SyncBatchNormBackward {
    fn name(&self) -> &'static str {
        OP
    }
    fn inputs(&self) -> Vec<Tensor> {
        let mut v = vec![self.input.clone()];
        v.extend(self.weight.clone());
        v.extend(self.bias.clone());
        v
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let comm = self.group.comm()?;
        let result = self.grads(comm, g);
        if let Err(e) = &result {
            comm.abort(&e.to_string());
        }
        result
    }
}

impl SyncBatchNormBackward {
    /// The gradients of the input, weight and bias (those that require one).
    fn grads(&self, comm: &dyn Communicator, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let sh = NcsShape::of(self.input.shape());
        let dtype = self.input.dtype();
        let data = if self.local_count > 0 {
            let x = compute_data(OP, &self.input)?;
            let dy = g.to_dtype(x.dtype())?.contiguous()?;
            let sums = dispatch!(x.dtype(), grad_sums(&dy, &x, sh, &self.mean))?;
            Some((x, dy, sums))
        } else {
            None
        };
        let (sum_dy, sum_dy_xmu) = match &data {
            Some((_, _, (a, b))) => (a.clone(), b.clone()),
            None => (vec![0.0; sh.c], vec![0.0; sh.c]),
        };
        let mut grads = Vec::with_capacity(3);
        grads.push(if self.input.requires_grad() {
            // Every rank takes part, whether or not its slice is empty.
            let share = self.local_count as f64 / self.global_count as f64;
            let mut sums: Vec<f64> = sum_dy
                .iter()
                .chain(&sum_dy_xmu)
                .map(|s| s * share)
                .collect();
            all_reduce_f64(comm, &mut sums)?;
            match &data {
                Some((x, dy, _)) => {
                    let m = self.global_count as f64;
                    let w = match &self.weight {
                        Some(w) => w.to_f64_vec()?,
                        None => vec![1.0; sh.c],
                    };
                    let (mut a, mut p, mut q) = (vec![0.0; sh.c], vec![0.0; sh.c], vec![0.0; sh.c]);
                    for c in 0..sh.c {
                        let (all_dy, all_dy_xmu) = (sums[c] / share, sums[sh.c + c] / share);
                        let i = self.invstd[c];
                        a[c] = w[c] * i;
                        p[c] = -a[c] * i * i * all_dy_xmu / m;
                        q[c] = -a[c] * all_dy / m;
                    }
                    let s = dispatch!(x.dtype(), grad_input(dy, x, sh, &self.mean, (&a, &p, &q)))?;
                    Some(Tensor::from_storage(s, self.input.shape())?.to_dtype(dtype)?)
                }
                None => Some(Tensor::zeros(self.input.shape(), dtype)?),
            }
        } else {
            None
        });
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        let sums = (sum_dy.as_slice(), sum_dy_xmu.as_slice());
        push_affine_grads(&mut grads, (w, b), sums, &self.invstd, dtype)?;
        Ok(grads)
    }
}

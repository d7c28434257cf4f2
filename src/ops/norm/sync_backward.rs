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

/// The global statistics the forward normalised with, where it ran.
pub(super) enum SyncSaved {
    /// On the host, in f64: the global mean and `1/√(var + eps)`.
    Host { mean: Vec<f64>, invstd: Vec<f64> },
    /// On a CUDA device: the global mean then `invstd` rounded to f32
    /// (`2C` elements); `None` when this rank's slice is empty.
    #[cfg(feature = "cuda")]
    Device(Option<super::sync_cuda::Stats>),
}

/// What the backward needs from the forward.
pub(super) struct SyncBatchNormBackward {
    pub input: Tensor,
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub group: SyncGroup,
    /// The global statistics.
    pub saved: SyncSaved,
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
        let result = match &self.saved {
            SyncSaved::Host { mean, invstd } => self.grads(comm, g, mean, invstd),
            #[cfg(feature = "cuda")]
            SyncSaved::Device(stats) => self.grads_on_device(comm, g, stats.as_ref()),
        };
        if let Err(e) = &result {
            comm.abort(&e.to_string());
        }
        result
    }
}

impl SyncBatchNormBackward {
    /// This rank's share of the global batch, `local / global` values.
    fn share(&self) -> f64 {
        self.local_count as f64 / self.global_count as f64
    }

    /// The all-reduce of the backward: this rank's `(Σdy, Σdy·(x − μ))`
    /// weighted by its share, summed over the ranks (`2C` values). Every
    /// rank takes part, whether or not its slice is empty.
    fn all_reduce_sums(
        &self,
        comm: &dyn Communicator,
        sum_dy: &[f64],
        sum_dy_xmu: &[f64],
    ) -> Result<Vec<f64>> {
        let share = self.share();
        let mut sums: Vec<f64> = sum_dy.iter().chain(sum_dy_xmu).map(|s| s * share).collect();
        all_reduce_f64(comm, &mut sums)?;
        Ok(sums)
    }

    /// The gradients of the input, weight and bias (those that require
    /// one), on the host.
    fn grads(
        &self,
        comm: &dyn Communicator,
        g: &Tensor,
        mean: &[f64],
        invstd: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let sh = NcsShape::of(self.input.shape());
        let dtype = self.input.dtype();
        let data = if self.local_count > 0 {
            let x = compute_data(OP, &self.input)?;
            let dy = g.to_dtype(x.dtype())?.contiguous()?;
            let sums = dispatch!(x.dtype(), grad_sums(&dy, &x, sh, mean))?;
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
            let share = self.share();
            let sums = self.all_reduce_sums(comm, &sum_dy, &sum_dy_xmu)?;
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
                        let i = invstd[c];
                        a[c] = w[c] * i;
                        p[c] = -a[c] * i * i * all_dy_xmu / m;
                        q[c] = -a[c] * all_dy / m;
                    }
                    let s = dispatch!(x.dtype(), grad_input(dy, x, sh, mean, (&a, &p, &q)))?;
                    Some(Tensor::from_storage(s, self.input.shape())?.to_dtype(dtype)?)
                }
                None => Some(Tensor::zeros(self.input.shape(), dtype)?),
            }
        } else {
            None
        });
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        let sums = (sum_dy.as_slice(), sum_dy_xmu.as_slice());
        push_affine_grads(&mut grads, (w, b), sums, invstd, dtype)?;
        Ok(grads)
    }

    /// The gradients on the CUDA device (`stats` the forward's, `None` for
    /// an empty slice): only the `2C` local sums are downloaded for the
    /// all-reduce and the reduced ones uploaded for the input gradient.
    ///
    /// With `S = Σ_q s_q·Σ_q-slice` the all-reduced sums and `n` this
    /// rank's values per channel, the global sums over the global count are
    /// `(S/s_r)/M = S/n` (`s_r = n/M`), so `batch_norm_bwd_f32`, which
    /// divides its sums by the local count, gives the module's formula when
    /// handed `S` itself.
    #[cfg(feature = "cuda")]
    fn grads_on_device(
        &self,
        comm: &dyn Communicator,
        g: &Tensor,
        stats: Option<&super::sync_cuda::Stats>,
    ) -> Result<Vec<Option<Tensor>>> {
        use super::sync_cuda;
        let need_dx = self.input.requires_grad();
        let need =
            [&self.weight, &self.bias].map(|t| t.as_ref().is_some_and(Tensor::requires_grad));
        let (device, c) = (self.input.device(), self.input.shape()[1]);
        let zeros = |shape: &[usize]| Tensor::zeros_on(shape, crate::tensor::DType::F32, device);
        let (sum_dy, sum_dy_xmu, [dw, db]) = match stats {
            Some(stats) => sync_cuda::grad_sums(&self.input, g, stats, need_dx, need)?,
            None => {
                let param = |needed: bool| needed.then(|| zeros(&[c])).transpose();
                let grads = [param(need[0])?, param(need[1])?];
                (vec![0.0; c], vec![0.0; c], grads)
            }
        };
        let dx = if need_dx {
            let sums = self.all_reduce_sums(comm, &sum_dy, &sum_dy_xmu)?;
            Some(match stats {
                Some(stats) => {
                    sync_cuda::grad_input(&self.input, g, self.weight.as_ref(), stats, &sums)?
                }
                None => zeros(self.input.shape())?,
            })
        } else {
            None
        };
        let mut grads = vec![dx];
        if self.weight.is_some() {
            grads.push(dw);
        }
        if self.bias.is_some() {
            grads.push(db);
        }
        Ok(grads)
    }
}

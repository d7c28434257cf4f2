//! Batch norm with statistics synchronised over the ranks of a
//! data-parallel job (PyTorch's `SyncBatchNorm`): the forward of
//! [`Tensor::sync_batch_norm`].
//!
//! In training mode each rank computes its slice's per-channel moments,
//! the ranks gather and merge them (`sync_stats.rs`), and every rank
//! normalises its slice with the **global** batch's mean and biased
//! variance and updates its running statistics with the global mean and
//! unbiased variance, so the running statistics stay the same on every
//! rank. The backward (`sync_backward.rs`) all-reduces the two
//! per-channel sums of the input gradient. Evaluation mode is
//! [`Tensor::batch_norm`] (running statistics, no collective).
//!
//! On the CPU the moments, the normalisation and the gradients are those
//! of `cpu.rs`, in f64. On a CUDA device (f32, `sync_cuda.rs`) they are
//! computed by the device kernels of plain batch norm, and only the
//! per-channel vectors of the collectives cross to the host: the merge and
//! the all-reduce run there in f64, as on the CPU, so every rank gets the
//! same bits.

use super::cpu::NcsShape;
use super::sync_backward::{SyncBatchNormBackward, SyncSaved};
#[cfg(feature = "cuda")]
use super::sync_cuda;
use super::sync_stats::{global_moments, Moments};
use super::{
    check_values_per_channel, moments, normalize, update_running, validate, BatchNormOptions,
};
use crate::distributed::{Communicator, SyncGroup};
use crate::error::{Error, Result};
use crate::ops::dispatch::{compute_data, cuda_arm, with_compute_type};
use crate::tensor::{Device, Tensor};

const OP: &str = "sync_batch_norm";

impl Tensor {
    /// [`batch_norm`](Self::batch_norm) with the statistics of the global
    /// batch of a data-parallel job, as PyTorch's `SyncBatchNorm`: this
    /// rank's input is its slice of the global batch, and every rank of
    /// `group` must call it (for the same layer, in the same order) with
    /// inputs of the same channels.
    ///
    /// Training mode: the ranks' per-channel moments are gathered and
    /// merged (one all-gather of `1 + 2C` f64 values per rank), each rank
    /// normalises with the global mean and biased variance, and the
    /// running statistics, when given, are updated with the global mean
    /// and unbiased variance, the same bits on every rank. A rank's slice
    /// may be empty (its output is empty; it still takes part in both
    /// collectives); the global batch needs more than one value per
    /// channel. The backward all-reduces `Σdy` and `Σdy·x̂` per channel
    /// (one all-reduce of `2C` f64 values), so that the input gradient is
    /// that of one process running the whole batch; the weight and bias
    /// gradients stay this rank's own, for the gradient all-reduce of the
    /// data-parallel step (e.g. [`Reducer`](crate::distributed::Reducer))
    /// to sum.
    ///
    /// Gradient convention: as the [`Reducer`](crate::distributed::Reducer)
    /// assumes, each rank's loss is the **mean** over its own samples and
    /// its gradients are weighted by its share of the global batch
    /// (`local / global` samples) before the sum. The backward weights the
    /// all-reduced sums accordingly, so uneven slices also give exactly the
    /// gradient of the global batch's mean loss; with even slices the
    /// weights cancel (PyTorch's unweighted sums).
    ///
    /// Evaluation mode is [`batch_norm`](Self::batch_norm) with the running
    /// statistics, without any collective. With a group of one rank the
    /// results are those of `batch_norm`, bit for bit.
    ///
    /// The input may live on the CPU or a CUDA device (f32, as
    /// `batch_norm` there): on a device the input, the output, the running
    /// statistics and the gradients stay there, and only the per-channel
    /// vectors of the two collectives are copied to the host and back.
    ///
    /// Errors: those of `batch_norm` (including a dtype the device kernels
    /// lack, before any collective); a group used on
    /// another thread than the one that created it; a global batch with at
    /// most one value per channel; ranks whose inputs have different
    /// channel counts; a failed collective. An error on one rank aborts the
    /// group's communicator, so the other ranks fail too instead of waiting.
    pub fn sync_batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        opts: BatchNormOptions,
        group: &SyncGroup,
    ) -> Result<Tensor> {
        if !opts.training {
            return self.batch_norm(running_mean, running_var, weight, bias, opts);
        }
        let _profile = crate::profile::scope("sync_batch_norm");
        let comm = group.comm()?;
        let args = Args {
            running_mean,
            running_var,
            weight,
            bias,
            opts,
        };
        let result = self.sync_forward(comm, group, &args);
        if let Err(e) = &result {
            comm.abort(&e.to_string());
        }
        result
    }

    /// The training-mode forward (see [`sync_batch_norm`](Self::sync_batch_norm)).
    fn sync_forward(&self, comm: &dyn Communicator, group: &SyncGroup, a: &Args) -> Result<Tensor> {
        validate(
            self,
            a.running_mean,
            a.running_var,
            a.weight,
            a.bias,
            &a.opts,
        )?;
        match self.device() {
            Device::Cpu => {}
            // Before any collective: the device kernels are f32 only.
            Device::Cuda(_) => cuda_arm!(sync_cuda::check_dtype(self))?,
        }
        let sh = NcsShape::of(self.shape());
        // The host path computes on the whole input, read once.
        let host_x = match self.device() {
            Device::Cpu => Some(compute_data(OP, self)?),
            Device::Cuda(_) => None,
        };
        let local = if sh.per_channel() > 0 {
            let (mean, m2) = match &host_x {
                Some(x) => dispatch!(x.dtype(), moments(x, sh))?,
                None if sh.c == 0 => (Vec::new(), Vec::new()),
                None => cuda_arm!(sync_cuda::moments(self))?,
            };
            Moments {
                count: sh.per_channel(),
                mean,
                m2,
            }
        } else {
            Moments::empty(sh.c)
        };
        let global = global_moments(comm, &local)?;
        if global.count == 0 {
            return Err(Error::invalid(
                OP,
                "the global batch is empty: no rank has values to normalise",
            ));
        }
        check_values_per_channel(self, global.count, &a.opts)?;
        let m = global.count as f64;
        let unbiased: Vec<f64> = global.m2.iter().map(|v| v / (m - 1.0)).collect();
        let running = [(a.running_mean, &global.mean), (a.running_var, &unbiased)];
        for (buf, batch) in running {
            let Some(buf) = buf else { continue };
            match buf.device() {
                Device::Cpu => update_running(buf, batch, a.opts.momentum)?,
                Device::Cuda(_) => {
                    cuda_arm!(sync_cuda::update_running(buf, batch, a.opts.momentum))?
                }
            }
        }
        let invstd: Vec<f64> = global
            .m2
            .iter()
            .map(|v| 1.0 / (v / m + a.opts.eps).sqrt())
            .collect();
        let (out, saved) = match host_x {
            Some(x) => {
                let out = if self.numel() == 0 {
                    Tensor::zeros(self.shape(), self.dtype())?
                } else {
                    let mut scale = invstd.clone();
                    if let Some(w) = a.weight {
                        for (s, w) in scale.iter_mut().zip(w.to_f64_vec()?) {
                            *s *= w;
                        }
                    }
                    let shift = match a.bias {
                        Some(b) => b.to_f64_vec()?,
                        None => vec![0.0; sh.c],
                    };
                    let coefs = (&global.mean[..], &scale[..], &shift[..]);
                    let s = dispatch!(x.dtype(), normalize(&x, sh, coefs, false))?;
                    Tensor::from_storage(s, self.shape())?.to_dtype(self.dtype())?
                };
                let saved = SyncSaved::Host {
                    mean: global.mean,
                    invstd,
                };
                (out, saved)
            }
            None => cuda_arm!({
                if self.numel() == 0 {
                    let out = Tensor::zeros_on(self.shape(), self.dtype(), self.device())?;
                    Ok::<_, Error>((out, SyncSaved::Device(None)))
                } else {
                    let (out, stats) =
                        sync_cuda::normalize(self, a.weight, a.bias, &global.mean, &invstd)?;
                    Ok((out, SyncSaved::Device(Some(stats))))
                }
            })?,
        };
        let mut inputs = vec![self];
        inputs.extend(a.weight);
        inputs.extend(a.bias);
        Ok(out.track(&inputs, || {
            Box::new(SyncBatchNormBackward {
                input: self.clone(),
                weight: a.weight.cloned(),
                bias: a.bias.cloned(),
                group: group.clone(),
                saved,
                local_count: local.count,
                global_count: global.count,
            })
        }))
    }
}

/// The arguments of [`Tensor::sync_batch_norm`] besides the input.
struct Args<'a> {
    running_mean: Option<&'a Tensor>,
    running_var: Option<&'a Tensor>,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    opts: BatchNormOptions,
}

//! Data-parallel gradients in the style of PyTorch's DDP: each rank runs
//! backward on its slice of the global batch, buckets of gradients are
//! all-reduced as soon as backward has made them final, and every rank
//! ends the step with the gradient of the global batch's mean loss.

use super::broadcast::broadcast_tensors;
use super::bucket::{plan, Bucket, BucketOptions};
use super::{AllReduce, Buffer, Communicator, TensorAllReduce};
use crate::autograd::{BackwardOptions, GradStore, LeafReady};
use crate::error::{Error, Result};
use crate::nn::{Module, Role};
use crate::tensor::{Device, Tensor, TensorId};
use std::collections::HashMap;

/// Averages gradients over the ranks of a data-parallel job.
///
/// Parameters are grouped into buckets in reverse registration order (a
/// small first bucket, then large ones, see [`BucketOptions`]), each with a
/// flat buffer kept from step to step. During [`backward`](Self::backward)
/// a parameter's gradient is copied into its bucket as soon as it is final
/// ([`Tensor::backward_into_with_hook`]); a full bucket starts an
/// asynchronous all-reduce (buckets start in index order on every rank, so
/// the collectives match). After backward the reducer waits for them all
/// and writes the reduced gradients into the returned store.
///
/// Each rank's gradient is scaled by `local_count / global_count` before
/// the sum, so the result is the gradient of the mean loss over the global
/// batch even when the ranks' slices differ in size (the loss must be the
/// mean over the rank's own samples). With one rank the scale is 1 and the
/// gradients are those of a plain `backward`, bit for bit.
///
/// Any error (a failed collective, a bad argument) aborts the
/// communicator, so the other ranks fail too instead of waiting.
pub struct Reducer {
    comm: Box<dyn Communicator>,
    params: Vec<Tensor>,
    buckets: Vec<Bucket>,
    /// Per parameter id: (bucket, member).
    place: HashMap<TensorId, (usize, usize)>,
    /// Where the last step's time went.
    timing: StepTiming,
}

/// Where the time of the last [`Reducer::backward`] went: backward itself
/// (with the copies into the buckets and the all-reduces it started), and
/// the wait for the all-reduces after it, the communication that backward
/// did not hide.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTiming {
    /// Seconds from the start of backward to its end.
    pub backward_seconds: f64,
    /// Seconds spent after backward waiting for the all-reduces and
    /// writing the reduced gradients back.
    pub exposed_seconds: f64,
}

impl Reducer {
    /// A reducer for `params` (in registration order, e.g.
    /// [`Module::parameters`]; those that do not require a gradient are
    /// left out, a parameter listed twice counts once).
    pub fn new(
        comm: Box<dyn Communicator>,
        params: &[Tensor],
        opts: BucketOptions,
    ) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let params: Vec<Tensor> = params
            .iter()
            .filter(|p| p.requires_grad() && seen.insert(p.id()))
            .cloned()
            .collect();
        let buckets = plan(&params, opts)?;
        let mut place = HashMap::new();
        for (b, bucket) in buckets.iter().enumerate() {
            for (m, member) in bucket.members.iter().enumerate() {
                place.insert(params[member.param].id(), (b, m));
            }
        }
        Ok(Reducer {
            comm,
            params,
            buckets,
            place,
            timing: StepTiming::default(),
        })
    }

    /// A reducer for `module`'s parameters.
    pub fn for_module(
        comm: Box<dyn Communicator>,
        module: &dyn Module,
        opts: BucketOptions,
    ) -> Result<Self> {
        Self::new(comm, &module.parameters(), opts)
    }

    /// Makes every rank's parameters and buffers (e.g. batch-norm running
    /// statistics) those of rank 0, as DDP does when it starts: call it once
    /// after building the model on every rank, before the first step.
    pub fn broadcast_state(&self, module: &dyn Module) -> Result<()> {
        let tensors: Vec<Tensor> = module.state_dict().into_iter().map(|(_, t)| t).collect();
        broadcast_tensors(&*self.comm, &tensors, 0)
    }

    /// Makes every rank's buffers (not the parameters) those of rank 0: with
    /// per-rank batch-norm statistics, call it after each step to keep the
    /// ranks identical (DDP's `broadcast_buffers`).
    pub fn broadcast_buffers(&self, module: &dyn Module) -> Result<()> {
        let mut tensors = Vec::new();
        module.visit("", &mut |_, t, role| {
            if role == Role::Buffer {
                tensors.push(t.clone());
            }
        });
        broadcast_tensors(&*self.comm, &tensors, 0)
    }

    /// The communicator (for the job's other collectives).
    pub fn comm(&self) -> &dyn Communicator {
        &*self.comm
    }

    /// Elements per bucket, in the order they are all-reduced.
    pub fn bucket_lens(&self) -> Vec<usize> {
        self.buckets.iter().map(|b| b.len).collect()
    }

    /// Where the time of the last step went (zeros before the first).
    pub fn last_timing(&self) -> StepTiming {
        self.timing
    }

    /// Backward of `loss` (this rank's mean loss over its `local_count`
    /// samples of a global batch of `global_count`) and the all-reduce of
    /// the gradients: returns the gradients of the global batch's mean
    /// loss, the same on every rank. On error the communicator is aborted.
    pub fn backward(
        &mut self,
        loss: &Tensor,
        local_count: usize,
        global_count: usize,
    ) -> Result<GradStore> {
        let result = self.try_backward(Some(loss), local_count, global_count);
        if let Err(e) = &result {
            self.comm.abort(&e.to_string());
        }
        result
    }

    /// The step of a rank whose slice of a global batch of `global_count`
    /// samples is empty (a last batch smaller than the world): no backward,
    /// zeros in every bucket, so that the collectives still match and the
    /// rank ends the step with the same gradients as the others. On error
    /// the communicator is aborted.
    pub fn backward_empty(&mut self, global_count: usize) -> Result<GradStore> {
        let result = self.try_backward(None, 0, global_count);
        if let Err(e) = &result {
            self.comm.abort(&e.to_string());
        }
        result
    }

    /// Backward of `loss` (none: an empty slice) and the all-reduces.
    fn try_backward(
        &mut self,
        loss: Option<&Tensor>,
        local_count: usize,
        global_count: usize,
    ) -> Result<GradStore> {
        let counts_ok = match loss {
            Some(_) => local_count >= 1 && local_count <= global_count,
            None => local_count == 0 && global_count >= 1,
        };
        if !counts_ok {
            return Err(Error::invalid(
                "Reducer::backward",
                format!(
                    "rank {} has {local_count} of {global_count} samples (need 1..=global, \
                     or backward_empty for an empty slice of a non-empty batch)",
                    self.comm.rank()
                ),
            ));
        }
        let started = std::time::Instant::now();
        let scale = local_count as f64 / global_count as f64;
        for bucket in &mut self.buckets {
            bucket.reset()?;
        }
        let mut store = GradStore::new();
        let mut flight = Flight {
            comm: &*self.comm,
            params: &self.params,
            buckets: &mut self.buckets,
            handles: Vec::new(),
            scale,
        };
        if let Some(loss) = loss {
            let seed = loss.ones_like()?;
            let opts = BackwardOptions::default();
            let place = &self.place;
            loss.backward_into_with_hook(&seed, &mut store, opts, &mut |ev: LeafReady<'_>| {
                match place.get(&ev.leaf.id()) {
                    Some(&(b, m)) => flight.fill(b, m, ev.store),
                    None => Ok(()),
                }
            })?;
        }
        // Parameters backward did not reach contribute zeros.
        for b in flight.handles.len()..flight.buckets.len() {
            flight.fill_missing_with_zeros(b)?;
        }
        flight.launch_ready()?;
        let handles = std::mem::take(&mut flight.handles);
        let backward_done = std::time::Instant::now();
        for (b, handle) in handles.into_iter().enumerate() {
            match handle {
                InFlight::Host(handle) => {
                    let reduced = handle.wait()?;
                    self.write_back(b, &reduced, &mut store)?;
                    self.buckets[b].buffer = Some(reduced);
                }
                InFlight::Device(handle) => {
                    let reduced = handle.wait()?;
                    self.write_back_from_device(b, &reduced, &mut store)?;
                }
            }
        }
        self.timing = StepTiming {
            backward_seconds: (backward_done - started).as_secs_f64(),
            exposed_seconds: backward_done.elapsed().as_secs_f64(),
        };
        Ok(store)
    }

    /// Puts bucket `b`'s reduced gradients into `store`.
    fn write_back(&self, b: usize, reduced: &Buffer, store: &mut GradStore) -> Result<()> {
        for member in &self.buckets[b].members {
            let p = &self.params[member.param];
            let span = member.offset..member.offset + member.len;
            let g = match reduced {
                Buffer::F32(v) => Tensor::from_slice(&v[span], p.shape())?,
                Buffer::F64(v) => Tensor::from_slice(&v[span], p.shape())?,
            };
            store.insert(p, g);
        }
        Ok(())
    }

    /// Puts the gradients of device bucket `b` into `store`: views of
    /// the reduced flat tensor, in each parameter's shape.
    fn write_back_from_device(
        &self,
        b: usize,
        reduced: &Tensor,
        store: &mut GradStore,
    ) -> Result<()> {
        for member in &self.buckets[b].members {
            let p = &self.params[member.param];
            let g = reduced
                .narrow(0, member.offset, member.len)?
                .reshape(p.shape())?;
            store.insert(p, g);
        }
        Ok(())
    }
}

/// One bucket's all-reduce in flight.
enum InFlight {
    /// A host buffer (parameters on the CPU).
    Host(AllReduce),
    /// A flat tensor on the parameters' device.
    Device(TensorAllReduce),
}

/// The buckets of one step while backward runs.
struct Flight<'a> {
    comm: &'a dyn Communicator,
    params: &'a [Tensor],
    buckets: &'a mut [Bucket],
    /// The all-reduces started so far, one per bucket, in bucket order.
    handles: Vec<InFlight>,
    scale: f64,
}

impl Flight<'_> {
    /// Copies member `m` of bucket `b` in (scaled), and starts every
    /// bucket that is now complete and next in order.
    fn fill(&mut self, b: usize, m: usize, store: &GradStore) -> Result<()> {
        let member = self.buckets[b].members[m];
        let p = &self.params[member.param];
        if self.buckets[b].device != Device::Cpu {
            let part = self.device_part(p, store.get(p))?;
            let bucket = &mut self.buckets[b];
            bucket.parts[m] = Some(part);
            return self.mark_filled(b, m);
        }
        let bucket = &mut self.buckets[b];
        let buffer = bucket.buffer.as_mut().ok_or_else(|| busy(b))?;
        let span = member.offset..member.offset + member.len;
        match store.get(p) {
            Some(g) => {
                let g = g.to_dtype(p.dtype())?;
                match buffer {
                    Buffer::F32(v) => {
                        let s = self.scale as f32;
                        let dst = &mut v[span];
                        dst.iter_mut()
                            .zip(g.to_vec::<f32>()?)
                            .for_each(|(d, x)| *d = x * s);
                    }
                    Buffer::F64(v) => {
                        let dst = &mut v[span];
                        dst.iter_mut()
                            .zip(g.to_vec::<f64>()?)
                            .for_each(|(d, x)| *d = x * self.scale);
                    }
                }
            }
            None => zero(buffer, span),
        }
        self.mark_filled(b, m)
    }

    /// Member `m` of bucket `b` is in; starts every bucket that is now
    /// complete and next in order.
    fn mark_filled(&mut self, b: usize, m: usize) -> Result<()> {
        let bucket = &mut self.buckets[b];
        if !bucket.filled[m] {
            bucket.filled[m] = true;
            bucket.missing -= 1;
        }
        self.launch_ready()
    }

    /// Parameter `p`'s gradient `g` (none: zeros) flattened, in `p`'s
    /// dtype and on its device (the rank's scale is applied to the whole
    /// bucket when it starts).
    fn device_part(&self, p: &Tensor, g: Option<&Tensor>) -> Result<Tensor> {
        let Some(g) = g else {
            return Tensor::zeros_on(&[p.numel()], p.dtype(), p.device());
        };
        let g = g.detach().to_dtype(p.dtype())?.reshape(&[p.numel()])?;
        if g.device() == p.device() {
            Ok(g)
        } else {
            g.to_device(p.device())
        }
    }

    /// Zeroes the members of bucket `b` that were not filled this step.
    fn fill_missing_with_zeros(&mut self, b: usize) -> Result<()> {
        if self.buckets[b].device != Device::Cpu {
            for m in 0..self.buckets[b].members.len() {
                if !self.buckets[b].filled[m] {
                    let p = &self.params[self.buckets[b].members[m].param];
                    let zeros = self.device_part(p, None)?;
                    self.buckets[b].parts[m] = Some(zeros);
                    self.buckets[b].filled[m] = true;
                }
            }
            self.buckets[b].missing = 0;
            return Ok(());
        }
        let bucket = &mut self.buckets[b];
        let buffer = bucket.buffer.as_mut().ok_or_else(|| busy(b))?;
        for (member, filled) in bucket.members.iter().zip(&mut bucket.filled) {
            if !*filled {
                zero(buffer, member.offset..member.offset + member.len);
                *filled = true;
            }
        }
        bucket.missing = 0;
        Ok(())
    }

    /// Starts the all-reduce of every complete bucket whose predecessors
    /// have all started.
    fn launch_ready(&mut self) -> Result<()> {
        while let Some(bucket) = self.buckets.get_mut(self.handles.len()) {
            if bucket.missing > 0 {
                break;
            }
            let b = self.handles.len();
            if bucket.device == Device::Cpu {
                let buffer = bucket.buffer.take().ok_or_else(|| busy(b))?;
                let handle = self.comm.start_all_reduce_sum(buffer)?;
                self.handles.push(InFlight::Host(handle));
            } else {
                let parts = bucket
                    .parts
                    .iter_mut()
                    .map(|part| part.take().ok_or_else(|| busy(b)))
                    .collect::<Result<Vec<Tensor>>>()?;
                // A fresh flat tensor (`cat` copies even one part), which
                // the communicator may overwrite with the sum; one scaling
                // kernel per bucket, none for a scale of 1 (no bit changes).
                let mut flat = Tensor::cat(&parts, 0)?;
                drop(parts);
                if self.scale != 1.0 {
                    flat = flat.mul_scalar(self.scale)?;
                }
                let handle = self.comm.start_all_reduce_sum_tensor(flat)?;
                self.handles.push(InFlight::Device(handle));
            }
        }
        Ok(())
    }
}

fn zero(buffer: &mut Buffer, span: std::ops::Range<usize>) {
    match buffer {
        Buffer::F32(v) => v[span].fill(0.0),
        Buffer::F64(v) => v[span].fill(0.0),
    }
}

fn busy(b: usize) -> Error {
    Error::Distributed {
        op: "Reducer::backward",
        msg: format!("bucket {b}'s buffer is missing (an earlier step failed midway)"),
    }
}

//! How a reducer groups parameters into buckets: in reverse registration
//! order (the order backward makes their gradients ready), a small first
//! bucket so that communication starts early, then large ones.

use super::Buffer;
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// Bucket sizes of a [`Reducer`](super::Reducer), in bytes of gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketOptions {
    /// Capacity of the first bucket (the last parameters registered,
    /// ready first): small, so the first all-reduce starts early. 1 MiB by
    /// default, as PyTorch's DDP.
    pub first_bucket_bytes: usize,
    /// Capacity of every later bucket: 25 MiB by default, as DDP.
    pub bucket_bytes: usize,
}

impl Default for BucketOptions {
    fn default() -> Self {
        BucketOptions {
            first_bucket_bytes: 1 << 20,
            bucket_bytes: 25 << 20,
        }
    }
}

/// One parameter's place in a bucket.
#[derive(Clone, Copy, Debug)]
pub(super) struct Member {
    /// Index into the reducer's parameters.
    pub param: usize,
    /// First element in the bucket's buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

/// Parameters whose gradients travel together in one all-reduce.
///
/// A bucket of host parameters copies their gradients into one flat host
/// buffer kept from step to step; a bucket of device parameters keeps
/// each gradient on the device, then concatenates and scales them there when
/// the bucket is complete, so that a communicator that moves device
/// memory (NCCL) never sees the host.
pub(super) struct Bucket {
    pub members: Vec<Member>,
    /// Element type and number of elements of the buffer.
    pub dtype: DType,
    pub len: usize,
    /// Where the members' parameters lie.
    pub device: Device,
    /// Host buckets: the flat gradient buffer, kept from step to step
    /// (`None` while an all-reduce holds it). Always `None` on a device.
    pub buffer: Option<Buffer>,
    /// Device buckets: each member's flattened gradient of this
    /// step (empty on the host).
    pub parts: Vec<Option<Tensor>>,
    /// Per member: its gradient was copied in during this step.
    pub filled: Vec<bool>,
    /// Members not yet filled during this step.
    pub missing: usize,
}

impl Bucket {
    /// Prepares for a new step: nothing filled yet, and a buffer again if
    /// an earlier step failed while an all-reduce held it.
    pub fn reset(&mut self) -> Result<()> {
        self.filled.iter_mut().for_each(|f| *f = false);
        self.missing = self.members.len();
        if self.device != Device::Cpu {
            self.parts.iter_mut().for_each(|p| *p = None);
        } else if self.buffer.is_none() {
            self.buffer = Some(Buffer::zeros(self.dtype, self.len)?);
        }
        Ok(())
    }
}

/// Groups `params` (registration order; distinct, floating point) into
/// buckets, last parameter first; a bucket closes when the next parameter
/// would overflow its capacity (a parameter larger than the capacity gets
/// a bucket of its own) or has another dtype or device.
pub(super) fn plan(params: &[Tensor], opts: BucketOptions) -> Result<Vec<Bucket>> {
    if opts.first_bucket_bytes == 0 || opts.bucket_bytes == 0 {
        return Err(Error::invalid(
            "Reducer",
            "bucket capacities must be positive",
        ));
    }
    let mut buckets: Vec<(DType, Device, Vec<Member>, usize)> = Vec::new();
    for (i, p) in params.iter().enumerate().rev() {
        let dtype = p.dtype();
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::UnsupportedDType {
                op: "Reducer (parameters must be f32 or f64)",
                dtype,
            });
        }
        let bytes = p.numel() * dtype.size_in_bytes();
        let capacity = if buckets.len() <= 1 {
            opts.first_bucket_bytes
        } else {
            opts.bucket_bytes
        };
        let device = p.device();
        let fits = buckets.last().is_some_and(|(d, on, members, used)| {
            *d == dtype && *on == device && (members.is_empty() || used + bytes <= capacity)
        });
        if !fits {
            buckets.push((dtype, device, Vec::new(), 0));
        }
        let (_, _, members, used) = buckets.last_mut().expect("pushed above");
        let offset = members.last().map_or(0, |m: &Member| m.offset + m.len);
        members.push(Member {
            param: i,
            offset,
            len: p.numel(),
        });
        *used += bytes;
    }
    buckets
        .into_iter()
        .map(|(dtype, device, members, _)| {
            let len = members.iter().map(|m| m.len).sum();
            let on_host = device == Device::Cpu;
            Ok(Bucket {
                filled: vec![false; members.len()],
                missing: members.len(),
                buffer: if on_host {
                    Some(Buffer::zeros(dtype, len)?)
                } else {
                    None
                },
                parts: if on_host {
                    Vec::new()
                } else {
                    vec![None; members.len()]
                },
                members,
                dtype,
                device,
                len,
            })
        })
        .collect()
}

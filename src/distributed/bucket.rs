//! How a reducer groups parameters into buckets: in reverse registration
//! order (the order backward makes their gradients ready), a small first
//! bucket so that communication starts early, then large ones.

use super::Buffer;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

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
pub(super) struct Bucket {
    pub members: Vec<Member>,
    /// Element type and number of elements of the buffer.
    pub dtype: DType,
    pub len: usize,
    /// The flat gradient buffer, kept from step to step (`None` while an
    /// all-reduce holds it).
    pub buffer: Option<Buffer>,
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
        if self.buffer.is_none() {
            self.buffer = Some(Buffer::zeros(self.dtype, self.len)?);
        }
        Ok(())
    }
}

/// Groups `params` (registration order; distinct, floating point) into
/// buckets, last parameter first; a bucket closes when the next parameter
/// would overflow its capacity (a parameter larger than the capacity gets
/// a bucket of its own) or has another dtype.
pub(super) fn plan(params: &[Tensor], opts: BucketOptions) -> Result<Vec<Bucket>> {
    if opts.first_bucket_bytes == 0 || opts.bucket_bytes == 0 {
        return Err(Error::invalid(
            "Reducer",
            "bucket capacities must be positive",
        ));
    }
    let mut buckets: Vec<(DType, Vec<Member>, usize)> = Vec::new();
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
        let fits = buckets.last().is_some_and(|(d, members, used)| {
            *d == dtype && (members.is_empty() || used + bytes <= capacity)
        });
        if !fits {
            buckets.push((dtype, Vec::new(), 0));
        }
        let (_, members, used) = buckets.last_mut().expect("pushed above");
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
        .map(|(dtype, members, _)| {
            let len = members.iter().map(|m| m.len).sum();
            Ok(Bucket {
                filled: vec![false; members.len()],
                missing: members.len(),
                buffer: Some(Buffer::zeros(dtype, len)?),
                members,
                dtype,
                len,
            })
        })
        .collect()
}

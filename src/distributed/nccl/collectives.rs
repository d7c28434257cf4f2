//! The [`Communicator`] collectives of [`NcclCommunicator`]: host buffers
//! through the GPU, device tensors in place.

use super::{all_reduce_tensor_through_host, NcclCommunicator};
use crate::distributed::{AllReduce, Buffer, Communicator, TensorAllReduce};
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// A buffer's type as a number that travels in a `u64` header.
fn dtype_code(buf: &Buffer) -> u64 {
    match buf {
        Buffer::F32(_) => 1,
        Buffer::F64(_) => 2,
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.inner.rank
    }

    fn world_size(&self) -> usize {
        self.inner.world
    }

    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce> {
        // Every rank has the same length: an empty buffer is empty everywhere.
        if buf.is_empty() {
            return Ok(AllReduce::done(buf));
        }
        match buf {
            Buffer::F32(v) => self.start_sum(v, Buffer::F32),
            Buffer::F64(v) => self.start_sum(v, Buffer::F64),
        }
    }

    /// A contiguous f32 or f64 tensor on this rank's GPU is reduced in
    /// device memory, in place; others go through the host.
    fn start_all_reduce_sum_tensor(&self, t: Tensor) -> Result<TensorAllReduce> {
        let here = t.device() == Device::Cuda(self.inner.ordinal)
            && matches!(t.dtype(), DType::F32 | DType::F64)
            && !crate::ops::on_cuda::operand("all_reduce", &t)?
                .dev
                .is_emulated();
        if !here {
            return all_reduce_tensor_through_host(self, t);
        }
        if t.numel() == 0 {
            return Ok(TensorAllReduce::new(move || Ok(t)));
        }
        let t = if t.is_contiguous() {
            t
        } else {
            t.contiguous()?
        };
        self.start_tensor_sum(t)
    }

    fn broadcast(&self, buf: &mut Buffer, root: usize) -> Result<()> {
        let root = match i32::try_from(root) {
            Ok(r) if root < self.inner.world => r,
            _ => {
                return Err(Error::invalid(
                    "broadcast",
                    format!(
                        "root {root} is not a rank of a world of {}",
                        self.inner.world
                    ),
                ))
            }
        };
        let mut header = vec![dtype_code(buf), buf.len() as u64];
        self.broadcast_vec(&mut header, root)?;
        let len = usize::try_from(header[1]).map_err(|_| Error::Distributed {
            op: "broadcast",
            msg: format!(
                "the root's {} elements do not fit in memory here",
                header[1]
            ),
        })?;
        if self.inner.rank != root as usize {
            *buf = match header[0] {
                1 => Buffer::F32(vec![0.0; len]),
                _ => Buffer::F64(vec![0.0; len]),
            };
        }
        match buf {
            _ if len == 0 => Ok(()),
            Buffer::F32(v) => self.broadcast_vec(v, root),
            Buffer::F64(v) => self.broadcast_vec(v, root),
        }
    }

    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>> {
        let headers = self.gather_vec(&[dtype_code(buf), buf.len() as u64])?;
        let mut lens = Vec::with_capacity(self.inner.world);
        for (r, h) in headers.chunks_exact(2).enumerate() {
            if h[0] != dtype_code(buf) {
                return Err(Error::Distributed {
                    op: "all_gather",
                    msg: format!(
                        "rank {r}'s buffer type differs from rank {}'s",
                        self.inner.rank
                    ),
                });
            }
            lens.push(usize::try_from(h[1]).unwrap_or(usize::MAX));
        }
        let longest = lens.iter().copied().max().unwrap_or(0);
        if longest == 0 {
            return Ok(lens.iter().map(|_| buf.clone()).collect());
        }
        fn parts<T: Clone>(all: &[T], longest: usize, lens: &[usize]) -> Vec<Vec<T>> {
            all.chunks_exact(longest)
                .zip(lens)
                .map(|(chunk, &n)| chunk[..n].to_vec())
                .collect()
        }
        Ok(match buf {
            Buffer::F32(v) => {
                let mut padded = v.clone();
                padded.resize(longest, 0.0);
                let all = self.gather_vec(&padded)?;
                parts(&all, longest, &lens)
                    .into_iter()
                    .map(Buffer::F32)
                    .collect()
            }
            Buffer::F64(v) => {
                let mut padded = v.clone();
                padded.resize(longest, 0.0);
                let all = self.gather_vec(&padded)?;
                parts(&all, longest, &lens)
                    .into_iter()
                    .map(Buffer::F64)
                    .collect()
            }
        })
    }

    fn barrier(&self) -> Result<()> {
        self.start_all_reduce_sum(Buffer::F32(vec![0.0]))?
            .wait()
            .map(|_| ())
    }

    fn abort(&self, message: &str) {
        self.inner.abort(message);
    }
}

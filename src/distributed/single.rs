//! The communicator of a job with one rank.

use super::{AllReduce, Buffer, Communicator, TensorAllReduce};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::cell::RefCell;

/// One rank alone: every collective returns its input, bit for bit.
///
/// ```
/// use ferrite::distributed::{Buffer, Communicator, SingleProcess};
/// let comm = SingleProcess::new();
/// let mut buf = Buffer::F32(vec![1.5, -2.0]);
/// comm.all_reduce_sum(&mut buf)?;
/// assert_eq!(buf, Buffer::F32(vec![1.5, -2.0]));
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct SingleProcess {
    aborted: RefCell<Option<String>>,
}

impl SingleProcess {
    /// Rank 0 of 1.
    pub fn new() -> Self {
        Self::default()
    }

    fn check(&self, op: &'static str) -> Result<()> {
        match &*self.aborted.borrow() {
            Some(msg) => Err(Error::Distributed {
                op,
                msg: format!("rank 0 aborted: {msg}"),
            }),
            None => Ok(()),
        }
    }
}

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn start_all_reduce_sum(&self, buf: Buffer) -> Result<AllReduce> {
        self.check("all_reduce")?;
        Ok(AllReduce::done(buf))
    }

    /// The sum over one rank is `t` itself, wherever it lies.
    fn start_all_reduce_sum_tensor(&self, t: Tensor) -> Result<TensorAllReduce> {
        self.check("all_reduce")?;
        if !matches!(t.dtype(), DType::F32 | DType::F64) {
            return Err(Error::UnsupportedDType {
                op: "all_reduce (tensors must be f32 or f64)",
                dtype: t.dtype(),
            });
        }
        Ok(TensorAllReduce::new(move || Ok(t)))
    }

    fn broadcast(&self, _buf: &mut Buffer, root: usize) -> Result<()> {
        self.check("broadcast")?;
        if root != 0 {
            return Err(Error::invalid(
                "broadcast",
                format!("root {root} is not a rank of a world of 1"),
            ));
        }
        Ok(())
    }

    fn all_gather(&self, buf: &Buffer) -> Result<Vec<Buffer>> {
        self.check("all_gather")?;
        Ok(vec![buf.clone()])
    }

    fn barrier(&self) -> Result<()> {
        self.check("barrier")
    }

    fn abort(&self, message: &str) {
        self.aborted
            .borrow_mut()
            .get_or_insert_with(|| message.to_string());
    }
}

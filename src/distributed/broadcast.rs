//! Copying rank 0's tensors to every rank (the start of a data-parallel
//! job, and per-rank buffers after a step).

use super::{Buffer, Communicator};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Largest integer every `f64` holds exactly (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Overwrites `tensors` (in place, every rank the same list of shapes) with
/// rank `root`'s values, in one broadcast. The values travel as `f64`,
/// which holds every `f32` and `f64` exactly and integers up to 2^53.
pub(super) fn broadcast_tensors(
    comm: &dyn Communicator,
    tensors: &[Tensor],
    root: usize,
) -> Result<()> {
    let mut flat = Vec::with_capacity(tensors.iter().map(Tensor::numel).sum());
    for t in tensors {
        let values = t.to_f64_vec()?;
        if t.dtype() == DType::I64 && values.iter().any(|v| v.abs() > EXACT_INT) {
            return Err(Error::invalid(
                "broadcast_state",
                "an integer buffer holds a value beyond 2^53",
            ));
        }
        flat.extend(values);
    }
    let mut buf = Buffer::F64(flat);
    comm.broadcast(&mut buf, root)?;
    let Buffer::F64(flat) = buf else {
        return Err(Error::Distributed {
            op: "broadcast",
            msg: "the broadcast changed the buffer's type".into(),
        });
    };
    let mut offset = 0;
    crate::autograd::no_grad(|| -> Result<()> {
        for t in tensors {
            let values = &flat[offset..offset + t.numel()];
            offset += t.numel();
            let src = Tensor::from_slice(values, t.shape())?.to_dtype(t.dtype())?;
            let src = if src.device() == t.device() {
                src
            } else {
                src.to_device(t.device())?
            };
            t.assign(&src)?;
        }
        Ok(())
    })
}

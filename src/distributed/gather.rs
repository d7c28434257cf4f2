//! Collectives on tensors and host values beyond the gradients: the rows
//! of every rank gathered into one tensor (data-parallel evaluation), and
//! host sums (losses, counts).

use super::{Buffer, Communicator};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Largest integer every `f64` holds exactly (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// The element types a gathered tensor may have, by their code on the wire.
const DTYPES: [DType; 6] = [
    DType::F32,
    DType::F64,
    DType::BF16,
    DType::F16,
    DType::I64,
    DType::U8,
];

fn corrupt(msg: String) -> Error {
    Error::Distributed {
        op: "all_gather_rows",
        msg,
    }
}

/// Every rank's `local` rows (dimension 0), concatenated in rank order: a
/// host tensor, the same bits on every rank. A rank without rows passes
/// `None`. Values travel as `f64`, which holds every float type exactly
/// (and integers up to 2^53); the result has the ranks' dtype. The ranks'
/// tensors must agree in dtype and in every dimension but the first, and
/// at least one rank must have rows. A collective: every rank calls it.
pub fn all_gather_rows(comm: &dyn Communicator, local: Option<&Tensor>) -> Result<Tensor> {
    let mut mine = Vec::new();
    if let Some(t) = local {
        if t.ndim() == 0 {
            return Err(Error::invalid(
                "all_gather_rows",
                "a 0-d tensor has no rows",
            ));
        }
        let values = t.to_f64_vec()?;
        if t.dtype() == DType::I64 && values.iter().any(|v| v.abs() > EXACT_INT) {
            return Err(Error::invalid(
                "all_gather_rows",
                "an integer tensor holds a value beyond 2^53",
            ));
        }
        let code = DTYPES.iter().position(|&d| d == t.dtype()).unwrap_or(0);
        mine.reserve(2 + t.ndim() + values.len());
        mine.push(code as f64);
        mine.push(t.ndim() as f64);
        mine.extend(t.shape().iter().map(|&d| d as f64));
        mine.extend(values);
    }
    let parts = comm.all_gather(&Buffer::F64(mine))?;
    let mut header: Option<(DType, Vec<usize>)> = None;
    let (mut rows, mut values) = (0usize, Vec::new());
    for (rank, part) in parts.iter().enumerate() {
        let Buffer::F64(part) = part else {
            return Err(corrupt(format!(
                "rank {rank} sent a buffer of another type"
            )));
        };
        if part.is_empty() {
            continue;
        }
        let bad = || corrupt(format!("rank {rank} sent a malformed header"));
        let code = *part.first().ok_or_else(bad)? as usize;
        let ndim = *part.get(1).ok_or_else(bad)? as usize;
        let dtype = *DTYPES.get(code).ok_or_else(bad)?;
        let shape: Vec<usize> = part
            .get(2..2 + ndim)
            .ok_or_else(bad)?
            .iter()
            .map(|&d| d as usize)
            .collect();
        let data = &part[2 + ndim..];
        if data.len() != shape.iter().product::<usize>() {
            return Err(bad());
        }
        match &header {
            None => header = Some((dtype, shape.clone())),
            Some((d, s)) if *d != dtype || s[1..] != shape[1..] => {
                return Err(corrupt(format!(
                    "rank {rank} sent {dtype:?} rows of shape {:?}, an earlier rank {d:?} rows of {:?}",
                    &shape[1..],
                    &s[1..]
                )));
            }
            Some(_) => {}
        }
        rows += shape[0];
        values.extend_from_slice(data);
    }
    let (dtype, mut shape) = header.ok_or_else(|| corrupt("no rank had rows to gather".into()))?;
    shape[0] = rows;
    Tensor::from_slice(&values, &shape)?.to_dtype(dtype)
}

/// Sums `values` over all ranks in place (as `f64`, added in the
/// communicator's order, the same bits on every rank).
pub fn all_reduce_f64(comm: &dyn Communicator, values: &mut [f64]) -> Result<()> {
    let mut buf = Buffer::F64(values.to_vec());
    comm.all_reduce_sum(&mut buf)?;
    match buf {
        Buffer::F64(sum) if sum.len() == values.len() => {
            values.copy_from_slice(&sum);
            Ok(())
        }
        _ => Err(Error::Distributed {
            op: "all_reduce",
            msg: "the all-reduce changed the buffer's type or length".into(),
        }),
    }
}

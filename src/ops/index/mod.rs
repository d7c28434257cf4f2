//! Indexing ops: `index_select`, `index_add`, `gather`, `scatter_add`.
//!
//! Indices are `I64` tensors and are bounds-checked (an out-of-range index
//! is an error naming the op, never a panic). The backward rules pair the
//! ops up: the gradient of a gather is a scatter-add and vice versa, the
//! gradient of an index-select is an index-add.
//!
//! On a CUDA device the index stays on the device: it is bounds-checked
//! there (see `cuda.rs`) with the same error as on the CPU, and the
//! accumulating ops add in the CPU's order, so results match bit for bit.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub mod params;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::dispatch::cuda_arm;
use crate::tensor::{normalize_dim, DType, Device, Tensor};

/// Errors unless `index` holds i64 indices.
fn check_index_dtype(op: &'static str, index: &Tensor) -> Result<()> {
    if index.dtype() != DType::I64 {
        return Err(Error::invalid(
            op,
            format!("indices must be i64, got {:?}", index.dtype()),
        ));
    }
    Ok(())
}

/// The indices of an i64 `index` on the host, row-major.
fn check_index_tensor(op: &'static str, index: &Tensor) -> Result<Vec<i64>> {
    check_index_dtype(op, index)?;
    index.to_vec::<i64>()
}

/// `outer × size × inner` around `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}

struct IndexSelectBackward {
    input: Tensor,
    dim: usize,
    index: Tensor,
}

impl GradFn for IndexSelectBackward {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone(), self.index.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let zeros = self.input.zeros_like()?;
        Ok(vec![
            Some(zeros.index_add(self.dim as isize, &self.index, g)?),
            None,
        ])
    }
}

struct IndexAddBackward {
    input: Tensor,
    dim: usize,
    index: Tensor,
    source: Tensor,
}

impl GradFn for IndexAddBackward {
    fn name(&self) -> &'static str {
        "index_add"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone(), self.index.clone(), self.source.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![
            Some(g.clone()),
            None,
            Some(g.index_select(self.dim as isize, &self.index)?),
        ])
    }
}

struct GatherBackward {
    input: Tensor,
    dim: usize,
    index: Tensor,
}

impl GradFn for GatherBackward {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone(), self.index.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let zeros = self.input.zeros_like()?;
        Ok(vec![
            Some(zeros.scatter_add(self.dim as isize, &self.index, g)?),
            None,
        ])
    }
}

struct ScatterAddBackward {
    input: Tensor,
    dim: usize,
    index: Tensor,
    source: Tensor,
}

impl GradFn for ScatterAddBackward {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone(), self.index.clone(), self.source.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![
            Some(g.clone()),
            None,
            Some(g.gather(self.dim as isize, &self.index)?),
        ])
    }
}

impl Tensor {
    /// Picks the slices `index[j]` along `dim`: the result has
    /// `index.numel()` entries along `dim`. `index` is a 1-D i64 tensor.
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope("index_select");
        let d = normalize_dim("index_select", dim, self.ndim())?;
        if index.ndim() != 1 {
            return Err(Error::bad_shape(
                "index_select",
                format!("index must be 1-D, got shape {:?}", index.shape()),
            ));
        }
        let out = match self.device() {
            Device::Cpu => {
                let idx = check_index_tensor("index_select", index)?;
                cpu::check_indices("index_select", &idx, self.shape()[d])?;
                let src = self.contiguous()?;
                let s = cpu::index_select(
                    &*src.cpu_storage("index_select")?,
                    src.layout().offset(),
                    split_at_dim(self.shape(), d),
                    &idx,
                )?;
                let mut shape = self.shape().to_vec();
                shape[d] = idx.len();
                Tensor::from_storage(s, &shape)?
            }
            Device::Cuda(_) => cuda_arm!({
                check_index_dtype("index_select", index)?;
                cuda::index_select(self, d, index)
            })?,
        };
        Ok(out.track(&[self], || {
            Box::new(IndexSelectBackward {
                input: self.clone(),
                dim: d,
                index: index.clone(),
            })
        }))
    }

    /// Returns `self` with `source[.., j, ..]` added at `index[j]` along
    /// `dim` (repeated indices accumulate).
    pub fn index_add(&self, dim: isize, index: &Tensor, source: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope("index_add");
        self.check_same("index_add", source)?;
        self.check_float("index_add")?;
        if is_half(self.dtype()) {
            let wide =
                self.to_dtype(DType::F32)?
                    .index_add(dim, index, &source.to_dtype(DType::F32)?)?;
            return wide.to_dtype(self.dtype());
        }
        let d = normalize_dim("index_add", dim, self.ndim())?;
        check_index_dtype("index_add", index)?;
        let mut expected = self.shape().to_vec();
        expected[d] = index.numel();
        if index.ndim() != 1 || source.shape() != expected.as_slice() {
            return Err(Error::ShapeMismatch {
                op: "index_add",
                lhs: expected,
                rhs: source.shape().to_vec(),
            });
        }
        let out = match self.device() {
            Device::Cpu => {
                let idx = check_index_tensor("index_add", index)?;
                cpu::check_indices("index_add", &idx, self.shape()[d])?;
                let out = self.contiguous_copy()?.detach();
                let src = source.contiguous_copy()?.detach();
                cpu::index_add(
                    &mut *out.cpu_storage_mut("index_add")?,
                    &*src.cpu_storage("index_add")?,
                    split_at_dim(self.shape(), d),
                    &idx,
                )?;
                out
            }
            Device::Cuda(_) => cuda_arm!(cuda::index_add(self, d, index, source))?,
        };
        Ok(out.track(&[self, source], || {
            Box::new(IndexAddBackward {
                input: self.clone(),
                dim: d,
                index: index.clone(),
                source: source.clone(),
            })
        }))
    }

    /// `out[p] = self[p with coordinate dim := index[p]]`: the output has
    /// the index's shape (same rank as `self`, no larger in other dims).
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope("gather");
        let d = normalize_dim("gather", dim, self.ndim())?;
        self.check_gather_shape("gather", d, index)?;
        let out = match self.device() {
            Device::Cpu => {
                let idx = check_index_tensor("gather", index)?;
                cpu::check_indices("gather", &idx, self.shape()[d])?;
                let s = cpu::gather(
                    &*self.cpu_storage("gather")?,
                    self.layout(),
                    d,
                    &idx,
                    index.shape(),
                );
                Tensor::from_storage(s, index.shape())?
            }
            Device::Cuda(_) => cuda_arm!({
                check_index_dtype("gather", index)?;
                cuda::gather(self, d, index)
            })?,
        };
        Ok(out.track(&[self], || {
            Box::new(GatherBackward {
                input: self.clone(),
                dim: d,
                index: index.clone(),
            })
        }))
    }

    /// Returns `self` with `source[p]` added at position `p` with coordinate
    /// `dim := index[p]`; `source` has the index's shape.
    pub fn scatter_add(&self, dim: isize, index: &Tensor, source: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope("scatter_add");
        self.check_same("scatter_add", source)?;
        self.check_float("scatter_add")?;
        if is_half(self.dtype()) {
            let wide = self.to_dtype(DType::F32)?.scatter_add(
                dim,
                index,
                &source.to_dtype(DType::F32)?,
            )?;
            return wide.to_dtype(self.dtype());
        }
        let d = normalize_dim("scatter_add", dim, self.ndim())?;
        self.check_gather_shape("scatter_add", d, index)?;
        if source.shape() != index.shape() {
            return Err(Error::ShapeMismatch {
                op: "scatter_add (source vs index)",
                lhs: source.shape().to_vec(),
                rhs: index.shape().to_vec(),
            });
        }
        let out = match self.device() {
            Device::Cpu => {
                let idx = check_index_tensor("scatter_add", index)?;
                cpu::check_indices("scatter_add", &idx, self.shape()[d])?;
                let out = self.contiguous_copy()?.detach();
                let lo = out.layout().clone();
                cpu::scatter_add(
                    &mut *out.cpu_storage_mut("scatter_add")?,
                    &lo,
                    &*source.cpu_storage("scatter_add")?,
                    source.layout(),
                    d,
                    &idx,
                    index.shape(),
                )?;
                out
            }
            Device::Cuda(_) => cuda_arm!({
                check_index_dtype("scatter_add", index)?;
                cuda::scatter_add(self, d, index, source)
            })?,
        };
        Ok(out.track(&[self, source], || {
            Box::new(ScatterAddBackward {
                input: self.clone(),
                dim: d,
                index: index.clone(),
                source: source.clone(),
            })
        }))
    }

    fn check_gather_shape(&self, op: &'static str, dim: usize, index: &Tensor) -> Result<()> {
        let fits = index.ndim() == self.ndim()
            && index
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(i, (a, b))| i == dim || a <= b);
        if !fits {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: index.shape().to_vec(),
            });
        }
        Ok(())
    }
}

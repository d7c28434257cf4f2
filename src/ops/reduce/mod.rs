//! Reductions over any set of dimensions (sum, mean, max, min, var,
//! logsumexp, argmax, argmin), with `keepdim`, and their backward rules.
//!
//! Dimensions may be negative (counted from the end). An empty `dims` list
//! reduces nothing; the `*_all` methods reduce every dimension.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod integer;
#[cfg(feature = "cuda")]
pub mod params;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::dispatch::cuda_arm;
use crate::tensor::{normalize_dim, normalize_dims, Device, Tensor};
use cpu::ReduceOp;

/// Whether a reduction keeps the reduced dimensions with extent 1
/// (PyTorch's `keepdim=True`), so the result broadcasts against its input.
///
/// ```
/// use ferrite::{DType, KeepDim, Tensor};
/// let x = Tensor::ones(&[2, 3], DType::F32)?;
/// assert_eq!(x.sum(&[1], KeepDim::Yes)?.shape(), &[2, 1]);
/// assert_eq!(x.sum(&[1], KeepDim::No)?.shape(), &[2]);
/// // Keeping the dimension lets the result broadcast back: rows minus their mean.
/// let centered = x.sub(&x.mean(&[1], KeepDim::Yes)?)?;
/// assert_eq!(centered.sum_all()?.item::<f32>()?, 0.0);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeepDim {
    /// Reduced dimensions stay, with extent 1.
    Yes,
    /// Reduced dimensions are removed (PyTorch's default).
    #[default]
    No,
}

impl KeepDim {
    fn kept(self) -> bool {
        self == KeepDim::Yes
    }
}

/// Shape after reducing `dims`, with or without the size-1 placeholders.
fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (dims.contains(&i), keepdim) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

struct SumBackward {
    input: Tensor,
    dims: Vec<usize>,
}

impl GradFn for SumBackward {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let keep = reduced_shape(self.input.shape(), &self.dims, true);
        Ok(vec![Some(
            g.reshape(&keep)?.broadcast_to(self.input.shape())?,
        )])
    }
}

/// Max/min backward: the gradient goes to the elements equal to the result,
/// split evenly among ties (as PyTorch's amax/amin).
struct ExtremeBackward {
    input: Tensor,
    dims: Vec<usize>,
    name: &'static str,
}

impl GradFn for ExtremeBackward {
    fn name(&self) -> &'static str {
        self.name
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let keep = reduced_shape(self.input.shape(), &self.dims, true);
        let dims: Vec<isize> = self.dims.iter().map(|&d| d as isize).collect();
        let hits = self.input.eq(&y.reshape(&keep)?)?.to_dtype(g.dtype())?;
        let count = hits.sum(&dims, KeepDim::Yes)?;
        Ok(vec![Some(g.reshape(&keep)?.div(&count)?.mul(&hits)?)])
    }
}

impl Tensor {
    fn reduce(&self, op: ReduceOp, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let name = match op {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        };
        if op == ReduceOp::Sum && !self.dtype().is_float() {
            let dims = normalize_dims(name, dims, self.ndim())?;
            let out_shape = reduced_shape(self.shape(), &dims, keepdim);
            return integer::sum(self, &dims, &out_shape);
        }
        self.check_float(name)?;
        let dims = normalize_dims(name, dims, self.ndim())?;
        if op != ReduceOp::Sum && dims.iter().any(|&d| self.shape()[d] == 0) {
            return Err(Error::invalid(
                name,
                format!(
                    "cannot reduce a zero-size dimension of shape {:?}",
                    self.shape()
                ),
            ));
        }
        let out_shape = reduced_shape(self.shape(), &dims, keepdim);
        let out = match self.device() {
            Device::Cpu => {
                let s = cpu::reduce(op, &*self.cpu_storage(name)?, self.layout(), &dims)?;
                Tensor::from_storage(s, &out_shape)?
            }
            Device::Cuda(_) => cuda_arm!(cuda::reduce(op, self, &dims, &out_shape))?,
        };
        Ok(out.track(&[self], || match op {
            ReduceOp::Sum => Box::new(SumBackward {
                input: self.clone(),
                dims: dims.clone(),
            }),
            _ => Box::new(ExtremeBackward {
                input: self.clone(),
                dims: dims.clone(),
                name,
            }),
        }))
    }

    /// Sum over `dims`. Integer tensors (`u8` comparison masks, `i64`)
    /// sum exactly into `i64`, as PyTorch sums bools, without a gradient.
    pub fn sum(&self, dims: &[isize], keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("sum");
        self.reduce(ReduceOp::Sum, dims, keepdim.kept())
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let _profile = crate::profile::scope("sum");
        self.sum(&all_dims(self), KeepDim::No)
    }

    /// Mean over `dims` (NaN over zero elements).
    pub fn mean(&self, dims: &[isize], keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("mean");
        let norm = normalize_dims("mean", dims, self.ndim())?;
        let n: usize = norm.iter().map(|&d| self.shape()[d]).product();
        self.sum(dims, keepdim)?.mul_scalar(1.0 / n as f64)
    }

    /// Mean of all elements, as a 0-d tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        let _profile = crate::profile::scope("mean");
        self.mean(&all_dims(self), KeepDim::No)
    }

    /// Maximum over `dims` (PyTorch's `amax`).
    pub fn max(&self, dims: &[isize], keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("max");
        self.reduce(ReduceOp::Max, dims, keepdim.kept())
    }

    /// Minimum over `dims` (PyTorch's `amin`).
    pub fn min(&self, dims: &[isize], keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("min");
        self.reduce(ReduceOp::Min, dims, keepdim.kept())
    }

    /// Maximum of all elements.
    pub fn max_all(&self) -> Result<Tensor> {
        let _profile = crate::profile::scope("max");
        self.max(&all_dims(self), KeepDim::No)
    }

    /// Minimum of all elements.
    pub fn min_all(&self) -> Result<Tensor> {
        let _profile = crate::profile::scope("min");
        self.min(&all_dims(self), KeepDim::No)
    }

    /// Variance over `dims` with `correction` subtracted from the count
    /// (1 = unbiased, PyTorch's default; 0 = population variance).
    pub fn var(&self, dims: &[isize], correction: usize, keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("var");
        let norm = normalize_dims("var", dims, self.ndim())?;
        let n: usize = norm.iter().map(|&d| self.shape()[d]).product();
        let mean = self.mean(dims, KeepDim::Yes)?;
        let centered = self.sub(&mean)?;
        let denom = n.saturating_sub(correction) as f64;
        centered
            .square()?
            .sum(dims, keepdim)?
            .mul_scalar(1.0 / denom)
    }

    /// `log Σ exp(x)` over `dims`, stable: the max is subtracted first.
    pub fn logsumexp(&self, dims: &[isize], keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("logsumexp");
        // Validate up front so that errors name logsumexp, not its parts.
        self.check_float("logsumexp")?;
        let norm = normalize_dims("logsumexp", dims, self.ndim())?;
        // The shift is a constant for differentiation purposes, so it is
        // detached; an all -inf slice shifts by 0 and yields -inf.
        let shift = crate::no_grad(|| {
            self.max(dims, KeepDim::Yes)?
                .unary(crate::ops::UnaryOp::FiniteOrZero)
        })?;
        let lse = self
            .sub(&shift)?
            .exp()?
            .sum(dims, KeepDim::Yes)?
            .log()?
            .add(&shift)?;
        if keepdim.kept() {
            return Ok(lse);
        }
        lse.reshape(&reduced_shape(self.shape(), &norm, false))
    }

    fn arg_extreme(&self, dim: isize, keepdim: bool, max: bool) -> Result<Tensor> {
        let op = if max { "argmax" } else { "argmin" };
        let d = normalize_dim(op, dim, self.ndim())?;
        if self.shape()[d] == 0 {
            return Err(Error::invalid(
                op,
                format!("empty dimension {d} of shape {:?}", self.shape()),
            ));
        }
        let out_shape = reduced_shape(self.shape(), &[d], keepdim);
        match self.device() {
            Device::Cpu => {
                let idx = cpu::arg_extreme(&*self.cpu_storage(op)?, self.layout(), d, max)?;
                Tensor::from_vec(idx, &out_shape)
            }
            Device::Cuda(_) => cuda_arm!(cuda::arg_extreme(self, d, max, &out_shape)),
        }
    }

    /// Index (i64) of the maximum along `dim`; the first one on ties.
    pub fn argmax(&self, dim: isize, keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("argmax");
        self.arg_extreme(dim, keepdim.kept(), true)
    }

    /// Index (i64) of the minimum along `dim`; the first one on ties.
    pub fn argmin(&self, dim: isize, keepdim: KeepDim) -> Result<Tensor> {
        let _profile = crate::profile::scope("argmin");
        self.arg_extreme(dim, keepdim.kept(), false)
    }

    /// Sums a broadcast result back to `shape` (the shape it was broadcast
    /// from): the backward of broadcasting.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        let _profile = crate::profile::scope("sum_to_shape");
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let mismatch = || Error::ShapeMismatch {
            op: "sum_to_shape",
            lhs: self.shape().to_vec(),
            rhs: shape.to_vec(),
        };
        if shape.len() > self.ndim() {
            return Err(mismatch());
        }
        let lead = self.ndim() - shape.len();
        let mut dims: Vec<isize> = (0..lead as isize).collect();
        for (i, &d) in shape.iter().enumerate() {
            let have = self.shape()[lead + i];
            if d == 1 && have != 1 {
                dims.push((lead + i) as isize);
            } else if d != have {
                return Err(mismatch());
            }
        }
        self.sum(&dims, KeepDim::Yes)?.reshape(shape)
    }
}

fn all_dims(t: &Tensor) -> Vec<isize> {
    (0..t.ndim() as isize).collect()
}

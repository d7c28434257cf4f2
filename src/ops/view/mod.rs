//! Views and data movement: reshape, permute, narrow, broadcast, squeeze,
//! contiguous copies, `cat` and `stack`.
//!
//! A view builds a new [`Layout`] over the same storage and costs nothing;
//! its backward maps the gradient back through the inverse view (a reshape,
//! the inverse permutation, zero padding, or a sum over broadcast dims).

#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::dispatch::cuda_arm;
use crate::ops::elementwise::cpu;
use crate::tensor::{normalize_dim, with_storage, Device, Layout, StorageElement, Tensor};

/// Backward of any view that only changes the shape: reshape the gradient.
struct ReshapeBackward {
    input: Tensor,
}

impl GradFn for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(self.input.shape())?)])
    }
}

struct PermuteBackward {
    input: Tensor,
    dims: Vec<usize>,
}

impl GradFn for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut inverse = vec![0isize; self.dims.len()];
        for (i, &d) in self.dims.iter().enumerate() {
            inverse[d] = i as isize;
        }
        Ok(vec![Some(g.permute(&inverse)?)])
    }
}

struct NarrowBackward {
    input: Tensor,
    dim: usize,
    start: usize,
}

impl GradFn for NarrowBackward {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // Pad the gradient with zeros before and after along `dim`.
        let full = self.input.shape()[self.dim];
        let len = g.shape()[self.dim];
        let zeros = |n: usize| {
            let mut shape = g.shape().to_vec();
            shape[self.dim] = n;
            Tensor::zeros_on(&shape, g.dtype(), g.device())
        };
        let parts = [
            zeros(self.start)?,
            g.clone(),
            zeros(full - self.start - len)?,
        ];
        Ok(vec![Some(Tensor::cat(&parts, self.dim as isize)?)])
    }
}

struct BroadcastBackward {
    input: Tensor,
}

impl GradFn for BroadcastBackward {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to_shape(self.input.shape())?)])
    }
}

struct CopyBackward {
    input: Tensor,
}

impl GradFn for CopyBackward {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

struct CatBackward {
    inputs: Vec<Tensor>,
    dim: usize,
}

impl GradFn for CatBackward {
    fn name(&self) -> &'static str {
        "cat"
    }
    fn inputs(&self) -> Vec<Tensor> {
        self.inputs.clone()
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        self.inputs
            .iter()
            .map(|t| {
                let len = t.shape()[self.dim];
                let piece = g.narrow(self.dim as isize, start, len)?;
                start += len;
                Ok(Some(piece))
            })
            .collect()
    }
}

impl Tensor {
    /// A tensor with the same elements in a new shape (see
    /// [`reshape_infer`](Self::reshape_infer) for a `-1` dimension). Returns a
    /// view when the strides allow one, otherwise a contiguous copy.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = crate::tensor::checked_numel("reshape", shape)?;
        if n != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let out = match self.layout().reshape(shape) {
            Some(layout) => self.view_with("reshape", layout)?,
            None => {
                let c = self.contiguous_copy()?.detach();
                c.view_with("reshape", Layout::contiguous(shape))?
            }
        };
        Ok(out.track(&[self], || {
            Box::new(ReshapeBackward {
                input: self.clone(),
            })
        }))
    }

    /// Like [`reshape`](Self::reshape) with at most one `-1` dimension whose
    /// extent is inferred from the element count.
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let known: usize = shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let holes = shape.iter().filter(|&&d| d == -1).count();
        if holes > 1
            || shape.iter().any(|&d| d < -1)
            || (holes == 1 && (known == 0 || !self.numel().is_multiple_of(known)))
        {
            return Err(Error::bad_shape(
                "reshape",
                format!("cannot reshape {:?} into {shape:?}", self.shape()),
            ));
        }
        let resolved: Vec<usize> = shape
            .iter()
            .map(|&d| {
                if d == -1 {
                    self.numel() / known
                } else {
                    d as usize
                }
            })
            .collect();
        self.reshape(&resolved)
    }

    /// Reorders dimensions: dimension `i` of the result is `dims[i]` of `self`.
    pub fn permute(&self, dims: &[isize]) -> Result<Tensor> {
        if dims.len() != self.ndim() {
            return Err(Error::bad_shape(
                "permute",
                format!(
                    "{} dims given for a tensor of shape {:?}",
                    dims.len(),
                    self.shape()
                ),
            ));
        }
        let mut seen = vec![false; self.ndim()];
        let mut norm = Vec::with_capacity(dims.len());
        for &d in dims {
            let d = normalize_dim("permute", d, self.ndim())?;
            if std::mem::replace(&mut seen[d], true) {
                return Err(Error::invalid(
                    "permute",
                    format!("dimension {d} repeated in {dims:?}"),
                ));
            }
            norm.push(d);
        }
        let out = self.view_with("permute", self.layout().permute(&norm))?;
        Ok(out.track(&[self], || {
            Box::new(PermuteBackward {
                input: self.clone(),
                dims: norm.clone(),
            })
        }))
    }

    /// Swaps two dimensions.
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let (a, b) = (
            normalize_dim("transpose", d0, self.ndim())?,
            normalize_dim("transpose", d1, self.ndim())?,
        );
        let mut dims: Vec<isize> = (0..self.ndim() as isize).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Transpose of a 2-D tensor (or of the last two dims of a batch).
    pub fn t(&self) -> Result<Tensor> {
        if self.ndim() < 2 {
            return Err(Error::bad_shape(
                "t",
                format!("needs ≥ 2 dims, got {:?}", self.shape()),
            ));
        }
        self.transpose(-2, -1)
    }

    /// Elements `start..start + len` along `dim` (a view).
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = normalize_dim("narrow", dim, self.ndim())?;
        let size = self.shape()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} out of bounds for dim {d} of size {size}",
                    start.saturating_add(len)
                ),
            ));
        }
        let out = self.view_with("narrow", self.layout().narrow(d, start, len))?;
        Ok(out.track(&[self], || {
            Box::new(NarrowBackward {
                input: self.clone(),
                dim: d,
                start,
            })
        }))
    }

    /// Elements `range` along `dim` (a view); the same as `narrow`.
    pub fn slice(&self, dim: isize, range: std::ops::Range<usize>) -> Result<Tensor> {
        if range.end < range.start {
            return Err(Error::invalid("slice", format!("empty range {range:?}")));
        }
        self.narrow(dim, range.start, range.end - range.start)
    }

    /// Splits into pieces of `size` along `dim` (the last may be smaller).
    pub fn chunks(&self, size: usize, dim: isize) -> Result<Vec<Tensor>> {
        if size == 0 {
            return Err(Error::invalid("chunks", "chunk size must be positive"));
        }
        let n = self.dim(dim)?;
        (0..n)
            .step_by(size)
            .map(|s| self.narrow(dim, s, size.min(n - s)))
            .collect()
    }

    /// Views the tensor with NumPy broadcasting to `shape` (no copy).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let target = crate::tensor::broadcast_shapes("broadcast_to", self.shape(), shape)?;
        if target != shape {
            return Err(Error::ShapeMismatch {
                op: "broadcast_to",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let out = self.view_with("broadcast_to", self.layout().broadcast_to(shape))?;
        Ok(out.track(&[self], || {
            Box::new(BroadcastBackward {
                input: self.clone(),
            })
        }))
    }

    /// Alias of [`broadcast_to`](Self::broadcast_to), as in PyTorch.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        self.broadcast_to(shape)
    }

    /// Inserts a size-1 dimension at `dim` (`-1` appends).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let d = normalize_dim("unsqueeze", dim, self.ndim() + 1)?;
        let out = self.view_with("unsqueeze", self.layout().unsqueeze(d))?;
        Ok(out.track(&[self], || {
            Box::new(ReshapeBackward {
                input: self.clone(),
            })
        }))
    }

    /// Removes dimension `dim`, which must have size 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = normalize_dim("squeeze", dim, self.ndim())?;
        if self.shape()[d] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!(
                    "dimension {d} of shape {:?} has size {}, not 1",
                    self.shape(),
                    self.shape()[d]
                ),
            ));
        }
        let out = self.view_with("squeeze", self.layout().squeeze(d))?;
        Ok(out.track(&[self], || {
            Box::new(ReshapeBackward {
                input: self.clone(),
            })
        }))
    }

    /// Merges dimensions `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.ndim() == 0 {
            return self.reshape(&[1]);
        }
        let (s, e) = (
            normalize_dim("flatten", start, self.ndim())?,
            normalize_dim("flatten", end, self.ndim())?,
        );
        if s > e {
            return Err(Error::invalid(
                "flatten",
                format!("start dim {s} after end dim {e}"),
            ));
        }
        let mut shape = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }

    /// This tensor if already contiguous, otherwise a contiguous copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        let _profile = crate::profile::scope("contiguous");
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        self.contiguous_copy()
    }

    /// A contiguous copy with its own storage, always.
    pub fn contiguous_copy(&self) -> Result<Tensor> {
        let _profile = crate::profile::scope("contiguous");
        let out = match self.device() {
            Device::Cpu => {
                let s = cpu::copy(&*self.cpu_storage("contiguous")?, self.layout())?;
                Tensor::from_storage(s, self.shape())?
            }
            Device::Cuda(_) => cuda_arm!(crate::ops::elementwise::cuda::copy(self))?,
        };
        Ok(out.track(&[self], || {
            Box::new(CopyBackward {
                input: self.clone(),
            })
        }))
    }

    /// Concatenates tensors of equal shape except along `dim`.
    pub fn cat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let _profile = crate::profile::scope("cat");
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("cat", "no tensors given"))?;
        let d = normalize_dim("cat", dim, first.ndim())?;
        for t in &tensors[1..] {
            first.check_same("cat", t)?;
            let compatible = t.ndim() == first.ndim()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !compatible {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
        }
        let mut shape = first.shape().to_vec();
        shape[d] = tensors
            .iter()
            .try_fold(0usize, |acc, t| acc.checked_add(t.shape()[d]))
            .ok_or_else(|| Error::bad_shape("cat", "the concatenated dimension overflows"))?;
        let out = match first.device() {
            Device::Cpu => cat_on_cpu(tensors, d, &shape)?,
            Device::Cuda(_) => cuda_arm!(cuda::cat(tensors, d, &shape))?,
        };
        let refs: Vec<&Tensor> = tensors.iter().collect();
        Ok(out.track(&refs, || {
            Box::new(CatBackward {
                inputs: tensors.to_vec(),
                dim: d,
            })
        }))
    }

    /// Stacks tensors of equal shape along a new dimension `dim`.
    pub fn stack(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let _profile = crate::profile::scope("stack");
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("stack", "no tensors given"))?;
        for t in &tensors[1..] {
            if t.shape() != first.shape() {
                return Err(Error::ShapeMismatch {
                    op: "stack",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
        }
        let unsqueezed: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<_>>()?;
        Tensor::cat(&unsqueezed, dim)
    }
}

/// [`Tensor::cat`] on the CPU: each input contributes `outer` blocks of
/// `len · inner` contiguous elements, copied in turn.
fn cat_on_cpu(tensors: &[Tensor], d: usize, shape: &[usize]) -> Result<Tensor> {
    let total = crate::tensor::checked_numel("cat", shape)?;
    let outer: usize = shape[..d].iter().product();
    let inner: usize = shape[d + 1..].iter().product();
    // Each input contributes `outer` blocks of `len * inner` elements.
    let parts: Vec<Tensor> = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<_>>()?;
    let part_refs: Vec<&Tensor> = parts.iter().collect();
    let storage = Tensor::read_cpu_storages("cat", &part_refs, |storages| {
        with_storage!(storages[0], |_v: T| {
            let mut out: Vec<T> = crate::backend::cpu::pool::try_with_capacity(total)?;
            for o in 0..outer {
                for (t, s) in parts.iter().zip(storages) {
                    let block = t.shape()[d] * inner;
                    let src = T::slice(s).expect("dtypes checked");
                    let start = t.layout().offset() + o * block;
                    out.extend_from_slice(&src[start..start + block]);
                }
            }
            Ok::<_, Error>(T::into_storage(out))
        })
    })??;
    Tensor::from_storage(storage, shape)
}

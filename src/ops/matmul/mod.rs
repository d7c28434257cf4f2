//! Matrix products with PyTorch's `matmul` semantics.
//!
//! 1-D operands are promoted to matrices (a vector on the left becomes a
//! row, on the right a column) and the added dimension is removed from the
//! result; batch dimensions broadcast. The core op multiplies `[.., m, k]`
//! by `[.., k, n]`; its backward is two more products,
//! `dA = dC · Bᵀ` and `dB = Aᵀ · dC`, summed over broadcast batch dims.
//!
//! Under [`autocast`]`(Precision::Bf16, ..)` the products
//! of f32 operands read them rounded to bf16, accumulate in f32 and return
//! f32 (on a GPU: tensor cores with an f32 output); the backward rule runs
//! in the precision its forward ran in.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub(crate) mod packed;
#[cfg(feature = "cuda")]
pub mod params;
#[cfg(target_arch = "x86_64")]
pub(crate) mod sgemm;

use crate::autograd::GradFn;
use crate::error::{Error, Result};
use crate::ops::autocast::{autocast, bf16_inputs, bf16_operand, precision, Precision};
use crate::ops::dispatch::cuda_arm;
use crate::tensor::{broadcast_shapes, Device, Tensor};

/// The op's name in errors.
const OP: &str = "matmul";

struct MatmulBackward {
    lhs: Tensor,
    rhs: Tensor,
    /// The precision the forward ran in; the backward products use it too.
    precision: Precision,
}

impl GradFn for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.lhs.clone(), self.rhs.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        autocast(self.precision, || self.grads(g))
    }
}

impl MatmulBackward {
    /// `dA = dC · Bᵀ` and `dB = Aᵀ · dC`, each summed to its input's shape.
    fn grads(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let ga = if self.lhs.requires_grad() {
            Some(
                g.batched_matmul(&self.rhs.t()?)?
                    .sum_to_shape(self.lhs.shape())?,
            )
        } else {
            None
        };
        let gb = if self.rhs.requires_grad() {
            Some(
                self.lhs
                    .t()?
                    .batched_matmul(g)?
                    .sum_to_shape(self.rhs.shape())?,
            )
        } else {
            None
        };
        Ok(vec![ga, gb])
    }
}

impl Tensor {
    /// Matrix product: 1-D·1-D (dot), 2-D·2-D, and batched products with
    /// broadcast batch dimensions, as `torch.matmul`.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let _profile = crate::profile::scope("matmul");
        self.check_same("matmul", rhs)?;
        if self.ndim() == 0 || rhs.ndim() == 0 {
            return Err(Error::ShapeMismatch {
                op: "matmul (0-d operand)",
                lhs: self.shape().to_vec(),
                rhs: rhs.shape().to_vec(),
            });
        }
        let a = if self.ndim() == 1 {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        let b = if rhs.ndim() == 1 {
            rhs.unsqueeze(1)?
        } else {
            rhs.clone()
        };
        let mut out = a.batched_matmul(&b).map_err(|e| match e {
            Error::ShapeMismatch { .. } => Error::ShapeMismatch {
                op: "matmul",
                lhs: self.shape().to_vec(),
                rhs: rhs.shape().to_vec(),
            },
            e => e,
        })?;
        if rhs.ndim() == 1 {
            out = out.squeeze(-1)?;
        }
        if self.ndim() == 1 {
            out = out.squeeze(if rhs.ndim() == 1 { -1 } else { -2 })?;
        }
        Ok(out)
    }

    /// The core product of `[.., m, k]` and `[.., k, n]` (both ≥ 2-D) with
    /// broadcast batch dimensions.
    fn batched_matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.check_float("matmul")?;
        let (sa, sb) = (self.shape(), rhs.shape());
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != k2 {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                lhs: sa.to_vec(),
                rhs: sb.to_vec(),
            });
        }
        let batch = broadcast_shapes("matmul", &sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
        let full =
            |x: usize, y: usize| -> Vec<usize> { batch.iter().copied().chain([x, y]).collect() };
        // The mixed path reads detached bf16 copies (bf16-valued f32 on the
        // CPU); the op is still recorded on `self` and `rhs`.
        let mixed = bf16_inputs(self.dtype());
        let (a, b) = if mixed {
            (bf16_operand(OP, self)?, bf16_operand(OP, rhs)?)
        } else {
            (self.clone(), rhs.clone())
        };
        let la = a.layout().broadcast_to(&full(m, k));
        let lb = b.layout().broadcast_to(&full(k, n));
        let args = cpu::GemmArgs {
            a: &la,
            b: &lb,
            m,
            k,
            n,
        };
        let out = match self.device() {
            Device::Cpu => {
                let s =
                    Tensor::read_cpu_storages(OP, &[&a, &b], |s| cpu::matmul(s[0], s[1], &args))??;
                Tensor::from_storage(s, &full(m, n))?
            }
            // The output keeps the caller's dtype: f32 from bf16 operands on
            // the mixed path.
            Device::Cuda(_) => cuda_arm!(cuda::matmul(
                (&a, &la),
                (&b, &lb),
                (m, k, n),
                (self.dtype(), &full(m, n))
            ))?,
        };
        Ok(out.track(&[self, rhs], || {
            Box::new(MatmulBackward {
                lhs: self.clone(),
                rhs: rhs.clone(),
                precision: precision(),
            })
        }))
    }
}

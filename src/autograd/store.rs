//! The result of a backward pass: gradients keyed by tensor id.

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};
use std::collections::HashMap;

/// Gradients of leaf tensors, keyed by the leaf's [`TensorId`].
///
/// ```
/// use ferrite::Tensor;
/// let a = Tensor::from_vec(vec![2.0f32], &[1])?.requires_grad_(true);
/// let b = Tensor::from_vec(vec![5.0f32], &[1])?.requires_grad_(true);
/// let grads = a.mul(&b)?.sum_all()?.backward()?;
/// // One gradient per leaf that requires one, looked up by its tensor.
/// assert_eq!(grads.len(), 2);
/// assert_eq!(grads.get(&a).unwrap().to_vec::<f32>()?, [5.0]);
/// assert_eq!(grads.get(&b).unwrap().to_vec::<f32>()?, [2.0]);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct GradStore {
    grads: HashMap<TensorId, Tensor>,
}

impl GradStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The gradient of `t`, if backward reached it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id())
    }

    /// Removes and returns the gradient of `t`.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.grads.remove(&t.id())
    }

    /// Sets the gradient of `t`, replacing any previous one.
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.grads.insert(t.id(), grad);
    }

    /// Adds `grad` to the gradient stored for `t` (or stores it).
    pub fn accumulate(&mut self, t: &Tensor, grad: Tensor) -> Result<()> {
        if grad.shape() != t.shape() {
            return Err(Error::ShapeMismatch {
                op: "GradStore::accumulate",
                lhs: t.shape().to_vec(),
                rhs: grad.shape().to_vec(),
            });
        }
        let new = match self.grads.remove(&t.id()) {
            Some(old) => crate::autograd::no_grad(|| old.add(&grad))?,
            None => grad,
        };
        self.grads.insert(t.id(), new);
        Ok(())
    }

    /// Number of stored gradients.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when no gradient is stored.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// Iterates over `(id, gradient)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&TensorId, &Tensor)> {
        self.grads.iter()
    }
}

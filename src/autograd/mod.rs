//! Reverse-mode automatic differentiation.
//!
//! Ops record a [`GradFn`] node when an input requires a gradient and grad
//! mode is on ([`no_grad`] turns it off for the current thread). `backward`
//! sorts the recorded graph topologically, walks it from the output to the
//! leaves (a rule runs once all its output's consumers have run, newest op
//! first), and returns the gradients of the leaves in a [`GradStore`]; a
//! leaf's gradient is stored as soon as its last consumer's rule has run
//! (see [`Tensor::backward_into_with_hook`]).
//! Backward rules are ordinary tensor ops run in no-grad mode, so no graph is
//! built during backward; each node's saved tensors are dropped as soon as
//! its rule has run.

mod gradcheck;
mod store;
mod walk;

pub use gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
pub use store::GradStore;
pub use walk::LeafReady;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;

/// The backward rule of one recorded op.
///
/// Implement it to add a differentiable op from outside the crate (see
/// [`Tensor::from_op`]); the built-in ops implement it beside their kernels.
pub trait GradFn: Send + Sync {
    /// A short name for error messages and graph dumps (`"mul"`, `"conv2d"`).
    fn name(&self) -> &'static str;
    /// The op's tensor inputs, in a fixed order.
    fn inputs(&self) -> Vec<Tensor>;
    /// Given the op's (detached) output and the gradient flowing into it,
    /// returns one gradient per input (`None` for inputs that get none, e.g.
    /// integer indices). Each gradient must have its input's shape.
    fn backward(&self, output: &Tensor, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;
    /// Tensors the rule reads besides [`inputs`](Self::inputs) and the
    /// output (e.g. a loss's targets and weights). Backward refuses to run
    /// if any of them was written in place since the forward, as for the
    /// inputs. Default: none.
    fn saved(&self) -> Vec<Tensor> {
        Vec::new()
    }
}

/// What produced a tensor.
pub(crate) enum Node {
    /// Created directly (data, parameters, detached values).
    Leaf,
    /// The output of a recorded op.
    Op(RecordedOp),
    /// The output of an op whose saved state a backward pass already freed.
    Freed(&'static str),
}

/// A recorded op with the storage versions (see [`Tensor::version`]) of its
/// inputs, its other saved tensors ([`GradFn::saved`]) and its output when
/// it ran. Backward rules read those tensors, so a later in-place write to
/// any of them would make the gradient wrong;
/// [`check_versions`](Self::check_versions) turns that into an error.
///
/// Every input is checked, not only those the rule reads, which is stricter
/// than PyTorch for ops such as `add` whose rule reads no input.
pub(crate) struct RecordedOp {
    pub(crate) op: Box<dyn GradFn>,
    input_versions: Vec<u64>,
    saved_versions: Vec<u64>,
    output_version: u64,
}

impl RecordedOp {
    /// Records `op`, which produced `output`, as it stands now.
    pub(crate) fn new(op: Box<dyn GradFn>, output: &Tensor) -> Self {
        let input_versions = op.inputs().iter().map(Tensor::version).collect();
        let saved_versions = op.saved().iter().map(Tensor::version).collect();
        RecordedOp {
            op,
            input_versions,
            saved_versions,
            output_version: output.version(),
        }
    }

    /// Fails when `inputs` (this op's current inputs), its saved tensors or
    /// `output` were written in place since the op ran.
    fn check_versions(&self, inputs: &[Tensor], output: &Tensor) -> Result<()> {
        let name = self.op.name();
        let modified = |what: String, shape: &[usize], then: u64, now: u64| {
            Error::Autograd(format!(
                "{name}: its {what} (shape {shape:?}) was modified in place after the forward \
                 pass used it (version {then} then, {now} now), so its gradient would be wrong; \
                 modify a copy, or run backward before the in-place update (e.g. the optimizer \
                 step)"
            ))
        };
        for (i, (input, &then)) in inputs.iter().zip(&self.input_versions).enumerate() {
            let now = input.version();
            if now != then {
                return Err(modified(format!("input {i}"), input.shape(), then, now));
            }
        }
        let saved = self.op.saved();
        for (i, (tensor, &then)) in saved.iter().zip(&self.saved_versions).enumerate() {
            let now = tensor.version();
            if now != then {
                return Err(modified(
                    format!("saved tensor {i}"),
                    tensor.shape(),
                    then,
                    now,
                ));
            }
        }
        let now = output.version();
        if now != self.output_version {
            return Err(modified(
                "output".into(),
                output.shape(),
                self.output_version,
                now,
            ));
        }
        Ok(())
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True unless a [`no_grad`] scope is active on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Disables op recording on this thread until dropped; restores the
/// previous mode (scopes nest).
///
/// ```
/// use ferrite::autograd::{is_grad_enabled, NoGradGuard};
/// {
///     let _guard = NoGradGuard::new();
///     assert!(!is_grad_enabled());
/// }
/// assert!(is_grad_enabled());
/// ```
pub struct NoGradGuard {
    prev: bool,
}

impl NoGradGuard {
    /// Enters a no-grad scope.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let prev = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { prev }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Runs `f` with op recording disabled (for evaluation and parameter updates).
///
/// ```
/// use ferrite::{no_grad, Tensor};
/// let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2])?.requires_grad_(true);
/// let y = no_grad(|| w.mul_scalar(3.0))?; // e.g. an evaluation pass
/// assert!(!y.requires_grad());
/// assert!(w.mul_scalar(3.0)?.requires_grad());
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Options of a backward pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct BackwardOptions {
    /// Keep the graph's saved tensors so that backward can run again.
    pub retain_graph: bool,
}

impl Tensor {
    /// Gradients of this scalar (one-element) tensor with respect to every
    /// leaf that requires a gradient. Frees the graph's saved tensors.
    ///
    /// ```
    /// use ferrite::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])?.requires_grad_(true);
    /// let y = x.square()?.sum_all()?; // y = Σ x²
    /// let grads = y.backward()?;
    /// assert_eq!(grads.get(&x).unwrap().to_vec::<f32>()?, vec![2.0, 4.0, 6.0]);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn backward(&self) -> Result<GradStore> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward() needs a one-element output, got shape {:?}; pass an explicit \
                 upstream gradient with backward_with_grad",
                self.shape()
            )));
        }
        let seed = self.ones_like()?;
        self.backward_with_grad(&seed)
    }

    /// Backward from a non-scalar output with an explicit upstream gradient
    /// of the output's shape (the vector in a vector-Jacobian product).
    ///
    /// ```
    /// use ferrite::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2])?.requires_grad_(true);
    /// let y = x.mul_scalar(3.0)?;
    /// // The gradient flowing into `y` (PyTorch's `y.backward(gradient)`).
    /// let g = Tensor::from_vec(vec![1.0f32, 10.0], &[2])?;
    /// let grads = y.backward_with_grad(&g)?;
    /// assert_eq!(grads.get(&x).unwrap().to_vec::<f32>()?, [3.0, 30.0]);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn backward_with_grad(&self, grad: &Tensor) -> Result<GradStore> {
        let mut store = GradStore::new();
        self.backward_into(grad, &mut store, BackwardOptions::default())?;
        Ok(store)
    }

    /// Backward that adds into an existing store (gradient accumulation over
    /// micro-batches), with options.
    pub fn backward_into(
        &self,
        grad: &Tensor,
        store: &mut GradStore,
        opts: BackwardOptions,
    ) -> Result<()> {
        self.backward_into_with_hook(grad, store, opts, &mut |_| Ok(()))
    }

    /// [`backward_into`](Self::backward_into) that calls `hook` once for
    /// every leaf requiring a gradient that this pass reaches, as soon as
    /// that leaf's gradient is final in `store` (its last consumer's rule
    /// has run), while the rest of the graph is still being walked. This is
    /// how a data-parallel reducer starts communicating a parameter's
    /// gradient before backward ends. An error from the hook stops the pass
    /// and is returned.
    ///
    /// The gradients are the same, bit for bit, with or without a hook, and
    /// as those of the plain reverse-topological walk backward used before:
    /// each tensor's incoming gradients are added in that walk's order,
    /// whatever order the rules run in (newest op first).
    ///
    /// ```
    /// use ferrite::autograd::{BackwardOptions, GradStore};
    /// use ferrite::Tensor;
    /// let w = Tensor::from_vec(vec![2.0f32], &[1])?.requires_grad_(true);
    /// let x = Tensor::from_vec(vec![3.0f32], &[1])?.requires_grad_(true);
    /// let loss = w.mul(&x)?.exp()?.sum_all()?;
    /// let mut store = GradStore::new();
    /// let mut ready = Vec::new();
    /// let opts = BackwardOptions::default();
    /// loss.backward_into_with_hook(&loss.ones_like()?, &mut store, opts, &mut |ev| {
    ///     assert!(ev.store.get(ev.leaf).is_some()); // final already
    ///     ready.push(ev.leaf.id());
    ///     Ok(())
    /// })?;
    /// assert_eq!(ready.len(), 2);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn backward_into_with_hook(
        &self,
        grad: &Tensor,
        store: &mut GradStore,
        opts: BackwardOptions,
        hook: &mut dyn FnMut(LeafReady<'_>) -> Result<()>,
    ) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "backward",
                lhs: self.shape().to_vec(),
                rhs: grad.shape().to_vec(),
            });
        }
        if !self.requires_grad() {
            return Err(Error::Autograd(
                "backward on a tensor that does not require a gradient (no input of its \
                 graph requires one, or it was computed under no_grad)"
                    .into(),
            ));
        }
        walk::run(self, grad, store, opts, hook)
    }
}

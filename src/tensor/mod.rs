//! The [`Tensor`] handle: storage + layout + dtype + device + autodiff node.
//!
//! A `Tensor` is a cheap `Clone` (an `Arc`). Views share the storage of the
//! tensor they come from; ops produce new tensors and, when an input requires
//! a gradient, record a [`GradFn`] node that
//! `backward` later walks.

mod creation;
mod display;

pub(crate) use crate::backend::cpu::with_storage;
pub use crate::backend::cpu::{CpuStorage, StorageElement};
pub(crate) use crate::backend::Storage;
pub use crate::ground::{
    broadcast_shapes, checked_numel, contiguous_strides, DType, Device, Float, Layout, WithDType,
    MAX_NUMEL,
};
pub(crate) use crate::ground::{collapse_dims, normalize_dim, normalize_dims, walk_runs};

use crate::autograd::{self, GradFn, Node, RecordedOp};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A unique identity for a tensor handle (views and results get fresh ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array that can take part in reverse-mode autodiff.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

/// A buffer shared by a tensor and its views, with a count of the in-place
/// writes made to it. Recorded ops note the versions of their inputs, so that
/// backward can refuse to use a tensor that was modified after it was read
/// (the gradient would silently be wrong otherwise).
pub(crate) struct SharedStorage {
    data: RwLock<Storage>,
    version: AtomicU64,
}

impl SharedStorage {
    fn new(storage: Storage) -> Self {
        SharedStorage {
            data: RwLock::new(storage),
            version: AtomicU64::new(0),
        }
    }
}

pub(crate) struct TensorInner {
    id: TensorId,
    storage: Arc<SharedStorage>,
    layout: Layout,
    dtype: DType,
    device: Device,
    requires_grad: bool,
    node: Mutex<Node>,
}

impl Drop for TensorInner {
    /// Frees the graph behind this tensor iteratively. Dropping naturally
    /// would recurse once per recorded op (tensor → node → input tensor →
    /// ...), which overflows the stack for deep graphs such as a long chain
    /// of ops that never ran backward. Instead, each node whose input handle
    /// is the last one left is detached from that input and freed in a loop.
    fn drop(&mut self) {
        let node = self.node.get_mut().unwrap_or_else(|e| e.into_inner());
        let Node::Op(recorded) = std::mem::replace(node, Node::Leaf) else {
            return;
        };
        let mut pending: Vec<Box<dyn GradFn>> = vec![recorded.op];
        while let Some(op) = pending.pop() {
            // Keep the inputs alive past the op, so that dropping the op
            // only decrements their counts.
            let inputs = op.inputs();
            drop(op);
            for input in inputs {
                if let Some(mut inner) = Arc::into_inner(input.0) {
                    let node = inner.node.get_mut().unwrap_or_else(|e| e.into_inner());
                    if let Node::Op(recorded) = std::mem::replace(node, Node::Leaf) {
                        pending.push(recorded.op);
                    }
                    // `inner` now drops without recursing: its node is a leaf.
                }
            }
        }
    }
}

impl Tensor {
    // ----- construction (crate-internal) -------------------------------

    /// A fresh contiguous tensor owning `storage` (host or device memory),
    /// with no gradient tracking; its device is the storage's.
    ///
    /// Checks (in every build) that `shape` is addressable and that
    /// `storage` holds exactly its elements: kernels trust a tensor's layout
    /// to lie inside its storage, so this invariant is never left to chance.
    pub(crate) fn from_storage(storage: impl Into<Storage>, shape: &[usize]) -> Result<Tensor> {
        let storage = storage.into();
        let numel = checked_numel("tensor", shape)?;
        if storage.len() != numel {
            return Err(Error::bad_shape(
                "tensor",
                format!(
                    "storage of {} elements cannot back shape {shape:?} ({numel} elements)",
                    storage.len()
                ),
            ));
        }
        let dtype = storage.dtype();
        let device = storage.device();
        Ok(Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage: Arc::new(SharedStorage::new(storage)),
            layout: Layout::contiguous(shape),
            dtype,
            device,
            requires_grad: false,
            node: Mutex::new(Node::Leaf),
        })))
    }

    /// A new handle viewing this tensor's storage through `layout`
    /// (no gradient tracking: callers record the view op themselves).
    ///
    /// Checks (in every build) that `layout` has an addressable element
    /// count and lies inside the storage (see [`Layout::check_fits`]).
    pub(crate) fn view_with(&self, op: &'static str, layout: Layout) -> Result<Tensor> {
        layout.check_fits(op, self.storage_len())?;
        Ok(Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage: self.0.storage.clone(),
            layout,
            dtype: self.0.dtype,
            device: self.0.device,
            requires_grad: false,
            node: Mutex::new(Node::Leaf),
        })))
    }

    /// Records `make_op()` as the node that produced `self` when gradients
    /// are enabled and any of `inputs` requires one; otherwise returns `self`
    /// untouched and never builds the op (inference pays nothing).
    pub(crate) fn track(
        self,
        inputs: &[&Tensor],
        make_op: impl FnOnce() -> Box<dyn GradFn>,
    ) -> Tensor {
        if !autograd::is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        Tensor(Arc::new(TensorInner {
            id: self.0.id,
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            dtype: self.0.dtype,
            device: self.0.device,
            requires_grad: true,
            node: Mutex::new(Node::Op(RecordedOp::new(make_op(), &self))),
        }))
    }

    /// Builds the result of a user-defined op: `out` (computed by the caller,
    /// typically under no-grad) becomes the output of `op`, whose inputs are
    /// `op.inputs()`. This is how new differentiable ops are added from
    /// outside the crate; check them with [`gradcheck`](crate::autograd::gradcheck).
    pub fn from_op(out: Tensor, op: Box<dyn GradFn>) -> Tensor {
        let inputs = op.inputs();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        out.detach().track(&refs, || op)
    }

    // ----- accessors ---------------------------------------------------

    /// This handle's unique id (the key of its gradient in a `GradStore`).
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The extent of each dimension.
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// Alias of [`shape`](Self::shape).
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }

    /// Extent of dimension `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[normalize_dim("dim", dim, self.ndim())?])
    }

    /// Number of dimensions (0 for a scalar).
    pub fn ndim(&self) -> usize {
        self.0.layout.ndim()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.0.device
    }

    /// Shape, strides and offset into the storage.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        self.0.layout.strides()
    }

    /// True when the elements are row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// True when gradients flow to (leaf) or through (op result) this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// True when this tensor was not produced by a recorded op.
    pub fn is_leaf(&self) -> bool {
        matches!(
            *self.0.node.lock().unwrap_or_else(|e| e.into_inner()),
            Node::Leaf
        )
    }

    /// True when both handles view the same storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn node(&self) -> std::sync::MutexGuard<'_, Node> {
        self.0.node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read access to the underlying storage (whole buffer, see `layout`),
    /// on whichever device it lives.
    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0
            .storage
            .data
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Read access to the host storage for the CPU kernel of `op`, or
    /// [`Error::DeviceMismatch`] when the tensor lives on a device (nothing
    /// is ever downloaded silently).
    pub(crate) fn cpu_storage(&self, op: &'static str) -> Result<CpuRead<'_>> {
        let guard = self.storage();
        guard.cpu(op)?;
        Ok(CpuRead(guard))
    }

    /// How many in-place writes this tensor's storage has seen (shared with
    /// every view of it). Ops record it for their inputs and output, and
    /// backward fails with a clear error when it changed in between.
    pub fn version(&self) -> u64 {
        self.0.storage.version.load(Ordering::Acquire)
    }

    /// Runs `f` with read access to the host storages of `tensors` (for the
    /// CPU kernel of `op`), locking each distinct buffer once: handles that
    /// share a buffer (`x * x`, `cat(&[x, x])`) share one guard instead of
    /// taking the lock twice. A tensor on a device is an
    /// [`Error::DeviceMismatch`].
    pub(crate) fn read_cpu_storages<R>(
        op: &'static str,
        tensors: &[&Tensor],
        f: impl FnOnce(&[&CpuStorage]) -> R,
    ) -> Result<R> {
        let mut owners: Vec<&Arc<SharedStorage>> = Vec::with_capacity(tensors.len());
        let which: Vec<usize> = tensors
            .iter()
            .map(
                |t| match owners.iter().position(|o| Arc::ptr_eq(o, &t.0.storage)) {
                    Some(i) => i,
                    None => {
                        owners.push(&t.0.storage);
                        owners.len() - 1
                    }
                },
            )
            .collect();
        let guards: Vec<RwLockReadGuard<'_, Storage>> = owners
            .iter()
            .map(|o| o.data.read().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let cpu: Vec<&CpuStorage> = guards.iter().map(|g| g.cpu(op)).collect::<Result<_>>()?;
        let refs: Vec<&CpuStorage> = which.iter().map(|&i| cpu[i]).collect();
        Ok(f(&refs))
    }

    /// Number of elements in the underlying storage (which views may share).
    pub(crate) fn storage_len(&self) -> usize {
        self.storage().len()
    }

    /// Write access to the underlying storage, on whichever device it
    /// lives; counts as an in-place modification (bumps
    /// [`version`](Self::version)).
    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        let guard = self
            .0
            .storage
            .data
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.0.storage.version.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// Write access to the host storage for the CPU kernel of `op` (see
    /// [`cpu_storage`](Self::cpu_storage)); counts as an in-place
    /// modification.
    pub(crate) fn cpu_storage_mut(&self, op: &'static str) -> Result<CpuWrite<'_>> {
        self.storage().cpu(op)?;
        Ok(CpuWrite(self.storage_mut()))
    }

    // ----- autodiff handles --------------------------------------------

    /// A leaf handle on the same data with gradient tracking switched on or
    /// off. Parameters are made this way: `Tensor::randn(..)?.requires_grad_(true)`.
    pub fn requires_grad_(&self, requires_grad: bool) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            dtype: self.0.dtype,
            device: self.0.device,
            requires_grad,
            node: Mutex::new(Node::Leaf),
        }))
    }

    /// A handle on the same data that is cut off from the graph.
    pub fn detach(&self) -> Tensor {
        self.requires_grad_(false)
    }

    // ----- checks shared by ops ----------------------------------------

    /// Errors unless `self` and `other` have the same dtype and device.
    pub(crate) fn check_same(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: other.dtype(),
            });
        }
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device(),
                rhs: other.device(),
            });
        }
        Ok(())
    }

    /// Errors unless `self` and `other` live on the same device.
    #[cfg(feature = "cuda")]
    pub(crate) fn check_same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device(),
                rhs: other.device(),
            });
        }
        Ok(())
    }

    /// Errors unless the dtype is floating point.
    pub(crate) fn check_float(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op,
                dtype: self.dtype(),
            });
        }
        Ok(())
    }

    // ----- moving data out ---------------------------------------------

    /// The elements in row-major order as a `Vec<T>`; `T` must match the dtype.
    pub fn to_vec<T: StorageElement>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        let c = self.contiguous()?;
        let span = c.layout().offset()..c.layout().offset() + c.numel();
        let guard = c.storage();
        let slice = |s: &CpuStorage, span: std::ops::Range<usize>| -> Result<Vec<T>> {
            let v = T::slice(s).ok_or(Error::DTypeMismatch {
                op: "to_vec",
                lhs: s.dtype(),
                rhs: T::DTYPE,
            })?;
            Ok(v[span].to_vec())
        };
        match &*guard {
            Storage::Cpu(s) => slice(s, span),
            // A device tensor is downloaded (only the view's elements):
            // asking for its values is the explicit request to copy them.
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => slice(&s.download_range(span.clone())?, 0..span.len()),
        }
    }

    /// A 2-D tensor as rows.
    pub fn to_vec2<T: StorageElement>(&self) -> Result<Vec<Vec<T>>> {
        if self.ndim() != 2 {
            return Err(Error::bad_shape(
                "to_vec2",
                format!("expected a 2-D tensor, got shape {:?}", self.shape()),
            ));
        }
        let flat = self.to_vec::<T>()?;
        let cols = self.shape()[1];
        // Row by row rather than `chunks(cols)`, so that zero-width rows
        // are kept (`[2, 0]` gives two empty rows, as PyTorch's `tolist`).
        Ok((0..self.shape()[0])
            .map(|r| flat[r * cols..(r + 1) * cols].to_vec())
            .collect())
    }

    /// The single element of a one-element tensor.
    pub fn to_scalar<T: StorageElement>(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(Error::bad_shape(
                "to_scalar",
                format!("expected one element, got shape {:?}", self.shape()),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// The single element of a one-element tensor: PyTorch's `.item()`, an
    /// alias of [`to_scalar`](Self::to_scalar).
    ///
    /// ```
    /// let loss = ferrite::Tensor::scalar(0.25f32);
    /// assert_eq!(loss.item::<f32>()?, 0.25);
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn item<T: StorageElement>(&self) -> Result<T> {
        self.to_scalar()
    }

    /// All elements converted to f64, row-major (any dtype; a device
    /// tensor is downloaded first).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.to_device(Device::Cpu)?
            .to_dtype(DType::F64)?
            .to_vec::<f64>()
    }
}

/// A read guard on a tensor's storage that is known to be on the host.
pub(crate) struct CpuRead<'a>(RwLockReadGuard<'a, Storage>);

impl std::ops::Deref for CpuRead<'_> {
    type Target = CpuStorage;
    fn deref(&self) -> &CpuStorage {
        match &*self.0 {
            Storage::Cpu(s) => s,
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => unreachable!("CpuRead is only built over host storage"),
        }
    }
}

/// A write guard on a tensor's storage that is known to be on the host.
pub(crate) struct CpuWrite<'a>(RwLockWriteGuard<'a, Storage>);

impl std::ops::Deref for CpuWrite<'_> {
    type Target = CpuStorage;
    fn deref(&self) -> &CpuStorage {
        match &*self.0 {
            Storage::Cpu(s) => s,
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => unreachable!("CpuWrite is only built over host storage"),
        }
    }
}

impl std::ops::DerefMut for CpuWrite<'_> {
    fn deref_mut(&mut self) -> &mut CpuStorage {
        match &mut *self.0 {
            Storage::Cpu(s) => s,
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => unreachable!("CpuWrite is only built over host storage"),
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[id={:?}, shape={:?}, dtype={:?}, device={:?}, requires_grad={}]",
            self.id().0,
            self.shape(),
            self.dtype(),
            self.device(),
            self.requires_grad()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_and_shape_must_agree_in_every_build() {
        let r = Tensor::from_storage(CpuStorage::F32(vec![0.0; 3]), &[2, 2]);
        assert!(r.is_err());
        let t = Tensor::from_storage(CpuStorage::F32(vec![0.0; 4]), &[2, 2]).unwrap();
        // A view reaching past the storage is refused, not built.
        let l = Layout::contiguous(&[2, 2]).narrow(0, 1, 1);
        assert!(t.view_with("test", l).is_ok());
        let outside = Layout::contiguous(&[3, 2]);
        assert!(t.view_with("test", outside).is_err());
    }
}

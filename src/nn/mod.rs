//! Neural-network building blocks on top of the tensor API.
//!
//! A [`Module`] computes `forward(x)`; through [`Visit`], which it
//! requires, it exposes its parameters and buffers by name, using PyTorch's
//! `state_dict` keys (`layer1.0.conv1.weight`, `bn1.running_mean`,
//! `bn1.num_batches_tracked`), so that weights move between the two
//! frameworks by name. Training vs evaluation is an explicit mode set with
//! [`Visit::set_training`], never a global.
//!
//! `#[derive(Module)]` writes the [`Visit`] implementation from the fields
//! (submodules, tensors, `Option`s and `Vec`s of them), so that none is
//! forgotten; `forward` stays hand-written:
//!
//! ```
//! use ferrite::nn::{BatchNorm2d, Bias, Conv2d, Module, Visit};
//! use ferrite::ops::Conv2dParams;
//! use ferrite::{Result, Tensor};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! #[derive(Module)]
//! struct ConvBn {
//!     conv: Conv2d,
//!     bn: BatchNorm2d,
//! }
//!
//! impl Module for ConvBn {
//!     fn forward(&self, x: &Tensor) -> Result<Tensor> {
//!         self.bn.forward(&self.conv.forward(x)?)?.relu()
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let mut rng = StdRng::seed_from_u64(0);
//! let same = Conv2dParams::default().padding(1);
//! let mut m = ConvBn { conv: Conv2d::new(3, 8, 3, same, Bias::No, &mut rng)?, bn: BatchNorm2d::new(8)? };
//! let keys: Vec<String> = m.state_dict().into_iter().map(|(k, _)| k).collect();
//! assert_eq!(keys, ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
//!                   "bn.running_var", "bn.num_batches_tracked"]);
//! m.set_training(false); // reaches `bn`
//! assert!(!m.bn.training);
//! # Ok(())
//! # }
//! ```
//!
//! The derive's documentation ([`macro@Module`]) lists the field rules and
//! the `#[module(...)]` attributes.

pub mod init;
mod layers;
pub mod resnet;
mod small_cnn;
mod sync_bn;

pub use layers::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Bias, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
    ReLU, Sequential,
};
pub use small_cnn::small_cnn;
pub use sync_bn::convert_sync_batch_norm;

/// `#[derive(Module)]`: implements [`Visit`] from a struct's or an enum's
/// fields. Imported together with the trait by `use ferrite::nn::Module`.
pub use ferrite_derive::Module;

use crate::distributed::SyncGroup;
use crate::error::Result;
use crate::tensor::{DType, Device, Tensor};

/// Whether a named tensor is trained (parameter) or tracked (buffer, e.g.
/// batch-norm running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Trained by the optimizer (weights, biases).
    Parameter,
    /// Saved with the model but not trained (e.g. running statistics).
    Buffer,
}

/// Walks a module's parameters and buffers by name and sets its training
/// mode: the part of [`Module`] that follows from its fields, written by
/// `#[derive(Module)]` or by hand (for structures the derive does not
/// express, e.g. ResNet's `layer1.0` stage names).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a module: it does not implement `ferrite::nn::Visit`",
    label = "not a module",
    note = "implement it with `#[derive(Module)]` or by hand; in a derived type, mark a field that holds no tensors `#[module(skip)]`"
)]
pub trait Visit {
    /// Calls `f(name, tensor, role)` for every parameter and buffer, with
    /// names prefixed by `prefix` (empty at the top level).
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Role));

    /// Calls `f(name, tensor, role)` with mutable access to every parameter
    /// and buffer, in the order and with the names of [`visit`](Self::visit)
    /// (the two must agree: [`Module::to_device`] and [`Module::to_dtype`]
    /// rely on it).
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, Role));

    /// Switches between training (batch statistics, dropout on) and
    /// evaluation behaviour; containers forward it to their children (a
    /// hand-written container must: the default does nothing).
    fn set_training(&mut self, _training: bool) {}

    /// Gives every layer that can synchronise its training-mode computation
    /// over the ranks of a data-parallel job (batch norm with synchronised
    /// statistics, see [`BatchNorm2d::sync`]) the group to synchronise
    /// over, or `None` to go back to per-rank computation; containers
    /// forward it to their children like the training mode (a hand-written
    /// container must: the default does nothing). See
    /// [`convert_sync_batch_norm`].
    fn set_sync_group(&mut self, _group: Option<&SyncGroup>) {}
}

/// A boxed module (e.g. a layer of [`Sequential`]) visits as the module.
impl<T: Visit + ?Sized> Visit for Box<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Role)) {
        (**self).visit(prefix, f)
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, Role)) {
        (**self).visit_mut(prefix, f)
    }
    fn set_training(&mut self, training: bool) {
        (**self).set_training(training)
    }
    fn set_sync_group(&mut self, group: Option<&SyncGroup>) {
        (**self).set_sync_group(group)
    }
}

/// A layer or a network: [`forward`](Self::forward) on top of [`Visit`].
///
/// ```
/// use ferrite::nn::{Bias, Linear, Module};
/// use ferrite::{rand::SeedableRng, DType, Result, Tensor};
/// // A hand-written module: the derive implements `Visit` from the fields.
/// #[derive(Module)]
/// struct Residual {
///     fc: Linear,
/// }
/// impl Module for Residual {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         x.add(&self.fc.forward(x)?.relu()?)
///     }
/// }
/// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
/// let block = Residual { fc: Linear::new(4, 4, Bias::Yes, &mut rng)? };
/// assert_eq!(block.forward(&Tensor::ones(&[2, 4], DType::F32)?)?.shape(), &[2, 4]);
/// assert_eq!(ferrite::nn::parameter_count(&block), 20);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub trait Module: Visit + Send + Sync {
    /// Computes the output for input `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The trainable parameters, in definition order (as the free function
    /// [`parameters`]).
    fn parameters(&self) -> Vec<Tensor> {
        collect(self, Some(Role::Parameter))
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// `(name, parameter)` pairs, in definition order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        collect(self, Some(Role::Parameter))
    }

    /// Every parameter and buffer with its `state_dict` key, in definition
    /// order.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        collect(self, None)
    }

    /// Moves every parameter and buffer to `device`, as PyTorch's
    /// `model.to(device)`: parameters stay leaves that require a gradient,
    /// buffers (running statistics, counters) move too, and a tensor shared
    /// by two layers stays shared. Every copy is made before the module is
    /// changed, so on error (e.g. out of device memory) it is left as it
    /// was. Build optimizers after moving the model: they hold the
    /// parameters they were given.
    fn to_device(&mut self, device: Device) -> Result<()> {
        replace_tensors(self, &mut |t| t.to_device(device).map(Some))
    }

    /// Converts every floating-point parameter and buffer to `dtype` (a
    /// float type), as PyTorch's `model.double()` / `model.to(dtype)`:
    /// integer buffers such as `num_batches_tracked` keep their type. All or
    /// nothing, like [`to_device`](Self::to_device).
    fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        if !dtype.is_float() {
            return Err(crate::Error::UnsupportedDType {
                op: "Module::to_dtype",
                dtype,
            });
        }
        replace_tensors(self, &mut |t| {
            if t.dtype().is_float() {
                t.to_dtype(dtype).map(Some)
            } else {
                Ok(None)
            }
        })
    }
}

/// Replaces each distinct parameter and buffer `t` of `module` by
/// `convert(t)` (when it returns a tensor), keeping `requires_grad` and
/// making the result a fresh leaf. All conversions run before anything is
/// replaced; tensors shared between layers are converted once and stay
/// shared.
fn replace_tensors<M: Visit + ?Sized>(
    module: &mut M,
    convert: &mut dyn FnMut(&Tensor) -> Result<Option<Tensor>>,
) -> Result<()> {
    use std::collections::HashMap;
    let mut converted: HashMap<crate::tensor::TensorId, Option<Tensor>> = HashMap::new();
    let mut failure = None;
    crate::autograd::no_grad(|| {
        module.visit("", &mut |_, t, _| {
            if failure.is_some() || converted.contains_key(&t.id()) {
                return;
            }
            match convert(&t.detach()) {
                Ok(new) => {
                    let leaf = new.map(|n| n.detach().requires_grad_(t.requires_grad()));
                    converted.insert(t.id(), leaf);
                }
                Err(e) => failure = Some(e),
            }
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    module.visit_mut("", &mut |_, t, _| {
        if let Some(Some(new)) = converted.get(&t.id()) {
            *t = new.clone();
        }
    });
    Ok(())
}

/// `prefix.name`, or `name` at the top level.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `(name, tensor)` for every tensor of `m` with role `role` (all of them
/// for `None`), in definition order.
fn collect<M: Visit + ?Sized>(m: &M, role: Option<Role>) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, r| {
        if role.is_none_or(|want| want == r) {
            out.push((name.to_string(), t.clone()));
        }
    });
    out
}

/// The trainable parameters of `m`, in definition order.
pub fn parameters(m: &dyn Module) -> Vec<Tensor> {
    m.parameters()
}

/// `(name, parameter)` pairs of `m`, in definition order.
pub fn named_parameters(m: &dyn Module) -> Vec<(String, Tensor)> {
    m.named_parameters()
}

/// Every parameter and buffer with its `state_dict` key, in definition order.
pub fn state_dict(m: &dyn Module) -> Vec<(String, Tensor)> {
    m.state_dict()
}

/// Total number of parameter elements.
pub fn parameter_count(m: &dyn Module) -> usize {
    parameters(m).iter().map(|p| p.numel()).sum()
}

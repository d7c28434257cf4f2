//! Neural-network building blocks on top of the tensor API.
//!
//! A [`Module`] computes `forward(x)` and exposes its parameters and
//! buffers by name through [`Module::visit`], using PyTorch's `state_dict`
//! keys (`layer1.0.conv1.weight`, `bn1.running_mean`,
//! `bn1.num_batches_tracked`), so that weights move between the two
//! frameworks by name. Training vs evaluation is an explicit mode set with
//! [`Module::set_training`], never a global.

pub mod init;
mod layers;
pub mod resnet;
mod small_cnn;

pub use layers::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU,
    Sequential,
};
pub use small_cnn::small_cnn;

use crate::error::Result;
use crate::tensor::Tensor;

/// Whether a named tensor is trained (parameter) or tracked (buffer, e.g.
/// batch-norm running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Trained by the optimizer (weights, biases).
    Parameter,
    /// Saved with the model but not trained (e.g. running statistics).
    Buffer,
}

/// A layer or a network.
pub trait Module: Send + Sync {
    /// Computes the output for input `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Calls `f(name, tensor, role)` for every parameter and buffer, with
    /// names prefixed by `prefix` (empty at the top level).
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Role));

    /// Switches between training (batch statistics, dropout on) and
    /// evaluation behaviour; containers forward it to their children.
    fn set_training(&mut self, _training: bool) {}
}

/// `prefix.name`, or `name` at the top level.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The trainable parameters of `m`, in definition order.
pub fn parameters(m: &dyn Module) -> Vec<Tensor> {
    named_parameters(m).into_iter().map(|(_, t)| t).collect()
}

/// `(name, parameter)` pairs of `m`, in definition order.
pub fn named_parameters(m: &dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, role| {
        if role == Role::Parameter {
            out.push((name.to_string(), t.clone()));
        }
    });
    out
}

/// Every parameter and buffer with its `state_dict` key, in definition order.
pub fn state_dict(m: &dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, _| {
        out.push((name.to_string(), t.clone()))
    });
    out
}

/// Total number of parameter elements.
pub fn parameter_count(m: &dyn Module) -> usize {
    parameters(m).iter().map(|p| p.numel()).sum()
}

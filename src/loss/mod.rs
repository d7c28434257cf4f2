//! Training objectives on logits.
//!
//! - Multi-label (one sigmoid per logit): [`bce_with_logits`] (and
//!   [`bce_with_logits_pos_weight`]), [`sigmoid_focal_loss`] and
//!   [`asymmetric_loss`], also selectable as a value through [`ElementLoss`].
//!   Each is one fused op that never overflows for large logits: the
//!   `sigmoid_loss` op family (`crate::ops::sigmoid_loss`: the closed-form
//!   losses and derivatives, with CPU and CUDA kernels) behind `fused.rs`
//!   (argument checks and the autograd node).
//! - Single-label (softmax over classes): [`cross_entropy()`], with class
//!   weights, label smoothing and an ignored index, as PyTorch.
//! - Regression: [`mse_loss`].
//! - [`class_balanced_weights`]: per-class weights from class counts.
//!
//! Every loss takes an explicit [`Reduction`]. Targets and weights are
//! constants: gradients flow to the logits only.

mod class_balanced;
mod cross_entropy;
mod element_loss;
mod fused;
mod regression;
mod sigmoid;

pub(crate) use class_balanced::check_class_balanced_beta;
pub use class_balanced::class_balanced_weights;
pub use cross_entropy::{cross_entropy, CrossEntropyOptions};
pub use element_loss::ElementLoss;
pub use regression::mse_loss;
pub use sigmoid::{
    asymmetric_loss, bce_with_logits, bce_with_logits_pos_weight, sigmoid_focal_loss, AslOptions,
};

/// How a loss combines its per-element (or per-sample) values.
///
/// ```
/// use ferrite::loss::{bce_with_logits, Reduction};
/// use ferrite::Tensor;
/// let logits = Tensor::from_vec(vec![0.0f32; 4], &[2, 2])?;
/// let y = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?;
/// let each = bce_with_logits(&logits, &y, None, Reduction::None)?;
/// let sum = bce_with_logits(&logits, &y, None, Reduction::Sum)?.item::<f32>()?;
/// let mean = bce_with_logits(&logits, &y, None, Reduction::Mean)?.item::<f32>()?;
/// assert_eq!(each.shape(), &[2, 2]);
/// assert!((sum - 4.0 * mean).abs() < 1e-6 && (mean - 2f32.ln()).abs() < 1e-6);
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// No reduction: one value per element (per sample for cross-entropy),
    /// in the input's shape.
    None,
    /// The mean (for cross-entropy with class weights, the weighted mean).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

//! `#[derive(Module)]` for ferrite, re-exported as `ferrite::nn::Module`
//! (next to the trait of the same name, as serde does with its derives).
//! Use it through ferrite; see [`macro@Module`] for the rules.

mod attrs;
mod expand;
mod shape;

use proc_macro::TokenStream;

/// Implements `ferrite::nn::Visit` for a struct or enum: every parameter and
/// buffer is visited with its PyTorch `state_dict` name, and
/// `set_training` and `set_sync_group` reach every submodule. `forward` is yours to write in
/// an `impl Module` of its own (`Module` requires `Visit`), so adding a
/// layer to the struct is all it takes for it to be trained, saved, moved
/// by `to_device` and switched by `set_training`.
///
/// # Fields
///
/// Fields are visited in declaration order, each under its name (a tuple
/// field under its index), as PyTorch names a module's attributes:
///
/// | Field type | Visited as |
/// |---|---|
/// | `Tensor` | a parameter named `field` (a buffer with `#[module(buffer)]`) |
/// | any other type | a submodule: its tensors are named `field.…` (it must implement `Visit`) |
/// | `Option<T>` | `T` when `Some`, nothing when `None` |
/// | `Vec<T>` | element `i` as `field.i`, as PyTorch's `ModuleList` |
/// | `bool`, `char`, integers, floats (or `Option`/`Vec` of them) | nothing: they hold no tensors |
/// | `training: bool` | set by `set_training` |
/// | `#[module(sync_group)]` field (`Option<SyncGroup>`) | set by `set_sync_group` |
///
/// `Box<dyn Module>` is a submodule like any other (`Vec<Box<dyn Module>>`
/// is how `Sequential` holds its layers). A field of any other type that is
/// not a module (a configuration struct, a `String`, a random generator)
/// must be marked `#[module(skip)]`: it does not compile otherwise, so that a
/// type holding tensors is never left out by accident.
///
/// # Attributes
///
/// - `#[module(skip)]`: not visited, not told the training mode.
/// - `#[module(buffer)]`: the tensors of this field are buffers (saved, not
///   trained), e.g. running statistics.
/// - `#[module(rename = "name")]`: the `state_dict` name instead of the
///   field's (it may contain dots: `"downsample.0"`).
/// - `#[module(flatten)]`: the field's tensors are named under the parent's
///   prefix instead of `field.` (a `Vec` then names its elements `0`, `1`,
///   ... directly, as `Sequential`).
/// - `#[module(training)]`: this `bool` field (under another name than
///   `training`) is the one `set_training` sets.
/// - `#[module(sync_group)]`: this `Option<ferrite::distributed::SyncGroup>`
///   field is the one `set_sync_group` sets (a layer that synchronises over
///   the ranks of a data-parallel job, as `BatchNorm2d`); submodules are
///   told the group as they are told the training mode.
///
/// # Enums
///
/// The active variant's fields follow the same rules, so an enum of layers
/// (a block that is either kind, a shortcut that may be absent) derives as
/// well; a newtype variant is usually `#[module(flatten)]`.
///
/// # Example
///
/// ```
/// use ferrite::nn::{self, Bias, Dropout, Linear, Module, Visit};
/// use ferrite::{DType, Result, Tensor};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// #[derive(Module)]
/// struct Mlp {
///     input: Linear,          // `input.weight`, `input.bias`
///     hidden: Vec<Linear>,    // `hidden.0.weight`, `hidden.0.bias`, ...
///     head: Option<Linear>,   // `head.…` when present
///     drop: Dropout,          // no tensors, but told the mode
///     scale: Tensor,          // a parameter named `scale`
///     #[module(buffer)]
///     seen: Tensor,           // a buffer named `seen`
///     #[module(skip)]
///     label: String,          // holds no tensors
///     clip: f64,              // a primitive: nothing to visit
/// }
///
/// impl Module for Mlp {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         let mut h = self.input.forward(x)?.relu()?;
///         for layer in &self.hidden {
///             h = self.drop.forward(&layer.forward(&h)?.relu()?)?;
///         }
///         if let Some(head) = &self.head {
///             h = head.forward(&h)?;
///         }
///         h.mul(&self.scale)?.clamp(-self.clip, self.clip)
///     }
/// }
///
/// # fn main() -> Result<()> {
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut net = Mlp {
///     input: Linear::new(4, 8, Bias::Yes, &mut rng)?,
///     hidden: vec![Linear::new(8, 8, Bias::No, &mut rng)?, Linear::new(8, 8, Bias::Yes, &mut rng)?],
///     head: None,
///     drop: Dropout::new(0.5, 0)?,
///     scale: Tensor::ones(&[1], DType::F32)?.requires_grad_(true),
///     seen: Tensor::scalar(0i64),
///     label: "mlp".into(),
///     clip: 10.0,
/// };
/// let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(
///     names,
///     [
///         "input.weight", "input.bias", "hidden.0.weight", "hidden.1.weight",
///         "hidden.1.bias", "scale",
///     ]
/// );
/// // The state dict holds the buffers too, in field order: `seen` comes last.
/// let keys: Vec<String> = net.state_dict().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(keys.last().map(String::as_str), Some("seen"));
/// // The mode reaches the dropout.
/// net.set_training(false);
/// assert!(!net.drop.training);
/// assert_eq!(net.forward(&Tensor::ones(&[2, 4], DType::F32)?)?.shape(), &[2, 8]);
/// # let _ = (&net.label, nn::parameters(&net));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Mistakes are compile errors that point at the field. A field whose type
/// is not a module and not marked `skip`:
///
/// ```compile_fail,E0277
/// use ferrite::nn::{Linear, Module};
///
/// #[derive(Module)]
/// struct Net {
///     fc: Linear,
///     name: String, // error: `String` is not a module
/// }
/// ```
///
/// `buffer` on a submodule (it names its own buffers):
///
/// ```compile_fail
/// use ferrite::nn::{BatchNorm2d, Module};
///
/// #[derive(Module)]
/// struct Net {
///     #[module(buffer)]
///     bn: BatchNorm2d,
/// }
/// ```
///
/// `flatten` on a tensor (it would have no name):
///
/// ```compile_fail
/// use ferrite::nn::Module;
/// use ferrite::Tensor;
///
/// #[derive(Module)]
/// struct Net {
///     #[module(flatten)]
///     weight: Tensor,
/// }
/// ```
///
/// An unknown key:
///
/// ```compile_fail
/// use ferrite::nn::Module;
/// use ferrite::Tensor;
///
/// #[derive(Module)]
/// struct Net {
///     #[module(bufer)]
///     mean: Tensor,
/// }
/// ```
///
/// The generated code names the crate `::ferrite`: a dependency renamed in
/// `Cargo.toml` is not supported.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

//! Checkpoints in the [safetensors](https://huggingface.co/docs/safetensors)
//! format, with PyTorch `state_dict` names, so that weights move between
//! PyTorch (`safetensors.torch.save_file` / `load_file`) and ferrite in both
//! directions.
//!
//! - [`save_state_dict`] / [`load_state_dict`]: named tensors plus a
//!   string-to-string metadata map; [`save_module`] / [`load_into_module`]
//!   (and the in-memory [`apply_state_dict`]): a [`Module`](crate::nn::Module)'s
//!   parameters and buffers by name, strict or not, checked before anything
//!   is written, with a [`LoadReport`].
//! - [`load_into_module_with`] / [`apply_state_dict_with`]: the same under
//!   [`LoadOptions`], for checkpoints that PyTorch accepts but that do not
//!   match the module exactly: floating dtypes converted to the module's
//!   (an fp16 checkpoint into a float32 model), a key prefix stripped or
//!   added (`module.` of `nn.DataParallel`), a missing batch-norm
//!   `num_batches_tracked` tolerated, each listed in the report. Strict
//!   loading refuses with a short summary: counts, then the first few keys
//!   with their shapes.
//! - [`save_training`] / [`load_training`] / [`read_training`]: model,
//!   optimizer state ([`OptimizerState`]: SGD momentum buffers or Adam
//!   moments and step counts), epoch and user metadata in one file, so that
//!   training resumes bit-identically.
//!
//! Every write is atomic ([`write_atomic`]): a temporary file in the same
//! directory, `fsync`, rename over the target, `fsync` of the directory. A
//! crash or an error mid-write leaves the previous checkpoint intact and no
//! temporary file behind; a kill mid-write leaves one, which
//! [`remove_stale_temp_files`] deletes once its process is gone.
//!
//! Reading never panics, whatever the bytes: a file that cannot be read is
//! [`Error::Io`](crate::Error::Io), anything malformed (truncated, a header
//! length beyond the end of the file, bad JSON, offsets out of range, a
//! dtype ferrite has no type for) is
//! [`Error::CorruptFile`](crate::Error::CorruptFile), and both name the
//! file.
//!
//! ```no_run
//! use ferrite::checkpoint::{self, Strict};
//! use ferrite::nn::{BatchNorm2d, Bias, Conv2d, Sequential};
//! use ferrite::ops::Conv2dParams;
//! use rand::{rngs::StdRng, SeedableRng};
//! # fn main() -> ferrite::Result<()> {
//! let mut rng = StdRng::seed_from_u64(0);
//! let model = Sequential::new()
//!     .with(Conv2d::new(3, 8, 3, Conv2dParams::default(), Bias::Yes, &mut rng)?)
//!     .with(BatchNorm2d::new(8)?);
//! // Written in Python by `safetensors.torch.save_file(net.state_dict(), path)`:
//! let report = checkpoint::load_into_module("net.safetensors", &model, Strict::Yes)?;
//! println!("{report}");
//! checkpoint::save_module("net-ferrite.safetensors", &model, &Default::default())?;
//! # Ok(())
//! # }
//! ```

/// Named tensors in `state_dict` order, as [`nn::state_dict`](crate::nn::state_dict) gives them.
pub type StateDict = Vec<(String, crate::tensor::Tensor)>;

mod atomic;
mod format;
mod module;
mod options;
mod report;
mod training;

#[doc(hidden)]
pub use atomic::inject_write_fault_after;
pub use atomic::{remove_stale_temp_files, write_atomic};
pub use format::{load_state_dict, save_state_dict};
pub use module::{
    apply_state_dict, apply_state_dict_with, load_into_module, load_into_module_with, save_module,
};
pub use options::{LoadOptions, Strict};
pub use report::{Conversion, LoadReport, Mismatch};
pub use training::{
    load_training, read_training, restore_training, save_training, CheckpointOptimizer,
    OptimizerState, TrainingCheckpoint,
};

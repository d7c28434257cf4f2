//! Datasets and minibatches.
//!
//! - [`dataset`]: [`ImageDataset`], images as bytes with single or
//!   multi-hot labels, the common currency of the loaders and the trainer;
//! - readers: [`idx`] and [`mnist`] (MNIST, Fashion-MNIST), [`cifar`]
//!   (CIFAR-10/100 binary files);
//! - builders: [`multimnist`] (MultiMNIST-LT, long-tailed multi-label),
//!   [`longtail`] (long-tailed subsets of single-label datasets),
//!   [`synthetic`] (small problems that need no files);
//! - [`loader`]: shuffled, normalised, augmented batches as tensors;
//! - [`shard`]: each rank's slice of every batch in data-parallel training;
//! - [`rng`]: the portable generator behind every seeded choice above.

pub mod cifar;
pub mod dataset;
pub mod idx;
pub mod loader;
pub mod longtail;
pub mod mnist;
pub mod multimnist;
pub(crate) mod read;
pub mod rng;
pub mod shard;
pub mod synthetic;

pub use dataset::{ImageDataset, Labels};
pub use loader::{Batch, DataLoader, LoaderConfig};
pub use shard::{shard_range, ShardedEpoch, Slice};

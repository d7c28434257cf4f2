//! Data-parallel training: ranks that each train on a slice of the global
//! batch and agree on every gradient.
//!
//! - [`Communicator`]: the collectives between ranks (all-reduce,
//!   broadcast, all-gather, barrier, abort), with [`SingleProcess`] (one
//!   rank) and [`InProcess`] (ranks as threads; what the tests use)
//!   implementations, `mpi::MpiCommunicator` (feature `mpi`) and
//!   `nccl::NcclCommunicator` (feature `cuda`: gradients reduced in device
//!   memory, a watchdog on every wait; compiled in CI, not yet run on a
//!   GPU).
//! - [`Reducer`]: DDP-style gradient buckets, all-reduced while backward
//!   still runs, scaled so that uneven slices still give the global mean,
//!   and the broadcast of rank 0's parameters and buffers.
//! - [`all_gather_rows`], [`all_reduce_f64`]: the other collectives a
//!   data-parallel trainer needs (evaluation outputs, loss sums).
//! - [`SyncGroup`]: the communicator as the layers that synchronise over
//!   the ranks hold it (batch norm with synchronised statistics, see
//!   [`Tensor::sync_batch_norm`](crate::Tensor::sync_batch_norm)).
//!
//! The data side, every global batch cut into per-rank slices, is
//! [`crate::data::shard`]; [`Trainer::with_communicator`](crate::train::Trainer::with_communicator)
//! puts the pieces together.

mod broadcast;
mod bucket;
mod buffer;
mod communicator;
mod gather;
mod in_process;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "cuda")]
pub mod nccl;
mod reducer;
mod rendezvous;
mod single;
mod sync_group;

pub use bucket::BucketOptions;
pub use buffer::Buffer;
pub use communicator::{all_reduce_tensor_through_host, AllReduce, Communicator, TensorAllReduce};
pub use gather::{all_gather_rows, all_reduce_f64};
pub use in_process::InProcess;
pub use reducer::{Reducer, StepTiming};
pub use single::SingleProcess;
pub use sync_group::SyncGroup;

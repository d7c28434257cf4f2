//! The in-memory dataset, MultiMNIST-LT, the CIFAR binary reader and
//! long-tail subsampling, checked against independently known facts: the
//! MNIST files themselves, the published imbalanced-CIFAR class sizes, a
//! Python reference of the class-size formula (`fixtures/gen_longtail.py`)
//! and CIFAR files written here byte by byte.

#[path = "../common/mod.rs"]
mod common;

mod cifar;
mod dataset;
mod helpers;
mod long_tail;
mod multimnist;

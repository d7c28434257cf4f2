//! Datasets: IDX files (MNIST, Fashion-MNIST) and small synthetic problems.

pub mod idx;
pub mod loader;
pub mod mnist;
pub mod synthetic;

//! Datasets. For now: small synthetic problems for examples and tests.

pub mod synthetic;

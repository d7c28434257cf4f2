//! Evaluation metrics: parity with scikit-learn (`tests/fixtures/metrics.json`,
//! made offline by `tests/fixtures/gen_metrics.py`), small examples worked
//! out by hand, frequency groups on known class sizes, and error cases.

#[path = "../common/mod.rs"]
mod common;

mod by_hand;
mod errors;
mod groups;
mod helpers;
mod parity;

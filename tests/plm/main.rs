//! Partial Label Masking: the Philox generator against the Random123
//! known answers, the method's test oracles (kept ratio, unbiasedness,
//! fixed points, histograms, divergences and updates with independently
//! known values), parity with a numpy reference (`fixtures/gen_plm.py`),
//! guards, checkpoint state and errors.

#[path = "../common/mod.rs"]
mod common;

mod guards;
mod helpers;
mod masking;
mod reference;
mod state;
mod updates;

//! The options of PLM, with the defaults of the reference implementation.

use super::divergence::Divergence;
use crate::error::{Error, Result};

/// The starting value of the target ratios `rhat`: `ratio` or `balanced`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RhatInit {
    /// `rhat_c = r_c` (default): the first epoch masks nothing.
    Ratio,
    /// `rhat_c = 1`: every class starts balanced, one kept positive per
    /// kept negative.
    Balanced,
}

crate::named::named_enum!(
    RhatInit,
    "PlmConfig",
    "PLM initial ratio",
    [(Ratio, "ratio"), (Balanced, "balanced")]
);

/// Hyper-parameters of Partial Label Masking.
///
/// Serde reads and writes it with the keys of [`crate::train::LossSpec`]'s
/// `plm(..)` term (`bins`; `n_bins`, written by ferrite 0.1, is still read)
/// and floats as exact decimal strings; unknown keys are refused.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlmConfig {
    /// Change rate λ of the update `rhat ← rhat · exp(λ · Δ)` (0.01);
    /// 0 keeps `rhat` fixed.
    #[serde(with = "crate::exact_f64")]
    pub lambda: f64,
    /// Number of equal-width probability bins over [0, 1] (10).
    #[serde(rename = "bins", alias = "n_bins")]
    pub n_bins: usize,
    /// Starting value of `rhat` ([`RhatInit::Ratio`]).
    pub init: RhatInit,
    /// Direction of the KL divergence ([`Divergence::PredVsTruth`]).
    pub divergence: Divergence,
    /// Standardise the divergences across classes before the update (true).
    pub standardize: bool,
    /// Lower clamp of `rhat` (1e-6).
    #[serde(with = "crate::exact_f64")]
    pub rhat_min: f64,
    /// Upper clamp of `rhat` (1e6).
    #[serde(with = "crate::exact_f64")]
    pub rhat_max: f64,
    /// Seed of the mask generator (0).
    pub seed: u64,
}

impl Default for PlmConfig {
    fn default() -> Self {
        PlmConfig {
            lambda: 0.01,
            n_bins: 10,
            init: RhatInit::Ratio,
            divergence: Divergence::PredVsTruth,
            standardize: true,
            rhat_min: 1e-6,
            rhat_max: 1e6,
            seed: 0,
        }
    }
}

/// The most bins a PLM configuration may ask for (2^16). The reference
/// implementation uses 10; far more bins than training elements per epoch
/// only leaves the histograms empty, and the bound keeps the histograms'
/// memory (`n_bins × C` counts each) tied to real needs when `n_bins` comes
/// from a file or an option.
pub const MAX_BINS: usize = 1 << 16;

impl PlmConfig {
    /// Checks every field: λ finite and ≥ 0, between two bins (one bin
    /// cannot tell predictions from labels) and [`MAX_BINS`] bins,
    /// `0 < rhat_min ≤ rhat_max`, both finite.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if !self.lambda.is_finite() || self.lambda < 0.0 {
            return Err(Error::invalid(
                op,
                format!("lambda must be finite and >= 0, got {}", self.lambda),
            ));
        }
        if !(2..=MAX_BINS).contains(&self.n_bins) {
            return Err(Error::invalid(
                op,
                format!("bins must be between 2 and {MAX_BINS}, got {}", self.n_bins),
            ));
        }
        let (lo, hi) = (self.rhat_min, self.rhat_max);
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return Err(Error::invalid(
                op,
                format!("need finite 0 < rhat_min <= rhat_max, got rhat_min {lo}, rhat_max {hi}"),
            ));
        }
        Ok(())
    }
}

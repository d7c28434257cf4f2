//! The loss section of runs saved by ferrite 0.1, before the loss grammar:
//! an object with a `kind` and every loss's parameters, read so that those
//! checkpoints and `config.json` files keep loading (and are written back
//! in the current form).

use crate::error::{Error, Result};
use crate::loss::{AslOptions, ElementLoss};
use crate::plm::{Divergence, PlmConfig, RhatInit};
use crate::train::loss_spec::{BaseLoss, LossSpec, PlmSpec};
use serde::Deserialize;

/// `{"kind": "plm+focal", "focal_gamma": 2.0, ..., "plm": {..}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LegacyLoss {
    kind: String,
    focal_gamma: f64,
    focal_alpha: Option<f64>,
    cb_beta: f64,
    asl_gamma_pos: f64,
    asl_gamma_neg: f64,
    asl_clip: f64,
    plm: LegacyPlm,
}

/// The PLM settings of a [`LegacyLoss`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyPlm {
    lambda: f64,
    n_bins: usize,
    init: RhatInit,
    divergence: Divergence,
    standardize: bool,
}

impl LegacyLoss {
    /// The same objective as a [`LossSpec`] (validated).
    pub(crate) fn into_spec(self) -> Result<LossSpec> {
        let focal = ElementLoss::Focal {
            gamma: self.focal_gamma,
            alpha: self.focal_alpha,
        };
        let asl = ElementLoss::Asl(AslOptions {
            gamma_pos: self.asl_gamma_pos,
            gamma_neg: self.asl_gamma_neg,
            clip: self.asl_clip,
        });
        let plm = PlmSpec::fixed(&PlmConfig {
            lambda: self.plm.lambda,
            n_bins: self.plm.n_bins,
            init: self.plm.init,
            divergence: self.plm.divergence,
            standardize: self.plm.standardize,
            ..PlmConfig::default()
        });
        let bce = LossSpec::bce();
        let spec = match self.kind.as_str() {
            "bce" => bce,
            "focal" => LossSpec::new(BaseLoss::Element(focal)),
            "cb" => bce.with_class_balanced(self.cb_beta),
            "asl" => LossSpec::new(BaseLoss::Element(asl)),
            "plm" => bce.with_plm(plm),
            "plm+focal" => LossSpec::new(BaseLoss::Element(focal)).with_plm(plm),
            "plm+cb" => bce.with_class_balanced(self.cb_beta).with_plm(plm),
            "ce" => LossSpec::cross_entropy(),
            other => {
                return Err(Error::invalid(
                    "TrainConfig",
                    format!("unknown loss kind `{other}` in a saved configuration"),
                ))
            }
        };
        spec.validate()?;
        Ok(spec)
    }
}

//! [`LossSpec`]: a training objective written in one grammar, used alike by
//! `ferrite train --loss`, `ferrite compare --losses`, saved run
//! configurations and Rust code.
//!
//! ```text
//! spec  := [plm(…) + | reweight(…) +] [cb(…) +] base
//! base  := bce | focal(gamma=…, alpha=…|none) | asl(gamma_pos=…, gamma_neg=…, clip=…) | ce
//! cb    := cb(beta=…)
//! reweight := reweight(rhat=…)
//! plm   := plm(lambda=auto|…, bins=…, init=ratio|balanced, divergence=pred-gt|gt-pred,
//!              standardize=true|false, rhat_min=…, rhat_max=…)
//! ```
//!
//! Terms are joined by `+` in any order; parentheses and any key may be
//! left out (defaults below), and a spec without a base loss is over BCE:
//! `plm` is PLM over BCE, `cb` class-balanced BCE, `plm+cb` both.
//! Defaults: focal γ = 2 without α; ASL γ₊ = 0, γ₋ = 4, clip 0.05;
//! β = 0.999; PLM as in [`PlmConfig::default`] except λ, which is `auto`
//! (1/epochs, see [`PlmLambda::Auto`]). [`LossSpec`]'s `Display`
//! writes every parameter, so a saved spec keeps its meaning even if a
//! default changes.

use crate::error::{Error, Result};
use crate::loss::{AslOptions, ElementLoss};
use crate::plm::{Divergence, PlmConfig, RhatInit};
use std::fmt;
use std::str::FromStr;

const OP: &str = "LossSpec";

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg)
}

/// The loss that the optional class-balanced weights and PLM apply to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaseLoss {
    /// A per-element sigmoid loss (BCE, focal, ASL), for multi-label or
    /// one-hot targets.
    Element(ElementLoss),
    /// Softmax cross-entropy over class labels (single-label data only;
    /// PLM, which masks per element, does not apply to it).
    CrossEntropy,
}

/// A training objective: a base loss, optional class-balanced weights
/// (effective number of samples, Cui et al. 2019) and optional Partial
/// Label Masking on top. Parsed from and written as text (module docs).
///
/// ```
/// use ferrite::train::LossSpec;
///
/// use ferrite::train::loss_spec::PlmLambda;
///
/// let spec: LossSpec = "plm(lambda=0.05)+asl(gamma_neg=2)".parse()?;
/// assert_eq!(spec.plm.unwrap().lambda, PlmLambda::Fixed(0.05));
/// assert!(spec.class_balanced.is_none());
/// // Every parameter is written out, and the text reads back the same.
/// let text = spec.to_string();
/// assert!(text.starts_with("plm(lambda=0.05,bins=10,"));
/// assert_eq!(text.parse::<LossSpec>()?, spec);
/// // Mistakes are errors that say what is wrong.
/// let err = "plm+ce".parse::<LossSpec>().unwrap_err().to_string();
/// assert!(err.contains("per-element"), "{err}");
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossSpec {
    /// The base loss.
    pub base: BaseLoss,
    /// Class-balanced weights with this β ∈ [0, 1).
    pub class_balanced: Option<f64>,
    /// Partial Label Masking with these settings.
    pub plm: Option<PlmSpec>,
    /// PLM's re-weighting control (`reweight(rhat=…)`): no masks, but the
    /// positives and negatives of class `c` weighted by the probabilities
    /// with which PLM would keep them at this fixed target ratio r̂ (the
    /// same for every class; 1 = balanced). Its loss is the expectation of
    /// PLM's masked loss at that r̂, so comparing the two tells the effect
    /// of stochastic masking from plain re-weighting.
    pub reweight: Option<f64>,
}

/// PLM's change rate λ in a loss spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PlmLambda {
    /// λ = 1/epochs (`lambda=auto`, the default): r̂ can move by a factor
    /// of about e^Δ over the whole run, whatever its length — the total
    /// adaptation of λ = 0.01 over the 100 epochs of PLM's public
    /// re-implementation, fitted into the run.
    Auto,
    /// This λ, whatever the run's length.
    Fixed(f64),
}

impl PlmLambda {
    /// The λ of a run of `epochs` epochs.
    pub fn resolve(self, epochs: usize) -> f64 {
        match self {
            PlmLambda::Auto => 1.0 / epochs.max(1) as f64,
            PlmLambda::Fixed(lambda) => lambda,
        }
    }
}

impl fmt::Display for PlmLambda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlmLambda::Auto => f.write_str("auto"),
            PlmLambda::Fixed(lambda) => write!(f, "{lambda}"),
        }
    }
}

/// PLM's settings in a loss spec (the `plm(..)` term): those of
/// [`PlmConfig`], with λ possibly left to the run's length and the mask
/// seed left to the run's seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlmSpec {
    /// Change rate λ of the per-epoch update.
    pub lambda: PlmLambda,
    /// Histogram bins over [0, 1].
    pub bins: usize,
    /// Starting value of r̂.
    pub init: RhatInit,
    /// Direction of the KL divergence.
    pub divergence: Divergence,
    /// Standardise the divergences across classes before the update.
    pub standardize: bool,
    /// Lower clamp of r̂.
    pub rhat_min: f64,
    /// Upper clamp of r̂.
    pub rhat_max: f64,
}

impl Default for PlmSpec {
    /// λ = auto, everything else as [`PlmConfig::default`].
    fn default() -> Self {
        PlmSpec {
            lambda: PlmLambda::Auto,
            ..PlmSpec::fixed(&PlmConfig::default())
        }
    }
}

impl PlmSpec {
    /// The settings of `config`, with its λ fixed.
    pub fn fixed(config: &PlmConfig) -> Self {
        PlmSpec {
            lambda: PlmLambda::Fixed(config.lambda),
            bins: config.n_bins,
            init: config.init,
            divergence: config.divergence,
            standardize: config.standardize,
            rhat_min: config.rhat_min,
            rhat_max: config.rhat_max,
        }
    }

    /// PLM's configuration in a run of `epochs` epochs drawing its masks
    /// from `seed`.
    pub fn config(&self, epochs: usize, seed: u64) -> PlmConfig {
        PlmConfig {
            lambda: self.lambda.resolve(epochs),
            n_bins: self.bins,
            init: self.init,
            divergence: self.divergence,
            standardize: self.standardize,
            rhat_min: self.rhat_min,
            rhat_max: self.rhat_max,
            seed,
        }
    }
}

impl LossSpec {
    /// `base` alone: no class-balanced weights, no PLM.
    pub fn new(base: BaseLoss) -> Self {
        LossSpec {
            base,
            class_balanced: None,
            plm: None,
            reweight: None,
        }
    }

    /// Binary cross-entropy with logits (`bce`).
    pub fn bce() -> Self {
        Self::new(BaseLoss::Element(ElementLoss::Bce))
    }

    /// Softmax cross-entropy (`ce`).
    pub fn cross_entropy() -> Self {
        Self::new(BaseLoss::CrossEntropy)
    }

    /// PLM over BCE with PLM's default settings (`plm`; λ = auto).
    pub fn plm() -> Self {
        Self::bce().with_plm(PlmSpec::default())
    }

    /// This spec with PLM on top, with `settings`.
    pub fn with_plm(mut self, settings: PlmSpec) -> Self {
        self.plm = Some(settings);
        self
    }

    /// This spec with class-balanced weights of parameter `beta`.
    pub fn with_class_balanced(mut self, beta: f64) -> Self {
        self.class_balanced = Some(beta);
        self
    }

    /// Whether the base loss is softmax cross-entropy.
    pub fn is_cross_entropy(&self) -> bool {
        self.base == BaseLoss::CrossEntropy
    }

    /// Checks every parameter and the combination, with the same rules as
    /// the losses themselves: the one place a loss's settings are checked.
    pub fn validate(&self) -> Result<()> {
        let term = |name: &'static str| move |e: Error| bad(format!("{name}: {}", plain(e)));
        if let BaseLoss::Element(element) = self.base {
            let name = match element {
                ElementLoss::Bce => "bce",
                ElementLoss::Focal { .. } => "focal",
                ElementLoss::Asl(_) => "asl",
            };
            element.validate().map_err(term(name))?;
        }
        if let Some(beta) = self.class_balanced {
            crate::loss::check_class_balanced_beta(beta).map_err(term("cb"))?;
        }
        if let Some(plm) = &self.plm {
            if self.is_cross_entropy() {
                return Err(bad(
                    "PLM masks a per-element loss (bce, focal, asl), not softmax cross-entropy `ce`",
                ));
            }
            // λ = auto resolves to 1/epochs ∈ (0, 1]: valid for any run.
            plm.config(1, 0).validate(OP).map_err(term("plm"))?;
        }
        if let Some(rhat) = self.reweight {
            if self.plm.is_some() {
                return Err(bad(
                    "reweight is PLM's control, in place of plm: use one of them",
                ));
            }
            if self.is_cross_entropy() {
                return Err(bad(
                    "reweight weights a per-element loss (bce, focal, asl), not `ce`",
                ));
            }
            // PLM's own clamp interval, so PLM accepts it for any data.
            let d = PlmConfig::default();
            if !(d.rhat_min..=d.rhat_max).contains(&rhat) {
                return Err(bad(format!(
                    "reweight: rhat must be in [{}, {}], got {rhat}",
                    d.rhat_min, d.rhat_max
                )));
            }
        }
        Ok(())
    }
}

/// The message of an invalid-argument error without its op prefix.
fn plain(e: Error) -> String {
    match e {
        Error::InvalidArgument { msg, .. } => msg,
        other => other.to_string(),
    }
}

impl fmt::Display for LossSpec {
    /// The spec with every parameter, e.g.
    /// `plm(lambda=0.01,bins=10,init=ratio,divergence=pred-gt,standardize=true)+bce`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.plm {
            write!(
                f,
                "plm(lambda={},bins={},init={},divergence={},standardize={}",
                p.lambda, p.bins, p.init, p.divergence, p.standardize
            )?;
            let d = PlmSpec::default();
            if p.rhat_min != d.rhat_min || p.rhat_max != d.rhat_max {
                write!(f, ",rhat_min={},rhat_max={}", p.rhat_min, p.rhat_max)?;
            }
            f.write_str(")+")?;
        }
        if let Some(rhat) = self.reweight {
            write!(f, "reweight(rhat={rhat})+")?;
        }
        if let Some(beta) = self.class_balanced {
            write!(f, "cb(beta={beta})+")?;
        }
        match &self.base {
            BaseLoss::Element(e) => f.write_str(&e.name()),
            BaseLoss::CrossEntropy => f.write_str("ce"),
        }
    }
}

impl FromStr for LossSpec {
    type Err = Error;

    /// Reads the grammar of the module docs; the result is validated.
    /// Errors quote the text.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        parse(text).map_err(|e| bad(format!("`{text}`: {}", plain(e))))
    }
}

/// [`LossSpec::from_str`] without the quoted text in errors.
fn parse(text: &str) -> Result<LossSpec> {
    if text.contains('/') {
        return Err(bad(
            "settings go in parentheses, e.g. `plm(init=balanced,lambda=0)` \
             or `focal(gamma=1)` (the `loss/key=value` form is not read)",
        ));
    }
    let mut base: Option<BaseLoss> = None;
    let mut class_balanced = None;
    let mut plm = None;
    let mut reweight = None;
    for term in split_terms(text)? {
        let (name, params) = split_term(term)?;
        let twice = |what: &str| bad(format!("{what} is named twice"));
        match name {
            "plm" => {
                if plm.is_some() {
                    return Err(twice("plm"));
                }
                plm = Some(plm_config(&params)?);
            }
            "cb" => {
                if class_balanced.is_some() {
                    return Err(twice("cb"));
                }
                class_balanced = Some(cb_beta(&params)?);
            }
            "reweight" => {
                if reweight.is_some() {
                    return Err(twice("reweight"));
                }
                reweight = Some(reweight_rhat(&params)?);
            }
            _ => {
                if let Some(first) = base {
                    return Err(bad(format!(
                        "two base losses (`{}` and `{name}`): \
                         combine one of bce, focal, asl, ce with plm and/or cb",
                        LossSpec::new(first)
                    )));
                }
                base = Some(if name == "ce" {
                    no_params("ce", &params)?;
                    BaseLoss::CrossEntropy
                } else {
                    BaseLoss::Element(element_loss(name, &params)?)
                });
            }
        }
    }
    let spec = LossSpec {
        base: base.unwrap_or(BaseLoss::Element(ElementLoss::Bce)),
        class_balanced,
        plm,
        reweight,
    };
    spec.validate()?;
    Ok(spec)
}

/// Splits `a(..)+b+c(..)` at the `+` outside parentheses (a `+` inside,
/// as in `1e+3`, belongs to a value).
fn split_terms(text: &str) -> Result<Vec<&str>> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(|| bad("unmatched `)`"))?,
            '+' if depth == 0 => {
                terms.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad("missing `)`"));
    }
    terms.push(text[start..].trim());
    if terms.iter().any(|t| t.is_empty()) {
        return Err(bad(
            "empty loss (expected e.g. bce, focal(gamma=2), plm+asl, cb+bce, ce)",
        ));
    }
    Ok(terms)
}

/// `name(k=v,k=v)` → (`name`, [(k, v)]); `name` alone has no parameters.
fn split_term(term: &str) -> Result<(&str, Vec<(&str, &str)>)> {
    let Some((name, rest)) = term.split_once('(') else {
        return Ok((term, Vec::new()));
    };
    let inner = rest
        .strip_suffix(')')
        .ok_or_else(|| bad(format!("`{term}`: text after `)`")))?;
    let params = inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| bad(format!("`{term}`: expected key=value, got `{p}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((name.trim(), params))
}

fn unknown_key(loss: &str, key: &str, expected: &str) -> Error {
    bad(format!(
        "unknown setting `{key}` for {loss} (expected {expected})"
    ))
}

fn number(key: &str, value: &str) -> Result<f64> {
    value
        .parse()
        .map_err(|_| bad(format!("{key} must be a number, got `{value}`")))
}

fn no_params(loss: &str, params: &[(&str, &str)]) -> Result<()> {
    match params.first() {
        Some((k, _)) => Err(bad(format!("{loss} takes no setting, got `{k}`"))),
        None => Ok(()),
    }
}

/// `bce`, `focal(..)` or `asl(..)` with its settings.
fn element_loss(name: &str, params: &[(&str, &str)]) -> Result<ElementLoss> {
    match name {
        "bce" => no_params("bce", params).map(|_| ElementLoss::Bce),
        "focal" => {
            let (mut gamma, mut alpha) = (2.0, None);
            for &(k, v) in params {
                match k {
                    "gamma" => gamma = number(k, v)?,
                    "alpha" if v == "none" => alpha = None,
                    "alpha" => alpha = Some(number(k, v)?),
                    _ => return Err(unknown_key("focal", k, "gamma, alpha")),
                }
            }
            Ok(ElementLoss::Focal { gamma, alpha })
        }
        "asl" => {
            let mut o = AslOptions::default();
            for &(k, v) in params {
                match k {
                    "gamma_pos" => o.gamma_pos = number(k, v)?,
                    "gamma_neg" => o.gamma_neg = number(k, v)?,
                    "clip" => o.clip = number(k, v)?,
                    _ => return Err(unknown_key("asl", k, "gamma_pos, gamma_neg, clip")),
                }
            }
            Ok(ElementLoss::Asl(o))
        }
        _ => Err(bad(format!(
            "unknown loss `{name}` (expected bce, focal, asl or ce, optionally with plm or reweight and/or cb, e.g. plm+focal)"
        ))),
    }
}

/// β of `cb(beta=..)` (0.999 by default).
fn cb_beta(params: &[(&str, &str)]) -> Result<f64> {
    let mut beta = 0.999;
    for &(k, v) in params {
        match k {
            "beta" => beta = number(k, v)?,
            _ => return Err(unknown_key("cb", k, "beta")),
        }
    }
    Ok(beta)
}

/// The fixed r̂ of `reweight(rhat=..)` (1 by default; `balanced` is 1).
fn reweight_rhat(params: &[(&str, &str)]) -> Result<f64> {
    let mut rhat = 1.0;
    for &(k, v) in params {
        match k {
            "rhat" if v == "balanced" => rhat = 1.0,
            "rhat" => rhat = number(k, v)?,
            _ => return Err(unknown_key("reweight", k, "rhat")),
        }
    }
    Ok(rhat)
}

/// PLM's settings in `plm(..)` over [`PlmSpec::default`].
fn plm_config(params: &[(&str, &str)]) -> Result<PlmSpec> {
    let mut c = PlmSpec::default();
    for &(k, v) in params {
        match k {
            "lambda" if v == "auto" => c.lambda = PlmLambda::Auto,
            "lambda" => c.lambda = PlmLambda::Fixed(number(k, v)?),
            "bins" => {
                c.bins = v
                    .parse()
                    .map_err(|_| bad(format!("bins must be a whole number, got `{v}`")))?
            }
            "init" => c.init = v.parse::<RhatInit>()?,
            "divergence" => c.divergence = v.parse::<Divergence>()?,
            "standardize" => {
                c.standardize = v
                    .parse()
                    .map_err(|_| bad(format!("standardize must be true or false, got `{v}`")))?
            }
            "rhat_min" => c.rhat_min = number(k, v)?,
            "rhat_max" => c.rhat_max = number(k, v)?,
            _ => {
                return Err(unknown_key(
                    "plm",
                    k,
                    "lambda, bins, init, divergence, standardize, rhat_min, rhat_max",
                ))
            }
        }
    }
    Ok(c)
}

impl serde::Serialize for LossSpec {
    /// As its text (see `Display`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for LossSpec {
    /// From its text, or from the object form that runs saved before the
    /// loss grammar existed (`{"kind": "plm+focal", "focal_gamma": 2, ...}`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> serde::de::Visitor<'de> for SpecVisitor {
    type Value = LossSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a loss such as \"bce\", \"focal(gamma=2)\" or \"plm+asl\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<LossSpec, E> {
        text.parse().map_err(|e| E::custom(plain(e)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        map: A,
    ) -> std::result::Result<LossSpec, A::Error> {
        let legacy: super::config::legacy::LegacyLoss =
            serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        legacy
            .into_spec()
            .map_err(|e| serde::de::Error::custom(plain(e)))
    }
}

//! The per-element sigmoid losses and their derivatives, in closed form.
//!
//! Every loss here is a function `ℓ(z, y)` of one logit `z` and one target
//! `y ∈ [0, 1]`, written with the stable pieces of [`SigmoidParts`] so that
//! no `exp` overflows and no `1 − p` cancels, whatever the size of `z`:
//!
//! - **BCE** with positive weight `w₊`:
//!   `ℓ = w₊·y·softplus(−z) + (1 − y)·softplus(z)`,
//!   `dℓ/dz = (1 − y)·p − w₊·y·(1 − p)` (`= p − y` for `w₊ = 1`).
//! - **Focal** (torchvision's `sigmoid_focal_loss`): with `ce` the BCE above
//!   (`w₊ = 1`), `m = 1 − p_t = p·(1 − y) + (1 − p)·y` and
//!   `α_t = α·y + (1 − α)·(1 − y)` (1 without α): `ℓ = α_t·ce·m^γ`,
//!   `dℓ/dz = α_t·m^γ·((p − y) + γ·ce·(1 − 2y)·p(1 − p)/m)`.
//!   `p(1 − p)/m` lies in `[0, 1]` (`m` is a mean of `p` and `1 − p`), so
//!   the derivative stays finite for `γ < 1`.
//! - **ASL** (Ridnik et al. 2021): `ℓ = y·ℓ₊ + (1 − y)·ℓ₋` with
//!   `ℓ₊ = −(1 − p)^γ₊·ln p` and `ℓ₋ = −p_m^γ₋·ln(1 − p_m)`,
//!   `p_m = max(p − clip, 0)`;
//!   `dℓ₊/dz = −(1 − p)^γ₊·(γ₊·p·softplus(−z) + 1 − p)` and, for `p_m > 0`,
//!   `dℓ₋/dz = p·p_m^γ₋·((1 − p)/(1 − p_m) − γ₋·(1 − p)·ln(1 − p_m)/p_m)`
//!   (0 where `p ≤ clip`).

use crate::tensor::Float;

/// The sigmoid `p = σ(z)` at a logit and the quantities derived from it,
/// each computed without overflow or cancellation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SigmoidParts<T> {
    /// `σ(z)`.
    pub p: T,
    /// `1 − σ(z) = σ(−z)`.
    pub q: T,
    /// `softplus(z) = ln(1 + eᶻ) = −ln(1 − p)`.
    pub sp_pos: T,
    /// `softplus(−z) = ln(1 + e⁻ᶻ) = −ln p`.
    pub sp_neg: T,
}

impl<T: Float> SigmoidParts<T> {
    /// The parts at logit `z`, from `e = exp(−|z|) ∈ (0, 1]` only:
    /// `σ(|z|) = 1/(1 + e)`, `σ(−|z|) = e/(1 + e)`,
    /// `softplus(±z) = max(±z, 0) + ln(1 + e)`.
    #[inline]
    pub fn at(z: T) -> Self {
        let e = (-z.abs()).exp();
        let log1p_e = e.ln_1p();
        let big = T::ONE / (T::ONE + e);
        let small = e * big;
        let (p, q) = if z >= T::ZERO {
            (big, small)
        } else {
            (small, big)
        };
        SigmoidParts {
            p,
            q,
            sp_pos: z.max(T::ZERO) + log1p_e,
            sp_neg: (-z).max(T::ZERO) + log1p_e,
        }
    }
}

/// Which per-element loss to evaluate, with its hyper-parameters in the
/// element type `T` (validated by the public functions before use).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Formula<T> {
    /// Binary cross-entropy on the logit.
    Bce,
    /// Sigmoid focal loss; `alpha: None` means `α_t = 1`.
    Focal { gamma: T, alpha: Option<T> },
    /// Asymmetric loss.
    Asl { gamma_pos: T, gamma_neg: T, clip: T },
}

impl Formula<f64> {
    /// The same formula with its parameters rounded to `T`.
    pub fn cast<T: Float>(self) -> Formula<T> {
        match self {
            Formula::Bce => Formula::Bce,
            Formula::Focal { gamma, alpha } => Formula::Focal {
                gamma: T::from_f64(gamma),
                alpha: alpha.map(T::from_f64),
            },
            Formula::Asl {
                gamma_pos,
                gamma_neg,
                clip,
            } => Formula::Asl {
                gamma_pos: T::from_f64(gamma_pos),
                gamma_neg: T::from_f64(gamma_neg),
                clip: T::from_f64(clip),
            },
        }
    }
}

impl<T: Float> Formula<T> {
    /// `(ℓ(z, y), dℓ/dz)` for logit `z` and target `y`; `pos_weight`
    /// scales the positive term of BCE (the other losses ignore it).
    #[inline]
    pub fn eval(&self, z: T, y: T, pos_weight: T) -> (T, T) {
        let s = SigmoidParts::at(z);
        let not_y = T::ONE - y;
        match *self {
            Formula::Bce => (
                pos_weight * y * s.sp_neg + not_y * s.sp_pos,
                not_y * s.p - pos_weight * y * s.q,
            ),
            Formula::Focal { gamma, alpha } => {
                let ce = y * s.sp_neg + not_y * s.sp_pos;
                let dce = not_y * s.p - y * s.q; // p − y without cancellation
                let m = s.p * not_y + s.q * y; // 1 − p_t
                let mg = m.powf(gamma);
                let alpha_t = match alpha {
                    Some(a) => a * y + (T::ONE - a) * not_y,
                    None => T::ONE,
                };
                // p(1 − p)/m ∈ [0, 1]; where m = 0, p(1 − p) = 0 as well.
                let pq_over_m = if m > T::ZERO { s.p * s.q / m } else { T::ZERO };
                let dm_term = gamma * ce * (not_y - y) * pq_over_m;
                (alpha_t * ce * mg, alpha_t * mg * (dce + dm_term))
            }
            Formula::Asl {
                gamma_pos,
                gamma_neg,
                clip,
            } => {
                let (pos, dpos) = asl_positive(&s, gamma_pos);
                let (neg, dneg) = asl_negative(&s, gamma_neg, clip);
                (y * pos + not_y * neg, y * dpos + not_y * dneg)
            }
        }
    }
}

/// ASL's positive term `ℓ₊ = −(1 − p)^γ₊·ln p` and its derivative.
#[inline]
fn asl_positive<T: Float>(s: &SigmoidParts<T>, gamma: T) -> (T, T) {
    let qg = s.q.powf(gamma);
    (qg * s.sp_neg, -qg * (gamma * s.p * s.sp_neg + s.q))
}

/// ASL's negative term `ℓ₋ = −p_m^γ₋·ln(1 − p_m)`, `p_m = max(p − clip, 0)`,
/// and its derivative.
#[inline]
fn asl_negative<T: Float>(s: &SigmoidParts<T>, gamma: T, clip: T) -> (T, T) {
    // p_m, ln(1 − p_m) and (1 − p)/(1 − p_m), each from the stable parts:
    // without clipping ln(1 − p) = −softplus(z); with it, 1 − p_m = (1 − p) + clip
    // is at least `clip`, and ln_1p is exact for small p_m.
    let (pm, ln_keep, q_ratio) = if clip == T::ZERO {
        (s.p, -s.sp_pos, T::ONE)
    } else {
        let pm = s.p - clip;
        let ln_keep = if pm < T::from_f64(0.5) {
            (-pm).ln_1p()
        } else {
            (s.q + clip).ln()
        };
        (pm, ln_keep, s.q / (s.q + clip))
    };
    if pm <= T::ZERO {
        return (T::ZERO, T::ZERO);
    }
    let pmg = pm.powf(gamma);
    let loss = -pmg * ln_keep;
    // γ·(1 − p)·ln(1 − p_m)/p_m: the ratio tends to −1 as p_m → 0.
    let focus = if gamma == T::ZERO {
        T::ZERO
    } else {
        gamma * s.q * ln_keep / pm
    };
    (loss, s.p * pmg * (q_ratio - focus))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `-ln σ(z)` and `-ln(1 − σ(z))` straight from the definition (fine
    /// for moderate z).
    fn naive_logs(z: f64) -> (f64, f64, f64) {
        let p = 1.0 / (1.0 + (-z).exp());
        (p, -p.ln(), -(1.0 - p).ln())
    }

    fn naive(f: &Formula<f64>, z: f64, y: f64, pw: f64) -> f64 {
        let (p, nlp, nlq) = naive_logs(z);
        match *f {
            Formula::Bce => -(pw * y * p.ln() + (1.0 - y) * (1.0 - p).ln()),
            Formula::Focal { gamma, alpha } => {
                let ce = y * nlp + (1.0 - y) * nlq;
                let pt = p * y + (1.0 - p) * (1.0 - y);
                let at = alpha.map_or(1.0, |a| a * y + (1.0 - a) * (1.0 - y));
                at * ce * (1.0 - pt).powf(gamma)
            }
            Formula::Asl {
                gamma_pos,
                gamma_neg,
                clip,
            } => {
                let pm = (p - clip).max(0.0);
                let pos = -(1.0 - p).powf(gamma_pos) * p.ln();
                let neg = -pm.powf(gamma_neg) * (1.0 - pm).ln();
                y * pos + (1.0 - y) * neg
            }
        }
    }

    fn formulas() -> Vec<Formula<f64>> {
        vec![
            Formula::Bce,
            Formula::Focal {
                gamma: 2.0,
                alpha: Some(0.25),
            },
            Formula::Focal {
                gamma: 0.5,
                alpha: None,
            },
            Formula::Asl {
                gamma_pos: 1.0,
                gamma_neg: 4.0,
                clip: 0.05,
            },
            Formula::Asl {
                gamma_pos: 0.0,
                gamma_neg: 0.5,
                clip: 0.0,
            },
        ]
    }

    #[test]
    fn values_match_the_definitions_and_derivatives_the_differences() {
        for f in formulas() {
            for &z in &[-6.0, -2.5, -0.7, 0.0, 0.4, 1.9, 5.5] {
                for &y in &[0.0, 0.3, 1.0] {
                    let pw = if f == Formula::Bce { 1.7 } else { 1.0 };
                    let (l, d) = f.eval(z, y, pw);
                    let want = naive(&f, z, y, pw);
                    assert!((l - want).abs() < 1e-12, "{f:?} z={z} y={y}: {l} vs {want}");
                    let h = 1e-6;
                    let fd = (f.eval(z + h, y, pw).0 - f.eval(z - h, y, pw).0) / (2.0 * h);
                    assert!(
                        (d - fd).abs() < 1e-7 * (1.0 + fd.abs()),
                        "{f:?} z={z} y={y}: d={d} fd={fd}"
                    );
                }
            }
        }
    }

    #[test]
    fn extreme_logits_stay_finite() {
        for f in formulas() {
            for &z in &[-1e4, -100.0, 100.0, 1e4] {
                for &y in &[0.0, 0.5, 1.0] {
                    let (l, d) = f.eval(z, y, 1.0);
                    let (l32, d32) = f.cast::<f32>().eval(z as f32, y as f32, 1.0);
                    assert!(l.is_finite() && d.is_finite(), "{f:?} z={z} y={y}");
                    assert!(l32.is_finite() && d32.is_finite(), "{f:?} z={z} y={y} f32");
                }
            }
        }
    }
}

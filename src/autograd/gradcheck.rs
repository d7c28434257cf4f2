//! Finite-difference gradient checking in f64.
//!
//! To check an op `f`, ferrite compares the gradient backward computes for
//! `s(x) = Σ w ⊙ f(x)` (with a fixed pseudo-random `w`, so every output
//! element matters) against central differences `(s(x + h e_j) - s(x - h e_j)) / 2h`
//! for every element `j` of every floating-point input. Inputs are cast to
//! f64 first so that rounding does not swamp the comparison.
//!
//! ```
//! use ferrite::{Tensor, DType};
//! use ferrite::autograd::{gradcheck, GradcheckOptions};
//! let x = Tensor::from_vec(vec![0.3f64, -1.2, 2.0], &[3]).unwrap();
//! let report = gradcheck(|xs| xs[0].tanh()?.mul(&xs[0]), &[x], &GradcheckOptions::default()).unwrap();
//! assert!(report.passed, "{report}");
//! ```

use crate::autograd::no_grad;
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use std::fmt;

/// Step and tolerances of [`gradcheck`].
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step `h`.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numerical gradient).
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The outcome of [`gradcheck`]: pass/fail and the worst element seen.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// True when every element is within `atol + rtol * |numerical|`.
    pub passed: bool,
    /// Number of input elements compared.
    pub checked: usize,
    /// The element with the largest error relative to its tolerance:
    /// (input index, multi-index, analytical, numerical).
    pub worst: Option<(usize, Vec<usize>, f64, f64)>,
    /// A structural problem found before comparing values (e.g. a gradient
    /// of the wrong shape).
    pub problem: Option<String>,
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "passed" } else { "FAILED" };
        write!(f, "gradcheck {verdict} on {} element(s)", self.checked)?;
        if let Some(p) = &self.problem {
            write!(f, ": {p}")?;
        }
        if let Some((input, idx, a, n)) = &self.worst {
            write!(
                f,
                "; worst: input {input} at {idx:?}: analytical {a:.10e}, numerical {n:.10e}, \
                 abs err {:.3e}",
                (a - n).abs()
            )?;
        }
        Ok(())
    }
}

/// Checks the gradients of `f` at `inputs` by central finite differences.
///
/// Floating-point inputs are cast to f64 and made leaves that require a
/// gradient; other inputs (e.g. i64 indices) are passed as they are. `f` must
/// be deterministic. Returns `Err` only if `f` or backward fails.
///
/// ```
/// use ferrite::autograd::{gradcheck, GradcheckOptions};
/// use ferrite::Tensor;
/// let x = Tensor::from_vec(vec![0.5f64, -0.3, 1.2, 0.1], &[2, 2])?;
/// let w = Tensor::from_vec(vec![1.0f64, -2.0, 0.5, 3.0], &[2, 2])?;
/// // f(x, w) = softmax(x · w) along rows: both inputs are checked.
/// let report = gradcheck(|t| t[0].matmul(&t[1])?.softmax(1), &[x, w], &GradcheckOptions::default())?;
/// assert!(report.passed, "{report}");
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    let vars: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            if t.dtype().is_float() {
                Ok(t.to_dtype(DType::F64)?
                    .contiguous_copy()?
                    .requires_grad_(true))
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<_>>()?;

    let out = f(&vars)?;
    let weights = probe_weights(out.shape())?;
    let mut report = GradcheckReport {
        passed: true,
        checked: 0,
        worst: None,
        problem: None,
    };
    let grads = if out.requires_grad() {
        Some(out.backward_with_grad(&weights)?)
    } else {
        None
    };

    let objective = |xs: &[Tensor]| -> Result<f64> {
        let y = no_grad(|| f(xs))?;
        let y = y.to_dtype(DType::F64)?.to_vec::<f64>()?;
        let w = weights.to_vec::<f64>()?;
        Ok(y.iter().zip(&w).map(|(a, b)| a * b).sum())
    };

    let mut worst_ratio = -1.0;
    for (i, var) in vars.iter().enumerate() {
        if !var.dtype().is_float() {
            continue;
        }
        let analytical = match grads.as_ref().and_then(|g| g.get(var)) {
            Some(g) if g.shape() != var.shape() => {
                report.passed = false;
                report.problem = Some(format!(
                    "gradient of input {i} has shape {:?}, input has {:?}",
                    g.shape(),
                    var.shape()
                ));
                return Ok(report);
            }
            Some(g) => g.to_dtype(DType::F64)?.to_vec::<f64>()?,
            None => vec![0.0; var.numel()],
        };
        let base = var.to_vec::<f64>()?;
        for j in 0..base.len() {
            let eval_at = |delta: f64| -> Result<f64> {
                let mut x = base.clone();
                x[j] += delta;
                let mut xs = vars.clone();
                xs[i] = Tensor::from_vec(x, var.shape())?;
                objective(&xs)
            };
            let numerical = (eval_at(opts.eps)? - eval_at(-opts.eps)?) / (2.0 * opts.eps);
            let a = analytical[j];
            let tol = opts.atol + opts.rtol * numerical.abs();
            let err = (a - numerical).abs();
            let ratio = if err.is_nan() {
                f64::INFINITY
            } else {
                err / tol
            };
            report.checked += 1;
            if ratio > worst_ratio {
                worst_ratio = ratio;
                report.worst = Some((i, unravel(j, var.shape()), a, numerical));
            }
            if err.is_nan() || err > tol {
                report.passed = false;
            }
        }
    }
    Ok(report)
}

/// Deterministic weights in [-1, 1] that make every output element count.
fn probe_weights(shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let w: Vec<f64> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(w, shape)
}

fn unravel(mut j: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = j % shape[d];
        j /= shape[d];
    }
    idx
}

//! Shared helpers: BCE on logits, matrix builders, configs and PLM fixtures.

use crate::common;
use ferrite::plm::{Divergence, Plm, PlmConfig};
use ferrite::{Error, Tensor};

// ----- helpers ----------------------------------------------------------

/// Elementwise binary cross-entropy on logits, `softplus(z) − y·z`, composed
/// from tensor ops (independent of the crate's loss module).
pub(super) fn bce(z: &Tensor, y: &Tensor) -> Tensor {
    z.softplus().unwrap().sub(&y.mul(z).unwrap()).unwrap()
}

/// An f64 `[rows, cols]` tensor.
pub(super) fn mat(data: Vec<f64>, rows: usize, cols: usize) -> Tensor {
    Tensor::from_vec(data, &[rows, cols]).unwrap()
}

/// Column-major class lists → row-major `[B, C]` data: `cols[c][i]`.
fn from_columns(cols: &[Vec<f64>]) -> Vec<f64> {
    let b = cols[0].len();
    (0..b)
        .flat_map(|i| cols.iter().map(move |col| col[i]))
        .collect()
}

pub(super) fn config(lambda: f64, divergence: Divergence) -> PlmConfig {
    PlmConfig {
        lambda,
        divergence,
        ..PlmConfig::default()
    }
}

pub(super) fn is_invalid<T>(r: ferrite::Result<T>) -> bool {
    matches!(
        r,
        Err(Error::InvalidArgument { .. })
            | Err(Error::BadShape { .. })
            | Err(Error::ShapeMismatch { .. })
            | Err(Error::UnsupportedDType { .. })
            | Err(Error::IndexOutOfRange { .. })
    )
}

/// A PLM state with keep probabilities well inside (0, 1) for several
/// classes, for 4 classes.
pub(super) fn masking_plm() -> Plm {
    let mut plm = Plm::new(PlmConfig::default(), &[100, 20, 600, 300], 1000).unwrap();
    // r = (0.111, 0.0204, 1.5, 0.4286): mask negatives of 0 and 1,
    // positives of 2; class 3 unmasked.
    plm.set_rhat(&[0.3, 0.05, 0.6, 300.0 / 700.0]).unwrap();
    plm
}

pub(super) fn labels_4x(b: usize, seed: u64) -> Tensor {
    let u = common::uniform(&[b, 4], 0.0, 1.0, seed)
        .to_vec::<f64>()
        .unwrap();
    mat(u.iter().map(|&v| (v < 0.5) as u8 as f64).collect(), b, 4)
}

/// Observes one batch whose class `k` has positive predictions `pos[k]` and
/// negative predictions `neg[k]` (equal counts across classes), then ends
/// the epoch.
pub(super) fn update_from(
    plm: &mut Plm,
    pos: &[Vec<f64>],
    neg: &[Vec<f64>],
) -> ferrite::plm::PlmEpochUpdate {
    let c = pos.len();
    let cols: Vec<Vec<f64>> = (0..c)
        .map(|k| pos[k].iter().chain(&neg[k]).copied().collect())
        .collect();
    let labels: Vec<Vec<f64>> = (0..c)
        .map(|k| {
            let mut l = vec![1.0; pos[k].len()];
            l.extend(vec![0.0; neg[k].len()]);
            l
        })
        .collect();
    let b = cols[0].len();
    plm.observe(
        &mat(from_columns(&cols), b, c),
        &mat(from_columns(&labels), b, c),
    )
    .unwrap();
    plm.end_epoch().unwrap()
}

//! Shared helpers: tensor builders, every reduction, gradients and the loss list.

use ferrite::loss::{AslOptions, ElementLoss, Reduction};
use ferrite::{Result, Tensor};

pub(super) const REDUCTIONS: [Reduction; 3] = [Reduction::None, Reduction::Mean, Reduction::Sum];

pub(super) fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

pub(super) fn t32(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<f32>>(), shape).unwrap()
}

pub(super) fn idx(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

pub(super) fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// Gradient of `loss` w.r.t. a fresh leaf copy of `logits`, for an upstream
/// gradient of ones.
pub(super) fn grad_of(
    logits: &Tensor,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> (Vec<f64>, Vec<f64>) {
    let z = logits.requires_grad_(true);
    let out = f(&z).unwrap();
    let g = out.backward_with_grad(&out.ones_like().unwrap()).unwrap();
    (vals(&out), vals(g.get(&z).unwrap()))
}

/// One configuration of each loss family (plus BCE-equivalent ones).
pub(super) fn losses() -> Vec<ElementLoss> {
    vec![
        ElementLoss::Bce,
        ElementLoss::Focal {
            gamma: 2.0,
            alpha: Some(0.25),
        },
        ElementLoss::Focal {
            gamma: 0.5,
            alpha: None,
        },
        ElementLoss::Asl(AslOptions::default()),
        ElementLoss::Asl(AslOptions {
            gamma_pos: 1.0,
            gamma_neg: 2.0,
            clip: 0.0,
        }),
    ]
}

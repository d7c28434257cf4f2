//! Gradchecks in training and eval mode, and gradients only for what requires them.

use crate::common::{check_grad, randn, uniform, EVAL, TRAIN};
use ferrite::{DType, Tensor};

// ----- gradients ------------------------------------------------------

#[test]
fn gradcheck_training() {
    for shape in [&[5, 3][..], &[3, 2, 3, 2]] {
        let c = shape[1];
        let x = randn(shape, 71);
        let w = uniform(&[c], 0.5, 1.5, 72);
        let b = randn(&[c], 73);
        // With running stats (fresh buffers per call) and affine.
        check_grad(
            &format!("bn train {shape:?}"),
            |t| {
                let rm = Tensor::zeros(&[t[1].numel()], DType::F64)?;
                let rv = Tensor::ones(&[t[1].numel()], DType::F64)?;
                t[0].batch_norm(Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), TRAIN)
            },
            &[x.clone(), w.clone(), b.clone()],
        );
        // Without affine, without running stats.
        check_grad(
            &format!("bn train no affine {shape:?}"),
            |t| t[0].batch_norm(None, None, None, None, TRAIN),
            &[x.clone()],
        );
        // Weight only and bias only.
        check_grad(
            &format!("bn train weight only {shape:?}"),
            |t| t[0].batch_norm(None, None, Some(&t[1]), None, TRAIN),
            &[x.clone(), w.clone()],
        );
        check_grad(
            &format!("bn train bias only {shape:?}"),
            |t| t[0].batch_norm(None, None, None, Some(&t[1]), TRAIN),
            &[x.clone(), b.clone()],
        );
        // A non-contiguous input inside the graph.
        check_grad(
            &format!("bn train transposed {shape:?}"),
            |t| {
                let xt = t[0].transpose(0, 1)?.contiguous()?.transpose(0, 1)?;
                t[0].batch_norm(None, None, Some(&t[1]), None, TRAIN)?
                    .add(&xt.batch_norm(None, None, Some(&t[1]), None, TRAIN)?)
            },
            &[x.clone(), w.clone()],
        );
    }
}

#[test]
fn gradcheck_eval() {
    for shape in [&[4, 3][..], &[2, 3, 2, 2]] {
        let c = shape[1];
        let rm = randn(&[c], 81).mul_scalar(0.3).unwrap();
        let rv = uniform(&[c], 0.5, 2.0, 82);
        check_grad(
            &format!("bn eval {shape:?}"),
            |t| t[0].batch_norm(Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), EVAL),
            &[
                randn(shape, 83),
                uniform(&[c], 0.5, 1.5, 84),
                randn(&[c], 85),
            ],
        );
        check_grad(
            &format!("bn eval no affine {shape:?}"),
            |t| t[0].batch_norm(Some(&rm), Some(&rv), None, None, EVAL),
            &[randn(shape, 86)],
        );
    }
}

#[test]
fn gradient_only_for_what_requires_it() {
    let x = randn(&[4, 2, 3], 91);
    let w = uniform(&[2], 0.5, 1.5, 92).requires_grad_(true);
    let b = randn(&[2], 93);
    let y = x.batch_norm(None, None, Some(&w), Some(&b), TRAIN).unwrap();
    let g = y
        .mul(&randn(&[4, 2, 3], 94))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&x).is_none() && g.get(&b).is_none());
    assert_eq!(g.get(&w).unwrap().shape(), &[2]);
}

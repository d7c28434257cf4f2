//! `log_softmax` in f32 at large logits, against the same computation in f64.

use ferrite::{DType, Tensor};

/// f32 `log_softmax` at large logits keeps the precision of the small
/// differences between them: `(v − max) − ln Σ`, not `v − (ln Σ + max)`,
/// whose rounding at |max| ≫ 1 swamped ln Σ. Forward and backward against
/// the same computation in f64, at logit scales 1e3 and 1e4 of both signs.
#[test]
fn log_softmax_f32_keeps_precision_at_large_logits() {
    // The case that exposed it: exact −0.31326169, PyTorch f32 −0.31326166.
    let x = Tensor::from_vec(vec![800.0f32, 799.0], &[1, 2]).unwrap();
    let y = x.log_softmax(1).unwrap().to_vec::<f32>().unwrap();
    assert!((f64::from(y[0]) + 0.313_261_69).abs() < 1e-7, "{y:?}");
    for scale in [1e3f64, -1e3, 1e4, -1e4] {
        let offsets = [0.0, -1.0, 0.5, -3.25, 2.0, -0.125];
        let values: Vec<f64> = offsets.iter().map(|o| scale + o).collect();
        let upstream = [1.0, 0.0, -0.5, 0.25, 0.0, 2.0];
        let run = |dtype: DType| {
            let x = Tensor::from_vec(values.clone(), &[1, 6])
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                .requires_grad_(true);
            let y = x.log_softmax(1).unwrap();
            let g = Tensor::from_vec(upstream.to_vec(), &[1, 6])
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let loss = y.mul(&g).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let dx = grads.get(&x).unwrap().to_f64_vec().unwrap();
            (y.to_f64_vec().unwrap(), dx)
        };
        let (y64, dx64) = run(DType::F64);
        let (y32, dx32) = run(DType::F32);
        for (a, b) in y32.iter().zip(&y64) {
            assert!(
                (a - b).abs() < 1e-6,
                "scale {scale}: forward {y32:?} vs {y64:?}"
            );
        }
        for (a, b) in dx32.iter().zip(&dx64) {
            assert!(
                (a - b).abs() < 1e-6,
                "scale {scale}: backward {dx32:?} vs {dx64:?}"
            );
        }
        // The gradient of a log-softmax sums to Σ upstream − Σ upstream = 0.
        let total: f64 = dx32.iter().sum();
        assert!(
            total.abs() < 1e-6,
            "scale {scale}: gradient sums to {total}"
        );
    }
}

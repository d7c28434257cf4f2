//! `Tensor::batch_norm_relu` (a relu fused into batch norm's output) and
//! `BatchNorm2d::forward_relu`: the same values, running statistics and
//! gradients, bit for bit, as `batch_norm` followed by `relu`, on every
//! kernel path (channel blocks, rank 2, channels larger than a reduction
//! unit), training and eval, f32 and f64; and a gradcheck.

mod common;
use common::{check_grad, randn, uniform, EVAL, TRAIN};
use ferrite::nn::{BatchNorm2d, Module};
use ferrite::ops::BatchNormOptions;
use ferrite::{DType, Tensor};

/// Output, running statistics after the call, and the gradients of the
/// input, weight and bias for the upstream gradient `dz`.
fn run(
    x: &Tensor,
    dz: &Tensor,
    opts: BatchNormOptions,
    fused: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, [Vec<f64>; 3]) {
    let c = x.shape()[1];
    let dtype = x.dtype();
    let x = x.detach().requires_grad_(true);
    let w = uniform(&[c], 0.5, 1.5, 3)
        .to_dtype(dtype)
        .unwrap()
        .requires_grad_(true);
    let b = randn(&[c], 4)
        .mul_scalar(0.5)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .requires_grad_(true);
    let rm = randn(&[c], 5)
        .mul_scalar(0.2)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let rv = uniform(&[c], 0.5, 2.0, 6).to_dtype(dtype).unwrap();
    let (rm_, rv_, w_, b_) = (Some(&rm), Some(&rv), Some(&w), Some(&b));
    let z = if fused {
        x.batch_norm_relu(rm_, rv_, w_, b_, opts).unwrap()
    } else {
        x.batch_norm(rm_, rv_, w_, b_, opts)
            .unwrap()
            .relu()
            .unwrap()
    };
    let grads = z.backward_with_grad(dz).unwrap();
    let g = |t: &Tensor| grads.get(t).unwrap().to_f64_vec().unwrap();
    let v = |t: &Tensor| t.to_f64_vec().unwrap();
    (v(&z), v(&rm), v(&rv), [g(&x), g(&w), g(&b)])
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn fused_relu_gives_the_two_ops_bits() {
    // Channel blocks (4-D and 3-D), rank 2 (one value per channel per
    // row), and channels of 70,000 values (more than a reduction unit).
    let shapes: [&[usize]; 4] = [&[4, 6, 5, 5], &[3, 5, 7], &[9, 4], &[2, 2, 35_000]];
    for shape in shapes {
        for dtype in [DType::F32, DType::F64] {
            let x = randn(shape, 1).to_dtype(dtype).unwrap();
            let dz = randn(shape, 2).to_dtype(dtype).unwrap();
            for opts in [TRAIN, EVAL] {
                let fused = run(&x, &dz, opts, true);
                let plain = run(&x, &dz, opts, false);
                let what = format!("{shape:?} {dtype:?} training={}", opts.training);
                assert_eq!(bits(&fused.0), bits(&plain.0), "output {what}");
                assert_eq!(bits(&fused.1), bits(&plain.1), "running mean {what}");
                assert_eq!(bits(&fused.2), bits(&plain.2), "running var {what}");
                for (i, (a, b)) in fused.3.iter().zip(&plain.3).enumerate() {
                    assert_eq!(bits(a), bits(b), "gradient {i} {what}");
                }
                // Some outputs are clipped and some are not.
                assert!(fused.0.contains(&0.0) && fused.0.iter().any(|&v| v > 0.0));
            }
        }
    }
}

#[test]
fn fused_relu_keeps_nan() {
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, -1.0, 2.0], &[2, 2, 1]).unwrap();
    let z = x.batch_norm_relu(None, None, None, None, TRAIN).unwrap();
    let plain = x
        .batch_norm(None, None, None, None, TRAIN)
        .unwrap()
        .relu()
        .unwrap();
    let (z, plain) = (z.to_vec::<f32>().unwrap(), plain.to_vec::<f32>().unwrap());
    assert_eq!(
        z.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert!(z.iter().any(|v| v.is_nan()));
}

#[test]
fn gradcheck_batch_norm_relu() {
    for shape in [&[5, 3][..], &[3, 2, 3, 2]] {
        let c = shape[1];
        let x = randn(shape, 71);
        let w = uniform(&[c], 0.5, 1.5, 72);
        let b = randn(&[c], 73);
        check_grad(
            &format!("bn relu train {shape:?}"),
            |t| t[0].batch_norm_relu(None, None, Some(&t[1]), Some(&t[2]), TRAIN),
            &[x.clone(), w.clone(), b.clone()],
        );
        let rm = randn(&[c], 74).mul_scalar(0.3).unwrap();
        let rv = uniform(&[c], 0.5, 1.5, 75);
        check_grad(
            &format!("bn relu eval {shape:?}"),
            |t| t[0].batch_norm_relu(Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), EVAL),
            &[x.clone(), w.clone(), b.clone()],
        );
    }
}

#[test]
fn layer_forward_relu_is_relu_of_forward() {
    let x = randn(&[4, 3, 4, 4], 9).to_dtype(DType::F32).unwrap();
    let (a, b) = (BatchNorm2d::new(3).unwrap(), BatchNorm2d::new(3).unwrap());
    let fused = a.forward_relu(&x).unwrap().to_vec::<f32>().unwrap();
    let plain = b
        .forward(&x)
        .unwrap()
        .relu()
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(fused, plain);
    // Both layers counted the batch and moved their running statistics alike.
    for (s, t) in [
        (&a.running_mean, &b.running_mean),
        (&a.running_var, &b.running_var),
    ] {
        assert_eq!(s.to_vec::<f32>().unwrap(), t.to_vec::<f32>().unwrap());
    }
    assert_eq!(a.num_batches_tracked.to_vec::<i64>().unwrap(), [1]);
}

#[test]
fn fused_relu_refuses_what_batch_norm_refuses() {
    let x = randn(&[4, 3], 1);
    let w = randn(&[2], 2);
    let err = x
        .batch_norm_relu(None, None, Some(&w), None, TRAIN)
        .unwrap_err()
        .to_string();
    let plain = x
        .batch_norm(None, None, Some(&w), None, TRAIN)
        .unwrap_err()
        .to_string();
    assert_eq!(err, plain);
    let empty = Tensor::zeros(&[0, 3], DType::F64).unwrap();
    assert_eq!(
        empty
            .batch_norm_relu(None, None, None, None, TRAIN)
            .unwrap()
            .shape(),
        &[0, 3]
    );
}

//! Gradcheck on the device itself: each op's backward kernels against
//! central finite differences of its forward kernels, both on the device
//! (f32, the device's only float type for these ops), independently of the
//! CPU. The CPU's f64 gradchecks (`tests/gradcheck_ops.rs`) and the
//! device-vs-CPU comparisons of the other device tests check the same
//! gradients more tightly; this one would catch a backward kernel that
//! agrees with a wrong CPU rule. In CI on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_gradcheck`.

// `&[x.clone()]` reads better than `std::slice::from_ref(&x)` in a table of cases.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod device;

use device::{devices, uniform};
use ferrite::loss::{sigmoid_focal_loss, Reduction};
use ferrite::ops::{BatchNormOptions, Conv2dParams, PadCount};
use ferrite::KeepDim;
use ferrite::{Device, Result, Tensor};

/// Step of the central differences: large enough that f32 rounding of the
/// forward (≈ 1e-7 relative) stays far below the difference, small enough
/// for smooth ops' second-order error (≈ h² ≈ 1e-4).
const H: f64 = 1e-2;
/// Allowed |numeric − analytic| ≤ ATOL + RTOL·|analytic|: f32 forward
/// sums of O(100) terms divided by 2h give ≈ 1e-3 of noise.
const ATOL: f64 = 5e-3;
const RTOL: f64 = 2e-2;

/// Checks `f` on `device` at `inputs`: the gradient of `Σ f(x)·w` from
/// backward against finite differences at up to 6 sampled elements of each
/// input.
fn gradcheck_on(
    device: Device,
    name: &str,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let on = |xs: &[Tensor]| -> Vec<Tensor> {
        xs.iter()
            .map(|x| x.to_device(device).unwrap().requires_grad_(true))
            .collect()
    };
    let xs = on(inputs);
    let y = f(&xs).unwrap();
    assert_eq!(y.device(), device, "{name}: output device");
    let w = uniform(y.shape(), (-1.0, 1.0), 77)
        .to_device(device)
        .unwrap();
    let objective = |xs: &[Tensor]| -> f64 {
        let v = f(xs).unwrap().mul(&w).unwrap().sum_all().unwrap();
        v.to_f64_vec().unwrap()[0]
    };
    let grads = f(&xs)
        .unwrap()
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (k, x) in inputs.iter().enumerate() {
        let analytic = grads.get(&xs[k]).expect("a gradient").to_f64_vec().unwrap();
        let host = x.to_vec::<f32>().unwrap();
        let n = host.len();
        for s in 0..n.min(6) {
            let i = (s * 7919 + 13) % n;
            let at = |delta: f64| {
                let mut v = host.clone();
                v[i] = (v[i] as f64 + delta) as f32;
                let mut moved = inputs.to_vec();
                moved[k] = Tensor::from_vec(v, x.shape()).unwrap();
                objective(&on(&moved))
            };
            let numeric = (at(H) - at(-H)) / (2.0 * H);
            let a = analytic[i];
            assert!(
                (numeric - a).abs() <= ATOL + RTOL * a.abs(),
                "{name} on {device:?}: input {k} element {i}: backward {a}, finite differences {numeric}"
            );
        }
    }
}

fn gradcheck(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    for device in devices() {
        gradcheck_on(device, name, inputs, &f);
    }
}

#[test]
fn elementwise_and_reductions() {
    let x = uniform(&[5, 7], (-2.0, 2.0), 1);
    let y = uniform(&[5, 7], (0.5, 2.0), 2);
    gradcheck("tanh·sigmoid", &[x.clone()], |t| {
        t[0].tanh()?.mul(&t[0].sigmoid()?)
    });
    gradcheck("exp/y", &[x.clone(), y.clone()], |t| t[0].exp()?.div(&t[1]));
    gradcheck(
        "broadcast sub, row sums",
        &[x.clone(), y.narrow(0, 0, 1).unwrap()],
        |t| t[0].sub(&t[1])?.square()?.sum(&[1], KeepDim::Yes),
    );
    gradcheck("log_softmax", &[x.clone()], |t| t[0].log_softmax(1));
    gradcheck("mean of a permuted view", &[x], |t| {
        t[0].t()?.mean(&[1], KeepDim::No)
    });
}

#[test]
fn matmul_and_convolution() {
    let a = uniform(&[6, 9], (-1.0, 1.0), 3);
    let b = uniform(&[9, 4], (-1.0, 1.0), 4);
    gradcheck("matmul", &[a, b], |t| t[0].matmul(&t[1]));
    let x = uniform(&[2, 3, 6, 6], (-1.0, 1.0), 5);
    let w = uniform(&[4, 3, 3, 3], (-0.5, 0.5), 6);
    let bias = uniform(&[4], (-0.5, 0.5), 7);
    let p = Conv2dParams::default().stride(2).padding(1);
    gradcheck("conv2d stride 2", &[x.clone(), w, bias], |t| {
        t[0].conv2d(&t[1], Some(&t[2]), p)
    });
    gradcheck("avg_pool2d", &[x], |t| {
        t[0].avg_pool2d(ferrite::ops::Pool2dParams::new(2), PadCount::Include)
    });
}

#[test]
fn batch_norm_and_losses() {
    let x = uniform(&[4, 3, 3, 3], (-1.0, 1.0), 8);
    let gamma = uniform(&[3], (0.5, 1.5), 9);
    let beta = uniform(&[3], (-0.5, 0.5), 10);
    let opts = BatchNormOptions {
        training: true,
        momentum: 0.1,
        eps: 1e-5,
    };
    gradcheck("batch_norm (training)", &[x, gamma, beta], |t| {
        t[0].batch_norm(None, None, Some(&t[1]), Some(&t[2]), opts)
    });
    let logits = uniform(&[6, 4], (-3.0, 3.0), 11);
    let targets = uniform(&[6, 4], (0.0, 1.0), 12);
    for device in devices() {
        let t = targets.to_device(device).unwrap();
        gradcheck_on(
            device,
            "focal loss",
            &[logits.clone()],
            &|x: &[Tensor]| sigmoid_focal_loss(&x[0], &t, 2.0, Some(0.25), None, Reduction::None),
        );
    }
}

//! The harness of the device-parametrised suite: every check runs an op on
//! the CPU and on each other available device (the emulated GPU under
//! `FERRITE_CUDA_EMULATE=1` with `--features cuda-emulator`, a real GPU
//! with `--features cuda` on a machine that has one), forward and
//! backward, and compares the device with the CPU in the same process.
//!
//! Without a device, each check still runs its CPU half (so the suite is
//! exercised everywhere) and prints once why the device half was skipped;
//! with `FERRITE_REQUIRE_GPU` set (on a GPU machine), a missing device is
//! a failure instead.
#![allow(dead_code)]

use ferrite::{DType, Device, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Once;

/// The devices besides the CPU that this process can use.
pub fn devices() -> Vec<Device> {
    static REPORT: Once = Once::new();
    #[cfg(feature = "cuda")]
    {
        match ferrite::backend::cuda::device(0) {
            Ok(dev) => {
                REPORT.call_once(|| {
                    eprintln!(
                        "device suite on cuda:0 = {}",
                        dev.name().unwrap_or_default()
                    )
                });
                return vec![Device::Cuda(0)];
            }
            Err(e) => {
                assert!(
                    std::env::var_os("FERRITE_REQUIRE_GPU").is_none(),
                    "FERRITE_REQUIRE_GPU is set but cuda:0 is unusable: {e}"
                );
                REPORT.call_once(|| eprintln!("device suite: CPU only ({e})"))
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    REPORT.call_once(|| eprintln!("device suite: CPU only (built without the `cuda` feature)"));
    Vec::new()
}

/// Multiplies test sizes (`FERRITE_DEVICE_TEST_SCALE`, default 1): small in
/// CI, larger on a real GPU.
pub fn scale() -> usize {
    std::env::var("FERRITE_DEVICE_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s >= 1)
        .unwrap_or(1)
}

/// Uniform f32 values in `[lo, hi)` of `shape`, from `seed`.
pub fn uniform(shape: &[usize], (lo, hi): (f64, f64), seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand(shape, lo, hi, DType::F32, &mut rng).unwrap()
}

/// Tolerances `(atol, rtol)` of a comparison.
#[derive(Clone, Copy, Debug)]
pub struct Tol(pub f64, pub f64);

/// Bit-for-bit agreement (ops that round the same on both devices).
pub const EXACT: Tol = Tol(0.0, 0.0);
/// A few ulps of f32 (transcendental functions, reordered sums).
pub const CLOSE: Tol = Tol(1e-6, 2e-5);

/// Asserts `got` and `want` agree within `tol`, NaN matching NaN.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], Tol(atol, rtol): Tol) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g == w || (g.is_nan() && w.is_nan());
        let near = (g - w).abs() <= atol + rtol * w.abs();
        assert!(same || near, "{what}: element {i}: device {g}, cpu {w}");
    }
}

/// The result of running `f` on one device: the output and, for a float
/// output, the gradient of `Σ output·weights` for each float input.
struct Run {
    out: Tensor,
    grads: Vec<Option<Vec<f64>>>,
}

fn run_on(
    device: Device,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Run> {
    let xs: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            let t = t.to_device(device)?;
            Ok(if t.dtype().is_float() {
                t.requires_grad_(true)
            } else {
                t
            })
        })
        .collect::<Result<_>>()?;
    let out = f(&xs)?;
    assert_eq!(
        out.device(),
        device,
        "the output lives on the inputs' device"
    );
    let mut grads = vec![None; xs.len()];
    if out.dtype().is_float() && out.requires_grad() {
        let w = uniform(out.shape(), (-1.0, 1.0), 99)
            .to_dtype(out.dtype())?
            .to_device(device)?;
        let store = out.mul(&w)?.sum_all()?.backward()?;
        for (slot, x) in grads.iter_mut().zip(&xs) {
            if let Some(g) = store.get(x) {
                assert_eq!(g.device(), device, "gradients live on the input's device");
                assert_eq!(g.shape(), x.shape(), "gradient shape");
                *slot = Some(g.to_f64_vec()?);
            }
        }
    }
    Ok(Run { out, grads })
}

/// Runs `f` on the CPU and on every device, and compares outputs and input
/// gradients within `tol` (gradients within `grad_tol`).
pub fn check(
    name: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    tol: Tol,
    grad_tol: Tol,
) {
    let cpu = run_on(Device::Cpu, inputs, &f).unwrap_or_else(|e| panic!("{name} on cpu: {e}"));
    let want = cpu.out.to_f64_vec().unwrap();
    for device in devices() {
        let run =
            run_on(device, inputs, &f).unwrap_or_else(|e| panic!("{name} on {device:?}: {e}"));
        assert_eq!(run.out.shape(), cpu.out.shape(), "{name}: shape");
        assert_eq!(run.out.dtype(), cpu.out.dtype(), "{name}: dtype");
        let got = run.out.to_f64_vec().unwrap();
        assert_close(&format!("{name} forward"), &got, &want, tol);
        for (i, (g, w)) in run.grads.iter().zip(&cpu.grads).enumerate() {
            match (g, w) {
                (Some(g), Some(w)) => {
                    assert_close(&format!("{name} grad of input {i}"), g, w, grad_tol)
                }
                (None, None) => {}
                _ => panic!("{name}: input {i} has a gradient on one device only"),
            }
        }
    }
}

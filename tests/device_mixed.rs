//! bf16 mixed precision (`autocast(Precision::Bf16, ..)`) on every device:
//! matmul, linear and conv2d of f32 tensors read bf16-rounded operands,
//! accumulate in f32 and return f32, forward and backward; the CPU is the
//! reference for the device, and f32 is the reference for both. In CI this
//! runs on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_mixed`.
//!
//! Tolerances:
//! - device vs CPU, both mixed: both multiply the same bf16 values exactly
//!   (a product of two 8-bit significands fits f32) and sum in f32 in a
//!   different order, so the f32 GEMM and conv tolerances of
//!   `device_ops.rs` and `device_conv.rs` apply;
//! - mixed vs f32: bf16 keeps 8 significant bits, so rounding to it moves a
//!   value by at most 2⁻⁸ of itself, and each product `a·b` of rounded
//!   operands by at most `(2⁻⁷ + 2⁻¹⁶)·|a·b|`: every output and gradient
//!   element is within `2⁻⁷ · Σ|a·b|` of f32, where `Σ|a·b|` is the same op
//!   on absolute values; `2⁻¹²` more covers the f32 sums (and the CPU's
//!   Winograd transforms);
//! - a training step of a small conv net: the loss within 1 % of f32 (about
//!   2.5 units of bf16 rounding; the per-op errors partly cancel, and the
//!   observed difference is below 0.1 %), and each parameter's gradient
//!   within 15 % of f32 in norm (observed: 0.1–7 %). A gradient deep in
//!   the net is a sum of many per-sample terms of both signs (here at
//!   initialisation, with labels the net cannot yet tell apart), so it is
//!   small next to its terms, and the bf16 errors of the layers above it
//!   (each within the bound above) add up relative to that small sum; a
//!   bf16-sized change can also flip a ReLU or move a max-pool's argmax.

mod device;

use device::{assert_close, check, devices, uniform, Tol};
use ferrite::loss::{cross_entropy, CrossEntropyOptions};
use ferrite::ops::{BatchNormOptions, Conv2dParams, Pool2dParams};
use ferrite::{autocast, DType, Device, Precision, Result, Tensor};

/// Device vs CPU for mixed GEMMs (as `device_ops.rs` for f32 GEMMs).
const GEMM: Tol = Tol(1e-5, 1e-4);
/// Device vs CPU for mixed convolutions (as `device_conv.rs`).
const CONV: Tol = Tol(2e-5, 2e-4);
/// The bf16 bound on `|mixed − f32| / Σ|a·b|`, with room for f32 sums.
const BF16_BOUND: f64 = 1.0 / 128.0 + 1.0 / 4096.0;

/// The CPU, then every other device.
fn all_devices() -> Vec<Device> {
    std::iter::once(Device::Cpu).chain(devices()).collect()
}

/// `f` under bf16 autocast.
fn bf16<R>(f: impl FnOnce() -> R) -> R {
    autocast(Precision::Bf16, f)
}

/// `t`'s values rounded to bf16, as an f32 tensor without a graph.
fn rounded(t: &Tensor) -> Tensor {
    t.detach()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// The output of `op` on `(a, b)` and the gradients of `Σ output·g` for
/// `a` and `b` (backward outside any autocast scope).
fn forward_backward(
    op: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
) -> [Tensor; 3] {
    let (a, b) = (
        a.detach().requires_grad_(true),
        b.detach().requires_grad_(true),
    );
    let out = op(&a, &b).unwrap();
    let grads = out.mul(g).unwrap().sum_all().unwrap().backward().unwrap();
    let (ga, gb) = (grads.get(&a).unwrap(), grads.get(&b).unwrap());
    [out.detach(), ga.clone(), gb.clone()]
}

/// A product of two tensors (matmul, linear, conv2d).
type BinaryOp = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor>>;

/// A product of the tests and its (CPU) operands.
struct Case {
    name: &'static str,
    op: BinaryOp,
    a: Tensor,
    b: Tensor,
}

fn cases() -> Vec<Case> {
    let conv = |p: Conv2dParams| -> BinaryOp { Box::new(move |x, w| x.conv2d(w, None, p)) };
    vec![
        Case {
            name: "matmul 37x29 by 29x45",
            op: Box::new(|a, b| a.matmul(b)),
            a: uniform(&[37, 29], (-1.0, 1.0), 1),
            b: uniform(&[29, 45], (-1.0, 1.0), 2),
        },
        Case {
            name: "batched broadcast matmul",
            op: Box::new(|a, b| a.matmul(b)),
            a: uniform(&[2, 3, 17, 40], (-1.0, 1.0), 3),
            b: uniform(&[3, 40, 9], (-1.0, 1.0), 4),
        },
        Case {
            name: "linear",
            op: Box::new(|x, w| x.linear(w, None)),
            a: uniform(&[6, 40], (-1.0, 1.0), 5),
            b: uniform(&[13, 40], (-1.0, 1.0), 6),
        },
        Case {
            name: "conv 3x3 pad 1",
            op: conv(Conv2dParams::default().padding(1)),
            a: uniform(&[2, 8, 6, 7], (-1.0, 1.0), 7),
            b: uniform(&[8, 8, 3, 3], (-1.0, 1.0), 8),
        },
        Case {
            name: "conv stride 2 groups 2",
            op: conv(Conv2dParams::default().stride(2).padding(1).groups(2)),
            a: uniform(&[2, 4, 9, 9], (-1.0, 1.0), 9),
            b: uniform(&[6, 2, 3, 3], (-1.0, 1.0), 10),
        },
    ]
}

#[test]
fn mixed_matmul_and_linear_match_the_cpu() {
    let a = uniform(&[37, 29], (-1.0, 1.0), 11);
    let b = uniform(&[29, 45], (-1.0, 1.0), 12);
    // `check` runs backward outside the scope: the grad fns keep bf16.
    check(
        "mixed matmul",
        &[a.clone(), b.clone()],
        |t| bf16(|| t[0].matmul(&t[1])),
        GEMM,
        GEMM,
    );
    check(
        "mixed matmul of transposes",
        &[a.clone(), b.clone()],
        |t| bf16(|| t[1].t()?.matmul(&t[0].t()?)),
        GEMM,
        GEMM,
    );
    check(
        "mixed batched broadcast matmul",
        &[
            uniform(&[2, 3, 17, 40], (-1.0, 1.0), 13),
            uniform(&[3, 40, 9], (-1.0, 1.0), 14),
        ],
        |t| bf16(|| t[0].matmul(&t[1])),
        GEMM,
        GEMM,
    );
    check(
        "mixed linear",
        &[
            uniform(&[6, 40], (-1.0, 1.0), 15),
            uniform(&[13, 40], (-1.0, 1.0), 16),
            uniform(&[13], (-1.0, 1.0), 17),
        ],
        |t| bf16(|| t[0].linear(&t[1], Some(&t[2]))),
        GEMM,
        GEMM,
    );
}

#[test]
fn mixed_conv2d_matches_the_cpu() {
    let cases: &[(&str, [usize; 4], [usize; 4], Conv2dParams)] = &[
        (
            "3x3 pad 1",
            [2, 8, 6, 7],
            [8, 8, 3, 3],
            Conv2dParams::default().padding(1),
        ),
        (
            "stride 2 groups 2",
            [2, 4, 9, 9],
            [6, 2, 3, 3],
            Conv2dParams::default().stride(2).padding(1).groups(2),
        ),
        ("1x1", [3, 5, 4, 4], [7, 5, 1, 1], Conv2dParams::default()),
        (
            "7x7 stem",
            [1, 3, 12, 12],
            [4, 3, 7, 7],
            Conv2dParams::default().stride(2).padding(3),
        ),
    ];
    for (i, (name, xs, ws, p)) in cases.iter().enumerate() {
        let seed = 20 + 3 * i as u64;
        let x = uniform(xs, (-1.0, 1.0), seed);
        let w = uniform(ws, (-1.0, 1.0), seed + 1);
        let b = uniform(&[ws[0]], (-1.0, 1.0), seed + 2);
        check(
            name,
            &[x, w, b],
            |t| bf16(|| t[0].conv2d(&t[1], Some(&t[2]), *p)),
            CONV,
            CONV,
        );
    }
}

#[test]
fn mixed_products_are_f32_products_of_bf16_rounded_operands() {
    for device in all_devices() {
        for case in cases() {
            let name = format!("{} on {device:?}", case.name);
            let (a, b) = (
                case.a.to_device(device).unwrap(),
                case.b.to_device(device).unwrap(),
            );
            let out = (case.op)(&a, &b).unwrap();
            let g = uniform(out.shape(), (-1.0, 1.0), 30)
                .to_device(device)
                .unwrap();
            let mixed = bf16(|| forward_backward(&case.op, &a, &b, &g));
            for t in &mixed {
                assert_eq!(t.dtype(), DType::F32, "{name}: f32 outputs and gradients");
            }
            // The same op in f32 on explicitly rounded operands: the output,
            // and the gradients (whose output gradient is rounded too).
            let (ra, rb, rg) = (rounded(&a), rounded(&b), rounded(&g));
            let want_out = (case.op)(&ra, &rb).unwrap();
            let [_, want_ga, _] = forward_backward(&case.op, &ra, &rb, &rg);
            let [_, _, want_gb] = forward_backward(&case.op, &ra, &rb, &rg);
            // The CPU runs that computation (on contiguous copies); the
            // device sums the same exact products in another order. Either
            // tolerance is far below the effect of the rounding (> 1e-4).
            let tol = if device == Device::Cpu {
                Tol(1e-6, 1e-5)
            } else {
                CONV
            };
            for (what, got, want) in [
                ("output", &mixed[0], &want_out),
                ("grad a", &mixed[1], &want_ga),
                ("grad b", &mixed[2], &want_gb),
            ] {
                assert_close(&format!("{name} {what}"), &values(got), &values(want), tol);
            }
            // ... and not the f32 results: the bf16 path was taken.
            let plain = forward_backward(&case.op, &a, &b, &g);
            for (what, m, p) in [
                ("output", &mixed[0], &plain[0]),
                ("grad a", &mixed[1], &plain[1]),
                ("grad b", &mixed[2], &plain[2]),
            ] {
                let diff = values(m)
                    .iter()
                    .zip(values(p))
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                assert!(diff > 1e-4, "{name} {what}: mixed = f32 (max diff {diff})");
            }
        }
    }
}

#[test]
fn mixed_results_are_within_the_bf16_bound_of_f32() {
    for device in all_devices() {
        for case in cases() {
            let name = format!("{} on {device:?}", case.name);
            let (a, b) = (
                case.a.to_device(device).unwrap(),
                case.b.to_device(device).unwrap(),
            );
            let out = (case.op)(&a, &b).unwrap();
            let g = uniform(out.shape(), (-1.0, 1.0), 31)
                .to_device(device)
                .unwrap();
            let mixed = bf16(|| forward_backward(&case.op, &a, &b, &g));
            let exact = forward_backward(&case.op, &a, &b, &g);
            // Σ|a·b| for each element: the op on absolute values (the
            // gradients' sums are the gradients of Σ op(a, |b|)·|g| and
            // Σ op(|a|, b)·|g|, the op being linear in each operand).
            let (aa, ab, ag) = (a.abs().unwrap(), b.abs().unwrap(), g.abs().unwrap());
            let [sum_out, sum_ga, _] = forward_backward(&case.op, &aa, &ab, &ag);
            let [_, _, sum_gb] = forward_backward(&case.op, &aa, &ab, &ag);
            for (what, m, e, s) in [
                ("output", &mixed[0], &exact[0], &sum_out),
                ("grad a", &mixed[1], &exact[1], &sum_ga),
                ("grad b", &mixed[2], &exact[2], &sum_gb),
            ] {
                let (m, e, s) = (values(m), values(e), values(s));
                for i in 0..m.len() {
                    assert!(
                        (m[i] - e[i]).abs() <= BF16_BOUND * s[i] + 1e-7,
                        "{name} {what} element {i}: mixed {} vs f32 {} (sum |a·b| {})",
                        m[i],
                        e[i],
                        s[i]
                    );
                }
            }
        }
    }
}

#[test]
fn backward_runs_in_the_precision_of_its_forward() {
    for device in all_devices() {
        let a = uniform(&[9, 33], (-1.0, 1.0), 40)
            .to_device(device)
            .unwrap();
        let x = uniform(&[2, 3, 6, 6], (-1.0, 1.0), 41)
            .to_device(device)
            .unwrap();
        let w = uniform(&[4, 3, 3, 3], (-1.0, 1.0), 42)
            .to_device(device)
            .unwrap();
        let run = |forward: Precision, backward: Precision| -> Vec<Vec<f64>> {
            let (a, x, w) = (
                a.detach().requires_grad_(true),
                x.detach().requires_grad_(true),
                w.detach().requires_grad_(true),
            );
            let loss = autocast(forward, || -> Result<Tensor> {
                let y = x.conv2d(&w, None, Conv2dParams::default().padding(1))?;
                y.sum_all()?.add(&a.matmul(&a.t()?)?.sum_all()?)
            })
            .unwrap();
            let grads = autocast(backward, || loss.backward()).unwrap();
            [&a, &x, &w]
                .iter()
                .map(|t| values(grads.get(t).unwrap()))
                .collect()
        };
        let f32_f32 = run(Precision::F32, Precision::F32);
        let bf16_bf16 = run(Precision::Bf16, Precision::Bf16);
        assert_eq!(
            run(Precision::F32, Precision::Bf16),
            f32_f32,
            "{device:?}: an f32 forward's backward stays f32 inside a bf16 scope"
        );
        assert_eq!(
            run(Precision::Bf16, Precision::F32),
            bf16_bf16,
            "{device:?}: a bf16 forward's backward stays bf16 outside the scope"
        );
        assert_ne!(f32_f32, bf16_bf16, "{device:?}: the precisions differ");
    }
}

/// The parameters of [`small_net`]: conv 3→8 (3×3, no bias: batch norm
/// follows), batch-norm scale and shift, conv 8→16 (3×3), linear 256→10
/// with bias.
fn net_parameters(device: Device) -> Vec<Tensor> {
    [
        (vec![8, 3, 3, 3], 0.3, 50),
        (vec![8], 0.5, 52),
        (vec![8], 0.1, 53),
        (vec![16, 8, 3, 3], 0.15, 54),
        (vec![10, 256], 0.06, 55),
        (vec![10], 0.1, 56),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (shape, r, seed))| {
        let t = uniform(&shape, (-r, r), seed);
        // The batch-norm scale around 1.
        let t = if i == 1 {
            t.add_scalar(1.0).unwrap()
        } else {
            t
        };
        t.to_device(device).unwrap().requires_grad_(true)
    })
    .collect()
}

/// conv → batch norm → ReLU → max-pool 2 → conv → ReLU → linear, then the
/// mean cross-entropy of `x: [8, 3, 8, 8]` against `targets`.
fn small_net(p: &[Tensor], x: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let same = Conv2dParams::default().padding(1);
    let h = x.conv2d(&p[0], None, same)?;
    let h = h.batch_norm(
        None,
        None,
        Some(&p[1]),
        Some(&p[2]),
        BatchNormOptions::default(),
    )?;
    let h = h.relu()?.max_pool2d(Pool2dParams::new(2))?;
    let h = h.conv2d(&p[3], None, same)?.relu()?;
    let logits = h.flatten(1, -1)?.linear(&p[4], Some(&p[5]))?;
    cross_entropy(&logits, targets, &CrossEntropyOptions::default())
}

/// One SGD step of [`small_net`] in `precision` on `device`: the loss
/// before and after the step, and the gradients of the step.
fn training_step(device: Device, precision: Precision) -> (f64, f64, Vec<Tensor>) {
    use ferrite::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
    let params = net_parameters(device);
    let x = uniform(&[8, 3, 8, 8], (-1.0, 1.0), 57)
        .to_device(device)
        .unwrap();
    let targets = Tensor::from_vec((0..8).map(|i| (i * 3) % 10).collect::<Vec<i64>>(), &[8])
        .unwrap()
        .to_device(device)
        .unwrap();
    autocast(precision, || {
        let mut opt = Sgd::new(
            vec![ParamGroup::new(params.clone(), 0.1, 0.0)],
            SgdConfig::default(),
        )
        .unwrap();
        let loss0 = small_net(&params, &x, &targets).unwrap();
        let grads = loss0.backward().unwrap();
        let g: Vec<Tensor> = params
            .iter()
            .map(|p| grads.get(p).unwrap().clone())
            .collect();
        opt.step(&grads).unwrap();
        let loss1 = small_net(&params, &x, &targets).unwrap();
        for p in &params {
            assert_eq!(p.dtype(), DType::F32, "master weights stay f32");
        }
        let scalar = |t: &Tensor| {
            assert_eq!(t.dtype(), DType::F32, "the loss is f32");
            values(t)[0]
        };
        (scalar(&loss0), scalar(&loss1), g)
    })
}

/// `‖a − b‖ / ‖b‖`.
fn relative_distance(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (values(a), values(b));
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

#[test]
fn a_bf16_training_step_stays_within_tolerance_of_f32() {
    let cpu_mixed = training_step(Device::Cpu, Precision::Bf16);
    for device in all_devices() {
        let (m0, m1, mg) = training_step(device, Precision::Bf16);
        let (f0, f1, fg) = training_step(device, Precision::F32);
        eprintln!(
            "{device:?}: loss f32 {f0:.6} → {f1:.6}, bf16 {m0:.6} → {m1:.6}, \
             relative {:.1e} / {:.1e}",
            (m0 - f0).abs() / f0,
            (m1 - f1).abs() / f1
        );
        for (what, m, f) in [("before", m0, f0), ("after", m1, f1)] {
            assert!(
                (m - f).abs() <= 1e-2 * f.abs(),
                "{device:?}: loss {what} the step: bf16 {m} vs f32 {f}"
            );
        }
        assert_ne!(m0, f0, "{device:?}: the bf16 path was taken");
        assert!(m1 < m0 && f1 < f0, "{device:?}: the step lowers the loss");
        for (i, (m, f)) in mg.iter().zip(&fg).enumerate() {
            assert_eq!(m.dtype(), DType::F32, "parameter {i}: f32 gradient");
            let d = relative_distance(m, f);
            eprintln!("  gradient {i}: relative distance {d:.1e}");
            assert!(d <= 0.15, "{device:?}: gradient {i} is {d} away from f32");
        }
        // The device's mixed step is the CPU's up to f32 sums.
        if device != Device::Cpu {
            for (what, got, want) in [("before", m0, cpu_mixed.0), ("after", m1, cpu_mixed.1)] {
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs(),
                    "{device:?}: bf16 loss {what} the step {got} vs the CPU's {want}"
                );
            }
        }
    }
}

#[test]
fn other_dtypes_ignore_the_scope() {
    let a = uniform(&[5, 12], (-1.0, 1.0), 60);
    let b = uniform(&[12, 7], (-1.0, 1.0), 61);
    // f64 on the CPU (the devices have no f64 GEMM).
    let (a64, b64) = (
        a.to_dtype(DType::F64).unwrap(),
        b.to_dtype(DType::F64).unwrap(),
    );
    let want = a64.matmul(&b64).unwrap();
    let got = bf16(|| a64.matmul(&b64)).unwrap();
    assert_eq!((got.dtype(), values(&got)), (DType::F64, values(&want)));
    // bf16 operands give a bf16 product, as outside the scope.
    for device in all_devices() {
        let (ah, bh) = (
            a.to_dtype(DType::BF16).unwrap().to_device(device).unwrap(),
            b.to_dtype(DType::BF16).unwrap().to_device(device).unwrap(),
        );
        let want = ah.matmul(&bh).unwrap();
        let got = bf16(|| ah.matmul(&bh)).unwrap();
        assert_eq!(got.dtype(), DType::BF16, "{device:?}");
        assert_eq!(values(&got), values(&want), "{device:?}");
    }
}

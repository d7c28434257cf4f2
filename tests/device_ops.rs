//! Every op on every device, compared with the CPU in the same process
//! (see `tests/device/mod.rs`). In CI this runs on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_ops`.

// `&[x.clone()]` reads better than `std::slice::from_ref(&x)` in a table of cases.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod device;

use device::{check, devices, scale, uniform, CLOSE, EXACT};
use ferrite::ops::{BinaryOp, CmpOp, UnaryOp};
use ferrite::KeepDim;
use ferrite::{DType, Device, Error, Tensor};

#[test]
fn unary_ops_forward_and_backward() {
    let n = 1000 * scale();
    let x = uniform(&[n], (-4.0, 4.0), 1);
    let pos = uniform(&[n], (0.1, 4.0), 2);
    let exact = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Relu,
        UnaryOp::Step,
        UnaryOp::Clamp(-1.0, 0.5),
        UnaryOp::InRange(-1.0, 0.5),
        UnaryOp::FiniteOrZero,
    ];
    for op in exact {
        check(op.name(), &[x.clone()], |t| t[0].unary(op), EXACT, EXACT);
    }
    let approx = [
        UnaryOp::Exp,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Gelu,
        UnaryOp::Softplus,
        UnaryOp::Affine(0.5, -2.0),
    ];
    for op in approx {
        check(op.name(), &[x.clone()], |t| t[0].unary(op), CLOSE, CLOSE);
    }
    for op in [
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Powf(1.5),
    ] {
        check(op.name(), &[pos.clone()], |t| t[0].unary(op), CLOSE, CLOSE);
    }
}

#[test]
fn binary_ops_broadcast_over_views() {
    let a = uniform(&[3, 1, 5], (-2.0, 2.0), 3);
    let b = uniform(&[4, 5], (0.5, 2.0), 4);
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
    ] {
        check(
            op.name(),
            &[a.clone(), b.clone()],
            |t| t[0].binary(op, &t[1]),
            EXACT,
            CLOSE,
        );
    }
    let base = uniform(&[2, 3], (0.5, 2.0), 5);
    check(
        "pow",
        &[base.clone(), base.clone()],
        |t| t[0].pow(&t[1]),
        CLOSE,
        CLOSE,
    );
    // A permuted, sliced operand.
    let big = uniform(&[6, 4, 5], (-1.0, 1.0), 6);
    check(
        "add of a permuted slice",
        &[big, uniform(&[5, 1], (-1.0, 1.0), 7)],
        |t| {
            t[0].narrow(0, 1, 3)?
                .permute(&[2, 0, 1])?
                .add(&t[1].unsqueeze(2)?)
        },
        EXACT,
        EXACT,
    );
}

#[test]
fn comparisons_where_and_masked_fill() {
    let a = uniform(&[4, 6], (-1.0, 1.0), 8);
    let b = uniform(&[6], (-1.0, 1.0), 9);
    for op in [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ] {
        check(
            "compare",
            &[a.clone(), b.clone()],
            |t| t[0].compare(op, &t[1]),
            EXACT,
            EXACT,
        );
    }
    check(
        "where",
        &[a.clone(), b.clone()],
        |t| t[0].gt(&t[1])?.where_cond(&t[0], &t[1]),
        EXACT,
        CLOSE,
    );
    check(
        "masked_fill",
        &[a.clone()],
        |t| t[0].masked_fill(&t[0].compare_scalar(CmpOp::Lt, 0.0)?, -7.0),
        EXACT,
        EXACT,
    );
}

#[test]
fn casts_and_copies() {
    let x = uniform(&[5, 7], (-300.0, 300.0), 10);
    check(
        "to bf16 and back",
        &[x.clone()],
        |t| t[0].to_dtype(DType::BF16)?.to_dtype(DType::F32),
        EXACT,
        EXACT,
    );
    check(
        "to f16 and back",
        &[x.clone()],
        |t| t[0].to_dtype(DType::F16)?.to_dtype(DType::F32),
        EXACT,
        EXACT,
    );
    check(
        "contiguous of a transpose",
        &[x.clone()],
        |t| t[0].t()?.contiguous(),
        EXACT,
        EXACT,
    );
    check(
        "zero-size",
        &[uniform(&[0, 3], (0.0, 1.0), 11)],
        |t| t[0].exp(),
        EXACT,
        EXACT,
    );
}

#[test]
fn reductions_over_any_dims() {
    let x = uniform(&[4, 5, 6], (-1.0, 1.0), 12);
    for dims in [vec![0], vec![1], vec![2], vec![0, 2], vec![0, 1, 2]] {
        check(
            "sum",
            &[x.clone()],
            |t| t[0].sum(&dims, KeepDim::No),
            CLOSE,
            EXACT,
        );
        check(
            "mean",
            &[x.clone()],
            |t| t[0].mean(&dims, KeepDim::Yes),
            CLOSE,
            CLOSE,
        );
        check(
            "max",
            &[x.clone()],
            |t| t[0].max(&dims, KeepDim::No),
            EXACT,
            EXACT,
        );
        check(
            "min",
            &[x.clone()],
            |t| t[0].min(&dims, KeepDim::No),
            EXACT,
            EXACT,
        );
    }
    // Many outputs: the strided kernel.
    let wide = uniform(&[3, 5000], (-1.0, 1.0), 13);
    check(
        "sum over dim 0 of [3, 5000]",
        &[wide],
        |t| t[0].sum(&[0], KeepDim::No),
        CLOSE,
        EXACT,
    );
    // One output over many elements: the two-stage grid reduction.
    let long = uniform(&[10_000 * scale() + 17], (-1.0, 1.0), 14);
    check(
        "full sum",
        &[long.clone()],
        |t| t[0].sum_all(),
        Tol(1e-4, 1e-5),
        EXACT,
    );
    check(
        "full mean",
        &[long],
        |t| t[0].mean_all(),
        Tol(1e-6, 1e-5),
        CLOSE,
    );
}

use device::Tol;

#[test]
fn argmax_argmin_and_softmax() {
    let x = uniform(&[6, 9], (-3.0, 3.0), 15);
    check(
        "argmax",
        &[x.clone()],
        |t| t[0].argmax(1, KeepDim::No),
        EXACT,
        EXACT,
    );
    check(
        "argmin",
        &[x.clone()],
        |t| t[0].argmin(0, KeepDim::Yes),
        EXACT,
        EXACT,
    );
    for dim in [0, 1] {
        check("softmax", &[x.clone()], |t| t[0].softmax(dim), CLOSE, CLOSE);
        check(
            "log_softmax",
            &[x.clone()],
            |t| t[0].log_softmax(dim),
            CLOSE,
            CLOSE,
        );
    }
    let extreme =
        Tensor::from_vec(vec![100.0f32, -100.0, 0.0, 100.0, 99.0, -100.0], &[2, 3]).unwrap();
    check(
        "log_softmax at ±100",
        &[extreme],
        |t| t[0].log_softmax(1),
        CLOSE,
        CLOSE,
    );
}

#[test]
fn matmul_with_transposes_and_broadcast_batches() {
    let s = scale();
    let a = uniform(&[37 * s, 29], (-1.0, 1.0), 16);
    let b = uniform(&[29, 41], (-1.0, 1.0), 17);
    let gemm_tol = Tol(1e-5, 1e-4);
    check(
        "matmul",
        &[a.clone(), b.clone()],
        |t| t[0].matmul(&t[1]),
        gemm_tol,
        gemm_tol,
    );
    check(
        "matmul of transposes",
        &[a.clone(), b.clone()],
        |t| t[1].t()?.matmul(&t[0].t()?),
        gemm_tol,
        gemm_tol,
    );
    // More column and row tiles (128 wide) than the emulator's clamped
    // grid has blocks: every grid dimension must stride.
    let tall = uniform(&[520, 9], (-1.0, 1.0), 20);
    let wide = uniform(&[9, 1000], (-1.0, 1.0), 21);
    check(
        "matmul over many tiles",
        &[tall, wide],
        |t| t[0].matmul(&t[1]),
        gemm_tol,
        gemm_tol,
    );
    let batched = uniform(&[2, 3, 5, 7], (-1.0, 1.0), 18);
    let shared = uniform(&[3, 7, 4], (-1.0, 1.0), 19);
    check(
        "batched broadcast matmul",
        &[batched, shared],
        |t| t[0].matmul(&t[1]),
        gemm_tol,
        gemm_tol,
    );
    check(
        "empty inner dim",
        &[
            uniform(&[3, 0], (0.0, 1.0), 20),
            uniform(&[0, 2], (0.0, 1.0), 21),
        ],
        |t| t[0].matmul(&t[1]),
        EXACT,
        EXACT,
    );
}

#[test]
fn moving_between_devices_is_explicit() {
    let x = uniform(&[3, 4], (-1.0, 1.0), 22);
    assert!(x.to_device(Device::Cpu).unwrap().same_storage(&x));
    for device in device::devices() {
        let d = x.to_device(device).unwrap();
        assert_eq!(d.device(), device);
        assert_eq!(
            d.to_vec::<f32>().unwrap(),
            x.to_vec::<f32>().unwrap(),
            "round trip"
        );
        // Printing downloads, and prints what the CPU prints.
        assert_eq!(format!("{d}"), format!("{x}"));
        // A contiguous view at an offset downloads just its elements.
        assert_eq!(
            d.narrow(0, 1, 2).unwrap().to_vec::<f32>().unwrap(),
            x.narrow(0, 1, 2).unwrap().to_vec::<f32>().unwrap()
        );
        // Mixing devices is an error, never a silent copy.
        let err = d.add(&x).unwrap_err();
        assert!(matches!(err, Error::DeviceMismatch { .. }), "{err:?}");
        // A view's round trip keeps its values.
        let v = d.t().unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(
            v.to_vec::<f32>().unwrap(),
            x.t().unwrap().to_vec::<f32>().unwrap()
        );
    }
}

#[test]
fn in_place_updates_on_the_device() {
    let x = uniform(&[4, 5], (-1.0, 1.0), 23);
    let y = uniform(&[5, 4], (-1.0, 1.0), 24);
    for device in device::devices() {
        let (xd, yd) = (x.to_device(device).unwrap(), y.to_device(device).unwrap());
        let before = xd.version();
        xd.assign(&yd.t().unwrap()).unwrap();
        assert!(xd.version() > before, "assign counts as an in-place write");
        assert_eq!(
            xd.to_vec::<f32>().unwrap(),
            y.t().unwrap().to_vec::<f32>().unwrap()
        );
        xd.add_scaled_(&yd.t().unwrap(), -0.5).unwrap();
        let want = y
            .t()
            .unwrap()
            .add(&y.t().unwrap().mul_scalar(-0.5).unwrap())
            .unwrap();
        assert_eq!(xd.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    }
}

#[test]
fn half_precision_matmul_on_tensor_cores() {
    let a = uniform(&[33, 40], (-1.0, 1.0), 25);
    let b = uniform(&[40, 17], (-1.0, 1.0), 26);
    for dtype in [DType::BF16, DType::F16] {
        check(
            "half matmul",
            &[a.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap()],
            |t| t[0].matmul(&t[1]),
            // Both round the f32-accumulated product to the half type once;
            // sums in a different order may land one half-ulp apart.
            Tol(2e-2, 1e-2),
            Tol(2e-2, 1e-2),
        );
    }
}

#[test]
fn composite_ops_run_on_the_device() {
    let x = uniform(&[4, 6], (-3.0, 3.0), 27);
    check(
        "var",
        &[x.clone()],
        |t| t[0].var(&[1], 1, KeepDim::No),
        CLOSE,
        CLOSE,
    );
    check(
        "logsumexp",
        &[x.clone()],
        |t| t[0].logsumexp(&[0], KeepDim::Yes),
        CLOSE,
        CLOSE,
    );
    let w = uniform(&[5, 6], (-1.0, 1.0), 28);
    let b = uniform(&[5], (-1.0, 1.0), 29);
    let gemm_tol = Tol(1e-5, 1e-4);
    check(
        "linear",
        &[x.clone(), w, b],
        |t| t[0].linear(&t[1], Some(&t[2])),
        gemm_tol,
        gemm_tol,
    );
    check(
        "stack",
        &[x.clone(), x.clone()],
        |t| Tensor::stack(&[t[0].clone(), t[1].exp()?], 1),
        CLOSE,
        CLOSE,
    );
    let targets = Tensor::from_vec(vec![0i64, 5, 2, 2], &[4]).unwrap();
    let weight = uniform(&[6], (0.5, 2.0), 30);
    for smoothing in [0.0, 0.1] {
        check(
            "cross_entropy",
            &[x.clone(), targets.clone(), weight.clone()],
            |t| {
                let opts = ferrite::loss::CrossEntropyOptions {
                    weight: Some(t[2].detach()),
                    label_smoothing: smoothing,
                    ignore_index: Some(5),
                    ..Default::default()
                };
                ferrite::loss::cross_entropy(&t[0], &t[1], &opts)
            },
            CLOSE,
            CLOSE,
        );
    }
}

#[test]
fn relu_backward_follows_the_cpu_rule_for_signed_zeros_and_nan() {
    let x = Tensor::from_vec(vec![-1.0f32, -0.0, 0.0, 2.0, f32::NAN, 3.0, -2.0], &[7]).unwrap();
    let g = Tensor::from_vec(vec![1.0f32, 1.0, -0.0, f32::NAN, 5.0, -0.0, f32::NAN], &[7]).unwrap();
    let grad_on = |device: Device| -> Vec<u32> {
        let xd = x.to_device(device).unwrap().requires_grad_(true);
        let store = xd
            .relu()
            .unwrap()
            .backward_with_grad(&g.to_device(device).unwrap())
            .unwrap();
        let gx = store.get(&xd).unwrap().to_vec::<f32>().unwrap();
        gx.iter().map(|v| v.to_bits()).collect()
    };
    let want = grad_on(Device::Cpu);
    for device in device::devices() {
        assert_eq!(grad_on(device), want, "relu gradient bits on {device:?}");
    }
}

#[test]
fn comparison_masks_sum_into_exact_counts_on_the_device() {
    let x = uniform(&[37, 29], (-1.0, 1.0), 40);
    let mask = x.gt(&Tensor::scalar(0.25f32)).unwrap();
    let want_rows = mask
        .sum(&[1], KeepDim::No)
        .unwrap()
        .to_vec::<i64>()
        .unwrap();
    let want_all = mask.sum_all().unwrap().to_vec::<i64>().unwrap();
    for device in devices() {
        let m = mask.to_device(device).unwrap();
        let rows = m.sum(&[1], KeepDim::No).unwrap();
        assert_eq!((rows.dtype(), rows.device()), (DType::I64, device));
        assert_eq!(rows.to_vec::<i64>().unwrap(), want_rows);
        assert_eq!(m.sum_all().unwrap().to_vec::<i64>().unwrap(), want_all);
        // No exact path for i64 on the device: an error, not a rounded sum.
        let counts = rows.sum_all();
        assert!(counts.is_err(), "{counts:?}");
    }
}

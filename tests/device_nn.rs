//! The neural-network op families on every device, compared with the CPU
//! in the same process (see `tests/device/mod.rs`): pooling, batch norm,
//! dropout and the index ops. In CI this runs on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_nn`.

// `&[x.clone()]` reads better than `std::slice::from_ref(&x)` in a table of cases.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod device;

use device::{check, devices, uniform, Tol, EXACT};
use ferrite::ops::{BatchNormOptions, Mode, PadCount, Pool2dParams};
use ferrite::{DType, Device, Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Batch-norm tolerance: the device gets eps and momentum as f32 and
/// combines the per-channel coefficients in f32 (the CPU in f64).
const BN: Tol = Tol(1e-5, 1e-4);

/// Values in [-2, 2) on a grid of 0.25, so that pooling windows hold ties,
/// with a few NaNs.
fn ties_and_nans(shape: &[usize], seed: u64) -> Tensor {
    let x = uniform(shape, (-2.0, 2.0), seed);
    let mut v: Vec<f32> = x
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|&a| (a * 4.0).round() / 4.0)
        .collect();
    for i in (5..v.len()).step_by(37) {
        v[i] = f32::NAN;
    }
    Tensor::from_vec(v, shape).unwrap()
}

fn indices(values: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape).unwrap()
}

/// The error `f` gives on the CPU, which every device must give too.
fn same_error_everywhere(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let want = format!("{:?}", f(inputs).expect_err(name));
    for device in devices() {
        let xs: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.to_device(device).unwrap())
            .collect();
        let got = format!("{:?}", f(&xs).expect_err(name));
        assert_eq!(got, want, "{name} on {device:?}");
    }
}

// ---------------------------------------------------------------- pooling

fn pool_cases() -> Vec<(&'static str, Pool2dParams)> {
    vec![
        ("2x2", Pool2dParams::new(2)),
        ("3x3 s2 p1", Pool2dParams::new(3).stride(2).padding(1)),
        ("2x2 ceil", Pool2dParams::new(2).ceil_mode(true)),
        (
            "3x3 s2 p1 ceil",
            Pool2dParams::new(3).stride(2).padding(1).ceil_mode(true),
        ),
        (
            "3x2 s(2,1) p(1,0) ceil",
            Pool2dParams {
                kernel: (3, 2),
                stride: (2, 1),
                padding: (1, 0),
                ceil_mode: true,
            },
        ),
        ("overlapping 3x3 s1", Pool2dParams::new(3).stride(1)),
    ]
}

#[test]
fn max_pool_matches_the_cpu_bit_for_bit_with_ties_and_nan() {
    let x = ties_and_nans(&[2, 3, 7, 9], 1);
    for (name, p) in pool_cases() {
        check(
            &format!("max_pool2d {name}"),
            &[x.clone()],
            |t| t[0].max_pool2d(p),
            EXACT,
            EXACT,
        );
        check(
            &format!("max_pool2d indices {name}"),
            &[x.clone()],
            |t| Ok(t[0].max_pool2d_with_indices(p)?.1),
            EXACT,
            EXACT,
        );
        // A non-contiguous view: the spatial dims transposed.
        check(
            &format!("max_pool2d of a transposed view {name}"),
            &[x.clone()],
            |t| t[0].permute(&[0, 1, 3, 2])?.max_pool2d(p),
            EXACT,
            EXACT,
        );
    }
}

#[test]
fn avg_pools_match_the_cpu() {
    let x = uniform(&[2, 3, 7, 9], (-2.0, 2.0), 2);
    for (name, p) in pool_cases() {
        for include in [PadCount::Exclude, PadCount::Include] {
            check(
                &format!("avg_pool2d {name} {include:?}"),
                &[x.clone()],
                |t| t[0].avg_pool2d(p, include),
                EXACT,
                EXACT,
            );
        }
        check(
            &format!("avg_pool2d of a sliced view {name}"),
            &[x.clone()],
            |t| t[0].narrow(3, 1, 7)?.avg_pool2d(p, PadCount::Include),
            EXACT,
            EXACT,
        );
    }
    for out in [(1, 1), (3, 5), (7, 9), (10, 12)] {
        check(
            &format!("adaptive_avg_pool2d {out:?}"),
            &[x.clone()],
            |t| t[0].adaptive_avg_pool2d(out),
            EXACT,
            EXACT,
        );
    }
    check(
        "adaptive_avg_pool2d of a transposed view",
        &[x.clone()],
        |t| t[0].permute(&[0, 1, 3, 2])?.adaptive_avg_pool2d((4, 3)),
        EXACT,
        EXACT,
    );
    let empty = uniform(&[0, 3, 5, 5], (-1.0, 1.0), 3);
    check(
        "pools of an empty batch",
        &[empty],
        |t| {
            t[0].max_pool2d(Pool2dParams::new(2))?
                .add(&t[0].avg_pool2d(Pool2dParams::new(2), PadCount::Exclude)?)
        },
        EXACT,
        EXACT,
    );
}

#[test]
fn pools_on_the_device_are_f32_only() {
    let x = uniform(&[1, 1, 4, 4], (-1.0, 1.0), 4)
        .to_dtype(DType::F64)
        .unwrap();
    for device in devices() {
        let d = x.to_device(device).unwrap();
        for err in [
            d.max_pool2d(Pool2dParams::new(2)).unwrap_err(),
            d.avg_pool2d(Pool2dParams::new(2), PadCount::Exclude)
                .unwrap_err(),
            d.adaptive_avg_pool2d((2, 2)).unwrap_err(),
        ] {
            assert!(matches!(err, Error::UnsupportedDType { .. }), "{err:?}");
        }
    }
}

// ---------------------------------------------------------------- batch norm

#[test]
fn batch_norm_forward_and_backward_match_the_cpu() {
    let x = uniform(&[4, 3, 5, 6], (-2.0, 3.0), 5);
    let w = uniform(&[3], (0.5, 1.5), 6);
    let b = uniform(&[3], (-0.5, 0.5), 7);
    let rm = uniform(&[3], (-0.5, 0.5), 8);
    let rv = uniform(&[3], (0.5, 2.0), 9);
    let train = BatchNormOptions::default();
    let eval = BatchNormOptions {
        training: false,
        ..train
    };
    check(
        "batch_norm train, affine",
        &[x.clone(), w.clone(), b.clone()],
        |t| t[0].batch_norm(None, None, Some(&t[1]), Some(&t[2]), train),
        BN,
        BN,
    );
    check(
        "batch_norm train, no affine",
        &[x.clone()],
        |t| t[0].batch_norm(None, None, None, None, train),
        BN,
        BN,
    );
    check(
        "batch_norm train of a permuted view",
        &[x.clone(), w.clone(), b.clone()],
        |t| {
            t[0].permute(&[0, 1, 3, 2])?
                .batch_norm(None, None, Some(&t[1]), Some(&t[2]), train)
        },
        BN,
        BN,
    );
    check(
        "batch_norm train, rank 2",
        &[uniform(&[8, 5], (-1.0, 1.0), 10)],
        |t| t[0].batch_norm(None, None, None, None, train),
        BN,
        BN,
    );
    check(
        "batch_norm eval",
        &[x.clone(), w.clone(), b.clone(), rm.clone(), rv.clone()],
        |t| {
            let (rm, rv) = (t[3].detach(), t[4].detach());
            t[0].batch_norm(Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), eval)
        },
        BN,
        BN,
    );
    check(
        "batch_norm eval, no affine",
        &[x.clone(), rm.clone(), rv.clone()],
        |t| {
            let (rm, rv) = (t[1].detach(), t[2].detach());
            t[0].batch_norm(Some(&rm), Some(&rv), None, None, eval)
        },
        BN,
        BN,
    );
}

/// Two training steps with running statistics on `device`: each step's
/// output and gradients (input, weight, bias), then the running mean and
/// variance.
fn two_training_steps(device: Device) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let opts = BatchNormOptions {
        momentum: 0.3,
        ..BatchNormOptions::default()
    };
    let on = |t: Tensor| t.to_device(device).unwrap();
    let w = on(uniform(&[3], (0.5, 1.5), 11)).requires_grad_(true);
    let b = on(uniform(&[3], (-0.5, 0.5), 12)).requires_grad_(true);
    let rm = on(Tensor::zeros(&[3], DType::F32).unwrap());
    let rv = on(Tensor::ones(&[3], DType::F32).unwrap());
    let mut seen = Vec::new();
    for step in 0..2 {
        let x =
            on(uniform(&[4, 3, 5, 2], (-1.0, 2.0 + step as f64), 13 + step)).requires_grad_(true);
        let version = rm.version();
        let y = x
            .batch_norm(Some(&rm), Some(&rv), Some(&w), Some(&b), opts)
            .unwrap();
        assert!(
            rm.version() > version,
            "the running mean is updated in place"
        );
        assert_eq!(
            rm.device(),
            device,
            "running statistics stay on their device"
        );
        let weights = on(uniform(y.shape(), (-1.0, 1.0), 99));
        let grads = y
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        seen.push(y.to_f64_vec().unwrap());
        for t in [&x, &w, &b] {
            let g = grads.get(t).expect("a gradient");
            assert_eq!(g.device(), device);
            seen.push(g.to_f64_vec().unwrap());
        }
    }
    (seen, rm.to_f64_vec().unwrap(), rv.to_f64_vec().unwrap())
}

#[test]
fn batch_norm_running_statistics_follow_the_cpu_over_two_steps() {
    let (want, want_rm, want_rv) = two_training_steps(Device::Cpu);
    for device in devices() {
        let (got, rm, rv) = two_training_steps(device);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            device::assert_close(&format!("step value {i}"), g, w, BN);
        }
        device::assert_close("running mean", &rm, &want_rm, BN);
        device::assert_close("running var", &rv, &want_rv, BN);
    }
}

// ---------------------------------------------------------------- dropout

#[test]
fn dropout_draws_the_cpu_mask() {
    let x = uniform(&[1000], (-2.0, 2.0), 14);
    let seeded = || StdRng::seed_from_u64(15);
    for p in [0.0, 0.5, 0.3, 1.0] {
        check(
            &format!("dropout p={p}"),
            &[x.clone()],
            |t| t[0].dropout(p, Mode::Train, &mut seeded()),
            EXACT,
            EXACT,
        );
    }
    check(
        "dropout in eval mode",
        &[x.clone()],
        |t| t[0].dropout(0.5, Mode::Eval, &mut seeded()),
        EXACT,
        EXACT,
    );
    check(
        "dropout of an f16 view",
        &[x.clone()],
        |t| {
            t[0].to_dtype(DType::F16)?
                .reshape(&[40, 25])?
                .t()?
                .dropout(0.25, Mode::Train, &mut seeded())?
                .to_dtype(DType::F32)
        },
        EXACT,
        EXACT,
    );
}

#[test]
fn dropout_statistics_on_the_device() {
    let n = 20_000;
    let ones = Tensor::ones(&[n], DType::F32).unwrap();
    for device in devices() {
        let x = ones.to_device(device).unwrap();
        let y = x
            .dropout(0.5, Mode::Train, &mut StdRng::seed_from_u64(16))
            .unwrap();
        assert_eq!(y.device(), device);
        let v = y.to_vec::<f32>().unwrap();
        assert!(
            v.iter().all(|&a| a == 0.0 || a == 2.0),
            "kept values scale by 2"
        );
        let kept = v.iter().filter(|&&a| a == 2.0).count() as f64 / n as f64;
        assert!((kept - 0.5).abs() < 0.02, "kept fraction {kept}");
        let same = x
            .dropout(0.0, Mode::Train, &mut StdRng::seed_from_u64(16))
            .unwrap();
        assert!(same.same_storage(&x), "p = 0 is the identity");
    }
}

// ---------------------------------------------------------------- index ops

#[test]
fn index_select_and_index_add_match_the_cpu() {
    let x = uniform(&[4, 5, 6], (-2.0, 2.0), 17);
    for (d, idx) in [
        (0, indices(&[3, 0, 3, 1, 3], &[5])),
        (1, indices(&[4, 4, 0, 2], &[4])),
        (2, indices(&[5, 1, 1, 0, 2, 5, 3], &[7])),
        (1, indices(&[], &[0])),
    ] {
        let n = idx.numel();
        check(
            &format!("index_select dim {d}, {n} indices"),
            &[x.clone(), idx.clone()],
            |t| t[0].index_select(d, &t[1]),
            EXACT,
            EXACT,
        );
        check(
            &format!("index_select of a permuted view, dim {d}"),
            &[x.clone(), idx.clone()],
            |t| {
                t[0].permute(&[1, 0, 2])?
                    .contiguous()?
                    .permute(&[1, 0, 2])?
                    .index_select(d, &t[1])
            },
            EXACT,
            EXACT,
        );
        let mut src_shape = x.shape().to_vec();
        src_shape[d as usize] = n;
        let src = uniform(&src_shape, (-1.0, 1.0), 18);
        check(
            &format!("index_add dim {d}, {n} indices"),
            &[x.clone(), idx.clone(), src],
            |t| t[0].index_add(d, &t[1], &t[2]),
            EXACT,
            EXACT,
        );
    }
    // Every copy dtype selects; bf16 accumulates through f32 as on the CPU
    // (compared in f32: the harness reduces f32 outputs).
    let ints = indices(&(0..24).collect::<Vec<_>>(), &[4, 6]);
    check(
        "index_select of i64",
        &[ints, indices(&[2, 0, 2], &[3])],
        |t| t[0].index_select(0, &t[1]),
        EXACT,
        EXACT,
    );
    let idx = indices(&[1, 1, 0], &[3]);
    check(
        "index_add of bf16",
        &[x.clone(), idx, uniform(&[4, 3, 6], (-1.0, 1.0), 19)],
        |t| {
            t[0].to_dtype(DType::BF16)?
                .index_add(1, &t[1], &t[2].to_dtype(DType::BF16)?)?
                .to_dtype(DType::F32)
        },
        EXACT,
        EXACT,
    );
}

#[test]
fn gather_and_scatter_add_match_the_cpu() {
    let x = uniform(&[4, 5, 6], (-2.0, 2.0), 20);
    // Index shapes no larger than the input in the other dims, with repeats.
    let cases = [
        (0, vec![3, 2, 6]),
        (1, vec![4, 7, 6]),
        (2, vec![2, 5, 9]),
        (-1, vec![4, 3, 1]),
        (1, vec![4, 0, 6]),
    ];
    for (d, shape) in cases {
        let size = x.shape()[if d < 0 { 2 } else { d as usize }] as i64;
        let n: usize = shape.iter().product();
        let values: Vec<i64> = (0..n as i64).map(|i| (i * 7 + 3) % size).collect();
        let idx = indices(&values, &shape);
        check(
            &format!("gather dim {d}, index {shape:?}"),
            &[x.clone(), idx.clone()],
            |t| t[0].gather(d, &t[1]),
            EXACT,
            EXACT,
        );
        check(
            &format!("gather of a transposed view, dim {d}"),
            &[x.clone(), idx.clone()],
            |t| {
                t[0].permute(&[2, 1, 0])?
                    .contiguous()?
                    .permute(&[2, 1, 0])?
                    .gather(d, &t[1])
            },
            EXACT,
            EXACT,
        );
        check(
            &format!("scatter_add dim {d}, index {shape:?}"),
            &[x.clone(), idx.clone(), uniform(&shape, (-1.0, 1.0), 21)],
            |t| t[0].scatter_add(d, &t[1], &t[2]),
            EXACT,
            EXACT,
        );
    }
}

#[test]
fn index_ops_report_out_of_range_indices_like_the_cpu() {
    let x = uniform(&[3, 4], (-1.0, 1.0), 22);
    for bad in [4, -1] {
        let idx = indices(&[0, bad, 2, 7], &[4]);
        same_error_everywhere("index_select", &[x.clone(), idx.clone()], |t| {
            t[0].index_select(1, &t[1])
        });
        same_error_everywhere(
            "index_add",
            &[x.clone(), idx.clone(), uniform(&[3, 4], (-1.0, 1.0), 23)],
            |t| t[0].index_add(1, &t[1], &t[2]),
        );
        let idx2 = indices(&[0, 1, 3, 2, bad, 0], &[2, 3]);
        same_error_everywhere("gather", &[x.clone(), idx2.clone()], |t| {
            t[0].gather(1, &t[1])
        });
        same_error_everywhere(
            "scatter_add",
            &[x.clone(), idx2.clone(), uniform(&[2, 3], (-1.0, 1.0), 24)],
            |t| t[0].scatter_add(1, &t[1], &t[2]),
        );
    }
    let err = x.index_select(0, &indices(&[3], &[1])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::IndexOutOfRange {
                index: 3,
                size: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn index_ops_on_the_device_reject_f64() {
    let x = uniform(&[3, 4], (-1.0, 1.0), 25)
        .to_dtype(DType::F64)
        .unwrap();
    let idx = indices(&[0, 1], &[2]);
    for device in devices() {
        let (x, idx) = (x.to_device(device).unwrap(), idx.to_device(device).unwrap());
        let err = x.index_select(0, &idx).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { .. }), "{err:?}");
        let err = x.gather(0, &idx.reshape(&[2, 1]).unwrap()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { .. }), "{err:?}");
    }
}

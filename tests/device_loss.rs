//! The sigmoid losses, PLM and the fused optimizer steps on every device,
//! compared with the CPU in the same process (see `tests/device/mod.rs`).
//! In CI this runs on the emulated GPU:
//! `FERRITE_CUDA_EMULATE=1 cargo test --release --features cuda-emulator --test device_loss`.
//!
//! Tolerances:
//! - per-element loss values and gradients: bit for bit on the emulated GPU
//!   (the kernels do the CPU's f32 operations in the same order, the
//!   exponential is the CPU's own polynomial, and the emulator calls the
//!   same libm for log1p, log and pow); within [`CLOSE`] on a real GPU,
//!   whose `log1pf`/`logf`/`powf` differ from libm by a few ulps;
//! - Sum and Mean reductions: [`CLOSE`] (the device sums in another order,
//!   and the mean is the sum times `1/n` rather than one f64 division);
//! - PLM masks, histogram counts, and the `rhat` update computed from them:
//!   bit for bit (integer counts; Philox and the f64 comparisons are exact);
//! - SGD and Adam/AdamW trajectories: bit for bit (the same f32 operations
//!   in the same order, constants folded in f64 and rounded once).

mod device;

use device::{assert_close, check, devices, uniform, Tol, CLOSE, EXACT};
use ferrite::loss::{
    asymmetric_loss, bce_with_logits, bce_with_logits_pos_weight, sigmoid_focal_loss, AslOptions,
    Reduction,
};
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use ferrite::plm::{keep_probabilities, Plm, PlmConfig};
use ferrite::{DType, Device, Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The tolerance of per-element values computed with exp/log/pow: exact on
/// the emulated GPU, a few ulps on a real one.
fn transcendental() -> Tol {
    #[cfg(feature = "cuda")]
    if let Ok(dev) = ferrite::backend::cuda::device(0) {
        if dev.is_emulated() {
            return EXACT;
        }
    }
    CLOSE
}

/// `[B, C]` logits: uniform in (−6, 6) with ±100, ±30 and 0 planted.
fn logits(b: usize, c: usize, seed: u64) -> Tensor {
    let mut z = uniform(&[b * c], (-6.0, 6.0), seed)
        .to_vec::<f32>()
        .unwrap();
    for (i, v) in [100.0, -100.0, 30.0, -30.0, 0.0, 1e-3]
        .into_iter()
        .enumerate()
    {
        z[(i * 7) % (b * c)] = v;
    }
    Tensor::from_vec(z, &[b, c]).unwrap()
}

/// `[B, C]` targets: 0, 1 and (with `soft`) 0.3.
fn targets(b: usize, c: usize, seed: u64, soft: bool) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let y: Vec<f32> = (0..b * c)
        .map(|_| match rng.random_range(0..3) {
            0 => 0.0,
            1 => 1.0,
            _ if soft => 0.3,
            _ => 0.0,
        })
        .collect();
    Tensor::from_vec(y, &[b, c]).unwrap()
}

type LossFn = fn(&Tensor, &Tensor, Option<&Tensor>, Reduction) -> Result<Tensor>;

/// Every sigmoid loss, with the hyper-parameters of the cases.
fn losses() -> Vec<(&'static str, LossFn)> {
    vec![
        ("bce", |z, y, w, r| bce_with_logits(z, y, w, r)),
        ("bce_pos_weight", |z, y, w, r| {
            let c = z.shape()[1];
            let pw = Tensor::from_vec((0..c).map(|k| 0.5 + k as f32 * 0.25).collect(), &[c])?
                .to_device(z.device())?;
            bce_with_logits_pos_weight(z, y, &pw, w, r)
        }),
        ("focal", |z, y, w, r| {
            sigmoid_focal_loss(z, y, 2.0, Some(0.25), w, r)
        }),
        ("focal_no_alpha", |z, y, w, r| {
            sigmoid_focal_loss(z, y, 0.5, None, w, r)
        }),
        ("asl", |z, y, w, r| {
            asymmetric_loss(z, y, &AslOptions::default(), w, r)
        }),
        ("asl_no_clip", |z, y, w, r| {
            let o = AslOptions {
                gamma_pos: 1.0,
                gamma_neg: 2.0,
                clip: 0.0,
            };
            asymmetric_loss(z, y, &o, w, r)
        }),
    ]
}

#[test]
fn sigmoid_losses_forward_and_backward_at_extreme_and_typical_logits() {
    let (b, c) = (37, 11); // 407 elements, not a multiple of 4 or of a warp
    let z = logits(b, c, 1);
    let y = targets(b, c, 2, true);
    let w = uniform(&[c], (0.5, 2.0), 3);
    let exact = transcendental();
    for (name, loss) in losses() {
        for (reduction, tol, grad_tol) in [
            (Reduction::None, exact, exact),
            (Reduction::Sum, CLOSE, exact),
            (Reduction::Mean, CLOSE, CLOSE),
        ] {
            check(
                &format!("{name} {reduction:?}"),
                &[z.clone(), y.clone()],
                |t| loss(&t[0], &t[1].detach(), None, reduction),
                tol,
                grad_tol,
            );
            // A per-class weight, read cyclically by the kernels.
            check(
                &format!("{name} {reduction:?} weighted"),
                &[z.clone(), y.clone(), w.clone()],
                |t| loss(&t[0], &t[1].detach(), Some(&t[2].detach()), reduction),
                tol,
                grad_tol,
            );
        }
    }
}

#[test]
fn sigmoid_losses_stay_finite_at_plus_minus_100() {
    let z = Tensor::from_vec(vec![100.0f32, -100.0, 100.0, -100.0], &[2, 2]).unwrap();
    let y = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    for device in std::iter::once(Device::Cpu).chain(devices()) {
        for (name, loss) in losses() {
            let zd = z.to_device(device).unwrap().requires_grad_(true);
            let yd = y.to_device(device).unwrap();
            let l = loss(&zd, &yd, None, Reduction::None).unwrap();
            let grads = l.sum_all().unwrap().backward().unwrap();
            let g = grads.get(&zd).unwrap().to_f64_vec().unwrap();
            let v = l.to_f64_vec().unwrap();
            assert!(
                v.iter().chain(&g).all(|x| x.is_finite()),
                "{name} on {device:?}: {v:?} {g:?}"
            );
            // Confident and right costs nothing; confident and wrong ~100.
            assert!(v[0] < 1e-6 && v[1] < 1e-6, "{name} on {device:?}: {v:?}");
        }
    }
}

#[test]
fn half_precision_logits_are_computed_in_f32_on_every_device() {
    let (b, c) = (9, 5);
    let z = logits(b, c, 4);
    let y = targets(b, c, 5, false);
    check(
        "bce bf16",
        &[z, y],
        |t| {
            let z = t[0].to_dtype(DType::BF16)?;
            let y = t[1].detach().to_dtype(DType::BF16)?;
            // Compared in f32: the device sums (of the harness's backward)
            // take f32 only.
            bce_with_logits(&z, &y, None, Reduction::None)?.to_dtype(DType::F32)
        },
        Tol(0.0, 1e-2),
        Tol(1e-6, 1e-2),
    );
}

#[test]
fn invalid_targets_are_refused_on_every_device() {
    let z = logits(3, 4, 6);
    let mut y = targets(3, 4, 7, true).to_vec::<f32>().unwrap();
    y[6] = 1.5;
    let y = Tensor::from_vec(y, &[3, 4]).unwrap();
    for device in std::iter::once(Device::Cpu).chain(devices()) {
        let (zd, yd) = (z.to_device(device).unwrap(), y.to_device(device).unwrap());
        let err = bce_with_logits(&zd, &yd, None, Reduction::Mean).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::InvalidArgument { .. })
                && msg.contains("1.5")
                && msg.contains("flat index 6"),
            "{device:?}: {msg}"
        );
    }
}

/// A PLM state over `c` classes that masks in every class (ratios far from
/// the balanced target).
fn masking_plm(c: usize) -> Plm {
    let config = PlmConfig {
        seed: 0xDEAD_BEEF_0000_0007,
        n_bins: 7,
        init: ferrite::plm::RhatInit::Balanced,
        ..PlmConfig::default()
    };
    let positives: Vec<usize> = (0..c).map(|k| 3 + 11 * k).collect();
    Plm::new(config, &positives, 200).unwrap()
}

/// 0/1 targets of `[b, c]` as f32.
fn labels(b: usize, c: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let y: Vec<f32> = (0..b * c)
        .map(|_| f32::from(rng.random_bool(0.3)))
        .collect();
    Tensor::from_vec(y, &[b, c]).unwrap()
}

#[test]
fn plm_masks_over_several_batches_are_the_cpu_masks_bit_for_bit() {
    let (b, c) = (23, 9); // 207 elements: Philox blocks cross rows
    for device in devices() {
        let (mut on_cpu, mut on_dev) = (masking_plm(c), masking_plm(c));
        let mut kept = 0.0;
        for batch in 0..6 {
            let y = labels(b, c, 100 + batch);
            let want = on_cpu.sample_mask(&y).unwrap();
            let got = on_dev.sample_mask(&y.to_device(device).unwrap()).unwrap();
            assert_eq!(got.device(), device);
            assert_eq!(got.dtype(), DType::F32);
            let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
            assert_eq!(g, w, "batch {batch}");
            kept += w.iter().sum::<f32>();
        }
        assert_eq!(on_dev.batches_drawn(), 6);
        assert!(kept > 0.0 && kept < (6 * b * c) as f32, "the masks mask");
        // Half-precision and byte targets give the same mask in their own
        // dtype.
        for (k, dtype) in [DType::BF16, DType::U8].into_iter().enumerate() {
            let y = labels(b, c, 106 + k as u64);
            let want = on_cpu.sample_mask(&y).unwrap();
            let got = on_dev
                .sample_mask(&y.to_dtype(dtype).unwrap().to_device(device).unwrap())
                .unwrap();
            assert_eq!(got.dtype(), dtype);
            assert_eq!(
                got.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(),
                want.to_vec::<f32>().unwrap()
            );
        }
    }
}

#[test]
fn plm_mask_with_high_seed_and_batch_bits_matches_the_cpu() {
    let (b, c) = (61, 13);
    let y = labels(b, c, 8);
    let (mut keep_pos, mut keep_neg) = (Vec::new(), Vec::new());
    for class in 0..c {
        let (kp, kn) = keep_probabilities(0.05 + 0.3 * class as f64, 1.0 / (1.0 + class as f64));
        keep_pos.push(kp);
        keep_neg.push(kn);
    }
    for (seed, batch) in [
        (0, 0),
        (0x1234_5678_9abc_def0, 1 << 40),
        (u64::MAX, u64::MAX - 1),
    ] {
        let want = y
            .plm_mask(seed, batch, &keep_pos, &keep_neg)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for device in devices() {
            let got = y
                .to_device(device)
                .unwrap()
                .plm_mask(seed, batch, &keep_pos, &keep_neg)
                .unwrap();
            assert_eq!(
                got.to_vec::<f32>().unwrap(),
                want,
                "seed {seed} batch {batch}"
            );
        }
    }
}

#[test]
fn plm_targets_that_are_not_0_or_1_are_refused_on_every_device() {
    let (b, c) = (4, 3);
    let mut y = labels(b, c, 9).to_vec::<f32>().unwrap();
    y[7] = 0.5;
    let y = Tensor::from_vec(y, &[b, c]).unwrap();
    let p = uniform(&[b, c], (0.0, 1.0), 10);
    let named = |err: &str| err.contains("[2, 1]");

    // On the host, every check is immediate: nothing is drawn or counted.
    let mut plm = masking_plm(c);
    let err = plm.sample_mask(&y).unwrap_err().to_string();
    assert!(err.contains("0.5") && named(&err), "{err}");
    assert_eq!(plm.batches_drawn(), 0, "a refused batch draws no mask");
    let err = plm.observe(&p, &y).unwrap_err().to_string();
    assert!(err.contains("0.5") && named(&err), "{err}");
    assert!(plm.sync_histograms().unwrap().is_empty(), "nothing counted");

    for device in devices() {
        let yd = y.to_device(device).unwrap();
        // The tensor op reads the device's verdict at once.
        let err = yd
            .plm_mask(0, 0, &[0.5; 3], &[0.5; 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.5") && named(&err), "{device:?}: {err}");

        // PLM's training steps do not wait for it: the verdict is read
        // with the histograms, and stays an error until the state is
        // rebuilt (r̂ is never updated from such a batch).
        let mut plm = masking_plm(c);
        plm.sample_mask(&yd).unwrap();
        plm.observe(&p.to_device(device).unwrap(), &yd).unwrap();
        for _ in 0..2 {
            let err = plm.sync_histograms().unwrap_err().to_string();
            assert!(err.contains("mask 0") && named(&err), "{device:?}: {err}");
        }
        let err = plm.end_epoch().unwrap_err().to_string();
        assert!(named(&err), "{device:?}: {err}");
        assert_eq!(plm.epochs(), 0, "no update from a refused epoch");
    }
}

#[test]
fn plm_histograms_and_epoch_updates_over_several_batches_match_the_cpu() {
    let (b, c) = (29, 6);
    for device in devices() {
        let (mut on_cpu, mut on_dev) = (masking_plm(c), masking_plm(c));
        for epoch in 0..2u64 {
            for batch in 0..4u64 {
                let seed = 1000 * epoch + batch;
                let y = labels(b, c, seed);
                let mut p = uniform(&[b * c], (0.0, 1.0), seed + 500)
                    .to_vec::<f32>()
                    .unwrap();
                // Edges and values that are discarded.
                p[0] = 1.0;
                p[1] = 0.0;
                p[2] = f32::NAN;
                p[3] = 1.5;
                p[4] = -0.0;
                let p = Tensor::from_vec(p, &[b, c]).unwrap();
                on_cpu.observe(&p, &y).unwrap();
                on_dev
                    .observe(&p.to_device(device).unwrap(), &y.to_device(device).unwrap())
                    .unwrap();
            }
            // The saved state includes the counts still on the device.
            assert_eq!(on_dev.state_json().unwrap(), on_cpu.state_json().unwrap());
            let want = on_cpu.histograms().clone();
            assert_eq!(on_dev.sync_histograms().unwrap(), &want, "epoch {epoch}");
            assert_eq!(want.discarded(), 4 * 2, "NaN and 1.5 in every batch");
            let (u_cpu, u_dev) = (on_cpu.end_epoch().unwrap(), on_dev.end_epoch().unwrap());
            assert_eq!(u_dev.rhat, u_cpu.rhat, "epoch {epoch}");
            assert!(on_dev.histograms().is_empty());
        }
    }
}

#[test]
fn plm_masked_loss_and_its_gradient_on_the_device() {
    let (b, c) = (16, 5);
    let z = logits(b, c, 11);
    let y = labels(b, c, 12);
    let plm = masking_plm(c);
    check(
        "plm masked bce",
        &[z, y],
        |t| {
            let y = t[1].detach();
            let per_element = bce_with_logits(&t[0], &y, None, Reduction::None)?;
            // The same mask on every device: a fresh copy of the state.
            let mut plm = plm.clone();
            plm.masked_loss(&per_element, &y)
        },
        CLOSE,
        CLOSE,
    );
    assert_eq!(plm.batches_drawn(), 0, "each run drew from its own copy");
}

/// Runs `steps` optimizer steps on `device` from the same start, with the
/// gradient of `Σ p·x_k` (which is `x_k`) at step `k`; returns the
/// parameters after each step.
fn trajectory(
    device: Device,
    steps: u64,
    make: &dyn Fn(Vec<ParamGroup>) -> Box<dyn Optimizer>,
) -> Vec<Vec<f32>> {
    let (rows, cols) = (13, 7);
    let p = uniform(&[rows, cols], (-1.0, 1.0), 20)
        .to_device(device)
        .unwrap()
        .requires_grad_(true);
    let bias = uniform(&[cols], (-1.0, 1.0), 21)
        .to_device(device)
        .unwrap()
        .requires_grad_(true);
    let mut opt = make(vec![
        ParamGroup::new(vec![p.clone()], 0.05, 0.01),
        ParamGroup::new(vec![bias.clone()], 0.1, 0.0),
    ]);
    let mut out = Vec::new();
    for k in 0..steps {
        let x = uniform(&[rows, cols], (-2.0, 2.0), 30 + k)
            .to_device(device)
            .unwrap();
        let xb = uniform(&[cols], (-2.0, 2.0), 60 + k)
            .to_device(device)
            .unwrap();
        let loss = p
            .mul(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&bias.mul(&xb).unwrap().sum_all().unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
        assert_eq!(p.device(), device);
        let mut v = p.to_vec::<f32>().unwrap();
        v.extend(bias.to_vec::<f32>().unwrap());
        out.push(v);
    }
    out
}

/// The trajectory of `make` on every device equals the CPU's bit for bit.
fn same_trajectory(name: &str, make: &dyn Fn(Vec<ParamGroup>) -> Box<dyn Optimizer>) {
    let want = trajectory(Device::Cpu, 5, make);
    for device in devices() {
        let got = trajectory(device, 5, make);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let (g, w): (Vec<f64>, Vec<f64>) = (
                g.iter().map(|&v| f64::from(v)).collect(),
                w.iter().map(|&v| f64::from(v)).collect(),
            );
            assert_close(&format!("{name} step {}", k + 1), &g, &w, EXACT);
        }
    }
}

#[test]
fn sgd_trajectories_on_the_device_are_the_cpus_bit_for_bit() {
    for (name, config) in [
        ("sgd", SgdConfig::default()),
        (
            "sgd momentum dampening",
            SgdConfig {
                momentum: 0.9,
                dampening: 0.1,
                nesterov: false,
            },
        ),
        (
            "sgd nesterov",
            SgdConfig {
                momentum: 0.8,
                dampening: 0.0,
                nesterov: true,
            },
        ),
    ] {
        same_trajectory(name, &|groups| {
            Box::new(Sgd::new(groups, config).unwrap()) as Box<dyn Optimizer>
        });
    }
}

#[test]
fn adam_and_adamw_trajectories_on_the_device_are_the_cpus_bit_for_bit() {
    for (name, config) in [
        ("adam", AdamConfig::default()),
        ("adamw", AdamConfig::adamw()),
    ] {
        same_trajectory(name, &|groups| {
            Box::new(Adam::new(groups, config).unwrap()) as Box<dyn Optimizer>
        });
    }
}

#[test]
fn optimizer_state_lives_on_the_parameters_device() {
    for device in devices() {
        let p = Tensor::zeros_on(&[4], DType::F32, device)
            .unwrap()
            .requires_grad_(true);
        let mut opt = Adam::new(
            vec![ParamGroup::new(vec![p.clone()], 0.1, 0.0)],
            AdamConfig::default(),
        )
        .unwrap();
        let grads = p.sum_all().unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        for (m, v, _) in opt.moments().iter().flatten() {
            assert_eq!((m.device(), v.device()), (device, device));
        }
        // f64 parameters have no device kernel: a clear error.
        let q = Tensor::zeros(&[2], DType::F64).unwrap();
        if let Ok(q) = q.to_device(device) {
            let err = ferrite::no_grad(|| {
                q.sgd_update_(
                    &q.zeros_like()?,
                    None,
                    &ferrite::ops::optim::SgdStep {
                        lr: 0.1,
                        momentum: 0.0,
                        dampening: 0.0,
                        nesterov: false,
                        weight_decay: 0.0,
                        first_step: true,
                    },
                )
            });
            assert!(
                matches!(err, Err(Error::UnsupportedDType { .. })),
                "{err:?}"
            );
        }
    }
}

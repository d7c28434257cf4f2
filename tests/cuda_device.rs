//! The CUDA device: without a driver or GPU it is a clear error, never a
//! panic; with a GPU, kernels agree with the CPU kernels (bit for bit where
//! both sides round the same operations identically, within a stated
//! tolerance where the summation order differs).
//!
//! Without a GPU every parity test prints why it skips and passes; set
//! `FERRITE_REQUIRE_GPU=1` (on the GPU machine) to make a skip a failure.
//! The tests read no file: inputs are generated from fixed seeds and the
//! references computed by the CPU kernels in the same process, so the test
//! binary can be copied alone to a GPU machine (docs/CUDA.md).
//!
//! Run: `cargo test --release --features cuda --test cuda_device`.
#![cfg(feature = "cuda")]

use ferrite::backend::cuda::{self, CudaDevice};
use ferrite::ops::optim::{cpu as optim_cpu, AdamStep, SgdStep};
use ferrite::plm::{draw_mask, keep_probabilities, Histograms, Plm, PlmConfig};
use ferrite::KeepDim;
use ferrite::{DType, Device, Error, Tensor};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// GPU 0, or `None` after printing why the test skips (a failure instead
/// when `FERRITE_REQUIRE_GPU` is set).
fn gpu(test: &str) -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(dev) => {
            eprintln!(
                "{test}: on {} (sm {:?}, {})",
                dev.name().unwrap_or_default(),
                dev.compute_capability(),
                dev.arch()
            );
            Some(dev)
        }
        Err(e) => {
            assert!(
                std::env::var_os("FERRITE_REQUIRE_GPU").is_none(),
                "{test}: FERRITE_REQUIRE_GPU is set but the GPU is unusable: {e}"
            );
            eprintln!("{test}: SKIPPED, {e}");
            None
        }
    }
}

/// `n` uniform values in [lo, hi) from `seed`.
fn values(n: usize, (lo, hi): (f32, f32), seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn cpu(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

#[test]
fn opening_a_device_without_a_gpu_is_an_error_not_a_panic() {
    // The real GPU, whatever FERRITE_CUDA_EMULATE says.
    let result = std::panic::catch_unwind(|| CudaDevice::gpu(0));
    let result = result.expect("CudaDevice::new panicked");
    match result {
        Ok(dev) => {
            assert!(cuda::is_available());
            eprintln!("a GPU is present: {dev:?}");
        }
        Err(e) => {
            assert!(matches!(e, Error::DeviceUnavailable { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains("Cuda(0)"), "{msg}");
            eprintln!("no usable GPU, as expected here: {msg}");
        }
    }
    // An ordinal past the last GPU is an error with or without GPUs.
    let err = CudaDevice::gpu(1 << 20).unwrap_err();
    assert!(matches!(err, Error::DeviceUnavailable { .. }), "{err:?}");
}

#[test]
fn elementwise_ops_match_the_cpu_bit_for_bit() {
    let Some(dev) = gpu("elementwise_ops_match_the_cpu_bit_for_bit") else {
        return;
    };
    // Broadcasting [3, 1, 5] with [4, 5], and the flat path [3, 4, 5] ∘ [3, 4, 5].
    let cases: [(&[usize], &[usize]); 3] = [
        (&[3, 1, 5], &[4, 5]),
        (&[3, 4, 5], &[3, 4, 5]),
        (&[1], &[7, 1]),
    ];
    for (k, (sa, sb)) in cases.into_iter().enumerate() {
        let a = values(sa.iter().product(), (-2.0, 2.0), 10 + k as u64);
        let b = values(sb.iter().product(), (-2.0, 2.0), 20 + k as u64);
        let (ga, gb) = (on_device(&dev, &a, sa), on_device(&dev, &b, sb));
        for op in ["add", "sub", "mul", "div", "maximum"] {
            let (ta, tb) = (cpu(&a, sa), cpu(&b, sb));
            let pick = |x: &Tensor, y: &Tensor| match op {
                "add" => x.add(y),
                "sub" => x.sub(y),
                "mul" => x.mul(y),
                "div" => x.div(y),
                _ => x.maximum(y),
            };
            let out = pick(&ga, &gb).unwrap();
            let shape = out.shape().to_vec();
            let want = match op {
                "add" => ta.add(&tb),
                "sub" => ta.sub(&tb),
                "mul" => ta.mul(&tb),
                "div" => ta.div(&tb),
                _ => ta.maximum(&tb),
            }
            .unwrap();
            assert_eq!(shape, want.shape());
            let got: Vec<f32> = out.to_vec().unwrap();
            let want = want.to_vec::<f32>().unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{op} {sa:?} {sb:?} element {i}: {g} vs {w}"
                );
            }
        }
    }
    // A unary op with a scalar argument, on the flat path.
    let x = values(1000, (-3.0, 3.0), 3);
    let gx = on_device(&dev, &x, &[1000]);
    let got: Vec<f32> = gx.clamp(-1.0, 0.5).unwrap().to_vec().unwrap();
    let want = cpu(&x, &[1000])
        .clamp(-1.0, 0.5)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(got, want);
    // Mixing devices is refused, never copied silently.
    assert!(gx.add(&cpu(&x, &[1000])).is_err());
}

#[test]
fn row_reductions_match_the_cpu() {
    let Some(dev) = gpu("row_reductions_match_the_cpu") else {
        return;
    };
    for (rows, cols) in [(37, 1000), (5, 1), (3, 4097), (1, 31)] {
        let x = values(rows * cols, (-1.0, 1.0), rows as u64);
        let gx = on_device(&dev, &x, &[rows, cols]);
        let t = cpu(&x, &[rows, cols]);
        let sum: Vec<f32> = gx.sum(&[1], KeepDim::No).unwrap().to_vec().unwrap();
        let max: Vec<f32> = gx.max(&[1], KeepDim::No).unwrap().to_vec().unwrap();
        let want_sum = t.sum(&[1], KeepDim::No).unwrap().to_vec::<f32>().unwrap();
        let want_max = t.max(&[1], KeepDim::No).unwrap().to_vec::<f32>().unwrap();
        for r in 0..rows {
            let abs: f32 = x[r * cols..(r + 1) * cols].iter().map(|v| v.abs()).sum();
            let tol = 1e-5 * abs + 1e-6;
            assert!(
                (sum[r] - want_sum[r]).abs() <= tol,
                "sum row {r} of {rows}x{cols}: {} vs {}",
                sum[r],
                want_sum[r]
            );
            assert_eq!(max[r], want_max[r], "max row {r} of {rows}x{cols}");
        }
    }
}

#[test]
fn softmax_and_argmax_match_the_cpu() {
    let Some(dev) = gpu("softmax_and_argmax_match_the_cpu") else {
        return;
    };
    let (rows, cols) = (17, 300);
    let mut x = values(rows * cols, (-8.0, 8.0), 5);
    x[3 * cols + 7] = 20.0; // a clear maximum
    x[4 * cols + 2] = 20.0; // a tie: the first index wins
    x[4 * cols + 9] = 20.0;
    let gx = on_device(&dev, &x, &[rows, cols]);
    let t = cpu(&x, &[rows, cols]);
    for log in [false, true] {
        let got = if log {
            gx.log_softmax(1)
        } else {
            gx.softmax(1)
        };
        let got: Vec<f32> = got.unwrap().to_vec().unwrap();
        let want = if log { t.log_softmax(1) } else { t.softmax(1) };
        let want = want.unwrap().to_vec::<f32>().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "log={log} element {i}: {g} vs {w}"
            );
        }
    }
    let got: Vec<i64> = gx.argmax(1, KeepDim::No).unwrap().to_vec().unwrap();
    let want = t.argmax(1, KeepDim::No).unwrap().to_vec::<i64>().unwrap();
    assert_eq!(got, want);
    assert_eq!((got[3], got[4]), (7, 2));
}

/// `batch × m × n` products of row-major `a` (`batch × m × k`) and `b`
/// (`batch × k × n`) in f64, with `Σ|a||b|` per output (for tolerances).
fn reference_gemm(
    a: &[f32],
    b: &[f32],
    (batch, m, k, n): (usize, usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let mut c = vec![0.0; batch * m * n];
    let mut abs = vec![0.0; batch * m * n];
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    let p = f64::from(a[(bi * m + i) * k + l]) * f64::from(b[(bi * k + l) * n + j]);
                    c[(bi * m + i) * n + j] += p;
                    abs[(bi * m + i) * n + j] += p.abs();
                }
            }
        }
    }
    (c, abs)
}

#[test]
fn sgemm_257x129x65_matches_the_cpu() {
    let Some(dev) = gpu("sgemm_257x129x65_matches_the_cpu") else {
        return;
    };
    for dims in [
        (1, 257, 129, 65),
        (3, 257, 129, 65),
        (2, 1, 1, 1),
        (1, 130, 0, 7),
    ] {
        let (batch, m, k, n) = dims;
        let a = values(batch * m * k, (-1.0, 1.0), 1);
        let b = values(batch * k * n, (-1.0, 1.0), 2);
        let out = on_device(&dev, &a, &[batch, m, k])
            .matmul(&on_device(&dev, &b, &[batch, k, n]))
            .unwrap();
        let got: Vec<f32> = out.to_vec().unwrap();
        let (want, abs) = reference_gemm(&a, &b, dims);
        let cpu_mm = cpu(&a, &[batch, m, k])
            .matmul(&cpu(&b, &[batch, k, n]))
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for i in 0..got.len() {
            let tol = 1e-5 * abs[i] + 1e-6;
            assert!(
                (f64::from(got[i]) - want[i]).abs() <= tol,
                "{dims:?} element {i}: {} vs {}",
                got[i],
                want[i]
            );
            assert!(
                (got[i] - cpu_mm[i]).abs() as f64 <= 2.0 * tol,
                "{dims:?} element {i}: GPU {} vs CPU {}",
                got[i],
                cpu_mm[i]
            );
        }
    }
}

#[test]
fn half_precision_gemm_on_tensor_cores_matches_an_f64_reference() {
    let Some(dev) = gpu("half_precision_gemm_on_tensor_cores_matches_an_f64_reference") else {
        return;
    };
    if dev.compute_capability() < (8, 0) {
        eprintln!("SKIPPED: tensor-core GEMM needs compute capability 8.0");
        return;
    }
    for dims in [(1, 257, 129, 65), (2, 64, 32, 64), (1, 3, 17, 5)] {
        let (batch, m, k, n) = dims;
        let a32 = values(batch * m * k, (-1.0, 1.0), 3);
        let b32 = values(batch * k * n, (-1.0, 1.0), 4);
        for dtype in [DType::BF16, DType::F16] {
            // Round the inputs to the half type first: the reference then
            // sees exactly the values the GPU multiplies.
            let (bits_a, a): (Vec<u16>, Vec<f32>) = round_half(&a32, dtype);
            let (bits_b, b): (Vec<u16>, Vec<f32>) = round_half(&b32, dtype);
            let half = |bits: &[u16], shape: &[usize]| {
                // The half tensor of these bits, through the exact f32
                // values they encode (the conversion back is exact).
                let values: Vec<f32> = bits
                    .iter()
                    .map(|&v| {
                        if dtype == DType::BF16 {
                            bf16::from_bits(v).to_f32()
                        } else {
                            f16::from_bits(v).to_f32()
                        }
                    })
                    .collect();
                on_device(&dev, &values, shape).to_dtype(dtype).unwrap()
            };
            let out = half(&bits_a, &[batch, m, k])
                .matmul(&half(&bits_b, &[batch, k, n]))
                .unwrap();
            let got: Vec<u16> = match dtype {
                DType::BF16 => out
                    .to_vec::<bf16>()
                    .unwrap()
                    .iter()
                    .map(|h| h.to_bits())
                    .collect(),
                _ => out
                    .to_vec::<f16>()
                    .unwrap()
                    .iter()
                    .map(|h| h.to_bits())
                    .collect(),
            };
            let (want, abs) = reference_gemm(&a, &b, dims);
            let unit = if dtype == DType::BF16 {
                2f64.powi(-8)
            } else {
                2f64.powi(-11)
            };
            for i in 0..got.len() {
                let g = if dtype == DType::BF16 {
                    bf16::from_bits(got[i]).to_f64()
                } else {
                    f16::from_bits(got[i]).to_f64()
                };
                let tol = unit * want[i].abs() + 1e-5 * abs[i] + 1e-6;
                assert!(
                    (g - want[i]).abs() <= tol,
                    "{dtype:?} {dims:?} element {i}: {g} vs {}",
                    want[i]
                );
            }
        }
    }
}

/// The raw bits and f32 values of `x` rounded to bf16 or f16.
fn round_half(x: &[f32], dtype: DType) -> (Vec<u16>, Vec<f32>) {
    x.iter()
        .map(|&v| {
            if dtype == DType::BF16 {
                let h = bf16::from_f32(v);
                (h.to_bits(), h.to_f32())
            } else {
                let h = f16::from_f32(v);
                (h.to_bits(), h.to_f32())
            }
        })
        .unzip()
}

/// `data` of `shape` on the CUDA device `dev` drives (as a tensor).
fn on_device(dev: &CudaDevice, data: &[f32], shape: &[usize]) -> Tensor {
    cpu(data, shape)
        .to_device(Device::Cuda(dev.ordinal()))
        .unwrap()
}

#[test]
fn plm_masks_match_the_cpu_bit_for_bit() {
    let Some(dev) = gpu("plm_masks_match_the_cpu_bit_for_bit") else {
        return;
    };
    let (b, c) = (61, 13); // B·C = 793, not a multiple of 4
    let mut rng = StdRng::seed_from_u64(8);
    let labels: Vec<bool> = (0..b * c).map(|_| rng.random_bool(0.2)).collect();
    let targets: Vec<f32> = labels.iter().map(|&l| if l { 1.0 } else { 0.0 }).collect();
    let (mut keep_pos, mut keep_neg) = (Vec::new(), Vec::new());
    for class in 0..c {
        let ratio = 0.05 + 0.3 * class as f64;
        let (kp, kn) = keep_probabilities(ratio, 1.0 / (1.0 + class as f64));
        keep_pos.push(kp);
        keep_neg.push(kn);
    }
    let gt = on_device(&dev, &targets, &[b, c]);
    // Seeds and batch numbers whose high 32 bits are not zero exercise the
    // whole counter and key.
    for (seed, batch) in [
        (0, 0),
        (42, 7),
        (0x1234_5678_9abc_def0, 1 << 40),
        (u64::MAX, u64::MAX - 1),
    ] {
        let mask = gt.plm_mask(seed, batch, &keep_pos, &keep_neg).unwrap();
        assert_eq!(mask.device(), gt.device());
        let got = mask.to_vec::<f32>().unwrap();
        let want = draw_mask(seed, batch, &labels, &keep_pos, &keep_neg).unwrap();
        for (e, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                if w { 1.0 } else { 0.0 },
                "seed {seed} batch {batch} element {e}"
            );
        }
    }
}

#[test]
fn plm_histograms_match_the_cpu() {
    let Some(dev) = gpu("plm_histograms_match_the_cpu") else {
        return;
    };
    let (b, c, bins) = (50, 7, 10);
    let mut rng = StdRng::seed_from_u64(9);
    let labels: Vec<bool> = (0..b * c).map(|_| rng.random_bool(0.3)).collect();
    let targets: Vec<f32> = labels.iter().map(|&l| if l { 1.0 } else { 0.0 }).collect();
    let mut probs = values(b * c, (0.0, 1.0), 10);
    // Bin edges and values the CPU discards.
    probs[0] = 1.0;
    probs[1] = 0.0;
    probs[2] = 0.3;
    probs[3] = f32::NAN;
    probs[4] = 1.5;
    probs[5] = -0.0;
    let config = PlmConfig {
        n_bins: bins,
        ..PlmConfig::default()
    };
    let mut plm = Plm::new(config, &[10; 7], 100).unwrap();
    let (gp, gt) = (
        on_device(&dev, &probs, &[b, c]),
        on_device(&dev, &targets, &[b, c]),
    );
    let mut want = Histograms::new(bins, c).unwrap();
    for _ in 0..2 {
        plm.observe(&gp, &gt).unwrap();
        let p64: Vec<f64> = probs.iter().map(|&p| f64::from(p)).collect();
        want.add(&p64, &labels).unwrap();
    }
    assert_eq!(plm.sync_histograms().unwrap(), &want);
}

#[test]
fn optimizer_steps_match_the_cpu_kernels_bit_for_bit() {
    let Some(dev) = gpu("optimizer_steps_match_the_cpu_kernels_bit_for_bit") else {
        return;
    };
    let n = 1001;
    let g = values(n, (-1.0, 1.0), 11);
    let gg = on_device(&dev, &g, &[n]);
    for decoupled in [false, true] {
        let (mut p, mut m, mut v) = (values(n, (-1.0, 1.0), 12), vec![0.0f32; n], vec![0.0f32; n]);
        let gp = on_device(&dev, &p, &[n]);
        let (gm, gv) = (gp.zeros_like().unwrap(), gp.zeros_like().unwrap());
        for step in 1..=3 {
            let h = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.05,
                decoupled,
                step,
            };
            gp.adam_update_(&gg, &gm, &gv, &h).unwrap();
            optim_cpu::adam(&mut p, &g, &mut m, &mut v, &h);
        }
        for (name, t, want) in [("p", &gp, &p), ("m", &gm, &m), ("v", &gv, &v)] {
            assert_eq!(t.device(), gg.device());
            assert_eq!(
                &t.to_vec::<f32>().unwrap(),
                want,
                "adam decoupled={decoupled}: {name}"
            );
        }
    }
    for nesterov in [false, true] {
        let (mut p, mut buf) = (values(n, (-1.0, 1.0), 13), vec![0.0f32; n]);
        let gp = on_device(&dev, &p, &[n]);
        let gb = gp.zeros_like().unwrap();
        for step in 0..3 {
            let h = SgdStep {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.1,
                nesterov,
                weight_decay: 1e-4,
                first_step: step == 0,
            };
            gp.sgd_update_(&gg, Some(&gb), &h).unwrap();
            optim_cpu::sgd(&mut p, &g, Some(&mut buf), &h);
        }
        assert_eq!(gp.to_vec::<f32>().unwrap(), p, "sgd nesterov={nesterov}");
        assert_eq!(
            gb.to_vec::<f32>().unwrap(),
            buf,
            "sgd nesterov={nesterov}: buffer"
        );
    }
}

#[test]
fn the_caching_allocator_reuses_device_memory() {
    let Some(dev) = gpu("the_caching_allocator_reuses_device_memory") else {
        return;
    };
    let before = dev.memory_stats();
    for _ in 0..5 {
        let a = dev.upload(&vec![1.0f32; 1000]).unwrap();
        let b = dev.upload(&vec![2.0f32; 1010]).unwrap();
        drop((a, b));
    }
    let s = dev.memory_stats();
    assert_eq!(s.requests - before.requests, 10);
    assert!(s.raw_allocs - before.raw_allocs <= 2, "{s:?}");
    assert_eq!(s.in_use_bytes, before.in_use_bytes);
    dev.empty_cache();
    assert_eq!(dev.memory_stats().cached_bytes, 0);
    // A buffer too small for the request is an error, not an overrun.
    let small = dev.upload(&[1.0f32; 4]).unwrap();
    assert!(dev.download::<f32>(&small, 5).is_err());
}

#[test]
fn every_kernel_loads_and_every_launch_fits_the_limits() {
    let Some(dev) = gpu("every_kernel_loads_and_every_launch_fits_the_limits") else {
        return;
    };
    let report = cuda::check::check_launch_limits(&dev);
    eprint!("{}", report.summary());
    assert!(report.passed(), "{}", report.summary());
    let families = ferrite::backend::cuda::compile::FAMILIES;
    assert_eq!(report.modules.len(), families.len());
    let kernels: usize = families.iter().map(|f| f.entry_points().len()).sum();
    assert_eq!(report.kernels.len(), kernels);
    let json = report.to_json();
    assert_eq!(json["passed"], true);
    assert_eq!(json["kernels"].as_array().unwrap().len(), kernels);
    if !dev.is_emulated() {
        // A GPU reports each kernel's resources, and the modules are
        // machine code whenever NVRTC knows the GPU.
        assert!(report.kernels.iter().all(|k| k.attributes.is_some()));
    }
}

//! Kernel benchmarks, shared by `ferrite bench` and `cargo bench`.
//!
//! Each benchmark times one tensor op end to end (allocation of the result
//! included, as a user would see it), takes the median of repeated runs and
//! reports GFLOP/s for compute-bound kernels or GB/s for memory-bound ones,
//! next to the machine's peak: the FMA peak is measured by a register-only
//! FMA loop on every thread (or given by the user), the memory bandwidth
//! by a STREAM-style triad.
//!
//! With the `cuda` feature, the `cuda` module runs the GPU benchmarks (`ferrite
//! bench --device cuda`); [`rows`] is the row format they share with the
//! PyTorch reference script, [`datasheet`] the GPU peaks they are compared
//! with.

pub mod conv_layers;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub mod cuda_train;
pub mod datasheet;
mod json;
pub mod rows;
mod timing;

pub use json::cpu_report_json;
pub use timing::Timing;

use crate::backend::cpu::simd::VectorIsa;
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// What to run and how long to spend on it.
#[derive(Clone, Debug, Default)]
pub struct BenchConfig {
    /// Smaller sizes and fewer repeats, for a quick look.
    pub quick: bool,
    /// Only run benchmarks whose name contains this string.
    pub filter: Option<String>,
    /// Use this FMA peak (GFLOP/s) instead of measuring it.
    pub peak_gflops: Option<f64>,
    /// Also profile the training steps op by op (see [`crate::profile`]).
    pub profile: bool,
}

/// One row of the results table.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// Benchmark name, e.g. `matmul_f32` or `conv2d_fwd`.
    pub kernel: String,
    /// Problem size as printed, e.g. `512x512x512`.
    pub shape: String,
    /// Wall time of one run (min, median, max), result allocation included.
    pub timing: Timing,
    /// Achieved rate: GFLOP/s or GB/s, see `unit`.
    pub rate: f64,
    /// Unit of `rate`: `"GFLOP/s"` (compute-bound) or `"GB/s"` (memory-bound).
    pub unit: &'static str,
    /// Rate as a percentage of the machine's peak for that unit.
    pub percent_of_peak: f64,
}

/// The machine's reference peaks.
#[derive(Clone, Copy, Debug)]
pub struct Peaks {
    /// f32 FMA throughput of all threads, GFLOP/s.
    pub gflops: f64,
    /// The vector FMA the peak was measured with (`None` when given by the
    /// user or unavailable).
    pub isa: Option<VectorIsa>,
    /// Whether `gflops` was measured (false: given by the user).
    pub gflops_measured: bool,
    /// STREAM triad bandwidth, GB/s.
    pub triad_gbs: f64,
}

/// Sorted wall times of `f` over repeated runs after one warm-up run: at
/// least 3 runs and about `budget` of total time, at most 50 runs.
fn sample(budget: Duration, f: impl FnMut()) -> Vec<Duration> {
    sample_at_least(3, budget, f)
}

/// [`sample`] with at least `min_runs` timed runs.
fn sample_at_least(min_runs: usize, budget: Duration, mut f: impl FnMut()) -> Vec<Duration> {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_runs || (start.elapsed() < budget && times.len() < 50) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times
}

/// Median wall time of `f` over repeated runs (at least 3, about `budget`
/// in all, at most 50, after one warm-up run).
pub fn time_median(budget: Duration, f: impl FnMut()) -> Duration {
    time_runs(budget, f).median
}

/// Min, median and max wall time of `f` over repeated runs (as
/// [`time_median`]): what kernels are reported with.
pub fn time_runs(budget: Duration, f: impl FnMut()) -> Timing {
    Timing::from_samples(sample(budget, f)).expect("at least 3 runs")
}

/// Best wall time of `f`: what peaks are reported with (as STREAM does),
/// since on a shared machine slow runs measure the neighbours, not the
/// hardware.
pub fn time_best(budget: Duration, f: impl FnMut()) -> Duration {
    sample(budget, f)[0]
}

/// f32 FMA peak of the rayon pool in GFLOP/s (best of several runs), from a
/// loop of independent FMAs that never touches memory, on the widest
/// vectors the kernels use here (see
/// [`simd::detect`](crate::backend::cpu::simd::detect), which also follows
/// the GEMM's choice); `None` where there is no vector FMA.
pub fn measure_fma_peak() -> Option<(f64, VectorIsa)> {
    let isa = crate::backend::cpu::simd::detect();
    if isa == VectorIsa::Baseline {
        return None;
    }
    let threads = rayon::current_num_threads();
    let iters: u64 = 5_000_000;
    let run = || {
        (0..threads)
            .into_par_iter()
            // SAFETY: `isa` comes from `detect`.
            .map(|_| unsafe { fma_loop(isa, iters) })
            .sum::<f32>()
    };
    let secs = time_best(Duration::from_millis(500), || {
        std::hint::black_box(run());
    })
    .as_secs_f64();
    // 10 independent accumulators × lanes × 2 flops per iteration.
    let flops = threads as f64 * iters as f64 * 10.0 * isa.f32_lanes() as f64 * 2.0;
    Some((flops / secs / 1e9, isa))
}

/// Runs the register-only FMA loop of `isa`.
///
/// # Safety
/// The CPU must run `isa` (callers pass
/// [`simd::detect`](crate::backend::cpu::simd::detect)'s answer).
unsafe fn fma_loop(isa: VectorIsa, iters: u64) -> f32 {
    debug_assert!(isa.is_available());
    match isa {
        // SAFETY: the caller guarantees `isa` is available, which is all
        // the target_feature functions require.
        #[cfg(target_arch = "x86_64")]
        VectorIsa::Avx512 => unsafe { fma_loop_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        VectorIsa::Avx2 => unsafe { fma_loop_avx2(iters) },
        _ => 0.0,
    }
}

/// Ten independent chains of `acc = acc * a + b` on 8-lane f32 vectors:
/// enough chains to cover FMA latency on two FMA ports.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 10];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut out = [0f32; 8];
    let mut sum = _mm256_setzero_ps();
    for x in acc {
        sum = _mm256_add_ps(sum, x);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out.iter().sum()
}

/// The same ten chains on 16-lane AVX-512 vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 10];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for x in acc {
        sum = _mm512_add_ps(sum, x);
    }
    _mm512_reduce_add_ps(sum)
}

/// STREAM triad `a = b + s·c` over three f32 arrays of `n` elements,
/// parallel over the rayon pool; GB/s of the best run, counting 12 bytes
/// per element.
pub fn measure_triad(n: usize, budget: Duration) -> f64 {
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(1 << 14);
    let t = time_best(budget, || {
        a.par_chunks_mut(chunk).enumerate().for_each(|(i, ac)| {
            let (bc, cc) = (
                &b[i * chunk..i * chunk + ac.len()],
                &c[i * chunk..i * chunk + ac.len()],
            );
            for ((x, &y), &z) in ac.iter_mut().zip(bc).zip(cc) {
                *x = y + 3.0 * z;
            }
        });
        std::hint::black_box(&a);
    });
    (12 * n) as f64 / t.as_secs_f64() / 1e9
}

fn randn(shape: &[usize], seed: u64) -> Result<Tensor> {
    Tensor::randn(
        shape,
        0.0,
        1.0,
        DType::F32,
        &mut StdRng::seed_from_u64(seed),
    )
}

/// Measures the machine's peaks (or takes the FMA peak from `config`).
pub fn peaks(config: &BenchConfig) -> Peaks {
    let budget = Duration::from_millis(if config.quick { 200 } else { 1000 });
    let triad_n = if config.quick { 1 << 23 } else { 1 << 25 };
    let (gflops, isa, measured) = match config.peak_gflops {
        Some(p) => (p, None, false),
        None => match measure_fma_peak() {
            Some((p, isa)) => (p, Some(isa), true),
            None => (f64::NAN, None, true),
        },
    };
    Peaks {
        gflops,
        isa,
        gflops_measured: measured,
        triad_gbs: measure_triad(triad_n, budget),
    }
}

/// Runs every benchmark selected by `config` against `peaks`.
pub fn run(config: &BenchConfig, peaks: &Peaks) -> Result<Vec<BenchResult>> {
    let budget = Duration::from_millis(if config.quick { 200 } else { 1500 });
    let selected = |name: &str| config.filter.as_deref().is_none_or(|f| name.contains(f));
    let mut out = Vec::new();
    let mut push = |kernel: &str, shape: String, timing: Timing, amount: f64, compute: bool| {
        let rate = amount / timing.median.as_secs_f64() / 1e9;
        let (unit, peak) = if compute {
            ("GFLOP/s", peaks.gflops)
        } else {
            ("GB/s", peaks.triad_gbs)
        };
        out.push(BenchResult {
            kernel: kernel.to_string(),
            shape,
            timing,
            rate,
            unit,
            percent_of_peak: 100.0 * rate / peak,
        });
    };

    let gemm_sizes: &[usize] = if config.quick {
        &[256, 512]
    } else {
        &[256, 512, 1024, 2048]
    };
    if selected("matmul_f32") {
        for &n in gemm_sizes {
            let (a, b) = (randn(&[n, n], 1)?, randn(&[n, n], 2)?);
            let t = time_runs(budget, || {
                std::hint::black_box(a.matmul(&b).expect("shapes match"));
            });
            push(
                "matmul_f32",
                format!("{n}x{n}x{n}"),
                t,
                2.0 * (n * n * n) as f64,
                true,
            );
        }
    }

    let n = if config.quick { 1 << 22 } else { 1 << 24 };
    let (x, y) = (randn(&[n], 3)?, randn(&[n], 4)?);
    for (name, op) in [("add_f32", 0), ("mul_f32", 1)] {
        if selected(name) {
            let t = time_runs(budget, || {
                let r = if op == 0 { x.add(&y) } else { x.mul(&y) };
                std::hint::black_box(r.expect("shapes match"));
            });
            push(name, format!("{n}"), t, (12 * n) as f64, false);
        }
    }
    if selected("sum_f32") {
        let t = time_runs(budget, || {
            std::hint::black_box(x.sum_all().expect("float input"));
        });
        push("sum_f32", format!("{n}"), t, (4 * n) as f64, false);
    }
    if selected("softmax_f32") {
        let (rows, cols) = (n / 1024, 1024);
        let m = x.reshape(&[rows, cols])?;
        let t = time_runs(budget, || {
            std::hint::black_box(m.softmax(1).expect("float input"));
        });
        push(
            "softmax_f32",
            format!("{rows}x{cols}"),
            t,
            (8 * n) as f64,
            false,
        );
    }
    let (bn_fwd, bn_both) = (
        selected("batch_norm_f32"),
        selected("batch_norm_fwd_bwd_f32"),
    );
    if bn_fwd || bn_both {
        // Training mode on the first CIFAR ResNet layers' activations. The
        // rate counts the least memory traffic: forward reads x and writes
        // y (8 bytes an element); backward reads dy and x and writes dx (12).
        let shape = [32, 64, 32, 32];
        let numel: usize = shape.iter().product();
        let xb = randn(&shape, 5)?.requires_grad_(true);
        let (w, b) = (
            randn(&[64], 6)?.requires_grad_(true),
            randn(&[64], 7)?.requires_grad_(true),
        );
        let dy = randn(&shape, 8)?;
        let forward = || {
            xb.batch_norm(None, None, Some(&w), Some(&b), Default::default())
                .expect("valid batch norm")
        };
        let label = "32x64x32x32".to_string();
        if bn_fwd {
            let t = time_runs(budget, || {
                std::hint::black_box(crate::autograd::no_grad(forward));
            });
            push(
                "batch_norm_f32",
                label.clone(),
                t,
                (8 * numel) as f64,
                false,
            );
        }
        if bn_both {
            let t = time_runs(budget, || {
                std::hint::black_box(forward().backward_with_grad(&dy).expect("backward"));
            });
            push(
                "batch_norm_fwd_bwd_f32",
                label,
                t,
                (20 * numel) as f64,
                false,
            );
        }
    }
    if selected("conv2d") {
        conv_benches(config, budget, &mut push)?;
    }
    Ok(out)
}

/// One row of the training-step table.
#[derive(Clone, Debug)]
pub struct StepResult {
    /// Model name, e.g. `resnet18_cifar`.
    pub model: String,
    /// Images per training step.
    pub batch: usize,
    /// Wall time of one training step (min, median, max).
    pub timing: Timing,
    /// Throughput: `batch` divided by the median time, in images per second.
    pub images_per_sec: f64,
    /// Floating-point operations of one step (forward + backward ≈ 3× forward).
    pub gflop: f64,
    /// Peak resident memory of the process so far, in MiB (Linux only).
    pub peak_rss_mib: Option<f64>,
    /// Per-op times of an average step, when [`BenchConfig::profile`] is set
    /// (measured after the timed steps, so profiling does not slow them).
    pub profile: Option<crate::profile::Profile>,
}

/// Resets the peak-RSS mark (Linux: `echo 5 > /proc/self/clear_refs`), so
/// that [`peak_rss_mib`] measures from now on; elsewhere a no-op.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (`VmHWM`), in MiB, where the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Times full training steps (forward, cross-entropy, backward, SGD with
/// momentum) of the CIFAR ResNet-18 and ResNet-32 on random 3×32×32 batches.
pub fn run_training_steps(config: &BenchConfig) -> Result<Vec<StepResult>> {
    use crate::nn::resnet::{resnet18_cifar, resnet32, ResNet, ResNetConfig};
    use crate::nn::{self, Module};
    use crate::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
    let batch = if config.quick { 8 } else { 32 };
    let steps = if config.quick { 2 } else { 5 };
    // Forward multiply-adds per 3×32×32 image (0.56 G and 69 M); a step
    // costs about three forwards, two flops per multiply-add.
    let models: [(&str, ResNetConfig, f64); 2] = [
        ("resnet18_cifar", resnet18_cifar(3, 10), 0.557),
        ("resnet32_cifar", resnet32(3, 10), 0.0694),
    ];
    let mut out = Vec::new();
    for (name, cfg, fwd_gmacs_per_image) in models {
        if !config
            .filter
            .as_deref()
            .is_none_or(|f| name.contains(f) || "train_step".contains(f))
        {
            continue;
        }
        // Measure this model's peak, not the earlier benchmarks' buffers.
        crate::backend::cpu::pool::clear();
        reset_peak_rss();
        let mut rng = StdRng::seed_from_u64(0);
        let net = ResNet::new(&cfg, &mut rng)?;
        let mut opt = Sgd::new(
            vec![ParamGroup::new(nn::parameters(&net), 0.01, 5e-4)],
            SgdConfig {
                momentum: 0.9,
                ..SgdConfig::default()
            },
        )?;
        let x = Tensor::randn(&[batch, 3, 32, 32], 0.0, 1.0, DType::F32, &mut rng)?;
        let y = Tensor::from_vec(
            (0..batch as i64).map(|i| i % 10).collect::<Vec<_>>(),
            &[batch, 1],
        )?;
        let mut step = || -> Result<()> {
            let loss = net
                .forward(&x)?
                .log_softmax(1)?
                .gather(1, &y)?
                .mean_all()?
                .neg()?;
            let grads = loss.backward()?;
            opt.step(&grads)
        };
        step()?; // warm-up: state buffers, caches
        let mut times = Vec::new();
        for _ in 0..steps {
            let t = Instant::now();
            step()?;
            times.push(t.elapsed());
        }
        let timing = Timing::from_samples(times).expect("at least one step");
        let peak_rss_mib = peak_rss_mib();
        let profile = if config.profile {
            let (result, profile) = crate::profile::profile(|| -> Result<()> {
                for _ in 0..steps {
                    step()?;
                }
                Ok(())
            });
            result?;
            Some(profile.per_step(steps as u32))
        } else {
            None
        };
        out.push(StepResult {
            model: name.to_string(),
            batch,
            timing,
            images_per_sec: batch as f64 / timing.median.as_secs_f64(),
            gflop: 3.0 * 2.0 * fwd_gmacs_per_image * batch as f64,
            peak_rss_mib,
            profile,
        });
    }
    Ok(out)
}

/// Formats training-step results as a Markdown table.
pub fn format_steps(results: &[StepResult], peaks: &Peaks) -> String {
    let mut s = String::from("| model | batch | min step | median step | max step | images/s | GFLOP/s | % of FMA peak | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let rate = r.gflop / r.timing.median.as_secs_f64();
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} % | {} |\n",
            r.model,
            r.batch,
            r.timing.cells(0),
            r.images_per_sec,
            rate,
            100.0 * rate / peaks.gflops,
            r.peak_rss_mib
                .map_or("n/a".to_string(), |m| format!("{m:.0} MiB"))
        ));
    }
    s
}

/// conv2d, batch 32, 3×3 kernel, padding 1, on the ResNet shapes
/// (Cin, Cout, H = W): forward alone, and forward + backward (input and
/// weight gradients), which does three times the forward's multiply-adds.
fn conv_benches(
    config: &BenchConfig,
    budget: Duration,
    push: &mut impl FnMut(&str, String, Timing, f64, bool),
) -> Result<()> {
    use crate::ops::Conv2dParams;
    let batch = if config.quick { 8 } else { 32 };
    let shapes: &[(usize, usize, usize)] =
        &[(64, 64, 32), (128, 128, 16), (256, 256, 8), (3, 64, 32)];
    for &(cin, cout, hw) in shapes {
        let x = randn(&[batch, cin, hw, hw], 5)?;
        let w = randn(&[cout, cin, 3, 3], 6)?.requires_grad_(true);
        let params = Conv2dParams::default().padding(1);
        let flops = 2.0 * (batch * cout * hw * hw * cin * 9) as f64;
        let shape = format!("{batch}x{cin}x{hw}x{hw} -> {cout}");
        let t = time_runs(budget, || {
            std::hint::black_box(
                crate::no_grad(|| x.conv2d(&w, None, params)).expect("valid conv"),
            );
        });
        push("conv2d_fwd", shape.clone(), t, flops, true);
        let xg = x.requires_grad_(true);
        let t = time_runs(budget, || {
            let y = xg.conv2d(&w, None, params).expect("valid conv");
            let g = y.ones_like().expect("alloc");
            std::hint::black_box(y.backward_with_grad(&g).expect("backward"));
        });
        push("conv2d_fwd_bwd", shape, t, 3.0 * flops, true);
    }
    Ok(())
}

/// Formats results and peaks as a Markdown table.
pub fn format_table(results: &[BenchResult], peaks: &Peaks) -> String {
    let mut s = format!(
        "threads: {}   FMA peak: {:.1} GFLOP/s ({})   STREAM triad: {:.1} GB/s\n\n",
        rayon::current_num_threads(),
        peaks.gflops,
        match (peaks.gflops_measured, peaks.isa) {
            (false, _) => "given".to_string(),
            (true, Some(isa)) => format!("measured, {}", isa.name()),
            (true, None) => "no vector FMA".to_string(),
        },
        peaks.triad_gbs
    );
    s.push_str(
        "| kernel | shape | min | median | max | rate | % of peak |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} {} | {:.0} % |\n",
            r.kernel,
            r.shape,
            r.timing.cells(3),
            r.rate,
            r.unit,
            r.percent_of_peak
        ));
    }
    s
}

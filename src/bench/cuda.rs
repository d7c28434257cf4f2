//! `ferrite bench --device cuda`: GEMMs (f32 and bf16, NN and NT) in
//! TFLOP/s next to the GPU's datasheet peak; convolutions forward and
//! backward on the ResNet shapes; elementwise ops and reductions in GB/s
//! next to the measured device-to-device copy bandwidth; and ResNet-18
//! training throughput ([`super::cuda_train`]).
//!
//! Every timing ends with a device synchronisation, so it covers the work
//! queued, not just the launches. Sizes are configurable: the emulated GPU
//! runs the same code about a million times slower, so a rehearsal there
//! uses [`CudaBenchConfig::tiny`].

use super::datasheet::{self, DatasheetPeaks};
use super::rows::{format_rows, Row};
use super::Timing;
use crate::backend::cuda::{self, CudaDevice};
use crate::error::Result;
use crate::ops::autocast::{autocast, Precision};
use crate::ops::Conv2dParams;
use crate::ops::KeepDim;
use crate::tensor::{DType, Tensor};
use crate::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the CUDA benchmarks run.
#[derive(Clone, Debug)]
pub struct CudaBenchConfig {
    /// The CUDA device ordinal.
    pub ordinal: usize,
    /// Square GEMM sizes `n` (`n × n × n`).
    pub gemm_sizes: Vec<usize>,
    /// Images per convolution batch.
    pub conv_batch: usize,
    /// Channels of the convolution shapes are divided by this (1: the
    /// ResNet shapes themselves).
    pub conv_channel_divisor: usize,
    /// Elements of the memory-bound benchmarks.
    pub memory_elems: usize,
    /// Batch sizes of the training rows.
    pub train_batches: Vec<usize>,
    /// Timed training steps per row (after one warm-up step).
    pub train_steps: usize,
    /// Widths of the trained ResNet-18 are divided by this (1: the real one).
    pub train_width_divisor: usize,
    /// Height and width of the training images.
    pub train_image: usize,
    /// Time spent per row on repeated runs (at least 3 runs).
    pub budget: Duration,
    /// Only rows whose bench name contains this.
    pub filter: Option<String>,
}

impl Default for CudaBenchConfig {
    /// The full sizes, for a real GPU.
    fn default() -> Self {
        CudaBenchConfig {
            ordinal: 0,
            gemm_sizes: vec![1024, 2048, 4096, 8192],
            conv_batch: 128,
            conv_channel_divisor: 1,
            memory_elems: 1 << 27,
            train_batches: vec![128, 256],
            train_steps: 10,
            train_width_divisor: 1,
            train_image: 32,
            budget: Duration::from_millis(1000),
            filter: None,
        }
    }
}

impl CudaBenchConfig {
    /// Tiny sizes that run every row on the emulated GPU in seconds
    /// (same code paths, narrower and smaller problems).
    pub fn tiny() -> Self {
        CudaBenchConfig {
            ordinal: 0,
            gemm_sizes: vec![64, 128],
            conv_batch: 2,
            conv_channel_divisor: 16,
            memory_elems: 1 << 14,
            train_batches: vec![2],
            train_steps: 2,
            train_width_divisor: 16,
            train_image: 8,
            budget: Duration::from_millis(1),
            filter: None,
        }
    }

    /// Whether rows named `bench` are selected by the filter.
    pub fn selected(&self, bench: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| bench.contains(f))
    }
}

/// The device under test and what rows are compared with.
pub struct BenchDevice {
    /// The device.
    pub dev: Arc<CudaDevice>,
    /// Its name.
    pub name: String,
    /// The datasheet peaks of its model, when known.
    pub datasheet: Option<DatasheetPeaks>,
    /// Measured device-to-device copy bandwidth, GB/s (bytes read + written).
    pub copy_gbs: f64,
}

impl BenchDevice {
    /// The device `Device::Cuda(ordinal)`.
    pub fn device(&self) -> Device {
        self.dev.device()
    }

    /// The datasheet reference for `dtype` compute ("f32": CUDA cores,
    /// "bf16": dense tensor cores).
    pub fn compute_reference(&self, dtype: &str) -> Option<(f64, String)> {
        let d = self.datasheet?;
        let (value, what) = if dtype == "bf16" {
            (d.bf16_tflops, "bf16 dense")
        } else {
            (d.f32_tflops, "f32 non-tensor")
        };
        Some((value, format!("datasheet {} {what}", d.model)))
    }

    /// The measured copy bandwidth as a reference for memory-bound rows.
    pub fn copy_reference(&self) -> Option<(f64, String)> {
        Some((self.copy_gbs, "measured device copy".to_string()))
    }
}

/// The outcome of [`run`].
pub struct CudaBenchReport {
    /// Device name.
    pub device: String,
    /// Architecture the kernels were built for.
    pub arch: String,
    /// Whether the device is the emulated GPU.
    pub emulated: bool,
    /// Datasheet peaks, when the model is known.
    pub datasheet: Option<DatasheetPeaks>,
    /// Measured copy bandwidth, GB/s.
    pub copy_gbs: f64,
    /// Every row.
    pub rows: Vec<Row>,
}

impl CudaBenchReport {
    /// The report as JSON (the rows join with the PyTorch reference's).
    pub fn to_json(&self) -> Value {
        json!({
            "tool": "ferrite",
            "device": self.device,
            "arch": self.arch,
            "emulated": self.emulated,
            "datasheet": self.datasheet.map(|d| json!({
                "model": d.model,
                "f32_tflops": d.f32_tflops,
                "bf16_tflops": d.bf16_tflops,
                "memory_gbs": d.memory_gbs,
            })),
            "measured_copy_gbs": self.copy_gbs,
            "rows": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        })
    }

    /// Header lines and the Markdown table.
    pub fn format(&self) -> String {
        let peaks = match self.datasheet {
            Some(d) => format!(
                "datasheet {}: f32 {} TFLOP/s, bf16 dense {} TFLOP/s, memory {} GB/s",
                d.model, d.f32_tflops, d.bf16_tflops, d.memory_gbs
            ),
            None => "no datasheet figures for this device".to_string(),
        };
        format!(
            "{} ({}{})\n{peaks}\nmeasured device copy: {:.1} GB/s (bytes read + written)\n\n{}",
            self.device,
            self.arch,
            if self.emulated {
                ", emulated: rates say nothing about a GPU"
            } else {
                ""
            },
            self.copy_gbs,
            format_rows(&self.rows)
        )
    }
}

/// Min, median and max time of one call of `f`, synchronising `dev`
/// before each clock read: one warm-up call, then samples of enough calls
/// to last about a millisecond, at least 3 samples and about `budget` in
/// all (at most 50).
pub fn time_on(
    dev: &CudaDevice,
    budget: Duration,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    f()?;
    dev.synchronize()?;
    let t = Instant::now();
    f()?;
    dev.synchronize()?;
    let one = t.elapsed().as_secs_f64().max(1e-9);
    let reps = (1e-3 / one).ceil().clamp(1.0, 100.0) as u32;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 50) {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        dev.synchronize()?;
        times.push(t.elapsed() / reps);
    }
    Ok(Timing::from_samples(times).expect("at least 3 samples"))
}

/// A standard-normal f32 tensor of `shape` on `device`, from `seed`.
pub fn randn_on(shape: &[usize], seed: u64, device: Device) -> Result<Tensor> {
    Tensor::randn(
        shape,
        0.0,
        1.0,
        DType::F32,
        &mut StdRng::seed_from_u64(seed),
    )?
    .to_device(device)
}

/// Opens the device and measures its copy bandwidth.
pub fn open(config: &CudaBenchConfig) -> Result<BenchDevice> {
    let dev = cuda::device(config.ordinal)?;
    let name = dev.name()?;
    let bytes = config.memory_elems.max(1) * 4;
    let src = dev.alloc_zeroed(bytes)?;
    let t = time_on(&dev, config.budget, || dev.duplicate(&src, bytes).map(drop))?;
    Ok(BenchDevice {
        datasheet: datasheet::lookup(&name),
        copy_gbs: 2.0 * bytes as f64 / t.median.as_secs_f64() / 1e9,
        dev,
        name,
    })
}

/// Runs every selected row on the device of `config`.
pub fn run(config: &CudaBenchConfig) -> Result<CudaBenchReport> {
    let bd = open(config)?;
    let mut rows = Vec::new();
    gemm_rows(&bd, config, &mut rows)?;
    conv_rows(&bd, config, &mut rows)?;
    memory_rows(&bd, config, &mut rows)?;
    rows.extend(super::cuda_train::train_rows(&bd, config)?);
    Ok(CudaBenchReport {
        device: bd.name.clone(),
        arch: bd.dev.arch().to_string(),
        emulated: bd.dev.is_emulated(),
        datasheet: bd.datasheet,
        copy_gbs: bd.copy_gbs,
        rows,
    })
}

/// A compute-bound row: `flops` per run of timing `t`.
fn compute_row(
    bd: &BenchDevice,
    bench: &str,
    dtype: &str,
    shape: String,
    t: Timing,
    flops: f64,
) -> Row {
    Row {
        bench: bench.to_string(),
        dtype: dtype.to_string(),
        shape,
        implementation: "ferrite".to_string(),
        timing: t,
        rate: flops / t.median.as_secs_f64() / 1e12,
        unit: "TFLOP/s",
        reference: bd.compute_reference(dtype),
        peak_memory_mib: None,
    }
}

/// A memory-bound row: `bytes` moved per run of timing `t`.
fn memory_row(
    bench: &str,
    dtype: &str,
    shape: String,
    t: Timing,
    bytes: f64,
    reference: Option<(f64, String)>,
) -> Row {
    Row {
        bench: bench.to_string(),
        dtype: dtype.to_string(),
        shape,
        implementation: "ferrite".to_string(),
        timing: t,
        rate: bytes / t.median.as_secs_f64() / 1e9,
        unit: "GB/s",
        reference,
        peak_memory_mib: None,
    }
}

/// `C = A·B` (NN) and `C = A·Bᵀ` (NT, a transposed view: no copy) for
/// every size, f32 (CUDA cores) and bf16 (tensor cores, f32 accumulation).
fn gemm_rows(bd: &BenchDevice, config: &CudaBenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    for &n in &config.gemm_sizes {
        if !(config.selected("gemm_nn") || config.selected("gemm_nt")) {
            return Ok(());
        }
        let a32 = randn_on(&[n, n], 1, bd.device())?;
        let b32 = a32.neg()?;
        for dtype in ["f32", "bf16"] {
            let (a, b) = if dtype == "bf16" {
                (a32.to_dtype(DType::BF16)?, b32.to_dtype(DType::BF16)?)
            } else {
                (a32.clone(), b32.clone())
            };
            let bt = b.t()?;
            for (bench, rhs) in [("gemm_nn", &b), ("gemm_nt", &bt)] {
                if !config.selected(bench) {
                    continue;
                }
                let t = time_on(&bd.dev, config.budget, || a.matmul(rhs).map(drop))?;
                let flops = 2.0 * (n as f64).powi(3);
                rows.push(compute_row(
                    bd,
                    bench,
                    dtype,
                    format!("{n}x{n}x{n}"),
                    t,
                    flops,
                ));
            }
        }
    }
    Ok(())
}

/// The 3×3 convolutions of the CIFAR ResNet-18 (Cin, Cout, H = W): the
/// stem and each stage's repeated block.
pub const RESNET_CONV_SHAPES: &[(usize, usize, usize)] = &[
    (3, 64, 32),
    (64, 64, 32),
    (128, 128, 16),
    (256, 256, 8),
    (512, 512, 4),
];

/// conv2d forward, and forward + backward (input and weight gradients,
/// three times the forward's multiply-adds), 3×3, padding 1, on f32
/// tensors: in f32, and in bf16 mixed precision (`autocast`: bf16 products
/// on the tensor cores, f32 accumulation and output).
fn conv_rows(bd: &BenchDevice, config: &CudaBenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    if !(config.selected("conv2d_fwd") || config.selected("conv2d_fwd_bwd")) {
        return Ok(());
    }
    let batch = config.conv_batch;
    let div = config.conv_channel_divisor.max(1);
    for &(cin, cout, hw) in RESNET_CONV_SHAPES {
        let (cin, cout) = (
            if cin == 3 { 3 } else { (cin / div).max(1) },
            (cout / div).max(1),
        );
        let x = randn_on(&[batch, cin, hw, hw], 5, bd.device())?;
        let w = randn_on(&[cout, cin, 3, 3], 6, bd.device())?.requires_grad_(true);
        let params = Conv2dParams::default().padding(1);
        let flops = 2.0 * (batch * cout * hw * hw * cin * 9) as f64;
        let shape = format!("{batch}x{cin}x{hw}x{hw}->{cout}");
        let xg = x.requires_grad_(true);
        for precision in [Precision::F32, Precision::Bf16] {
            let dtype = precision.as_str();
            if config.selected("conv2d_fwd") {
                let t = time_on(&bd.dev, config.budget, || {
                    autocast(precision, || {
                        crate::no_grad(|| x.conv2d(&w, None, params)).map(drop)
                    })
                })?;
                let row = compute_row(bd, "conv2d_fwd", dtype, shape.clone(), t, flops);
                rows.push(row);
            }
            if config.selected("conv2d_fwd_bwd") {
                let t = time_on(&bd.dev, config.budget, || {
                    let y = autocast(precision, || xg.conv2d(&w, None, params))?;
                    let g = y.ones_like()?;
                    y.backward_with_grad(&g).map(drop)
                })?;
                let row = compute_row(bd, "conv2d_fwd_bwd", dtype, shape.clone(), t, 3.0 * flops);
                rows.push(row);
            }
        }
    }
    Ok(())
}

/// Copy, elementwise ops and reductions over `memory_elems` elements, in
/// GB/s of bytes read + written, next to the measured copy bandwidth (the
/// copy itself next to the datasheet bandwidth).
fn memory_rows(bd: &BenchDevice, config: &CudaBenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    let n = config.memory_elems.max(1024);
    let budget = config.budget;
    if config.selected("copy") {
        let bytes = 4 * n;
        let src = bd.dev.alloc_zeroed(bytes)?;
        let t = time_on(&bd.dev, budget, || bd.dev.duplicate(&src, bytes).map(drop))?;
        let datasheet = bd
            .datasheet
            .map(|d| (d.memory_gbs, format!("datasheet {} memory", d.model)));
        rows.push(memory_row(
            "copy",
            "u8",
            format!("{bytes}"),
            t,
            2.0 * bytes as f64,
            datasheet,
        ));
    }
    let x = randn_on(&[n], 3, bd.device())?;
    let y = randn_on(&[n], 4, bd.device())?;
    let (xh, yh) = (x.to_dtype(DType::BF16)?, y.to_dtype(DType::BF16)?);
    let cols = 1024;
    let m = x.reshape(&[n / cols, cols])?;
    let mut push = |bench: &str,
                    dtype: &str,
                    shape: String,
                    bytes: usize,
                    f: &mut dyn FnMut() -> Result<()>|
     -> Result<()> {
        if config.selected(bench) {
            let t = time_on(&bd.dev, budget, f)?;
            rows.push(memory_row(
                bench,
                dtype,
                shape,
                t,
                bytes as f64,
                bd.copy_reference(),
            ));
        }
        Ok(())
    };
    push("add", "f32", format!("{n}"), 12 * n, &mut || {
        x.add(&y).map(drop)
    })?;
    push("add", "bf16", format!("{n}"), 6 * n, &mut || {
        xh.add(&yh).map(drop)
    })?;
    push("mul", "f32", format!("{n}"), 12 * n, &mut || {
        x.mul(&y).map(drop)
    })?;
    push("relu", "f32", format!("{n}"), 8 * n, &mut || {
        x.relu().map(drop)
    })?;
    push("cast", "f32->bf16", format!("{n}"), 6 * n, &mut || {
        x.to_dtype(DType::BF16).map(drop)
    })?;
    push("sum_all", "f32", format!("{n}"), 4 * n, &mut || {
        x.sum_all().map(drop)
    })?;
    let rows_shape = format!("{}x{cols}", n / cols);
    push("sum_rows", "f32", rows_shape.clone(), 4 * n, &mut || {
        m.sum(&[1], KeepDim::No).map(drop)
    })?;
    push("softmax", "f32", rows_shape, 8 * n, &mut || {
        m.softmax(1).map(drop)
    })?;
    Ok(())
}

//! The training rows of `ferrite bench --device cuda`: CIFAR ResNet-18
//! training steps (forward, cross-entropy, backward, SGD with momentum 0.9
//! and weight decay 5e-4) on a random batch on the device, in images per
//! second, with the peak device memory of the run; in f32, and in bf16
//! mixed precision (the forward inside `autocast(Precision::Bf16, ..)`:
//! bf16 products on the tensor cores, f32 master weights, as PyTorch's
//! autocast).

use super::cuda::{randn_on, BenchDevice, CudaBenchConfig};
use super::rows::Row;
use super::Timing;
use crate::error::Result;
use crate::nn::resnet::{resnet18_cifar, ResNet};
use crate::nn::{self, Module};
use crate::ops::autocast::{autocast, Precision};
use crate::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use crate::tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Instant;

/// The bench name of the training rows.
pub const TRAIN_BENCH: &str = "resnet18_cifar_train";

/// One row per batch size of `config.train_batches` and precision (f32,
/// bf16 mixed).
pub fn train_rows(bd: &BenchDevice, config: &CudaBenchConfig) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if !config.selected(TRAIN_BENCH) {
        return Ok(rows);
    }
    for &batch in &config.train_batches {
        for precision in [Precision::F32, Precision::Bf16] {
            rows.push(train_row(bd, config, batch, precision)?);
        }
    }
    Ok(rows)
}

/// The shape label of a training row: the batch, plus the image size and
/// width divisor when they are not the real model's.
fn shape(config: &CudaBenchConfig, batch: usize) -> String {
    let mut s = format!("batch {batch}");
    if config.train_image != 32 || config.train_width_divisor != 1 {
        s.push_str(&format!(
            ", {0}x{0} images, widths / {1}",
            config.train_image, config.train_width_divisor
        ));
    }
    s
}

fn train_row(
    bd: &BenchDevice,
    config: &CudaBenchConfig,
    batch: usize,
    precision: Precision,
) -> Result<Row> {
    let dev = &bd.dev;
    dev.synchronize()?;
    dev.reset_peak_memory();
    let mut model_config = resnet18_cifar(3, 10);
    let div = config.train_width_divisor.max(1);
    for w in &mut model_config.widths {
        *w = (*w / div).max(1);
    }
    let mut rng = StdRng::seed_from_u64(0);
    let mut net = ResNet::new(&model_config, &mut rng)?;
    net.to_device(bd.device())?;
    let mut opt = Sgd::new(
        vec![ParamGroup::new(nn::parameters(&net), 0.01, 5e-4)],
        SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        },
    )?;
    let side = config.train_image;
    let x = randn_on(&[batch, 3, side, side], 7, bd.device())?;
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, &[batch, 1])?.to_device(bd.device())?;
    let mut step = || -> Result<()> {
        let loss = autocast(precision, || -> Result<Tensor> {
            net.forward(&x)?
                .log_softmax(1)?
                .gather(1, &y)?
                .mean_all()?
                .neg()
        })?;
        let grads = loss.backward()?;
        opt.step(&grads)
    };
    // One warm-up step (optimizer state, allocator cache), then each
    // timed step ends with a synchronisation.
    step()?;
    dev.synchronize()?;
    let mut times = Vec::new();
    for _ in 0..config.train_steps.max(1) {
        let start = Instant::now();
        step()?;
        dev.synchronize()?;
        times.push(start.elapsed());
    }
    let timing = Timing::from_samples(times).expect("at least one step");
    let peak = dev.memory_stats().peak_in_use_bytes as f64 / (1 << 20) as f64;
    Ok(Row {
        bench: TRAIN_BENCH.to_string(),
        dtype: precision.as_str().to_string(),
        shape: shape(config, batch),
        implementation: "ferrite".to_string(),
        timing,
        rate: batch as f64 / timing.median.as_secs_f64(),
        unit: "img/s",
        reference: None,
        peak_memory_mib: Some(peak),
    })
}

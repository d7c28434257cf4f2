//! The per-layer convolution table (`ferrite bench --conv-layers`): every
//! distinct convolution of the CIFAR ResNet-8/20/18 and torchvision's
//! ResNet-18/50 at its real shape, each pass (forward, input gradient,
//! weight gradient) timed on its own, with its rate, its share of the FMA
//! peak and the kernel that ran.
//!
//! A layer's shape is written `N×C×H×W -> O kK sS pP` (e.g.
//! `32x128x16x16 -> 256 k1 s2 p0`); `benches/pytorch_reference.py
//! --conv-layers` prints the same rows, and `benches/compare_conv.py`
//! joins the two `--json` outputs into one ratio table.

use super::{randn, sample_at_least};
use crate::error::Result;
use crate::nn::resnet::{self, BlockKind, ResNetConfig, Stem};
use crate::ops::conv::conv_out_len;
use crate::ops::conv::cpu::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ConvGeom,
};
use crate::ops::conv::plan::{self, Pass};
use crate::ops::Conv2dParams;
use serde_json::{json, Value};
use std::time::Duration;

/// One distinct convolution: `c_in → c_out`, a `k×k` kernel with stride
/// and padding, on `hw×hw` input planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Padding (both axes).
    pub pad: usize,
    /// Input height and width.
    pub hw: usize,
}

impl ConvLayer {
    /// Output height and width.
    pub fn out_hw(&self) -> usize {
        conv_out_len(self.hw, self.k, self.stride, self.pad, 1).unwrap_or(0)
    }
    /// The row key, e.g. `32x64x32x32 -> 64 k3 s1 p1`.
    pub fn shape(&self, batch: usize) -> String {
        format!(
            "{batch}x{}x{}x{} -> {} k{} s{} p{}",
            self.c_in, self.hw, self.hw, self.c_out, self.k, self.stride, self.pad
        )
    }
    /// Flops of one pass at `batch` images: 2 · multiply-adds of the
    /// definition (each of the three passes does as many).
    pub fn flops(&self, batch: usize) -> f64 {
        let o = self.out_hw();
        2.0 * (batch * self.c_out * o * o * self.c_in * self.k * self.k) as f64
    }
}

/// The models of the table: name, configuration, input size.
pub fn models() -> Vec<(&'static str, ResNetConfig, usize)> {
    let cifar = |d| resnet::resnet_cifar(d, 3, 10).expect("valid depth");
    vec![
        ("resnet8_cifar", cifar(8), 32),
        ("resnet20_cifar", cifar(20), 32),
        ("resnet18_cifar", resnet::resnet18_cifar(3, 10), 32),
        ("resnet18", resnet::resnet18(3, 1000), 224),
        ("resnet50", resnet::resnet50(3, 1000), 224),
    ]
}

/// Every convolution of `cfg` on `hw×hw` inputs, in network order
/// (repeats included), as `ResNet::new` builds them.
pub fn convolutions(cfg: &ResNetConfig, hw: usize) -> Vec<ConvLayer> {
    let conv = |c_in, c_out, k, stride, hw| ConvLayer {
        c_in,
        c_out,
        k,
        stride,
        pad: k / 2,
        hw,
    };
    let mut out = Vec::new();
    let stem = cfg.widths[0];
    let mut hw = match cfg.stem {
        Stem::ImageNet => {
            let l = conv(cfg.in_channels, stem, 7, 2, hw);
            out.push(l);
            conv_out_len(l.out_hw(), 3, 2, 1, 1).unwrap_or(0) // max-pool
        }
        Stem::Cifar => {
            out.push(conv(cfg.in_channels, stem, 3, 1, hw));
            hw
        }
    };
    let exp = cfg.block.expansion();
    let mut inplanes = stem;
    for (i, (&n, &planes)) in cfg.layers.iter().zip(&cfg.widths).enumerate() {
        for b in 0..n {
            let s = if b == 0 && i > 0 { 2 } else { 1 };
            let width = planes * exp;
            let next = conv_out_len(hw, 3, s, 1, 1).unwrap_or(0);
            match cfg.block {
                BlockKind::Basic => {
                    out.push(conv(inplanes, planes, 3, s, hw));
                    out.push(conv(planes, planes, 3, 1, next));
                }
                BlockKind::Bottleneck => {
                    out.push(conv(inplanes, planes, 1, 1, hw));
                    out.push(conv(planes, planes, 3, s, hw));
                    out.push(conv(planes, width, 1, 1, next));
                }
            }
            let projects =
                (s != 1 || inplanes != width) && cfg.shortcut == resnet::ShortcutKind::Projection;
            if projects {
                out.push(conv(inplanes, width, 1, s, hw));
            }
            inplanes = width;
            hw = next;
        }
    }
    out
}

/// The distinct convolutions of the models whose name contains `filter`
/// (all without one), each with the models it occurs in and how often;
/// a `filter` that names no model selects the layers whose shape
/// ([`ConvLayer::shape`] at batch 32) contains it, e.g. `512x4x4`.
pub fn distinct_layers(filter: Option<&str>) -> Vec<(ConvLayer, Vec<(String, usize)>)> {
    let all = models();
    let by_model = filter.is_some_and(|f| all.iter().any(|(name, _, _)| name.contains(f)));
    let mut rows: Vec<(ConvLayer, Vec<(String, usize)>)> = Vec::new();
    for (name, cfg, hw) in all {
        if by_model && filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        for l in convolutions(&cfg, hw) {
            if !by_model && filter.is_some_and(|f| !l.shape(32).contains(f)) {
                continue;
            }
            let i = match rows.iter().position(|(r, _)| *r == l) {
                Some(i) => i,
                None => {
                    rows.push((l, Vec::new()));
                    rows.len() - 1
                }
            };
            match rows[i].1.iter_mut().find(|(m, _)| m == name) {
                Some((_, count)) => *count += 1,
                None => rows[i].1.push((name.to_string(), 1)),
            }
        }
    }
    rows
}

/// One timed pass of one layer.
#[derive(Clone, Debug)]
pub struct LayerRow {
    /// The layer's key ([`ConvLayer::shape`]).
    pub shape: String,
    /// `fwd`, `bwd_input` or `bwd_weight`.
    pub pass: &'static str,
    /// The models it occurs in, with the count in each (`resnet50×3`).
    pub models: String,
    /// Fastest, median and slowest of the timed runs.
    pub times: [Duration; 3],
    /// Timed runs.
    pub runs: usize,
    /// Flops of one run ([`ConvLayer::flops`]).
    pub flops: f64,
    /// Which kernel ran ([`plan::algorithm`]).
    pub algorithm: String,
}

impl LayerRow {
    /// GFLOP/s at the median time.
    pub fn gflops(&self) -> f64 {
        self.flops / self.times[1].as_secs_f64() / 1e9
    }
}

/// Times every pass of every distinct layer of the models that match
/// `filter`, at `batch` images: after a checked run, one warm-up run, then
/// at least `min_runs` and about `budget` per pass (at most 50 runs). f32, no bias; the
/// kernels are called directly (output allocation included), so the rows
/// measure the convolution alone, without the autograd bookkeeping.
pub fn run(
    filter: Option<&str>,
    batch: usize,
    (min_runs, budget): (usize, Duration),
    mut on_row: impl FnMut(&LayerRow),
) -> Result<Vec<LayerRow>> {
    let mut out = Vec::new();
    for (l, models) in distinct_layers(filter) {
        let params = Conv2dParams::default().stride(l.stride).padding(l.pad);
        let g = ConvGeom::new(
            [batch, l.c_in, l.hw, l.hw],
            [l.c_out, l.c_in, l.k, l.k],
            &params,
        )?;
        let (o, oh) = (l.c_out, l.out_hw());
        let x = randn(&[batch, l.c_in, l.hw, l.hw], 11)?.to_vec::<f32>()?;
        let w = randn(&[o, l.c_in, l.k, l.k], 12)?.to_vec::<f32>()?;
        let dy = randn(&[batch, o, oh, oh], 13)?.to_vec::<f32>()?;
        let models = models
            .iter()
            .map(|(m, c)| format!("{m}×{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        for pass in Pass::ALL {
            let run_once = || -> Result<Vec<f32>> {
                match pass {
                    Pass::Forward => conv2d_forward(&x, &w, None, &g),
                    Pass::InputGrad => conv2d_backward_input(&dy, &w, &g),
                    Pass::WeightGrad => conv2d_backward_weight(&x, &dy, &g),
                }
            };
            run_once()?; // surfaces errors before timing
            let times = sample_at_least(min_runs, budget, || {
                std::hint::black_box(run_once().expect("checked above"));
            });
            let row = LayerRow {
                shape: l.shape(batch),
                pass: pass.name(),
                models: models.clone(),
                times: [times[0], times[times.len() / 2], times[times.len() - 1]],
                runs: times.len(),
                flops: l.flops(batch),
                algorithm: plan::algorithm(&g, pass),
            };
            on_row(&row);
            out.push(row);
        }
    }
    Ok(out)
}

/// The header of the Markdown table [`format_row`] writes rows of.
pub const TABLE_HEADER: &str = "| layer | pass | min | median | max | GFLOP/s | % of peak | algorithm | models |\n|---|---|---:|---:|---:|---:|---:|---|---|\n";

/// One row of the Markdown table, `peak` in GFLOP/s.
pub fn format_row(r: &LayerRow, peak: f64) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "| {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.1} | {:.0} % | {} | {} |\n",
        r.shape,
        r.pass,
        ms(r.times[0]),
        ms(r.times[1]),
        ms(r.times[2]),
        r.gflops(),
        100.0 * r.gflops() / peak,
        r.algorithm,
        r.models
    )
}

/// The table as JSON, the form `benches/compare_conv.py` joins:
/// `{impl, threads, peak_gflops, batch, rows: [{shape, pass, min_ms,
/// median_ms, max_ms, runs, gflops, percent_of_peak, algorithm, models}]}`.
pub fn to_json(rows: &[LayerRow], peak: f64, batch: usize) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "impl": "ferrite",
        "provenance": crate::provenance::Provenance::current().to_json(),
        "threads": rayon::current_num_threads(),
        "peak_gflops": peak,
        "batch": batch,
        "rows": rows.iter().map(|r| json!({
            "shape": r.shape,
            "pass": r.pass,
            "min_ms": ms(r.times[0]),
            "median_ms": ms(r.times[1]),
            "max_ms": ms(r.times[2]),
            "runs": r.runs,
            "gflops": r.gflops(),
            "percent_of_peak": 100.0 * r.gflops() / peak,
            "algorithm": r.algorithm,
            "models": r.models,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_convolutions_follow_the_architectures() {
        let r18 = convolutions(&resnet::resnet18_cifar(3, 10), 32);
        // stem + 8 blocks × 2 + 3 projections
        assert_eq!(r18.len(), 1 + 16 + 3);
        assert_eq!(
            r18.last().map(|l| (l.c_in, l.hw, l.out_hw())),
            Some((512, 4, 4))
        );
        let r50 = convolutions(&resnet::resnet50(3, 1000), 224);
        assert_eq!(r50.len(), 1 + 16 * 3 + 4); // 53 convolutions
        assert_eq!((r50[0].k, r50[0].out_hw()), (7, 112));
        assert_eq!(r50[1].hw, 56); // after the max-pool
        assert_eq!(r50.last().map(|l| l.out_hw()), Some(7));
        let r8 = convolutions(&resnet::resnet_cifar(8, 3, 10).expect("valid"), 32);
        assert_eq!(r8.len(), 1 + 6); // zero-pad shortcuts: no projections
                                     // 224² ResNet-50: ≈ 4.1 G multiply-adds per image in its convolutions
        let gmacs: f64 = r50.iter().map(|l| l.flops(1) / 2e9).sum();
        assert!((4.0..4.2).contains(&gmacs), "{gmacs}");
    }

    #[test]
    fn distinct_layers_count_their_repeats() {
        let rows = distinct_layers(Some("resnet18_cifar"));
        let l = rows
            .iter()
            .find(|(l, _)| (l.c_in, l.c_out, l.hw, l.stride) == (64, 64, 32, 1) && l.k == 3)
            .expect("the 64-channel layer");
        assert_eq!(l.1, vec![("resnet18_cifar".to_string(), 4)]);
        assert_eq!(l.0.shape(32), "32x64x32x32 -> 64 k3 s1 p1");
    }
}

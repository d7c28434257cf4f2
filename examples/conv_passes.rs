//! Times the passes of a 3×3 stride-1 convolution on ResNet shapes, batch
//! 32, through both CPU algorithms: im2col + GEMM and Winograd F(2×2, 3×3).
//! Prints median milliseconds and the effective GFLOP/s (the definition's
//! 2·MACs over the time, so the two algorithms compare directly).
//! `cargo run --release --example conv_passes`.
//!
//! The input gradient of a stride-1 convolution is a forward convolution
//! with the flipped kernel, so its time follows the forward column.
use ferrite::ops::conv::cpu::{conv2d_backward_weight_im2col, conv2d_forward_im2col, ConvGeom};
use ferrite::ops::conv::winograd;
use ferrite::ops::Conv2dParams;
use std::time::Instant;

/// Median of 9 timed runs after one warm-up, in milliseconds.
fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[4]
}

fn main() {
    println!("| shape | pass | im2col ms | GFLOP/s | winograd ms | GFLOP/s | speed-up |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let shapes = [
        (16usize, 32usize),
        (32, 16),
        (64, 32),
        (64, 8),
        (128, 16),
        (256, 8),
        (512, 4),
    ];
    for &(c, hw) in &shapes {
        let params = Conv2dParams::default().padding(1);
        let g = ConvGeom::new([32, c, hw, hw], [c, c, 3, 3], &params).expect("a valid geometry");
        let x: Vec<f32> = (0..32 * c * hw * hw)
            .map(|i| (i % 17) as f32 / 17.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..c * c * 9)
            .map(|i| (i % 13) as f32 / 13.0 - 0.5)
            .collect();
        let mflop = 2.0 * g.macs() as f64 / 1e6;
        let row = |pass: &str, a: f64, b: f64| {
            println!(
                "| {c}×{hw}×{hw} | {pass} | {a:.2} | {:.0} | {b:.2} | {:.0} | {:.2}× |",
                mflop / a,
                mflop / b,
                a / b
            )
        };
        let f_i = median_ms(|| {
            drop(std::hint::black_box(
                conv2d_forward_im2col(&x, &w, None, &g).expect("buffers sized for the geometry"),
            ))
        });
        let f_w = median_ms(|| {
            drop(std::hint::black_box(
                winograd::conv2d_forward(&x, &w, None, &g).expect("buffers sized for the geometry"),
            ))
        });
        row("forward", f_i, f_w);
        let w_i = median_ms(|| {
            drop(std::hint::black_box(
                conv2d_backward_weight_im2col(&x, &x, &g).expect("buffers sized for the geometry"),
            ))
        });
        let w_w = median_ms(|| {
            drop(std::hint::black_box(
                winograd::conv2d_backward_weight(&x, &x, &g)
                    .expect("buffers sized for the geometry"),
            ))
        });
        row("weight grad", w_i, w_w);
    }
}

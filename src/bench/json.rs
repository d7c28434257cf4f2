//! `ferrite bench --json` on the CPU: the provenance, the peaks, and every
//! kernel and training-step row with the min, median and max of its runs.

use super::{BenchResult, Peaks, StepResult};
use crate::provenance::Provenance;
use serde_json::{json, Value};

/// The CPU benchmark results as one JSON document.
pub fn cpu_report_json(
    results: &[BenchResult],
    steps: &[StepResult],
    peaks: &Peaks,
    provenance: &Provenance,
) -> Value {
    let kernels: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut row = json!({
                "kernel": r.kernel,
                "shape": r.shape,
                "rate": finite(r.rate),
                "unit": r.unit,
                "percent_of_peak": finite(r.percent_of_peak),
            });
            r.timing.extend_json(&mut row);
            row
        })
        .collect();
    let training: Vec<Value> = steps
        .iter()
        .map(|s| {
            let rate = s.gflop / s.timing.median.as_secs_f64();
            let mut row = json!({
                "model": s.model,
                "batch": s.batch,
                "images_per_sec": finite(s.images_per_sec),
                "gflops": finite(rate),
                "percent_of_fma_peak": finite(100.0 * rate / peaks.gflops),
                "peak_rss_mib": s.peak_rss_mib,
            });
            s.timing.extend_json(&mut row);
            row
        })
        .collect();
    json!({
        "tool": "ferrite",
        "device": "cpu",
        "provenance": provenance.to_json(),
        "peaks": {
            "fma_gflops": finite(peaks.gflops),
            "fma_measured": peaks.gflops_measured,
            "isa": peaks.isa.map(|i| i.name()),
            "triad_gbs": finite(peaks.triad_gbs),
        },
        "kernels": kernels,
        "training_steps": training,
    })
}

/// `x`, or `null` when it is NaN or infinite (JSON has no such numbers).
fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Timing;
    use std::time::Duration;

    #[test]
    fn every_row_carries_min_median_max_in_order() {
        let ms = Duration::from_millis;
        let timing = Timing::from_samples(vec![ms(5), ms(2), ms(3)]).unwrap();
        let results = [BenchResult {
            kernel: "add_f32".into(),
            shape: "16".into(),
            timing,
            rate: 1.0,
            unit: "GB/s",
            percent_of_peak: f64::NAN,
        }];
        let steps = [StepResult {
            model: "resnet32_cifar".into(),
            batch: 8,
            timing,
            images_per_sec: 8.0 / 0.003,
            gflop: 1.0,
            peak_rss_mib: None,
            profile: None,
        }];
        let peaks = Peaks {
            gflops: 100.0,
            isa: None,
            gflops_measured: false,
            triad_gbs: 10.0,
        };
        let j = cpu_report_json(&results, &steps, &peaks, &Provenance::current());
        assert_eq!(
            j["provenance"]["ferrite_version"],
            env!("CARGO_PKG_VERSION")
        );
        assert!(j["kernels"][0]["percent_of_peak"].is_null());
        for row in [&j["kernels"][0], &j["training_steps"][0]] {
            let f = |k: &str| row[k].as_f64().unwrap();
            assert!(f("min_ms") <= f("median_ms") && f("median_ms") <= f("max_ms"));
            assert_eq!((f("min_ms"), f("median_ms"), f("max_ms")), (2.0, 3.0, 5.0));
            assert_eq!(row["runs"], 3);
        }
    }
}

//! One benchmark result in the form shared by `ferrite bench --device cuda
//! --json` and `benches/pytorch_gpu_reference.py --json`: rows join on
//! (`bench`, `dtype`, `shape`), and `impl` tells the two sides (and
//! PyTorch's variants) apart.

use super::Timing;
use serde_json::{json, Value};

/// One measured row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was run, e.g. `gemm_nn`, `conv2d_fwd_bwd`, `add`,
    /// `resnet18_cifar_train`.
    pub bench: String,
    /// Element type of the work, e.g. `f32`, `bf16`.
    pub dtype: String,
    /// Problem size, e.g. `4096x4096x4096`, `128x64x32x32->64`, `batch 128`.
    pub shape: String,
    /// Who ran it: `ferrite`, or a PyTorch variant.
    pub implementation: String,
    /// Time of one run: min, median (what `rate` uses) and max.
    pub timing: Timing,
    /// Achieved rate in `unit`.
    pub rate: f64,
    /// `TFLOP/s`, `GB/s` or `img/s`.
    pub unit: &'static str,
    /// The figure `rate` is compared with (same unit), and what it is
    /// (e.g. "datasheet H200 SXM bf16 dense", "measured device copy").
    pub reference: Option<(f64, String)>,
    /// Peak device memory in use during the row, MiB (training rows).
    pub peak_memory_mib: Option<f64>,
}

impl Row {
    /// `rate` as a percentage of the reference.
    pub fn percent_of_reference(&self) -> Option<f64> {
        self.reference
            .as_ref()
            .filter(|(r, _)| *r > 0.0)
            .map(|(r, _)| 100.0 * self.rate / r)
    }

    /// The row as a JSON object (`min_ms`, `median_ms`, `max_ms` and
    /// `runs` among its fields).
    pub fn to_json(&self) -> Value {
        let mut row = json!({
            "bench": self.bench,
            "dtype": self.dtype,
            "shape": self.shape,
            "impl": self.implementation,
            "rate": self.rate,
            "unit": self.unit,
            "reference": self.reference.as_ref().map(|(r, _)| *r),
            "reference_kind": self.reference.as_ref().map(|(_, k)| k.clone()),
            "percent_of_reference": self.percent_of_reference(),
            "peak_memory_mib": self.peak_memory_mib,
        });
        self.timing.extend_json(&mut row);
        row
    }
}

/// Rows as a Markdown table.
pub fn format_rows(rows: &[Row]) -> String {
    let mut s = String::from(
        "| bench | dtype | shape | min | median | max | rate | % of reference | reference |\n\
         |---|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let (percent, reference) = match (&r.reference, r.percent_of_reference()) {
            (Some((value, kind)), Some(p)) => (
                format!("{p:.0} %"),
                format!("{kind}: {value:.1} {}", r.unit),
            ),
            _ => ("n/a".to_string(), "none".to_string()),
        };
        let memory = r
            .peak_memory_mib
            .map_or(String::new(), |m| format!(", peak {m:.0} MiB"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} {}{memory} | {percent} | {reference} |\n",
            r.bench,
            r.dtype,
            r.shape,
            r.timing.cells(3),
            format_rate(r.rate),
            r.unit,
        ));
    }
    s
}

/// A rate with about four significant digits, whatever its magnitude (the
/// emulated GPU runs at a millionth of a real one).
fn format_rate(rate: f64) -> String {
    if rate == 0.0 || !rate.is_finite() {
        return format!("{rate}");
    }
    let digits = (3 - rate.abs().log10().floor() as i32).clamp(0, 9) as usize;
    format!("{rate:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(reference: Option<(f64, String)>) -> Row {
        Row {
            bench: "gemm_nn".into(),
            dtype: "bf16".into(),
            shape: "8192x8192x8192".into(),
            implementation: "ferrite".into(),
            timing: Timing::from_samples(vec![
                Duration::from_millis(3),
                Duration::from_millis(2),
                Duration::from_millis(1),
            ])
            .unwrap(),
            rate: 550.0,
            unit: "TFLOP/s",
            reference,
            peak_memory_mib: None,
        }
    }

    #[test]
    fn percent_and_json_follow_the_reference() {
        let r = row(Some((1000.0, "datasheet H200 SXM bf16 dense".into())));
        assert_eq!(r.percent_of_reference(), Some(55.0));
        let j = r.to_json();
        assert_eq!(j["bench"], "gemm_nn");
        assert_eq!(j["impl"], "ferrite");
        assert_eq!(j["median_ms"], 2.0);
        assert_eq!(
            (j["min_ms"].as_f64(), j["max_ms"].as_f64()),
            (Some(1.0), Some(3.0))
        );
        assert_eq!(j["percent_of_reference"], 55.0);
        assert!(
            format_rows(&[r]).contains("| 55 % | datasheet H200 SXM bf16 dense: 1000.0 TFLOP/s |")
        );
        let none = row(None);
        assert_eq!(none.percent_of_reference(), None);
        assert!(none.to_json()["reference"].is_null());
        assert!(format_rows(&[none]).contains("| n/a | none |"));
    }

    #[test]
    fn rates_keep_their_significant_digits() {
        assert_eq!(format_rate(550.0), "550.0");
        assert_eq!(format_rate(0.000123456), "0.0001235");
        assert_eq!(format_rate(12345.6), "12346");
    }
}

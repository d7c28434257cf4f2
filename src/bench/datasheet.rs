//! Datasheet peaks of the GPUs the CUDA benchmarks are compared with,
//! keyed by the device name the driver reports. These are the vendor's
//! published dense (non-sparse) figures, not measurements: a benchmark
//! row reports its rate as a percentage of them, labelled "datasheet".

/// The published peaks of one GPU model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DatasheetPeaks {
    /// The model, as printed next to the figures (e.g. "H200 SXM").
    pub model: &'static str,
    /// f32 on the CUDA cores (no tensor cores), TFLOP/s.
    pub f32_tflops: f64,
    /// Dense bf16 on the tensor cores, TFLOP/s.
    pub bf16_tflops: f64,
    /// Memory bandwidth, GB/s.
    pub memory_gbs: f64,
}

/// Device-name fragments and their peaks, most specific first (an "H100
/// NVL" must not match the plain "H100" entry, the SXM part).
const TABLE: &[(&[&str], DatasheetPeaks)] = &[
    (
        &["H200 NVL"],
        DatasheetPeaks {
            model: "H200 NVL",
            f32_tflops: 60.0,
            bf16_tflops: 835.0,
            memory_gbs: 4800.0,
        },
    ),
    (
        &["H200"],
        DatasheetPeaks {
            model: "H200 SXM",
            f32_tflops: 67.0,
            bf16_tflops: 989.0,
            memory_gbs: 4800.0,
        },
    ),
    (
        &["H100 NVL"],
        DatasheetPeaks {
            model: "H100 NVL",
            f32_tflops: 60.0,
            bf16_tflops: 835.0,
            memory_gbs: 3900.0,
        },
    ),
    (
        &["H100 PCIe"],
        DatasheetPeaks {
            model: "H100 PCIe",
            f32_tflops: 51.0,
            bf16_tflops: 756.0,
            memory_gbs: 2000.0,
        },
    ),
    (
        &["H100"],
        DatasheetPeaks {
            model: "H100 SXM",
            f32_tflops: 67.0,
            bf16_tflops: 989.0,
            memory_gbs: 3350.0,
        },
    ),
    (
        &["A100"],
        DatasheetPeaks {
            model: "A100 SXM 80GB",
            f32_tflops: 19.5,
            bf16_tflops: 312.0,
            memory_gbs: 2039.0,
        },
    ),
];

/// The datasheet peaks of the GPU called `device_name` (as the driver
/// reports it, e.g. "NVIDIA H100 80GB HBM3"), when it is in the table.
pub fn lookup(device_name: &str) -> Option<DatasheetPeaks> {
    TABLE
        .iter()
        .find(|(keys, _)| keys.iter().any(|k| device_name.contains(k)))
        .map(|(_, peaks)| *peaks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_find_their_model() {
        assert_eq!(lookup("NVIDIA H200").unwrap().model, "H200 SXM");
        assert_eq!(lookup("NVIDIA H200 NVL").unwrap().model, "H200 NVL");
        assert_eq!(lookup("NVIDIA H100 80GB HBM3").unwrap().model, "H100 SXM");
        assert_eq!(lookup("NVIDIA H100 PCIe").unwrap().model, "H100 PCIe");
        assert_eq!(lookup("NVIDIA H100 NVL").unwrap().model, "H100 NVL");
        assert_eq!(
            lookup("NVIDIA A100-SXM4-80GB").unwrap().model,
            "A100 SXM 80GB"
        );
        assert_eq!(lookup("emulated GPU 0 (kernels run on the CPU)"), None);
        let h200 = lookup("NVIDIA H200").unwrap();
        assert_eq!((h200.f32_tflops, h200.bf16_tflops), (67.0, 989.0));
    }
}

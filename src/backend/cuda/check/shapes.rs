//! The launch shape each kernel is queued with by its launcher in
//! `src/ops/<family>/cuda.rs`, as block sizes and dynamic shared memory:
//! what the launch-limit check compares with each compiled kernel's limits.

use crate::backend::cuda::launch::{
    ELEMENTWISE_THREADS, ROW_MAX_THREADS, ROW_MIN_THREADS, SGEMM_TILE, TENSOR_CORE_TILE,
};

/// One of the launch configurations of [`launch`](crate::backend::cuda::launch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchShape {
    /// [`launch::elementwise`](crate::backend::cuda::launch::elementwise)
    /// (and `philox_blocks`): 256-thread blocks.
    Elementwise,
    /// [`launch::rows`](crate::backend::cuda::launch::rows): one block per
    /// row, 32 to 512 threads.
    Rows,
    /// [`launch::sgemm`](crate::backend::cuda::launch::sgemm): the f32 GEMM's
    /// 256-thread tiles.
    Sgemm,
    /// [`launch::tensor_core_gemm`](crate::backend::cuda::launch::tensor_core_gemm):
    /// the bf16/f16 GEMM's 128-thread tiles.
    TensorCoreGemm,
}

impl LaunchShape {
    /// The name of the `launch` function.
    pub fn name(self) -> &'static str {
        match self {
            LaunchShape::Elementwise => "elementwise",
            LaunchShape::Rows => "rows",
            LaunchShape::Sgemm => "sgemm",
            LaunchShape::TensorCoreGemm => "tensor_core_gemm",
        }
    }

    /// The fewest and most threads per block this shape launches.
    pub fn threads(self) -> (u32, u32) {
        match self {
            LaunchShape::Elementwise => (ELEMENTWISE_THREADS, ELEMENTWISE_THREADS),
            LaunchShape::Rows => (ROW_MIN_THREADS, ROW_MAX_THREADS),
            LaunchShape::Sgemm => (SGEMM_TILE.2, SGEMM_TILE.2),
            LaunchShape::TensorCoreGemm => (TENSOR_CORE_TILE.2, TENSOR_CORE_TILE.2),
        }
    }

    /// Dynamic shared memory per block, bytes (no kernel uses any).
    pub fn dynamic_shared_bytes(self) -> u32 {
        0
    }
}

/// Kernels launched one block per row (everything else of their family is
/// launched elementwise, unless it is a GEMM).
const ROW_KERNELS: &[(&str, &[&str])] = &[
    (
        "reduce",
        &[
            "sum_fwd_f32",
            "mean_fwd_f32",
            "max_fwd_f32",
            "logsumexp_fwd_f32",
            "argmax_fwd_f32",
            "softmax_fwd_f32",
            "log_softmax_fwd_f32",
            "softmax_bwd_f32",
            "log_softmax_bwd_f32",
        ],
    ),
    (
        "norm",
        &[
            "batch_norm_stats_fwd_f32",
            "batch_norm_moments_fwd_f32",
            "batch_norm_reduce_bwd_f32",
        ],
    ),
];

/// The shape kernel `entry` of `family` is launched with.
pub fn launch_shape(family: &str, entry: &str) -> LaunchShape {
    match (family, entry) {
        ("matmul", "gemm_fwd_f32") => LaunchShape::Sgemm,
        ("matmul", _) => LaunchShape::TensorCoreGemm,
        _ if ROW_KERNELS
            .iter()
            .any(|(f, entries)| *f == family && entries.contains(&entry)) =>
        {
            LaunchShape::Rows
        }
        _ => LaunchShape::Elementwise,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::compile::{family, FAMILIES};

    #[test]
    fn every_row_kernel_named_here_exists() {
        // A renamed kernel must not silently fall back to "elementwise".
        for (fam, entries) in ROW_KERNELS {
            let f = family(fam).unwrap();
            for e in *entries {
                assert!(f.has_entry(e), "{fam}: no kernel {e}");
            }
        }
    }

    #[test]
    fn shapes_follow_the_launchers() {
        assert_eq!(launch_shape("matmul", "gemm_fwd_f32"), LaunchShape::Sgemm);
        assert_eq!(
            launch_shape("matmul", "gemm_fwd_bf16"),
            LaunchShape::TensorCoreGemm
        );
        assert_eq!(launch_shape("reduce", "sum_fwd_f32"), LaunchShape::Rows);
        assert_eq!(
            launch_shape("reduce", "sum_strided_fwd_f32"),
            LaunchShape::Elementwise
        );
        assert_eq!(
            launch_shape("norm", "batch_norm_fwd_f32"),
            LaunchShape::Elementwise
        );
        assert_eq!(LaunchShape::Rows.threads(), (32, 512));
        // Every kernel has a shape whose blocks are whole warps.
        for f in FAMILIES {
            for e in f.entry_points() {
                let (lo, hi) = launch_shape(f.name, &e).threads();
                assert!(lo <= hi && lo % 32 == 0 && hi % 32 == 0, "{e}");
            }
        }
    }
}

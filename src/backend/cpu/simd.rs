//! Which vector instruction set the hot loops run on.
//!
//! The crate is built for baseline x86-64 (SSE2), so the compiler
//! vectorises loops 4 f32 lanes wide. A kernel bound by arithmetic rather
//! than memory can compile the same Rust body again inside functions marked
//! `#[target_feature(enable = "avx2,fma")]` and `"avx512f"`, where it
//! vectorises 8 and 16 lanes wide, and call the one [`detect`] names (see
//! `ops::softmax::cpu` for the pattern). The bodies use only IEEE
//! operations whose results do not depend on the vector width (Rust never
//! fuses `a * b + c` on its own, and lane counts are fixed in the source),
//! so every path gives bit-identical results.

/// The vector instruction sets kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorIsa {
    /// 512-bit vectors (16 f32 lanes); used when the `avx512` feature is on.
    Avx512,
    /// 256-bit vectors (8 f32 lanes) with FMA.
    Avx2,
    /// The baseline build (SSE2 on x86-64, or another architecture).
    Baseline,
}

impl VectorIsa {
    /// Name as printed by benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            VectorIsa::Avx512 => "AVX-512",
            VectorIsa::Avx2 => "AVX2+FMA",
            VectorIsa::Baseline => "baseline",
        }
    }

    /// f32 lanes per vector.
    pub fn f32_lanes(self) -> usize {
        match self {
            VectorIsa::Avx512 => 16,
            VectorIsa::Avx2 => 8,
            VectorIsa::Baseline => 4,
        }
    }

    /// Whether this CPU runs `self`'s instructions.
    pub fn is_available(self) -> bool {
        match self {
            VectorIsa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            VectorIsa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            VectorIsa::Avx512 => cfg!(feature = "avx512") && is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// The widest [`VectorIsa`] this CPU runs (AVX-512 only with the `avx512`
/// feature). matrixmultiply picks its GEMM kernel by the same tests.
pub fn detect() -> VectorIsa {
    [VectorIsa::Avx512, VectorIsa::Avx2]
        .into_iter()
        .find(|isa| isa.is_available())
        .unwrap_or(VectorIsa::Baseline)
}

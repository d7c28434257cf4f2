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
//!
//! The widest set used can be capped at run time ([`set_isa_limit`], or
//! the `FERRITE_ISA` environment variable: `avx2` or `baseline`), e.g. to
//! measure the AVX2 kernels on a CPU that has AVX-512, or to run the tests
//! of the narrower paths there. A cap only narrows the choice: kernels
//! still check that the CPU has the instructions they run.

use std::sync::atomic::{AtomicU8, Ordering};

/// The vector instruction sets kernels are compiled for, narrowest first
/// (so `Avx2 < Avx512`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VectorIsa {
    /// The baseline build (SSE2 on x86-64, or another architecture).
    Baseline,
    /// 256-bit vectors (8 f32 lanes) with FMA.
    Avx2,
    /// 512-bit vectors (16 f32 lanes); used when the `avx512` feature is on.
    Avx512,
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

    /// Whether kernels may use `self`: the CPU runs its instructions
    /// ([`VectorIsa::cpu_has`]) and it is within [`isa_limit`].
    pub fn is_available(self) -> bool {
        self <= isa_limit() && self.cpu_has()
    }

    /// Whether this CPU runs `self`'s instructions (AVX-512 only with the
    /// `avx512` feature), whatever the limit.
    pub fn cpu_has(self) -> bool {
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

/// The process-wide cap of [`detect`]: 0 until first read, else 1 +
/// the cap's position in [`VectorIsa`]'s order.
static LIMIT: AtomicU8 = AtomicU8::new(0);

/// The widest [`VectorIsa`] kernels may use: the last [`set_isa_limit`],
/// else `FERRITE_ISA` (`baseline`, `avx2` or `avx512`; read once, and
/// ignored when it names none of these), else no cap (`Avx512`).
pub fn isa_limit() -> VectorIsa {
    const ORDER: [VectorIsa; 3] = [VectorIsa::Baseline, VectorIsa::Avx2, VectorIsa::Avx512];
    let stored = LIMIT.load(Ordering::Relaxed);
    if stored != 0 {
        return ORDER[usize::from(stored - 1).min(2)];
    }
    let from_env = match std::env::var("FERRITE_ISA")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        Ok(v) if v == "baseline" => VectorIsa::Baseline,
        Ok(v) if v == "avx2" => VectorIsa::Avx2,
        _ => VectorIsa::Avx512,
    };
    // A concurrent set_isa_limit wins over the environment.
    let _ = LIMIT.compare_exchange(0, from_env as u8 + 1, Ordering::Relaxed, Ordering::Relaxed);
    ORDER[usize::from(LIMIT.load(Ordering::Relaxed) - 1).min(2)]
}

/// Caps the vector instruction set kernels use from now on, for the whole
/// process (see the module doc). Products already running finish on the
/// kernels they started with; results are the same bits either way except
/// where a narrower set selects another algorithm (e.g. a convolution
/// that runs im2col rather than Winograd).
pub fn set_isa_limit(limit: VectorIsa) {
    LIMIT.store(limit as u8 + 1, Ordering::Relaxed);
}

/// The widest [`VectorIsa`] this CPU runs (AVX-512 only with the `avx512`
/// feature) within [`isa_limit`].
pub fn detect() -> VectorIsa {
    [VectorIsa::Avx512, VectorIsa::Avx2]
        .into_iter()
        .find(|isa| isa.is_available())
        .unwrap_or(VectorIsa::Baseline)
}

/// AVX2 helpers shared by the hand-vectorised kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// A lane bit mask (bit `l` for lane `l`, bits above 7 ignored) as
    /// AVX2's lane mask: all ones in the lanes set, for masked loads and
    /// stores.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn lane_mask(bits: u32) -> __m256i {
        let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let set = _mm256_and_si256(_mm256_set1_epi32((bits & 0xff) as i32), lane_bits);
        _mm256_cmpeq_epi32(set, lane_bits)
    }

    /// Lanes 0, 2, 4, … of `a` then of `b`: the even values of the 16
    /// values `(a, b)`, in order.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn even_lanes(a: __m256, b: __m256) -> __m256 {
        let pairs = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(pairs))
    }

    /// Lanes 1, 3, 5, … of `a` then of `b`: the odd values of the 16
    /// values `(a, b)`, in order.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn odd_lanes(a: __m256, b: __m256) -> __m256 {
        let pairs = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(pairs))
    }
}

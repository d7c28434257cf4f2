//! Element types and the Rust types that store them.

use half::{bf16, f16};

/// The element type of a tensor.
///
/// `F32` is the default and is supported by every op. `F64` serves reference
/// math and gradient checks. `BF16`/`F16` are storage formats: math on them is
/// carried out in f32 and rounded back. `I64` holds class indices and argmax
/// results; `U8` holds boolean masks (0 or 1) produced by comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float (`f32`), the default.
    F32,
    /// 64-bit IEEE float (`f64`).
    F64,
    /// bfloat16: 8 exponent bits, 7 mantissa bits (`half::bf16`).
    BF16,
    /// IEEE half precision: 5 exponent bits, 10 mantissa bits (`half::f16`).
    F16,
    /// 64-bit signed integer (`i64`).
    I64,
    /// 8-bit unsigned integer (`u8`), used for masks.
    U8,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::BF16 | DType::F16 => 2,
            DType::U8 => 1,
        }
    }

    /// True for the floating-point dtypes (the ones that can carry gradients).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
    }

    /// Lower-case name as used in file formats and messages (`"f32"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }
}

/// A Rust type that can be stored in a tensor.
///
/// Conversions go through `f64`, which represents every value of every
/// supported type exactly except `i64` beyond 2^53.
pub trait WithDType: Copy + Default + Send + Sync + 'static + std::fmt::Debug {
    /// The dtype tag of this Rust type.
    const DTYPE: DType;
    /// Converts from f64 (rounding to nearest for narrower types).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
}

macro_rules! with_dtype {
    ($t:ty, $d:ident, |$a:ident| $from:expr, |$b:ident| $to:expr) => {
        impl WithDType for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn from_f64($a: f64) -> Self {
                $from
            }
            #[inline]
            fn to_f64(self) -> f64 {
                let $b = self;
                $to
            }
        }
    };
}

with_dtype!(f32, F32, |v| v as f32, |v| v as f64);
with_dtype!(f64, F64, |v| v, |v| v);
// Half types round through f32: `half`'s `from_f64` drops the low 32 bits
// of the f64 before rounding (so an f32 value just above a rounding tie
// rounds down), and PyTorch converts double to half types through float too.
with_dtype!(bf16, BF16, |v| bf16::from_f32(v as f32), |v| v.to_f64());
with_dtype!(f16, F16, |v| f16::from_f32(v as f32), |v| v.to_f64());
with_dtype!(i64, I64, |v| v as i64, |v| v as f64);
with_dtype!(u8, U8, |v| v as u8, |v| v as f64);

/// Floating-point element types on which CPU math kernels run natively.
///
/// Half types are computed in f32 (see [`DType`]), so only f32 and f64
/// implement this trait.
pub trait Float:
    WithDType
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::iter::Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// −∞.
    const NEG_INFINITY: Self;
    /// +∞.
    const INFINITY: Self;
    /// `e^self` (for f32, the crate's own vectorisable `exp_f32`).
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Error function `erf(self)`.
    fn erf(self) -> Self;
    /// `ln(1 + self)`, accurate near 0.
    fn ln_1p(self) -> Self;
    /// `self` raised to the power `p`.
    fn powf(self, p: Self) -> Self;
    /// The larger of `self` and `o`; if one is NaN, the other.
    fn max(self, o: Self) -> Self;
    /// The smaller of `self` and `o`; if one is NaN, the other.
    fn min(self, o: Self) -> Self;
    /// True if `self` is NaN.
    fn is_nan(self) -> bool;
}

/// `e^x` for f32 without a library call, so loops over it vectorise.
///
/// Cody–Waite range reduction `x = n ln2 + r` with |r| ≤ ln2/2, a degree-7
/// Taylor polynomial for `e^r` (truncation error < 1e-8 relative), and the
/// scale `2^n` built directly in the exponent bits. Rounding to the nearest
/// integer uses the 1.5·2^23 trick, which needs no SSE4.1 `round`.
/// Accurate to about 2 ulp up to `ln(f32::MAX)` ≈ 88.7228 (where `n`
/// reaches 128, `2^n` is applied as `2^127 · 2`), +inf above it; underflows
/// to 0 below -87.3; NaN propagates.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split so that n * LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    const MAX_ARG: f32 = 88.722_83; // just below ln(f32::MAX)
    let xc = x.clamp(-87.3, MAX_ARG);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `t` = 1.5·2^23 + n exactly, so its bits are ROUND's plus n: the
    // integer n without a float-to-int conversion (which does not
    // vectorise well).
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    // 2^128 is not an f32: for n = 128 scale by 2^127, then double (exact).
    let top = n_int > 127;
    let scale = f32::from_bits(((n_int - top as i32 + 127) as u32) << 23);
    let y = p * scale;
    let y = if top { y * 2.0 } else { y };
    if x > MAX_ARG {
        f32::INFINITY
    } else if x < -87.3 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

macro_rules! float_impl {
    ($t:ty, $erf:path, $exp:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const INFINITY: Self = <$t>::INFINITY;
            #[inline]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            #[inline]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline]
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}

float_impl!(f32, libm::erff, exp_f32);
float_impl!(f64, libm::erf, f64::exp);

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_within_a_few_ulp_of_f64_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.722 {
            let exact = (x as f64).exp();
            let rel = ((exp_f32(x) as f64) - exact).abs() / exact;
            worst = worst.max(rel);
            x += 0.001_37;
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        // Finite right up to ln(f32::MAX), infinite just above.
        for x in [88.4f32, 88.7, 88.722_83] {
            let rel = ((exp_f32(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            assert!(rel < 4.0 * f32::EPSILON as f64, "exp({x}): {}", exp_f32(x));
        }
        assert_eq!(exp_f32(88.722_84), f32::INFINITY);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}

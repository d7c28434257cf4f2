//! The arithmetic of one set of tiles in the vector transforms, written
//! once and compiled for AVX-512 ([`x512`]) and AVX2 ([`x256`]) vectors
//! (one tile per lane): the same operations in the same order as the
//! portable transforms, so every path gives the same bits. A macro rather
//! than a generic function, so that each copy is a `target_feature`
//! function of its instruction set whose intrinsics inline.

/// Defines `input_tile`, `output_tile` and `output_grad_tile` for vectors
/// of type `$v` under `$feature`, with `$add`, `$sub` its lane-wise
/// operations and `$neg` an exact negation (a sign flip).
macro_rules! tile_math {
    ($feature:literal, $v:ty, $add:ident, $sub:ident, $neg:expr) => {
        /// `Bᵀ d B` for one set of tiles: `d[k][j]` holds column `j` of
        /// patch row `k` of each tile; the result is the 16 transformed
        /// values, matrix `4i + j` at index `4i + j`.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(in super::super) fn input_tile(d: [[$v; 4]; 4]) -> [$v; 16] {
            // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
            let t: [[$v; 4]; 4] = [
                std::array::from_fn(|j| $sub(d[0][j], d[2][j])),
                std::array::from_fn(|j| $add(d[1][j], d[2][j])),
                std::array::from_fn(|j| $sub(d[2][j], d[1][j])),
                std::array::from_fn(|j| $sub(d[1][j], d[3][j])),
            ];
            // (Bᵀ d) B: each row's columns (a, b, c, d) become
            // (a − c, b + c, c − b, b − d).
            std::array::from_fn(|e| {
                let [a, b, c, d] = t[e / 4];
                match e % 4 {
                    0 => $sub(a, c),
                    1 => $add(b, c),
                    2 => $sub(c, b),
                    _ => $sub(b, d),
                }
            })
        }

        /// `Aᵀ M A` + bias for one set of tiles, from the 16 products
        /// `m[e]`: `y[a][b]` is output row `a`, column `b` of each tile.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(in super::super) fn output_tile(m: &[$v; 16], bias: $v) -> [[$v; 2]; 2] {
            // Aᵀ M: rows (m0 + m1 + m2, m1 − m2 − m3), column by column.
            let s: [[$v; 4]; 2] = [
                std::array::from_fn(|j| $add($add(m[j], m[4 + j]), m[8 + j])),
                std::array::from_fn(|j| $sub($sub(m[4 + j], m[8 + j]), m[12 + j])),
            ];
            // (Aᵀ M) A: columns (s0 + s1 + s2, s1 − s2 − s3), + bias.
            s.map(|r| {
                [
                    $add($add($add(r[0], r[1]), r[2]), bias),
                    $add($sub($sub(r[1], r[2]), r[3]), bias),
                ]
            })
        }

        /// `A dY Aᵀ` for one set of tiles: `y[k][h]` holds column `h` of
        /// output-gradient row `k` of each tile; the result is the 16
        /// values, matrix `4i + j` at index `4i + j`.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(in super::super) fn output_grad_tile(y: [[$v; 2]; 2]) -> [$v; 16] {
            let neg = $neg;
            // A dY: rows (y0, y0 + y1, y0 − y1, −y1), both columns.
            let ady: [[$v; 2]; 4] = [
                y[0],
                std::array::from_fn(|h| $add(y[0][h], y[1][h])),
                std::array::from_fn(|h| $sub(y[0][h], y[1][h])),
                std::array::from_fn(|h| neg(y[1][h])),
            ];
            // (A dY) Aᵀ: each row's (p, q) becomes (p, p + q, p − q, −q).
            std::array::from_fn(|e| {
                let [p, q] = ady[e / 4];
                match e % 4 {
                    0 => p,
                    1 => $add(p, q),
                    2 => $sub(p, q),
                    _ => neg(q),
                }
            })
        }
    };
}

/// The tile arithmetic on zmm registers (AVX-512F).
pub(super) mod x512 {
    use std::arch::x86_64::*;
    tile_math!(
        "avx512f",
        __m512,
        _mm512_add_ps,
        _mm512_sub_ps,
        |v: __m512| _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(v),
            _mm512_set1_epi32(i32::MIN)
        ))
    );
}

/// The tile arithmetic on ymm registers (AVX2).
pub(super) mod x256 {
    use std::arch::x86_64::*;
    tile_math!("avx2", __m256, _mm256_add_ps, _mm256_sub_ps, |v: __m256| {
        _mm256_xor_ps(v, _mm256_set1_ps(-0.0))
    });
}

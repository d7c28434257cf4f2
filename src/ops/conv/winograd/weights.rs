//! The weights' side of Winograd F(2×2, 3×3): `U = G g Gᵀ` and its
//! adjoint, and the transformed weights written straight into the GEMM's
//! packed layout where the CPU has one.

#[cfg(target_arch = "x86_64")]
use super::{f32_slice, f32_slice_mut, packed_weights};
use super::{ConvGeom, SharedMut, POS};
use crate::backend::cpu::pool::take_empty;
use crate::error::Result;
use crate::ops::matmul::cpu::Gemm;
use crate::ops::matmul::packed::PackedLhs;
#[cfg(target_arch = "x86_64")]
use crate::ops::matmul::sgemm::Kernel;
use crate::tensor::Float;
use rayon::prelude::*;

/// Row `i` of `G` applied to three values: the 4 ways F(2×2, 3×3) mixes
/// the taps of a kernel row or column.
#[inline(always)]
pub(super) fn g_row<T: Float>(i: usize, a: T, b: T, c: T) -> T {
    let half = T::from_f64(0.5);
    match i {
        0 => a,
        1 => (a + b + c) * half,
        2 => (a - b + c) * half,
        _ => c,
    }
}

/// Row `i` of `Gᵀ` applied to four values: the adjoint of [`g_row`].
#[inline(always)]
pub(super) fn gt_row<T: Float>(i: usize, u: [T; 4]) -> T {
    let half = T::from_f64(0.5);
    match i {
        0 => u[0] + (u[1] + u[2]) * half,
        1 => (u[1] - u[2]) * half,
        _ => (u[1] + u[2]) * half + u[3],
    }
}

/// `U = G g Gᵀ` for every (output, input) channel pair of `w` (O×C×3×3),
/// laid out as 16 row-major O × C matrices: `u[(e·O + o)·C + c]`.
///
/// Output channels run in parallel. For one output channel the 9 taps of
/// all its C kernels are first split into 9 arrays of C, so every step
/// after that is an elementwise operation on whole arrays.
pub(super) fn transform_weights<T: Float>(w: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    let (o_n, c_n) = (g.c_out, g.c_in);
    let len = POS * o_n * c_n;
    let mut u = take_empty::<T>(len)?;
    let u_ptr = SharedMut(u.spare_capacity_mut().as_mut_ptr());
    (0..o_n).into_par_iter().for_each_init(
        || vec![T::ZERO; 21 * c_n],
        |buf, o| {
            let (taps, gg) = buf.split_at_mut(9 * c_n);
            for (c, k) in w[o * c_n * 9..(o + 1) * c_n * 9]
                .chunks_exact(9)
                .enumerate()
            {
                for (t, &v) in k.iter().enumerate() {
                    taps[t * c_n + c] = v;
                }
            }
            let tap = |t: usize| &taps[t * c_n..(t + 1) * c_n];
            for i in 0..4 {
                // Row i of G g: three arrays (its columns b = 0, 1, 2).
                for b in 0..3 {
                    let dst = &mut gg[b * c_n..(b + 1) * c_n];
                    let (t0, t1, t2) = (tap(b), tap(3 + b), tap(6 + b));
                    for c in 0..c_n {
                        dst[c] = g_row(i, t0[c], t1[c], t2[c]);
                    }
                }
                let (r0, rest) = gg.split_at(c_n);
                let (r1, r2) = rest.split_at(c_n);
                for j in 0..4 {
                    // Safety: row o of matrix e = 4i + j, inside the buffer;
                    // only the task for output channel o writes it.
                    let dst = unsafe { u_ptr.slice(((4 * i + j) * o_n + o) * c_n, c_n) };
                    for c in 0..c_n {
                        dst[c].write(g_row(j, r0[c], r1[c], r2[c]));
                    }
                }
            }
        },
    );
    // SAFETY: every (e, o) row of C elements was written above: the tasks
    // cover o in 0..O and each writes its row of all 16 matrices.
    unsafe { u.set_len(len) };
    Ok(u)
}

/// `dg = Gᵀ dU G`: the adjoint of [`transform_weights`], from 16 O × C
/// matrices back to the O×C×3×3 weight layout. Output channels run in
/// parallel, each on whole arrays of C as in the forward transform (f32
/// with AVX2: eight channels per vector, `avx2::untransform_channel`,
/// same bits).
pub(super) fn untransform_weights<T: Float>(du: &[T], g: &ConvGeom) -> Vec<T> {
    let (o_n, c_n) = (g.c_out, g.c_in);
    let mut dw = vec![T::ZERO; o_n * c_n * 9];
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(du), Some(dw32)) = (
        super::avx2::available(),
        f32_slice(du),
        f32_slice_mut(&mut dw),
    ) {
        dw32.par_chunks_mut(c_n * 9)
            .enumerate()
            .for_each(|(o, dw_o)| {
                // Safety: the CPU has AVX2 and FMA (checked).
                unsafe { super::avx2::untransform_channel(du, (o, o_n, c_n), dw_o) }
            });
        return dw;
    }
    untransform_portable(du, g, &mut dw);
    dw
}

/// [`untransform_weights`] in plain arithmetic, into `dw`.
fn untransform_portable<T: Float>(du: &[T], g: &ConvGeom, dw: &mut [T]) {
    let (o_n, c_n) = (g.c_out, g.c_in);
    dw.par_chunks_mut(c_n * 9).enumerate().for_each_init(
        || vec![T::ZERO; 12 * c_n],
        |rows, (o, dw_o)| {
            let at = |e: usize| &du[(e * o_n + o) * c_n..(e * o_n + o + 1) * c_n];
            // Gᵀ dU: three rows i of four arrays j.
            for i in 0..3 {
                for j in 0..4 {
                    let dst = &mut rows[(4 * i + j) * c_n..(4 * i + j + 1) * c_n];
                    let (u0, u1, u2, u3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                    for c in 0..c_n {
                        dst[c] = gt_row(i, [u0[c], u1[c], u2[c], u3[c]]);
                    }
                }
            }
            // (Gᵀ dU) G, written tap by tap into the kernels.
            for (c, k) in dw_o.chunks_exact_mut(9).enumerate() {
                for i in 0..3 {
                    let r = |j: usize| rows[(4 * i + j) * c_n + c];
                    let row = [r(0), r(1), r(2), r(3)];
                    for b in 0..3 {
                        k[3 * i + b] = gt_row(b, row);
                    }
                }
            }
        },
    );
}

/// Which transformed weights to pack: those of `w` as it is (the forward
/// pass), or those of `w` flipped with its channel axes swapped (the
/// input gradient).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Orientation {
    AsIs,
    Flipped,
}

/// The 16 transformed weight matrices of `w` (geometry `g`) in
/// `orientation`, written straight into the GEMM's packed layout where
/// the element type and CPU have one (f32 where ferrite's sgemm runs);
/// `None` elsewhere, or when the memory cannot be reserved (then the
/// caller transforms and packs them in two steps).
pub(super) fn weights_packed_directly<T: Gemm>(
    w: &[T],
    g: &ConvGeom,
    orientation: Orientation,
) -> Option<Vec<PackedLhs<'static, T>>> {
    #[cfg(target_arch = "x86_64")]
    if let (Some(w), true) = (f32_slice(w), Kernel::detect().is_some()) {
        let flipped = orientation == Orientation::Flipped;
        let packed = packed_weights::packed_weights(w, g, flipped)?;
        return packed
            .into_iter()
            .map(|p| {
                // T is f32 (f32_slice), whose packed form is `PackedA`.
                let any: Box<dyn std::any::Any> = Box::new(p);
                let p = any.downcast::<T::Packed>().ok()?;
                Some(PackedLhs::from_packed(*p))
            })
            .collect();
    }
    let _ = (w, g, orientation);
    None
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::ops::conv::Conv2dParams;

    #[test]
    fn vector_untransform_gives_the_portable_bits() {
        if !super::super::avx2::available() {
            return;
        }
        // Input channels a multiple of 8, with a remainder, and fewer
        // than 8.
        for (o, c) in [(3, 16), (20, 13), (5, 5), (2, 300)] {
            let g = ConvGeom::new([1, c, 4, 4], [o, c, 3, 3], &Conv2dParams::default()).unwrap();
            let du: Vec<f32> = (0..16 * o * c)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let fast = untransform_weights(&du, &g);
            let mut portable = vec![0.0; o * c * 9];
            untransform_portable(&du, &g, &mut portable);
            assert_eq!(fast.len(), portable.len());
            for (i, (a, b)) in fast.iter().zip(&portable).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{o}x{c}: value {i}");
            }
        }
    }
}

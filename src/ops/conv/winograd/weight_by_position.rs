//! The weight gradient split by Winograd position instead of by chunk of
//! tiles, on several threads, where [`super::by_position`] holds (many
//! channels on few tiles: ResNet-18's 512-channel 4×4 layers).
//!
//! Split by chunk, every thread sums its tiles into a whole `dU` of its own
//! (16 · O · C values: 16 MB for 512 channels), zeroed first and added to
//! the others' at the end, and both threads stream all 16 matrices of `dU`
//! through their products. Split by position, the chunks are transformed
//! in parallel first; then each task owns whole positions `e` of `dU` and
//! adds every chunk's product into it, in chunk order. Measured on a
//! 2-core AMD EPYC (half-rate AVX-512), the 512-channel 4×4 weight
//! gradient at batch 32 took 21.0 ms on two threads by chunk against 22.8
//! on one, no faster; in alternating runs on two threads, 12.9 ms by chunk
//! and 9.3 ms by position (medians of three).

use super::transforms::{transform_input, transform_output_grad};
use super::weights::untransform_weights;
use super::{matrix_stride, with_part_matrices, Tiles, POS};
use crate::backend::cpu::pool::{recycle, take_zeroed};
use crate::error::Result;
use crate::ops::conv::cpu::ConvGeom;
use crate::ops::matmul::cpu::{gemm_serial, Gemm, MatRef};
use rayon::prelude::*;
use std::ops::Range;

/// `dW` of `g` from `x` and `dy` (checked by the caller), the chunks
/// `chunks` of tile rows transformed in parallel and `dU` summed position
/// by position, each position's chunks added in order.
pub(super) fn backward_weight_by_position<T: Gemm>(
    x: &[T],
    dy: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    chunks: &[Range<usize>],
) -> Result<Vec<T>> {
    let (c_n, o_n) = (g.c_in, g.c_out);
    let tb = |rows: &Range<usize>| rows.len() * tiles.tw;
    let mut du = take_zeroed::<T>(POS * o_n * c_n)?;
    with_part_matrices((c_n, o_n), tiles, chunks, |mut vs, mut ms| {
        chunks
            .par_iter()
            .zip(vs.par_iter_mut())
            .zip(ms.par_iter_mut())
            .for_each(|((rows, v), m)| {
                transform_input(x, g, tiles, rows.clone(), v);
                transform_output_grad(dy, g, tiles, rows.clone(), m);
            });
        let (vs, ms) = (&vs, &ms);
        du.par_chunks_mut(o_n * c_n)
            .enumerate()
            .for_each(|(e, du_e)| {
                for ((rows, v), m) in chunks.iter().zip(vs).zip(ms) {
                    let dm_e =
                        MatRef::row_major(m, e * matrix_stride(o_n, tb(rows)), o_n, tb(rows));
                    let v_e =
                        MatRef::row_major(v, e * matrix_stride(c_n, tb(rows)), c_n, tb(rows)).t();
                    gemm_serial(dm_e, v_e, du_e, true);
                }
            });
    });
    let dw = untransform_weights(&du, g);
    recycle(du);
    Ok(dw)
}

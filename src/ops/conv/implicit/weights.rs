//! The forward's left operand: a convolution's weights, one `og ×
//! cg·kh·kw` matrix per group, read along rows (a forward) or along
//! columns (a 1×1 input gradient's `Wᵀ`), packed once per call or block by
//! block inside each product.

use super::super::cpu::parallel;
use super::super::geom::ConvGeom;
use crate::backend::cpu::num_threads;
use crate::error::{Error, Result};
use crate::ops::matmul::sgemm::{Lhs, PackedA};

/// How the forward's weights lie in memory: each group's `og × k` matrix
/// (`k = cg·kh·kw`) at the same place, read along rows or along columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WeightOrder {
    /// Row-major: the `O × C/g × kh × kw` weights of a convolution.
    Rows,
    /// Column-major: the weights of a 1×1 input-gradient convolution
    /// (`W'[g·cg + c, o] = W[g·og + o, c]`) read straight from the
    /// forward's `W`, which is their transpose, with no flipped copy.
    Columns,
}

impl WeightOrder {
    /// Element strides `(row, column)` of a group's `og × k` matrix.
    fn strides(self, g: &ConvGeom) -> (isize, isize) {
        match self {
            WeightOrder::Rows => (g.col_rows() as isize, 1),
            WeightOrder::Columns => (1, g.og() as isize),
        }
    }
}

/// The weights of each group, `og × cg·kh·kw`, packed for the products.
fn pack_weights(w: &[f32], order: WeightOrder, g: &ConvGeom) -> Result<Vec<PackedA>> {
    let (og, k) = (g.og(), g.col_rows());
    (0..g.groups)
        .map(|gi| {
            let wg = &w[gi * og * k..(gi + 1) * og * k];
            // Safety: the og × k matrix lies inside `wg` with either
            // order's strides.
            unsafe { PackedA::new(og, k, wg.as_ptr(), order.strides(g)) }
                .ok_or_else(|| Error::out_of_memory::<f32>(og * k))
        })
        .collect()
}

/// The forward's weights: packed once per call (`PackedA`), or read in
/// place and packed block by block inside each product.
pub(super) enum Weights<'a> {
    /// One packed matrix per group.
    Packed(Vec<PackedA>),
    /// The `O × C/g·kh·kw` weights as they are, in either order.
    InPlace(&'a [f32], WeightOrder),
}

impl<'a> Weights<'a> {
    /// In place where the forward runs tile products and every thread
    /// has one tile: each `MC × KC` block of the weights is then packed
    /// once per product anyway, into L2 right before its use, instead of
    /// the whole packed copy being written out and read back (4.7 MB for
    /// ResNet-18's 256→512 stride-2 layer, whose forward went from
    /// 9.7–10.1 to 9.0–9.5 ms on one thread; its 1×1 projection from
    /// 1.1–1.3 to 1.0 ms; level on two threads). Packed otherwise: the
    /// per-image products and the threads' further tiles reuse the copy.
    pub(super) fn for_forward(
        w: &'a [f32],
        order: WeightOrder,
        g: &ConvGeom,
        direct: bool,
        tiles: usize,
    ) -> Result<Self> {
        let threads = if parallel(g) { num_threads() } else { 1 };
        if !direct && tiles <= threads {
            return Ok(Weights::InPlace(w, order));
        }
        pack_weights(w, order, g).map(Weights::Packed)
    }

    /// The left operand of group `gi`'s products: the packed matrix, or
    /// the group's rows of the weights (a live slice, so the strided
    /// operand's elements lie inside it).
    pub(super) fn group(&self, gi: usize, g: &ConvGeom) -> Lhs<'_> {
        match self {
            Weights::Packed(packed) => Lhs::Packed(&packed[gi]),
            Weights::InPlace(w, order) => {
                let (og, k) = (g.og(), g.col_rows());
                Lhs::Strided {
                    m: og,
                    k,
                    a: w[gi * og * k..(gi + 1) * og * k].as_ptr(),
                    strides: order.strides(g),
                }
            }
        }
    }
}

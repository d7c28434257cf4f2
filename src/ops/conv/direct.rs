//! The naive convolution, seven loops straight from the definition: the
//! oracle the fast CPU kernels (`cpu.rs`, `implicit/`, `winograd/`) are
//! tested against.

use super::geom::ConvGeom;
use crate::error::Result;
use crate::tensor::Float;

/// The definition, loop by loop: the oracle the fast paths are tested against.
/// Errors when a buffer is shorter than the geometry needs.
pub fn conv2d_direct<T: Float>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    let (x, w, bias) = g.forward_operands(x, w, bias)?;
    let mut out = crate::backend::cpu::pool::take_zeroed::<T>(g.n * g.out_image_len())?;
    let (cg, og) = (g.cg(), g.og());
    for n in 0..g.n {
        for o in 0..g.c_out {
            let grp = o / og;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias.map_or(T::ZERO, |b| b[o]);
                    for c in 0..cg {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let Some((iy, ix)) = g.tap_input((oy, ox), (i, j)) else {
                                    continue; // padding
                                };
                                let xi = ((n * g.c_in + grp * cg + c) * g.h + iy) * g.w + ix;
                                let wi = ((o * cg + c) * g.kh + i) * g.kw + j;
                                acc += x[xi] * w[wi];
                            }
                        }
                    }
                    out[((n * g.c_out + o) * g.oh + oy) * g.ow + ox] = acc;
                }
            }
        }
    }
    Ok(out)
}

//! Which kernel computes each pass of a CPU convolution: one decision per
//! geometry and pass, made here and nowhere else, so that the entry points
//! in `cpu.rs` and the per-layer benchmark (`ferrite bench --conv-layers`)
//! cannot disagree about it.

use super::geom::ConvGeom;
use super::winograd;

/// The three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// `y = conv(x, w)`.
    Forward,
    /// `dx` from `dy` and `w`.
    InputGrad,
    /// `dw` from `x` and `dy`.
    WeightGrad,
}

impl Pass {
    /// All passes, in the order a table lists them.
    pub const ALL: [Pass; 3] = [Pass::Forward, Pass::InputGrad, Pass::WeightGrad];

    /// Short name: `fwd`, `bwd_input`, `bwd_weight`.
    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "fwd",
            Pass::InputGrad => "bwd_input",
            Pass::WeightGrad => "bwd_weight",
        }
    }
}

/// Output planes of at least this many pixels get one forward GEMM per
/// image, written straight into the NCHW output. matrixmultiply packs the
/// weights once per 1024 output columns anyway (its `NC` block), so
/// per-image GEMMs this wide pack no more than a tile GEMM does; smaller
/// planes share a tile GEMM and are copied out of it.
pub const DIRECT_MIN_COLUMNS: usize = 1024;

/// Output planes of at least this many pixels get one weight-gradient GEMM
/// per image, reading `dy` in place. matrixmultiply walks the inner
/// dimension in blocks of 256 (its `KC`), reading and writing the result
/// once per block, so cutting the inner dimension at image boundaries
/// costs nothing extra once an image fills a block; smaller planes are
/// gathered side by side first.
pub const DIRECT_MIN_INNER: usize = 256;

/// Fewest input channels per group for the flipped-kernel input gradient:
/// with fewer (an RGB stem) its GEMMs would have only `cg` rows, and
/// col2im's `cg·kh·kw` rows do better.
pub const FLIPPED_MIN_CHANNELS: usize = 16;

/// The geometry of the forward convolution that computes the input
/// gradient of `g` with the flipped kernel (see
/// `cpu::conv2d_backward_input`), or `None` where col2im is used instead:
/// where the flipped route does not apply (strides other than 1, padding
/// beyond the kernel's reach), has too few input channels
/// ([`FLIPPED_MIN_CHANNELS`]), or would run as an im2col tile GEMM of a
/// kernel wider than 1×1 (see `flipped_pays`).
pub fn flipped_geometry(g: &ConvGeom) -> Option<ConvGeom> {
    flipped_candidate(g).filter(|t| flipped_pays(g, t))
}

/// Whether the flipped route beats col2im for `g`, whose flipped
/// convolution is `t`. It does where `t` runs through [`winograd`] (fewer
/// multiplies), through per-image GEMMs (large planes), or for 1×1 kernels
/// (no im2col expansion at all). It does not for the other small-plane
/// layers, e.g. ResNet-18's 512-channel 3×3 layers on 4×4 planes where
/// Winograd does not take them (CPUs without ferrite's sgemm):
/// there the flipped route expands `dy` nine-fold into a tile
/// (`C·9 × tile`) after flipping the kernel and runs a GEMM of inner
/// dimension `C·9`, while col2im's GEMM `Wᵀ · dy` has the short inner
/// dimension `O` and writes each product once; measured 1.5× faster at
/// batch 32 on 1 and 2 threads (`ferrite bench --conv-layers --filter
/// 512x4x4`).
fn flipped_pays(g: &ConvGeom, t: &ConvGeom) -> bool {
    winograd::applies(t) || t.col_cols() >= DIRECT_MIN_COLUMNS || g.kh * g.kw == 1
}

/// The flipped-kernel geometry wherever that route can compute the input
/// gradient, before [`flipped_pays`] weighs it.
pub(super) fn flipped_candidate(g: &ConvGeom) -> Option<ConvGeom> {
    let (dh, dw) = g.dilation;
    let reach = (dh * (g.kh - 1), dw * (g.kw - 1));
    let fits = g.stride == (1, 1) && g.padding.0 <= reach.0 && g.padding.1 <= reach.1;
    (fits && g.cg() >= FLIPPED_MIN_CHANNELS).then(|| ConvGeom {
        n: g.n,
        c_in: g.c_out,
        h: g.oh,
        w: g.ow,
        c_out: g.c_in,
        kh: g.kh,
        kw: g.kw,
        stride: (1, 1),
        padding: (reach.0 - g.padding.0, reach.1 - g.padding.1),
        dilation: g.dilation,
        groups: g.groups,
        oh: g.h,
        ow: g.w,
    })
}

/// How the implicit GEMM (`implicit`: f32 on AVX2 or AVX-512, horizontal stride
/// 1 or 2) computes `pass` of `g`, where it does, for the f32 convolutions
/// Winograd does not take.
fn implicit(g: &ConvGeom, pass: Pass) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    return super::implicit::supports(g).then(|| super::implicit::route(g, pass));
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Whether the channel-lane kernels (`channel_lanes`) compute the forward
/// of `g` (f32).
fn channel_lanes(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::channel_lanes::pays(g);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the channel-lane kernels (`channel_lanes`) compute the weight
/// gradient of `g` (f32).
fn channel_lanes_weight_grad(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::channel_lanes::pays_weight_grad(g);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the pixel-lane kernels (`pixel_lanes`) compute the weight
/// gradient of `g` (f32).
fn pixel_lanes(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::pixel_lanes::applies(g);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the f32 input gradient of `g` reads a 1×1 kernel's weights in
/// place as their transpose rather than flipping them (`implicit`).
fn weights_transposed_in_place(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::implicit::input_grad_in_place(g);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The name of the forward kernel for `g` (f32).
fn forward_name(g: &ConvGeom) -> &'static str {
    if winograd::applies(g) {
        "winograd F(2x2,3x3)"
    } else if super::winograd_stride2::applies(g) {
        "winograd stride 2"
    } else if channel_lanes(g) {
        "direct, channel lanes"
    } else if let Some(route) = implicit(g, Pass::Forward) {
        route
    } else if g.col_cols() >= DIRECT_MIN_COLUMNS {
        "im2col+gemm per image"
    } else {
        "im2col+gemm tiles"
    }
}

/// What computes `pass` of the f32 convolution `g` on the CPU (f64 runs
/// im2col where this says implicit, channel lanes or pixel lanes), in words
/// (e.g. `flipped: winograd F(2x2,3x3)`, `gemm+col2im`).
pub fn algorithm(g: &ConvGeom, pass: Pass) -> String {
    match pass {
        Pass::Forward => forward_name(g).to_string(),
        Pass::InputGrad => match flipped_geometry(g) {
            Some(t) if weights_transposed_in_place(g) => {
                format!("transposed: {}", forward_name(&t))
            }
            Some(t) => format!("flipped: {}", forward_name(&t)),
            None => "gemm+col2im".to_string(),
        },
        Pass::WeightGrad => if pixel_lanes(g) {
            "direct, pixel lanes"
        } else if channel_lanes_weight_grad(g) {
            "direct, channel lanes"
        } else if winograd::applies(g) {
            "winograd F(2x2,3x3)"
        } else if let Some(route) = implicit(g, Pass::WeightGrad) {
            route
        } else if g.col_cols() >= DIRECT_MIN_INNER {
            "im2col+gemm per image"
        } else {
            "im2col+gemm tiles"
        }
        .to_string(),
    }
}

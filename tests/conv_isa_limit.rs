//! The f32 convolution paths of every vector instruction set the CPU runs,
//! selected with `simd::set_isa_limit` (AVX-512, AVX2 + FMA, baseline):
//! forward and both gradients against f64 on shapes that take each route
//! (implicit GEMM, channel lanes, im2col, Winograd, pixel lanes), and the
//! same bits on every set that takes the same route (the kernels sum the
//! same terms in the same order).
//!
//! The limit is process-wide, so this file holds a single test that sets
//! it in turn (other test binaries run in other processes).

mod common;
use common::{assert_close, randn};
use ferrite::backend::cpu::simd::{set_isa_limit, VectorIsa};
use ferrite::ops::conv::cpu::ConvGeom;
use ferrite::ops::conv::plan::{self, Pass};
use ferrite::ops::Conv2dParams;
use ferrite::{DType, Tensor};

/// `[n, c, h, w]` input, `[o, c, kh, kw]` weights, stride, padding.
type Shape = ([usize; 4], [usize; 4], usize, usize);

/// An RGB stem, stride-2 3×3 and 1×1 layers, 4×4 planes with many
/// channels, and a Winograd-sized stride-1 layer; odd channel counts.
const SHAPES: [Shape; 6] = [
    ([2, 3, 34, 34], [16, 3, 3, 3], 1, 1),
    ([2, 24, 10, 10], [36, 24, 3, 3], 2, 1),
    ([2, 40, 8, 8], [48, 40, 1, 1], 2, 0),
    ([32, 40, 4, 4], [36, 40, 3, 3], 1, 1),
    ([4, 32, 16, 16], [40, 32, 3, 3], 1, 1),
    ([3, 17, 9, 11], [19, 17, 3, 3], 2, 2),
];

/// The f32 output and gradients of `sum(conv(x, w, b) · r)`, as f64.
fn passes(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    p: Conv2dParams,
    r: &Tensor,
    dtype: DType,
) -> [Vec<f64>; 4] {
    let cast = |t: &Tensor| t.to_dtype(dtype).unwrap().requires_grad_(true);
    let (xv, wv, bv) = (cast(x), cast(w), cast(b));
    let y = xv.conv2d(&wv, Some(&bv), p).unwrap();
    let loss = y
        .mul(&r.to_dtype(dtype).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    let get = |t: &Tensor| t.to_f64_vec().unwrap();
    [
        get(&y),
        get(g.get(&xv).unwrap()),
        get(g.get(&wv).unwrap()),
        get(g.get(&bv).unwrap()),
    ]
}

#[test]
fn every_instruction_set_matches_f64_and_gemm_routes_agree_bit_for_bit() {
    let sets: Vec<VectorIsa> = [VectorIsa::Avx512, VectorIsa::Avx2, VectorIsa::Baseline]
        .into_iter()
        .filter(|isa| isa.cpu_has())
        .collect();
    for (s, &(xs, ws, stride, pad)) in SHAPES.iter().enumerate() {
        let seed = 10 * s as u64;
        let (x, w, b) = (
            randn(&xs, seed),
            randn(&ws, seed + 1),
            randn(&[ws[0]], seed + 2),
        );
        let p = Conv2dParams::default().stride(stride).padding(pad);
        let g = ConvGeom::new(xs, ws, &p).unwrap();
        let out = x.conv2d(&w, None, p).unwrap();
        let r = randn(out.shape(), seed + 3);
        set_isa_limit(VectorIsa::Avx512);
        let want = passes(&x, &w, &b, p, &r, DType::F64);
        // (route names of the three passes, bits of the four results)
        let mut seen: Vec<(VectorIsa, Vec<String>, Vec<Vec<u32>>)> = Vec::new();
        for &isa in &sets {
            set_isa_limit(isa);
            let routes: Vec<String> = [Pass::Forward, Pass::InputGrad, Pass::WeightGrad]
                .into_iter()
                .map(|pass| plan::algorithm(&g, pass))
                .collect();
            let got = passes(&x, &w, &b, p, &r, DType::F32);
            for (i, name) in ["y", "dx", "dw", "db"].iter().enumerate() {
                let label =
                    format!("{xs:?} {ws:?} s{stride} p{pad} on {isa:?} ({routes:?}): {name}");
                assert_close(&label, &got[i], &want[i], 1e-3, 1e-4);
            }
            let bits = got
                .iter()
                .map(|v| v.iter().map(|&a| (a as f32).to_bits()).collect())
                .collect();
            seen.push((isa, routes, bits));
        }
        // Passes that ran the same route on two sets give the same bits,
        // but for Winograd on the baseline set: it transforms the flipped
        // kernel for the input gradient, where the vector sets pack the
        // flipped transforms from the weights (the taps summed in another
        // order); and but for the pixel-lane weight gradient, whose
        // partial sums are one per vector lane (16 or 8 of them).
        for (isa, routes, bits) in &seen[1..] {
            let (first, first_routes, first_bits) = &seen[0];
            for (pass, route) in routes.iter().enumerate() {
                let baseline_winograd = *isa == VectorIsa::Baseline && route.contains("winograd");
                let lane_sums = route.contains("pixel lanes");
                if route != &first_routes[pass] || baseline_winograd || lane_sums {
                    continue;
                }
                // Pass i's result: y, dx, dw (bias gradients are plain sums).
                assert!(
                    bits[pass] == first_bits[pass],
                    "{xs:?} {ws:?}: {route} differs between {first:?} and {isa:?}"
                );
            }
        }
    }
    set_isa_limit(VectorIsa::Avx512);
}

//! conv2d: the im2col + GEMM and Winograd kernels against the naive definition on many
//! shapes, finite-difference gradient checks, and bad-input errors.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;
use common::{assert_close, check_grad, randn};
use ferrite::ops::conv::{cpu::ConvGeom, plan, winograd};
use ferrite::ops::Conv2dParams;
use ferrite::{DType, Tensor};

struct Case {
    x: [usize; 4],
    w: [usize; 4],
    params: Conv2dParams,
    bias: bool,
}

fn p(
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dParams {
    Conv2dParams {
        stride,
        padding,
        dilation,
        groups,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            x: [2, 3, 7, 6],
            w: [4, 3, 3, 3],
            params: p((1, 1), (1, 1), (1, 1), 1),
            bias: true,
        },
        Case {
            x: [2, 3, 7, 6],
            w: [4, 3, 3, 3],
            params: p((2, 2), (1, 1), (1, 1), 1),
            bias: false,
        },
        Case {
            x: [1, 2, 9, 8],
            w: [3, 2, 3, 3],
            params: p((1, 1), (2, 2), (2, 2), 1),
            bias: true,
        },
        Case {
            x: [2, 4, 6, 5],
            w: [6, 2, 3, 3],
            params: p((1, 1), (1, 1), (1, 1), 2),
            bias: true,
        },
        Case {
            x: [1, 3, 5, 5],
            w: [3, 1, 3, 3],
            params: p((1, 1), (1, 1), (1, 1), 3),
            bias: false,
        },
        Case {
            x: [2, 5, 6, 6],
            w: [7, 5, 1, 1],
            params: p((1, 1), (0, 0), (1, 1), 1),
            bias: true,
        },
        Case {
            x: [2, 5, 6, 6],
            w: [7, 5, 1, 1],
            params: p((2, 2), (0, 0), (1, 1), 1),
            bias: false,
        },
        Case {
            x: [1, 2, 7, 9],
            w: [3, 2, 2, 3],
            params: p((2, 1), (1, 0), (1, 2), 1),
            bias: true,
        },
        Case {
            x: [1, 3, 11, 11],
            w: [4, 3, 7, 7],
            params: p((2, 2), (3, 3), (1, 1), 1),
            bias: false,
        },
        Case {
            x: [3, 2, 4, 4],
            w: [2, 2, 4, 4],
            params: p((1, 1), (0, 0), (1, 1), 1),
            bias: true,
        },
        Case {
            x: [1, 1, 3, 3],
            w: [1, 1, 3, 3],
            params: p((3, 3), (2, 2), (1, 1), 1),
            bias: false,
        },
        // A stride-2 3×3 layer on small planes: the f32 forward runs
        // directly with output channels in the vector lanes (rows of 4).
        Case {
            x: [2, 5, 8, 8],
            w: [6, 5, 3, 3],
            params: p((2, 2), (1, 1), (1, 1), 1),
            bias: true,
        },
        // Stride 1 with output rows as long as the input's: im2col copies
        // shifted planes; kernel rows 0 and 4 see only padding.
        Case {
            x: [2, 2, 2, 3],
            w: [3, 2, 5, 5],
            params: p((1, 1), (2, 2), (1, 1), 1),
            bias: true,
        },
    ]
}

#[test]
fn im2col_gemm_matches_the_definition() {
    for (i, c) in cases().iter().enumerate() {
        let s = 100 * i as u64;
        let (x, w, b) = (randn(&c.x, s), randn(&c.w, s + 1), randn(&[c.w[0]], s + 2));
        let bias = c.bias.then_some(&b);
        let fast = x.conv2d(&w, bias, c.params).unwrap();
        let slow = x.conv2d_reference(&w, bias, c.params).unwrap();
        assert_eq!(fast.shape(), slow.shape(), "case {i}");
        assert_close(
            &format!("case {i}"),
            &fast.to_f64_vec().unwrap(),
            &slow.to_f64_vec().unwrap(),
            1e-12,
            1e-12,
        );
        // f32 too, through the same kernels.
        let (xf, wf, bf) = (
            x.to_dtype(DType::F32).unwrap(),
            w.to_dtype(DType::F32).unwrap(),
            b.to_dtype(DType::F32).unwrap(),
        );
        let fast = xf.conv2d(&wf, c.bias.then_some(&bf), c.params).unwrap();
        assert_eq!(fast.dtype(), DType::F32);
        assert_close(
            &format!("case {i} f32"),
            &fast.to_f64_vec().unwrap(),
            &slow.to_f64_vec().unwrap(),
            1e-4,
            1e-4,
        );
    }
}

/// No input channels (or no output channels): the output is the bias
/// (or empty), on the shapes each route takes, f32 and f64.
#[test]
fn empty_channel_counts() {
    for (x, w) in [
        ([2, 0, 8, 8], [4, 0, 3, 3]),
        ([2, 0, 32, 32], [8, 0, 3, 3]),
        ([2, 3, 8, 8], [0, 3, 3, 3]),
    ] {
        for dtype in [DType::F32, DType::F64] {
            let (xt, wt) = (
                randn(&x, 1).to_dtype(dtype).unwrap(),
                randn(&w, 2).to_dtype(dtype).unwrap(),
            );
            let b = randn(&[w[0]], 3).to_dtype(dtype).unwrap();
            for stride in [1, 2] {
                let params = p((stride, stride), (1, 1), (1, 1), 1);
                let y = xt.conv2d(&wt, Some(&b), params).unwrap();
                let plane = y.shape()[2] * y.shape()[3];
                let want: Vec<f64> = (0..x[0])
                    .flat_map(|_| b.to_f64_vec().unwrap())
                    .flat_map(|v| std::iter::repeat_n(v, plane))
                    .collect();
                assert_eq!(
                    y.to_f64_vec().unwrap(),
                    want,
                    "{x:?} {w:?} s{stride} {dtype:?}"
                );
            }
        }
    }
}

#[test]
fn gradients_match_the_definition_on_every_case_f64_and_f32() {
    // Both gradients in f64 against the definition, and the f32 kernels
    // (implicit GEMM, col2im with the weights packed once, flipped kernel,
    // per CPU) against f64, on every geometry of
    // `cases`: strides, padding, dilation, groups; and a batch of small
    // strided planes, several images to a tile.
    let batch = Case {
        x: [7, 5, 5, 6],
        w: [6, 5, 3, 3],
        params: p((2, 2), (1, 1), (1, 1), 1),
        bias: false,
    };
    for (i, c) in cases().iter().chain([&batch]).enumerate() {
        let s = 300 + 10 * i as u64;
        let (x, w) = (randn(&c.x, s), randn(&c.w, s + 1));
        let b = randn(&[c.w[0]], s + 3);
        check_against_the_definition(&format!("case {i}"), &x, &w, &b, c.params, s + 4);
        check_f32_gradients(&format!("case {i}"), &x, &w, c.params, s + 2);
    }
}

#[test]
fn output_size_formula() {
    // (in + 2p - d(k-1) - 1) / s + 1
    let x = Tensor::zeros(&[1, 1, 10, 7], DType::F32).unwrap();
    let w = Tensor::zeros(&[1, 1, 3, 2], DType::F32).unwrap();
    let y = x.conv2d(&w, None, p((3, 2), (1, 2), (2, 1), 1)).unwrap();
    assert_eq!(
        y.shape(),
        &[1, 1, (10 + 2 - 4 - 1) / 3 + 1, (7 + 4 - 1 - 1) / 2 + 1]
    );
}

#[test]
fn hand_computed_values() {
    // 1 channel 3x3 input, 2x2 kernel of ones, padding 0: window sums.
    let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect::<Vec<_>>(), &[1, 1, 3, 3]).unwrap();
    let w = Tensor::ones(&[1, 1, 2, 2], DType::F32).unwrap();
    let b = Tensor::from_vec(vec![0.5f32], &[1]).unwrap();
    let y = x.conv2d(&w, Some(&b), Conv2dParams::default()).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![12.5, 16.5, 24.5, 28.5]);
    // Padding 1, stride 2: corners see one, two or four inputs.
    let y = x
        .conv2d(&w, None, Conv2dParams::default().padding(1).stride(2))
        .unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 5.0, 11.0, 28.0]);
}

#[test]
fn gradients() {
    for (i, c) in cases().iter().enumerate() {
        let s = 200 * i as u64;
        let (x, w, b) = (randn(&c.x, s), randn(&c.w, s + 1), randn(&[c.w[0]], s + 2));
        let params = c.params;
        if c.bias {
            check_grad(
                &format!("conv case {i}"),
                |t| t[0].conv2d(&t[1], Some(&t[2]), params),
                &[x, w, b],
            );
        } else {
            check_grad(
                &format!("conv case {i}"),
                |t| t[0].conv2d(&t[1], None, params),
                &[x, w],
            );
        }
    }
}

#[test]
fn gradients_with_non_contiguous_input() {
    let x = randn(&[2, 6, 5, 3], 7);
    let w = randn(&[4, 3, 3, 3], 8);
    check_grad(
        "permuted conv input",
        |t| {
            t[0].permute(&[0, 3, 2, 1])?
                .conv2d(&t[1], None, Conv2dParams::default().padding(1))
        },
        &[x, w],
    );
}

#[test]
fn parallel_batch_matches_serial_reference() {
    // Big enough to go parallel over images, in f32.
    let x = randn(&[8, 16, 20, 20], 9).to_dtype(DType::F32).unwrap();
    let w = randn(&[24, 16, 3, 3], 10).to_dtype(DType::F32).unwrap();
    let params = Conv2dParams::default().padding(1);
    let fast = x.conv2d(&w, None, params).unwrap();
    let slow = x.conv2d_reference(&w, None, params).unwrap();
    assert_close(
        "parallel",
        &fast.to_f64_vec().unwrap(),
        &slow.to_f64_vec().unwrap(),
        1e-4,
        1e-4,
    );
    // Backward through the parallel paths equals the f64 serial gradients.
    let (xv, wv) = (x.requires_grad_(true), w.requires_grad_(true));
    let g = xv
        .conv2d(&wv, None, params)
        .unwrap()
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (x64, w64) = (
        x.to_dtype(DType::F64).unwrap().requires_grad_(true),
        w.to_dtype(DType::F64).unwrap().requires_grad_(true),
    );
    let g64 = x64
        .conv2d(&w64, None, params)
        .unwrap()
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (a, b, name) in [(&xv, &x64, "dx"), (&wv, &w64, "dw")] {
        let got = g.get(a).unwrap().to_f64_vec().unwrap();
        let want = g64.get(b).unwrap().to_f64_vec().unwrap();
        assert_close(name, &got, &want, 1e-2, 1e-3);
    }
}

#[test]
fn bad_input_is_an_error() {
    let x = Tensor::zeros(&[1, 4, 5, 5], DType::F32).unwrap();
    let w = Tensor::zeros(&[2, 3, 3, 3], DType::F32).unwrap();
    let e = x
        .conv2d(&w, None, Conv2dParams::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv2d") && e.contains("[1, 4, 5, 5]") && e.contains("[2, 3, 3, 3]"),
        "{e}"
    );
    let w = Tensor::zeros(&[2, 4, 7, 7], DType::F32).unwrap();
    assert!(x
        .conv2d(&w, None, Conv2dParams::default())
        .unwrap_err()
        .to_string()
        .contains("larger than the padded input"));
    let w = Tensor::zeros(&[2, 4, 3, 3], DType::F32).unwrap();
    assert!(x
        .conv2d(&w, None, Conv2dParams::default().stride(0))
        .is_err());
    let b = Tensor::zeros(&[3], DType::F32).unwrap();
    assert!(x
        .conv2d(&w, Some(&b), Conv2dParams::default())
        .unwrap_err()
        .to_string()
        .contains("[3]"));
    let w64 = Tensor::zeros(&[2, 4, 3, 3], DType::F64).unwrap();
    assert!(x
        .conv2d(&w64, None, Conv2dParams::default())
        .unwrap_err()
        .to_string()
        .contains("dtype"));
    let flat = Tensor::zeros(&[4, 5, 5], DType::F32).unwrap();
    assert!(flat.conv2d(&w, None, Conv2dParams::default()).is_err());
    let w = Tensor::zeros(&[3, 2, 3, 3], DType::F32).unwrap();
    assert!(
        x.conv2d(&w, None, Conv2dParams::default().groups(2))
            .is_err(),
        "3 output channels do not split into 2 groups"
    );
}

#[test]
fn uneven_multi_image_tiles_with_groups() {
    // Five images make tiles of 3 and 2 images (two threads); groups and a
    // stride exercise the tile gather/scatter paths forward and backward.
    let x = randn(&[5, 4, 6, 5], 31);
    let w = randn(&[6, 2, 3, 3], 32);
    let b = randn(&[6], 33);
    let params = Conv2dParams::default().padding(1).stride(2).groups(2);
    let fast = x.conv2d(&w, Some(&b), params).unwrap();
    let slow = x.conv2d_reference(&w, Some(&b), params).unwrap();
    assert_close(
        "tiles",
        &fast.to_f64_vec().unwrap(),
        &slow.to_f64_vec().unwrap(),
        1e-12,
        1e-12,
    );
    check_grad(
        "tiled conv",
        |t| t[0].conv2d(&t[1], Some(&t[2]), params),
        &[x, w, b],
    );
}

#[test]
fn stride_one_input_gradient_through_the_flipped_kernel() {
    // 16+ input channels per group and stride 1 can take the transposed-conv
    // route for dx; dilation and asymmetric padding must survive the flip.
    let x = randn(&[2, 16, 5, 6], 41);
    let w = randn(&[4, 16, 3, 2], 42);
    let params = Conv2dParams {
        stride: (1, 1),
        padding: (2, 1),
        dilation: (2, 1),
        groups: 1,
    };
    check_grad("flipped dx", |t| t[0].conv2d(&t[1], None, params), &[x, w]);
    let x = randn(&[1, 32, 4, 4], 43);
    let w = randn(&[8, 16, 3, 3], 44);
    check_grad(
        "flipped dx, groups",
        |t| t[0].conv2d(&t[1], None, Conv2dParams::default().padding(1).groups(2)),
        &[x, w],
    );
    // 20 input and 3 output channels per group: each of the flip's tasks
    // (up to 16 output channels of one group) takes a whole group.
    let x = randn(&[1, 40, 4, 3], 45);
    let w = randn(&[6, 20, 3, 3], 46);
    check_grad(
        "flipped dx, block across groups",
        |t| t[0].conv2d(&t[1], None, Conv2dParams::default().padding(1).groups(2)),
        &[x, w],
    );
    // The planes above are small, so their 3×3 kernels take col2im (see
    // `input_gradient_routes_match_the_definition`); on 32×32 planes the
    // same kernels take the flipped route, checked against the definition.
    let cases = [
        ([2, 16, 32, 32], [4, 16, 3, 2], p((1, 1), (2, 1), (2, 1), 1)),
        ([1, 32, 32, 32], [8, 16, 3, 3], p((1, 1), (1, 1), (1, 1), 2)),
        ([1, 40, 32, 32], [6, 20, 3, 3], p((1, 1), (1, 1), (1, 1), 2)),
    ];
    for (i, (xs, ws, params)) in cases.into_iter().enumerate() {
        let g = ConvGeom::new(xs, ws, &params).unwrap();
        let route = plan::algorithm(&g, plan::Pass::InputGrad);
        assert!(route.starts_with("flipped"), "{xs:?}: {route}");
        let seed = 300 + 10 * i as u64;
        let (x, w, b) = (
            randn(&xs, seed),
            randn(&ws, seed + 1),
            randn(&[ws[0]], seed + 2),
        );
        check_against_the_definition("flipped dx, large planes", &x, &w, &b, params, seed + 3);
    }
}

#[test]
fn input_gradient_routes_match_the_definition() {
    // Which route computes dx ([`plan::flipped_geometry`]): col2im for 3×3
    // kernels on small planes (the tile GEMM of the flipped convolution
    // loses there), the flipped kernel for 1×1 kernels and large planes.
    // Channel counts off the vector width, non-square planes, padding
    // 0/1/2, f64 against the definition and f32 against f64.
    let routes: [([usize; 4], [usize; 4], Conv2dParams, &str); 5] = [
        (
            [3, 20, 4, 5],
            [24, 20, 3, 3],
            Conv2dParams::default().padding(1),
            "gemm+col2im",
        ),
        (
            [2, 17, 4, 4],
            [33, 17, 3, 3],
            Conv2dParams::default().padding(2),
            "gemm+col2im",
        ),
        (
            [2, 20, 4, 3],
            [19, 20, 1, 1],
            Conv2dParams::default(),
            "FLIP1: GEMM tiles",
        ),
        (
            [1, 16, 32, 33],
            [4, 16, 3, 2],
            p((1, 1), (2, 1), (2, 1), 1),
            "flipped: GEMM per image",
        ),
        (
            [2, 18, 5, 4],
            [6, 18, 3, 3],
            Conv2dParams::default(),
            "gemm+col2im",
        ),
    ];
    for (i, (xs, ws, params, route)) in routes.into_iter().enumerate() {
        let g = ConvGeom::new(xs, ws, &params).unwrap();
        // "GEMM" is the implicit GEMM where the CPU runs it, im2col + GEMM
        // elsewhere (the plan names the f32 kernels); "FLIP1" a 1×1
        // kernel's flip, which the implicit GEMM skips by reading the
        // weights transposed in place.
        let (gemm, flip1) = match plan::algorithm(&g, plan::Pass::Forward).starts_with("implicit") {
            true => ("implicit gemm", "transposed"),
            false => ("im2col+gemm", "flipped"),
        };
        let route = route.replace("GEMM", gemm).replace("FLIP1", flip1);
        assert_eq!(plan::algorithm(&g, plan::Pass::InputGrad), route, "{xs:?}");
        let seed = 200 + 10 * i as u64;
        let (x, w, b) = (
            randn(&xs, seed),
            randn(&ws, seed + 1),
            randn(&[ws[0]], seed + 2),
        );
        check_against_the_definition(&route, &x, &w, &b, params, seed + 3);
        // f32: the same gradients to f32 accuracy.
        check_f32_gradients(&route, &x, &w, params, seed + 4);
    }
}

#[test]
fn large_planes_take_the_direct_paths() {
    // 32×33 planes (at least 1024 pixels) make the forward GEMMs, and the
    // transposed ones of dx, write straight into the NCHW output one image
    // at a time, and the weight-gradient GEMMs read dy in place. Three
    // images on two threads make tiles of two and one.
    let x = randn(&[3, 32, 32, 33], 51);
    let w = randn(&[8, 16, 3, 3], 52);
    let b = randn(&[8], 53);
    let params = Conv2dParams::default().padding(1).groups(2);
    check_against_the_definition("direct paths", &x, &w, &b, params, 54);
}

#[test]
fn winograd_layers_match_the_definition() {
    // 3×3 stride-1 layers with 32+ channels and 256+ output tiles take the
    // Winograd path for the forward pass, the weight gradient and (through
    // the flipped kernel, padding 2 − p) the input gradient. Even and odd
    // outputs, padding 1 and 0.
    for (n, h, w, pad) in [(4, 16, 16, 1), (8, 13, 11, 1), (16, 11, 9, 0)] {
        let x = randn(&[n, 32, h, w], 80 + n as u64);
        let k = randn(&[40, 32, 3, 3], 90 + n as u64);
        let b = randn(&[40], 100 + n as u64);
        let params = Conv2dParams::default().padding(pad);
        let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
        let geom = |c_in, c_out, h, w, pad| {
            let p = Conv2dParams::default().padding(pad);
            ConvGeom::new([n, c_in, h, w], [c_out, c_in, 3, 3], &p).unwrap()
        };
        assert!(winograd::applies(&geom(32, 40, h, w, pad)));
        assert!(winograd::applies(&geom(40, 32, oh, ow, 2 - pad)));
        check_against_the_definition("winograd", &x, &k, &b, params, 110 + n as u64);
    }
}

#[test]
fn small_stride_1_weight_gradients_in_f32() {
    // 3×3 stride-1 layers on inputs of at most 32 KB per image with rows of
    // 8+ pixels: with AVX-512 the f32 weight gradient runs directly with
    // output channels in the vector lanes (ahead of Winograd), elsewhere
    // Winograd or the implicit GEMM; every route's f32 gradients against
    // f64. A batch over two groups of images, 8 and 13 pixels a row.
    for (i, (n, c, h, w, o)) in [(3, 32, 16, 16, 32), (40, 8, 11, 13, 70)]
        .into_iter()
        .enumerate()
    {
        let x = randn(&[n, c, h, w], 700 + i as u64);
        let k = randn(&[o, c, 3, 3], 710 + i as u64);
        let params = Conv2dParams::default().padding(1);
        let g = ConvGeom::new([n, c, h, w], [o, c, 3, 3], &params).unwrap();
        let route = plan::algorithm(&g, plan::Pass::WeightGrad);
        check_f32_gradients(
            &format!("stride 1 ({route})"),
            &x,
            &k,
            params,
            720 + i as u64,
        );
    }
}

/// Checks `conv2d` against `conv2d_reference`: the forward output, and the
/// input and weight gradients. `L(x, w) = Σ conv(x, w)·r` is linear in x
/// and in w, so its gradients are checked exactly along random
/// directions: ⟨dL/dx, v⟩ = L(v, w) and ⟨dL/dw, u⟩ = L(x, u), the right
/// sides by the reference kernel.
/// Both gradients of `sum(conv(x, w) · r)` (`r` random from `seed`) in
/// f32 against f64, to f32 accuracy.
fn check_f32_gradients(name: &str, x: &Tensor, w: &Tensor, params: Conv2dParams, seed: u64) {
    let grads = |dtype: DType| {
        let xv = x.to_dtype(dtype).unwrap().requires_grad_(true);
        let wv = w.to_dtype(dtype).unwrap().requires_grad_(true);
        let y = xv.conv2d(&wv, None, params).unwrap();
        let r = randn(y.shape(), seed).to_dtype(dtype).unwrap();
        let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let get = |t: &Tensor| g.get(t).unwrap().to_f64_vec().unwrap();
        (get(&xv), get(&wv))
    };
    let ((dx32, dw32), (dx64, dw64)) = (grads(DType::F32), grads(DType::F64));
    assert_close(&format!("{name}: f32 dx"), &dx32, &dx64, 1e-3, 1e-4);
    assert_close(&format!("{name}: f32 dw"), &dw32, &dw64, 1e-3, 1e-4);
}

fn check_against_the_definition(
    name: &str,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    params: Conv2dParams,
    seed: u64,
) {
    let fast = x.conv2d(w, Some(b), params).unwrap();
    let slow = x.conv2d_reference(w, Some(b), params).unwrap();
    assert_close(
        &format!("{name}: forward"),
        &fast.to_f64_vec().unwrap(),
        &slow.to_f64_vec().unwrap(),
        1e-12,
        1e-12,
    );
    let r = randn(fast.shape(), seed);
    let loss_ref = |x: &Tensor, w: &Tensor| -> f64 {
        let y = x.conv2d_reference(w, None, params).unwrap();
        y.mul(&r).unwrap().sum_all().unwrap().to_scalar().unwrap()
    };
    let (xv, wv) = (
        x.clone().requires_grad_(true),
        w.clone().requires_grad_(true),
    );
    let loss = xv.conv2d(&wv, Some(b), params).unwrap().mul(&r).unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();
    let dot = |g: &Tensor, v: &Tensor| -> f64 {
        g.mul(v).unwrap().sum_all().unwrap().to_scalar().unwrap()
    };
    for k in 0..3 {
        let v = randn(x.shape(), seed + 10 + k);
        let (got, want) = (dot(grads.get(&xv).unwrap(), &v), loss_ref(&v, w));
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: dx·v {got} vs {want}"
        );
        let u = randn(w.shape(), seed + 20 + k);
        let (got, want) = (dot(grads.get(&wv).unwrap(), &u), loss_ref(x, &u));
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: dw·u {got} vs {want}"
        );
    }
}

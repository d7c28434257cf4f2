//! Convolution on every device, compared with the CPU in the same process
//! (see `tests/device/mod.rs`): stride, padding, dilation, groups, bias,
//! 1×1 projections, a permuted input, forward and both gradients.

mod device;

use device::{check, scale, uniform, Tol};
use ferrite::ops::Conv2dParams;

const TOL: Tol = Tol(2e-5, 2e-4);

#[test]
fn conv2d_geometries_forward_and_backward() {
    let s = scale();
    let cases: &[(&str, [usize; 4], [usize; 4], Conv2dParams)] = &[
        (
            "3x3 pad 1",
            [2, 3, 8 * s, 7],
            [4, 3, 3, 3],
            Conv2dParams::default().padding(1),
        ),
        (
            "stride 2",
            [2, 4, 9, 9],
            [6, 4, 3, 3],
            Conv2dParams::default().stride(2).padding(1),
        ),
        (
            "1x1 projection stride 2",
            [3, 8, 6, 6],
            [5, 8, 1, 1],
            Conv2dParams::default().stride(2),
        ),
        (
            "dilation 2",
            [1, 2, 9, 8],
            [3, 2, 3, 3],
            Conv2dParams::default().dilation(2).padding(2),
        ),
        (
            "groups 2",
            [2, 4, 5, 5],
            [6, 2, 3, 3],
            Conv2dParams::default().groups(2).padding(1),
        ),
        (
            "depthwise",
            [2, 3, 5, 5],
            [3, 1, 3, 3],
            Conv2dParams::default().groups(3),
        ),
        (
            "7x7 stem",
            [1, 3, 16, 16],
            [4, 3, 7, 7],
            Conv2dParams::default().stride(2).padding(3),
        ),
    ];
    for (i, (name, xs, ws, p)) in cases.iter().enumerate() {
        let seed = 100 + 3 * i as u64;
        let x = uniform(xs, (-1.0, 1.0), seed);
        let w = uniform(ws, (-1.0, 1.0), seed + 1);
        let b = uniform(&[ws[0]], (-1.0, 1.0), seed + 2);
        check(
            name,
            &[x.clone(), w.clone()],
            |t| t[0].conv2d(&t[1], None, *p),
            TOL,
            TOL,
        );
        check(
            name,
            &[x, w, b],
            |t| t[0].conv2d(&t[1], Some(&t[2]), *p),
            TOL,
            TOL,
        );
    }
}

#[test]
fn conv2d_of_a_permuted_input() {
    let x = uniform(&[5, 5, 3, 2], (-1.0, 1.0), 200);
    let w = uniform(&[4, 3, 3, 3], (-1.0, 1.0), 201);
    check(
        "NHWC input viewed as NCHW",
        &[x, w],
        |t| {
            t[0].permute(&[3, 2, 0, 1])?
                .conv2d(&t[1], None, Conv2dParams::default().padding(1))
        },
        TOL,
        TOL,
    );
}

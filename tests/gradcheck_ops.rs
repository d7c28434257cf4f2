//! Finite-difference gradient checks (f64) of every differentiable op,
//! including broadcasting, non-contiguous inputs, size-1 and zero-size dims.
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[x.clone()]` reads best here

mod common;
use common::{check_grad, randn, uniform};
use ferrite::KeepDim;
use ferrite::{DType, Tensor};

fn positive(shape: &[usize], seed: u64) -> Tensor {
    uniform(shape, 0.5, 2.0, seed)
}

/// Inputs kept at least 0.05 away from 0, the kink of relu/abs/sign.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let x = uniform(shape, 0.05, 2.0, seed);
    let s = uniform(shape, -1.0, 1.0, seed + 100).sign().unwrap();
    x.mul(&s).unwrap()
}

#[test]
fn unary_ops() {
    let x = randn(&[3, 4], 1);
    let p = positive(&[3, 4], 2);
    let k = away_from_zero(&[3, 4], 3);
    check_grad("neg", |t| t[0].neg(), &[x.clone()]);
    check_grad("exp", |t| t[0].exp(), &[x.clone()]);
    check_grad("log", |t| t[0].log(), &[p.clone()]);
    check_grad("sqrt", |t| t[0].sqrt(), &[p.clone()]);
    check_grad("rsqrt", |t| t[0].rsqrt(), &[p.clone()]);
    check_grad("abs", |t| t[0].abs(), &[k.clone()]);
    check_grad("relu", |t| t[0].relu(), &[k.clone()]);
    check_grad("sigmoid", |t| t[0].sigmoid(), &[x.clone()]);
    check_grad("tanh", |t| t[0].tanh(), &[x.clone()]);
    check_grad("gelu", |t| t[0].gelu(), &[x.clone()]);
    check_grad("softplus", |t| t[0].softplus(), &[x.clone()]);
    check_grad("powf", |t| t[0].powf(2.5), &[p.clone()]);
    check_grad("powf negative", |t| t[0].powf(-1.5), &[p.clone()]);
    check_grad("square", |t| t[0].square(), &[x.clone()]);
    check_grad(
        "clamp",
        |t| t[0].clamp(-0.5, 0.5),
        &[away_from_zero(&[3, 4], 4)
            .mul_scalar(0.5)
            .unwrap()
            .add_scalar(0.01)
            .unwrap()],
    );
    check_grad("affine", |t| t[0].affine(-2.0, 3.0), &[x.clone()]);
    check_grad(
        "scalar forms",
        |t| {
            t[0].add_scalar(1.0)?
                .sub_scalar(0.5)?
                .mul_scalar(3.0)?
                .div_scalar(4.0)
        },
        &[x.clone()],
    );
    // Large |x|: the stable forms must keep finite gradients.
    let big = Tensor::from_vec(vec![-40.0f64, -5.0, 0.3, 5.0, 40.0], &[5]).unwrap();
    check_grad("sigmoid large", |t| t[0].sigmoid(), &[big.clone()]);
    check_grad("softplus large", |t| t[0].softplus(), &[big]);
}

#[test]
fn binary_ops_with_broadcasting() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 4], &[3, 4]),
        (&[3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[1], &[2, 3]),
        (&[], &[2, 2]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let s = 10 * i as u64;
        let (a, b) = (randn(sa, s), randn(sb, s + 1));
        let (pa, pb) = (positive(sa, s + 2), positive(sb, s + 3));
        check_grad("add", |t| t[0].add(&t[1]), &[a.clone(), b.clone()]);
        check_grad("sub", |t| t[0].sub(&t[1]), &[a.clone(), b.clone()]);
        check_grad("mul", |t| t[0].mul(&t[1]), &[a.clone(), b.clone()]);
        check_grad("div", |t| t[0].div(&t[1]), &[a.clone(), pb.clone()]);
        check_grad("pow", |t| t[0].pow(&t[1]), &[pa.clone(), b.clone()]);
        check_grad("maximum", |t| t[0].maximum(&t[1]), &[a.clone(), b.clone()]);
        check_grad("minimum", |t| t[0].minimum(&t[1]), &[a.clone(), b.clone()]);
    }
}

#[test]
fn same_tensor_on_both_sides() {
    let x = randn(&[3, 2], 5);
    check_grad("x*x", |t| t[0].mul(&t[0]), &[x.clone()]);
    check_grad(
        "x/x+x",
        |t| t[0].div(&t[0].abs()?.add_scalar(1.0)?)?.add(&t[0]),
        &[x],
    );
}

#[test]
fn non_contiguous_inputs() {
    let x = randn(&[4, 3], 6);
    let y = randn(&[3, 4], 7);
    check_grad(
        "permuted mul",
        |t| t[0].t()?.mul(&t[1]),
        &[x.clone(), y.clone()],
    );
    check_grad("permuted exp", |t| t[0].t()?.exp(), &[x.clone()]);
    check_grad(
        "narrowed add",
        |t| t[0].narrow(1, 1, 2)?.add(&t[1].narrow(0, 0, 2)?.t()?),
        &[x.clone(), y.clone()],
    );
    check_grad(
        "broadcast view",
        |t| t[0].narrow(0, 0, 1)?.broadcast_to(&[5, 3])?.tanh(),
        &[x.clone()],
    );
    check_grad(
        "permuted sum",
        |t| t[0].t()?.sum(&[0], KeepDim::No),
        &[x.clone()],
    );
    check_grad(
        "permuted matmul",
        |t| t[0].t()?.matmul(&t[1].t()?),
        &[x.clone(), y.clone()],
    );
    check_grad("permuted softmax", |t| t[0].t()?.softmax(0), &[x]);
}

#[test]
fn size_one_and_zero_size_dims() {
    let one = randn(&[1, 3, 1], 8);
    check_grad(
        "size-1 sum",
        |t| t[0].sum(&[0, 2], KeepDim::No),
        &[one.clone()],
    );
    check_grad("size-1 softmax", |t| t[0].softmax(2), &[one.clone()]);
    check_grad(
        "size-1 matmul",
        |t| t[0].reshape(&[1, 3])?.matmul(&t[0].reshape(&[3, 1])?),
        &[one.clone()],
    );
    let empty = Tensor::zeros(&[0, 3], DType::F64).unwrap();
    let row = randn(&[3], 9);
    check_grad(
        "zero-size add",
        |t| t[0].add(&t[1]),
        &[empty.clone(), row.clone()],
    );
    check_grad(
        "zero-size sum",
        |t| t[0].sum(&[0], KeepDim::No)?.add(&t[1]),
        &[empty.clone(), row.clone()],
    );
    check_grad(
        "zero-size matmul",
        |t| t[0].matmul(&t[1].reshape(&[3, 1])?),
        &[empty, row],
    );
}

#[test]
fn reductions() {
    let x = randn(&[3, 4, 5], 10);
    for dims in [&[0isize][..], &[1], &[-1], &[0, 2], &[0, 1, 2]] {
        for keep in [KeepDim::No, KeepDim::Yes] {
            check_grad("sum", |t| t[0].sum(dims, keep), &[x.clone()]);
            check_grad("mean", |t| t[0].mean(dims, keep), &[x.clone()]);
            check_grad("max", |t| t[0].max(dims, keep), &[x.clone()]);
            check_grad("min", |t| t[0].min(dims, keep), &[x.clone()]);
            check_grad("var", |t| t[0].var(dims, 1, keep), &[x.clone()]);
            check_grad("var pop", |t| t[0].var(dims, 0, keep), &[x.clone()]);
            check_grad("logsumexp", |t| t[0].logsumexp(dims, keep), &[x.clone()]);
        }
    }
    check_grad("sum_all", |t| t[0].sum_all(), &[x.clone()]);
    check_grad("mean_all", |t| t[0].mean_all(), &[x.clone()]);
    check_grad("max_all", |t| t[0].max_all(), &[x.clone()]);
    check_grad("min_all", |t| t[0].min_all(), &[x.clone()]);
    // Ties share the gradient, as in PyTorch.
    let tied = Tensor::from_vec(vec![1.0f64, 3.0, 3.0, 2.0], &[4]).unwrap();
    check_grad("max ties", |t| t[0].max(&[0], KeepDim::No), &[tied]);
}

#[test]
fn matmul_shapes() {
    let cases: [(&[usize], &[usize]); 7] = [
        (&[3], &[3]),
        (&[3], &[3, 4]),
        (&[4, 3], &[3]),
        (&[2, 3], &[3, 4]),
        (&[2, 2, 3], &[3, 4]),
        (&[2, 1, 4, 3], &[3, 3, 5]),
        (&[3], &[2, 3, 4]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let (a, b) = (randn(sa, 20 + i as u64), randn(sb, 40 + i as u64));
        check_grad("matmul", |t| t[0].matmul(&t[1]), &[a, b]);
    }
}

#[test]
fn softmax_family() {
    let x = randn(&[3, 5], 11);
    for dim in [0isize, 1, -1] {
        check_grad("softmax", |t| t[0].softmax(dim), &[x.clone()]);
        check_grad("log_softmax", |t| t[0].log_softmax(dim), &[x.clone()]);
    }
    let big = x.mul_scalar(100.0).unwrap();
    check_grad("log_softmax large logits", |t| t[0].log_softmax(1), &[big]);
}

#[test]
fn views_and_movement() {
    let x = randn(&[2, 3, 4], 12);
    check_grad("reshape", |t| t[0].reshape(&[6, 4])?.exp(), &[x.clone()]);
    check_grad(
        "reshape_infer",
        |t| t[0].reshape_infer(&[4, -1]),
        &[x.clone()],
    );
    check_grad(
        "permute",
        |t| t[0].permute(&[2, 0, 1])?.tanh(),
        &[x.clone()],
    );
    check_grad("transpose", |t| t[0].transpose(0, 2), &[x.clone()]);
    check_grad("narrow", |t| t[0].narrow(2, 1, 2), &[x.clone()]);
    check_grad("slice", |t| t[0].slice(1, 1..3), &[x.clone()]);
    check_grad(
        "chunks",
        |t| Tensor::cat(&t[0].chunks(3, 2)?.into_iter().rev().collect::<Vec<_>>(), 2),
        &[x.clone()],
    );
    check_grad("unsqueeze", |t| t[0].unsqueeze(1)?.sigmoid(), &[x.clone()]);
    check_grad(
        "squeeze",
        |t| t[0].narrow(0, 1, 1)?.squeeze(0),
        &[x.clone()],
    );
    check_grad("flatten", |t| t[0].flatten(1, 2), &[x.clone()]);
    check_grad(
        "expand",
        |t| t[0].narrow(1, 0, 1)?.expand(&[2, 5, 4]),
        &[x.clone()],
    );
    check_grad(
        "contiguous",
        |t| t[0].permute(&[1, 2, 0])?.contiguous(),
        &[x.clone()],
    );
    let y = randn(&[2, 2, 4], 13);
    check_grad(
        "cat",
        |t| Tensor::cat(&[t[0].clone(), t[1].clone()], 1),
        &[x.clone(), y.clone()],
    );
    let z = randn(&[2, 3, 4], 14);
    check_grad(
        "stack",
        |t| Tensor::stack(&[t[0].clone(), t[1].clone()], 1),
        &[x.clone(), z.clone()],
    );
    // Through f32 and back: f32 rounding (~1e-7) needs a larger step.
    let opts = ferrite::autograd::GradcheckOptions {
        eps: 1e-2,
        atol: 1e-4,
        rtol: 1e-3,
    };
    let report = ferrite::autograd::gradcheck(
        |t| t[0].to_dtype(DType::F32)?.exp()?.to_dtype(DType::F64),
        &[x],
        &opts,
    )
    .unwrap();
    assert!(report.passed && report.checked == 24, "cast: {report}");
}

#[test]
fn indexing() {
    let x = randn(&[5, 3], 15);
    let idx = Tensor::from_vec(vec![4i64, 0, 4, 2], &[4]).unwrap();
    check_grad(
        "index_select dim0",
        |t| t[0].index_select(0, &t[1]),
        &[x.clone(), idx.clone()],
    );
    let idx1 = Tensor::from_vec(vec![2i64, 2, 0], &[3]).unwrap();
    check_grad(
        "index_select dim1",
        |t| t[0].index_select(1, &t[1]),
        &[x.clone(), idx1.clone()],
    );
    let src = randn(&[5, 3], 16);
    check_grad(
        "index_add",
        |t| t[0].index_add(1, &t[1], &t[2]),
        &[x.clone(), idx1, src],
    );
    let g = Tensor::from_vec(vec![2i64, 0, 1, 1, 0, 2], &[3, 2]).unwrap();
    let x2 = randn(&[3, 4], 17);
    check_grad(
        "gather dim1",
        |t| t[0].gather(1, &t[1]),
        &[x2.clone(), g.clone()],
    );
    check_grad(
        "gather dim0",
        |t| t[0].gather(0, &t[1]),
        &[x2.clone(), g.clone()],
    );
    let s = randn(&[3, 2], 18);
    check_grad(
        "scatter_add",
        |t| t[0].scatter_add(1, &t[1], &t[2]),
        &[x2.clone(), g, s],
    );
    let y2 = randn(&[3, 4], 19);
    check_grad(
        "where",
        |t| t[0].gt(&t[1])?.where_cond(&t[0], &t[1].mul_scalar(2.0)?),
        &[x2.clone(), y2.clone()],
    );
    check_grad(
        "where broadcast",
        |t| t[0].gt_zero()?.where_cond(&t[0], &t[1].narrow(0, 0, 1)?),
        &[x2.clone(), y2],
    );
    check_grad(
        "masked_fill",
        |t| t[0].masked_fill(&t[0].gt_zero()?, 0.5),
        &[x2],
    );
}

trait GtZero {
    fn gt_zero(&self) -> ferrite::Result<Tensor>;
}
impl GtZero for Tensor {
    fn gt_zero(&self) -> ferrite::Result<Tensor> {
        self.compare_scalar(ferrite::ops::CmpOp::Gt, 0.0)
    }
}

#[test]
fn compositions() {
    let x = randn(&[4, 3], 21);
    let w = randn(&[3, 2], 22);
    let b = randn(&[2], 23);
    check_grad(
        "linear + gelu + log_softmax",
        |t| t[0].matmul(&t[1])?.add(&t[2])?.gelu()?.log_softmax(1),
        &[x, w, b],
    );
}

#[test]
fn relu_gradient_at_the_kink_and_with_special_values() {
    // The fused relu backward must give `g · step(x)` exactly: g where
    // x > 0, a zero (signed like g) where x ≤ 0 or x is NaN, and NaN where
    // an infinite or NaN g meets x ≤ 0; x and g are strided views.
    let xs = [1.5, 0.0, -2.0, f64::NAN, 3.0, -0.0];
    let gs = [-2.0, -3.0, 4.0, 5.0, f64::INFINITY, f64::NAN];
    let want = [-2.0, -0.0, 0.0, 0.0, f64::INFINITY, f64::NAN];
    for dtype in [DType::F64, DType::F32, DType::BF16] {
        let leaf = Tensor::from_vec(xs.to_vec(), &[3, 2])
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .requires_grad_(true);
        // Both transposed, so that g's element i still meets xs[i].
        let x = leaf.t().unwrap();
        let g = Tensor::from_vec(gs.to_vec(), &[3, 2])
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .t()
            .unwrap();
        let grads = x.relu().unwrap().backward_with_grad(&g).unwrap();
        let got = grads.get(&leaf).unwrap().to_f64_vec().unwrap();
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            let same = (a.is_nan() && b.is_nan())
                || (a == b && a.is_sign_negative() == b.is_sign_negative());
            assert!(same, "{dtype:?} element {i}: got {a}, expected {b}");
        }
    }
}

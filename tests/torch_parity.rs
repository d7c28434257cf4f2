//! Parity with PyTorch: op compositions evaluated by ferrite must match the
//! outputs and gradients recorded by `tests/fixtures/gen_ops.py` (run
//! offline with PyTorch; the JSON it wrote is committed). Each case runs in
//! its own dtype: f64 to 1e-10, f32 to 1e-4 (relative and absolute).

mod common;
use common::{assert_close, tensor_of, values};
use ferrite::KeepDim;
use ferrite::{DType, Result, Tensor};
use serde_json::Value;

type CaseFn = fn(&[Tensor]) -> Result<Tensor>;

/// The ferrite expression of each fixture case (same inputs, same order).
fn expression(name: &str) -> Option<CaseFn> {
    let f: CaseFn = match name {
        "unary_chain" => |t| {
            t[0].tanh()?
                .exp()?
                .mul(&t[0].sigmoid()?)?
                .add(&t[0].softplus()?)?
                .sub(&t[0].neg()?)
        },
        "gelu_relu" => |t| t[0].gelu()?.add(&t[0].relu()?.mul_scalar(0.5)?),
        "log_sqrt" => |t| {
            let a = t[0].abs()?;
            a.add_scalar(0.5)?
                .log()?
                .add(&a.add_scalar(1.0)?.sqrt()?)?
                .add(&a.add_scalar(1.0)?.rsqrt()?)
        },
        "pow_clamp" => |t| {
            let a = t[0].abs()?;
            a.add_scalar(0.5)?
                .pow(&t[1])?
                .add(&t[0].clamp(-0.5, 0.7)?)?
                .add(&a.add_scalar(0.1)?.powf(1.7)?)
        },
        "broadcast_binary" => |t| {
            let (x, y) = (&t[0], &t[1]);
            x.add(y)?
                .mul(&x.sub(y)?)?
                .div(&y.abs()?.add_scalar(1.0)?)?
                .add(&x.maximum(y)?)?
                .add(&x.minimum(y)?)
        },
        "sum_dims02" => |t| t[0].sum(&[0, 2], KeepDim::No),
        "mean_dim1_keepdim" => |t| t[0].mean(&[1], KeepDim::Yes),
        "amax_dim2" => |t| t[0].max(&[2], KeepDim::No),
        "amin_dim0_keepdim" => |t| t[0].min(&[0], KeepDim::Yes),
        "var_dim1" => |t| t[0].var(&[1], 1, KeepDim::No),
        "logsumexp_dims12" => |t| t[0].logsumexp(&[1, 2], KeepDim::No),
        "softmax_dim1" => |t| t[0].softmax(1),
        "log_softmax_dim0" => |t| t[0].log_softmax(0),
        "matmul_2d"
        | "matmul_batched_broadcast"
        | "matmul_vec_mat"
        | "matmul_mat_vec"
        | "matmul_dot" => |t| t[0].matmul(&t[1]),
        "matmul_transposed" => |t| t[0].t()?.matmul(&t[1].t()?),
        "permute_mul" => |t| t[0].permute(&[2, 0, 1])?.mul(&t[1]),
        "narrow_cat" => |t| Tensor::cat(&[t[0].narrow(1, 1, 2)?, t[1].clone()], 1),
        "stack_dim1" => |t| Tensor::stack(&[t[0].clone(), t[1].mul_scalar(2.0)?], 1),
        "index_select" => |t| t[0].index_select(0, &t[1]),
        "gather_dim1" => |t| t[0].gather(1, &t[1]),
        "scatter_add_dim1" => |t| t[0].scatter_add(1, &t[1], &t[2]),
        "where_gt" => |t| {
            let zero = Tensor::zeros(&[], t[0].dtype())?;
            t[0].gt(&zero)?.where_cond(&t[0], &t[1].mul_scalar(2.0)?)
        },
        "mlp_cross_entropy" => |t| {
            let (x, w1, b1, w2, b2, target) = (&t[0], &t[1], &t[2], &t[3], &t[4], &t[5]);
            let logits = x.matmul(w1)?.add(b1)?.relu()?.matmul(w2)?.add(b2)?;
            let n = target.numel();
            logits
                .log_softmax(1)?
                .gather(1, &target.reshape(&[n, 1])?)?
                .mean_all()?
                .neg()
        },
        "broadcast_sum_to" => |t| {
            let (x, y) = (&t[0], &t[1]);
            x.mul(y)?
                .sum(&[0], KeepDim::No)?
                .add(&x.expand(&[4, 3])?.mean(&[1], KeepDim::No)?.sum_all()?)
        },
        _ => return None,
    };
    Some(f)
}

#[test]
fn ops_match_pytorch() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ops.json");
    let text = std::fs::read_to_string(path).expect("fixture file is committed");
    let root: Value = serde_json::from_str(&text).unwrap();
    let cases = root["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 56,
        "expected every case in f32 and f64, got {}",
        cases.len()
    );
    for case in cases {
        let full = case["name"].as_str().unwrap();
        let (name, dtype) = full.rsplit_once('_').unwrap();
        let f = expression(name).unwrap_or_else(|| panic!("no ferrite expression for case {name}"));
        let (tol, expected_dtype) = match dtype {
            "f64" => (1e-10, DType::F64),
            _ => (1e-4, DType::F32),
        };
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let t = tensor_of(v);
                if t.dtype().is_float() {
                    t.requires_grad_(true)
                } else {
                    t
                }
            })
            .collect();
        let out = f(&inputs).unwrap_or_else(|e| panic!("{full}: {e}"));
        assert_eq!(out.dtype(), expected_dtype, "{full}: dtype");
        let want_shape: Vec<usize> = case["output"]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(out.shape(), want_shape.as_slice(), "{full}: output shape");
        assert_close(
            &format!("{full} output"),
            &out.to_f64_vec().unwrap(),
            &values(&case["output"]),
            tol,
            tol,
        );

        let upstream = tensor_of(&case["upstream"]);
        let grads = out.backward_with_grad(&upstream).unwrap();
        for (i, (input, want)) in inputs
            .iter()
            .zip(case["grads"].as_array().unwrap())
            .enumerate()
        {
            if want.is_null() {
                continue;
            }
            let got = grads
                .get(input)
                .unwrap_or_else(|| panic!("{full}: no gradient for input {i}"));
            assert_eq!(got.shape(), input.shape(), "{full}: grad {i} shape");
            assert_close(
                &format!("{full} grad {i}"),
                &got.to_f64_vec().unwrap(),
                &values(want),
                tol,
                tol,
            );
        }
    }
}

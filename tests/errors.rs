//! Bad input returns a clear `Err` naming the op and the offending shapes,
//! dtypes or values; nothing here may panic.

use ferrite::autograd::{BackwardOptions, GradFn, GradStore};
use ferrite::KeepDim;
use ferrite::{DType, Device, Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn t32(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32).unwrap()
}

fn idx(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

/// Unwraps the error and checks that its message contains every `needle`.
#[track_caller]
fn err_with(r: Result<Tensor>, needles: &[&str]) -> Error {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => {
            let msg = e.to_string();
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
            }
            e
        }
    }
}

#[test]
fn shape_mismatches_name_op_and_both_shapes() {
    let a = zeros(&[2, 3]);
    let b = zeros(&[4]);
    let e = err_with(a.add(&b), &["add", "[2, 3]", "[4]"]);
    assert!(matches!(e, Error::ShapeMismatch { op: "add", .. }), "{e:?}");
    err_with(a.mul(&zeros(&[3, 3])), &["mul", "[2, 3]", "[3, 3]"]);
    err_with(a.sub(&zeros(&[2, 2])), &["sub", "[2, 3]", "[2, 2]"]);
    err_with(
        a.maximum(&zeros(&[5, 1, 2])),
        &["maximum", "[2, 3]", "[5, 1, 2]"],
    );
    err_with(a.lt(&b), &["compare", "[2, 3]", "[4]"]);

    let e = err_with(a.matmul(&zeros(&[4, 5])), &["matmul", "[2, 3]", "[4, 5]"]);
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    err_with(
        zeros(&[2, 2, 3]).matmul(&zeros(&[3, 3, 4])),
        &["matmul", "[2, 2, 3]", "[3, 3, 4]"],
    );
    err_with(zeros(&[3]).matmul(&zeros(&[4])), &["matmul", "[3]", "[4]"]);
    err_with(
        zeros(&[2, 3]).matmul(&zeros(&[2])),
        &["matmul", "[2, 3]", "[2]"],
    );
    err_with(
        Tensor::scalar(1.0f32).matmul(&zeros(&[2])),
        &["matmul", "[]", "[2]"],
    );

    err_with(
        Tensor::cat(&[zeros(&[2, 3]), zeros(&[3, 2])], 0),
        &["cat", "[2, 3]", "[3, 2]"],
    );
    err_with(
        Tensor::cat(&[zeros(&[2, 3]), zeros(&[2, 3, 1])], 1),
        &["cat", "[2, 3]", "[2, 3, 1]"],
    );
    err_with(
        Tensor::stack(&[zeros(&[2]), zeros(&[3])], 0),
        &["stack", "[2]", "[3]"],
    );
    err_with(a.reshape(&[4, 2]), &["reshape", "[2, 3]", "[4, 2]"]);
    err_with(a.reshape_infer(&[4, -1]), &["reshape", "[2, 3]", "[4, -1]"]);
    err_with(a.reshape_infer(&[-1, -1]), &["reshape"]);
    err_with(
        a.broadcast_to(&[2, 4]),
        &["broadcast_to", "[2, 3]", "[2, 4]"],
    );
    // Broadcasting can only add leading dims and grow size-1 dims.
    err_with(a.broadcast_to(&[3]), &["broadcast_to", "[2, 3]", "[3]"]);
    err_with(
        a.where_cond(&zeros(&[2, 3]), &zeros(&[3, 3])),
        &["where_cond", "[2, 3]", "[3, 3]"],
    );
    err_with(
        zeros(&[3]).masked_fill(&zeros(&[2, 3]), 1.0),
        &["masked_fill", "[3]", "[2, 3]"],
    );
    err_with(
        Tensor::from_vec(vec![1.0f32; 5], &[2, 3]),
        &["from_vec", "5", "[2, 3]"],
    );
}

#[test]
fn dtype_mismatches_say_which() {
    let a = zeros(&[2]);
    let b = Tensor::zeros(&[2], DType::F64).unwrap();
    let e = err_with(a.add(&b), &["add", "F32", "F64"]);
    assert!(matches!(
        e,
        Error::DTypeMismatch {
            op: "add",
            lhs: DType::F32,
            rhs: DType::F64
        }
    ));
    err_with(a.matmul(&b), &["matmul", "F32", "F64"]);
    err_with(
        Tensor::cat(&[a.clone(), b.clone()], 0),
        &["cat", "F32", "F64"],
    );
    err_with(a.eq(&b), &["F32", "F64"]);
    err_with(
        Tensor::from_vec(vec![1u8, 0], &[2])
            .unwrap()
            .where_cond(&a, &b),
        &["where_cond", "F32", "F64"],
    );
    err_with(
        a.index_add(0, &idx(&[0, 1], &[2]), &b),
        &["index_add", "F32", "F64"],
    );
    err_with(
        a.scatter_add(0, &idx(&[0, 1], &[2]), &b),
        &["scatter_add", "F32", "F64"],
    );
    // Math on integer dtypes is refused by name.
    let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    let e = err_with(i.exp(), &["exp", "I64"]);
    assert!(matches!(
        e,
        Error::UnsupportedDType {
            op: "exp",
            dtype: DType::I64
        }
    ));
    err_with(i.add(&i), &["add", "I64"]);
    // Integer sums are exact i64 counts (tests/seams.rs); max is float-only.
    err_with(i.max_all(), &["max", "I64"]);
    err_with(i.softmax(0), &["softmax", "I64"]);
    err_with(i.logsumexp(&[0], KeepDim::No), &["logsumexp", "I64"]);
    err_with(i.argmax(0, KeepDim::No), &["argmax", "I64"]);
    err_with(
        Tensor::from_vec(vec![1u8], &[1]).unwrap().sigmoid(),
        &["sigmoid", "U8"],
    );
    err_with(i.matmul(&i), &["matmul", "I64"]);
    err_with(
        Tensor::rand(&[2], 0.0, 1.0, DType::I64, &mut StdRng::seed_from_u64(0)),
        &["rand", "I64"],
    );
    err_with(
        Tensor::randn(&[2], 0.0, 1.0, DType::U8, &mut StdRng::seed_from_u64(0)),
        &["randn", "U8"],
    );
}

#[test]
fn dims_out_of_range() {
    let a = zeros(&[2, 3]);
    let e = err_with(a.sum(&[2], KeepDim::No), &["sum", "2", "2 dimension"]);
    assert!(matches!(
        e,
        Error::DimOutOfRange {
            dim: 2,
            ndim: 2,
            ..
        }
    ));
    err_with(a.sum(&[-3], KeepDim::No), &["sum", "-3"]);
    err_with(a.sum(&[0, 0], KeepDim::No), &["sum", "twice"]);
    err_with(a.mean(&[5], KeepDim::Yes), &["mean", "5"]);
    err_with(a.max(&[2], KeepDim::No), &["max", "2"]);
    err_with(a.var(&[7], 1, KeepDim::No), &["var", "7"]);
    err_with(a.logsumexp(&[3], KeepDim::No), &["logsumexp", "3"]);
    err_with(a.argmax(2, KeepDim::No), &["argmax", "2"]);
    err_with(a.argmin(-3, KeepDim::No), &["argmin", "-3"]);
    err_with(a.softmax(2), &["softmax", "2"]);
    err_with(a.log_softmax(-3), &["log_softmax", "-3"]);
    err_with(a.narrow(2, 0, 1), &["narrow", "2"]);
    err_with(a.transpose(0, 2), &["transpose", "2"]);
    err_with(a.permute(&[0, 2]), &["permute", "2"]);
    err_with(a.permute(&[0]), &["permute", "1 dims"]);
    err_with(a.unsqueeze(3), &["unsqueeze", "3"]);
    err_with(a.unsqueeze(-4), &["unsqueeze", "-4"]);
    err_with(a.squeeze(2), &["squeeze", "2"]);
    err_with(a.flatten(0, 2), &["flatten", "2"]);
    err_with(a.flatten(1, 0), &["flatten", "start dim 1 after end dim 0"]);
    err_with(Tensor::cat(&[a.clone(), a.clone()], 2), &["cat", "2"]);
    err_with(a.index_select(2, &idx(&[0], &[1])), &["index_select", "2"]);
    err_with(a.gather(-3, &idx(&[0], &[1, 1])), &["gather", "-3"]);
    assert!(a.dim(2).is_err());
    assert!(zeros(&[2]).t().is_err());
    assert!(a.chunks(0, 0).is_err());
}

#[test]
fn index_out_of_range_and_bad_indices() {
    let x = zeros(&[3, 2]);
    let e = err_with(
        x.index_select(0, &idx(&[0, 3], &[2])),
        &["index_select", "3", "size 3"],
    );
    assert!(matches!(
        e,
        Error::IndexOutOfRange {
            index: 3,
            size: 3,
            ..
        }
    ));
    err_with(
        x.index_select(1, &idx(&[-1], &[1])),
        &["index_select", "-1"],
    );
    err_with(
        x.gather(1, &idx(&[0, 2, 1, 0], &[2, 2])),
        &["gather", "2", "size 2"],
    );
    err_with(x.gather(0, &idx(&[-5, 0], &[1, 2])), &["gather", "-5"]);
    err_with(
        x.scatter_add(0, &idx(&[7, 0], &[1, 2]), &zeros(&[1, 2])),
        &["scatter_add", "7", "size 3"],
    );
    err_with(
        x.index_add(0, &idx(&[3], &[1]), &zeros(&[1, 2])),
        &["index_add", "3"],
    );
    // Non-i64 indices.
    let fidx = t32(&[0.0, 1.0], &[2]);
    err_with(x.index_select(0, &fidx), &["index_select", "i64", "F32"]);
    err_with(
        x.gather(1, &t32(&[0.0, 1.0], &[1, 2])),
        &["gather", "i64", "F32"],
    );
    err_with(
        x.scatter_add(1, &t32(&[0.0, 1.0], &[1, 2]), &zeros(&[1, 2])),
        &["scatter_add", "i64"],
    );
    err_with(
        x.index_add(
            0,
            &Tensor::from_vec(vec![0u8], &[1]).unwrap(),
            &zeros(&[1, 2]),
        ),
        &["index_add", "i64", "U8"],
    );
    // Index shapes.
    err_with(
        x.index_select(0, &idx(&[0, 1], &[1, 2])),
        &["index_select", "1-D"],
    );
    err_with(
        x.gather(1, &idx(&[0, 1], &[2])),
        &["gather", "[3, 2]", "[2]"],
    );
    err_with(
        x.gather(1, &idx(&[0; 8], &[4, 2])),
        &["gather", "[3, 2]", "[4, 2]"],
    );
    err_with(
        x.scatter_add(1, &idx(&[0, 1], &[1, 2]), &zeros(&[2, 2])),
        &["scatter_add", "[2, 2]", "[1, 2]"],
    );
    err_with(
        x.index_add(0, &idx(&[0, 1], &[2]), &zeros(&[3, 2])),
        &["index_add", "[2, 2]", "[3, 2]"],
    );
}

#[test]
fn reading_data_out_with_the_wrong_type_or_shape() {
    let x = zeros(&[2, 3]);
    let e = x.to_vec::<f64>().unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("to_vec") && msg.contains("F32") && msg.contains("F64"),
        "{msg}"
    );
    assert!(x.to_vec::<i64>().is_err());
    assert!(x.to_vec2::<u8>().is_err());
    let e = zeros(&[2, 3, 1]).to_vec2::<f32>().unwrap_err();
    assert!(e.to_string().contains("to_vec2") && e.to_string().contains("[2, 3, 1]"));
    let e = x.to_scalar::<f32>().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("to_scalar") && msg.contains("[2, 3]"), "{msg}");
    assert!(zeros(&[0]).to_scalar::<f32>().is_err());
    assert!(Tensor::scalar(1i64).to_scalar::<f32>().is_err());
}

#[test]
fn backward_misuse() {
    let w = t32(&[1.0, 2.0], &[2]).requires_grad_(true);
    let y = w.mul_scalar(3.0).unwrap();
    let e = y.backward().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Autograd(_)));
    assert!(msg.contains("one-element") && msg.contains("[2]"), "{msg}");
    assert!(msg.contains("backward_with_grad"), "{msg}");
    // An upstream gradient of the wrong shape.
    err_with(
        y.backward_with_grad(&zeros(&[3])).map(|_| zeros(&[])),
        &["backward", "[2]", "[3]"],
    );

    // No input requires a gradient.
    let c = t32(&[1.0], &[1]).exp().unwrap();
    let msg = c.backward().unwrap_err().to_string();
    assert!(msg.contains("does not require a gradient"), "{msg}");
    let under = ferrite::no_grad(|| w.sum_all()).unwrap();
    assert!(under.backward().is_err(), "computed under no_grad");

    // The graph is freed by the first backward.
    let loss = w.square().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let msg = loss.backward().unwrap_err().to_string();
    assert!(msg.contains("retain_graph"), "{msg}");
    assert!(msg.contains("already freed"), "{msg}");
    // backward_into reports it the same way and leaves the store untouched.
    let mut store = GradStore::new();
    let r = loss.backward_into(
        &Tensor::ones(&[], DType::F32).unwrap(),
        &mut store,
        BackwardOptions::default(),
    );
    assert!(r.unwrap_err().to_string().contains("retain_graph"));
    assert!(store.is_empty());
    // A second loss that shares the freed part of the graph fails too.
    let h = w.square().unwrap();
    h.sum_all().unwrap().backward().unwrap();
    let msg = h.mean_all().unwrap().backward().unwrap_err().to_string();
    assert!(msg.contains("retain_graph"), "{msg}");

    // Accumulating a gradient of the wrong shape.
    let mut store = GradStore::new();
    let e = store.accumulate(&w, zeros(&[3])).unwrap_err();
    assert!(e.to_string().contains("[2]") && e.to_string().contains("[3]"));
}

/// A user op whose backward returns the wrong number or shape of gradients.
struct Broken {
    input: Tensor,
    mode: u8,
}

impl GradFn for Broken {
    fn name(&self) -> &'static str {
        "broken_op"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.input.clone()]
    }
    fn backward(&self, _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        match self.mode {
            0 => Ok(vec![Some(g.clone()), None]),
            1 => Ok(vec![Some(Tensor::zeros(&[5], g.dtype())?)]),
            _ => Err(Error::Autograd("broken_op refuses".into())),
        }
    }
}

#[test]
fn custom_op_mistakes_are_reported() {
    let x = t32(&[1.0, 2.0], &[2]).requires_grad_(true);
    let make = |mode| {
        let out = ferrite::no_grad(|| x.mul_scalar(2.0)).unwrap();
        Tensor::from_op(
            out,
            Box::new(Broken {
                input: x.clone(),
                mode,
            }),
        )
    };
    let msg = make(0)
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("broken_op") && msg.contains("2 gradients for 1 inputs"),
        "{msg}"
    );
    let msg = make(1)
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("broken_op") && msg.contains("[5]") && msg.contains("[2]"),
        "{msg}"
    );
    let msg = make(2)
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("refuses"), "{msg}");
}

#[test]
fn in_place_updates_refused_while_recording() {
    let w = t32(&[1.0, 2.0], &[2]).requires_grad_(true);
    let src = t32(&[5.0, 6.0], &[2]);
    let msg = w.assign(&src).unwrap_err().to_string();
    assert!(msg.contains("assign") && msg.contains("no_grad"), "{msg}");
    let msg = w.add_scaled_(&src, 0.1).unwrap_err().to_string();
    assert!(
        msg.contains("add_scaled_") && msg.contains("no_grad"),
        "{msg}"
    );
    assert_eq!(
        w.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0],
        "nothing was written"
    );
    // Inside no_grad the same update is allowed.
    ferrite::no_grad(|| w.assign(&src)).unwrap();
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![5.0, 6.0]);
    // Other misuse of in-place updates.
    let plain = zeros(&[2, 2]);
    err_with(
        plain.assign(&zeros(&[4])).map(|_| plain.clone()),
        &["assign", "[2, 2]", "[4]"],
    );
    err_with(
        plain
            .assign(&Tensor::zeros(&[2, 2], DType::F64).unwrap())
            .map(|_| plain.clone()),
        &["assign", "F32", "F64"],
    );
    err_with(
        plain
            .t()
            .unwrap()
            .assign(&zeros(&[2, 2]))
            .map(|_| plain.clone()),
        &["assign", "contiguous"],
    );
}

#[test]
fn invalid_arguments() {
    let x = t32(&[-1.0, 0.0, 1.0], &[3]);
    let e = err_with(x.clamp(1.0, -1.0), &["clamp", "1", "-1"]);
    assert!(matches!(e, Error::InvalidArgument { op: "clamp", .. }));
    assert!(x.clamp(f64::NAN, 1.0).is_err());
    err_with(
        Tensor::arange(0.0, 5.0, 0.0, DType::F32),
        &["arange", "step 0"],
    );
    assert!(Tensor::arange(0.0, f64::INFINITY, 1.0, DType::F32).is_err());
    assert!(Tensor::arange(f64::NAN, 1.0, 1.0, DType::F32).is_err());
    let mut rng = StdRng::seed_from_u64(0);
    err_with(
        Tensor::rand(&[2], 1.0, 1.0, DType::F32, &mut rng),
        &["rand", "empty range"],
    );
    assert!(Tensor::rand(&[2], 2.0, 1.0, DType::F32, &mut rng).is_err());
    assert!(Tensor::rand(&[2], f64::NAN, 1.0, DType::F32, &mut rng).is_err());
    err_with(
        t32(&[0.5, 1.5], &[2]).bernoulli(&mut rng),
        &["bernoulli", "1.5", "[0, 1]"],
    );
    err_with(
        t32(&[-0.1], &[1]).bernoulli(&mut rng),
        &["bernoulli", "-0.1"],
    );
    assert!(t32(&[f32::NAN], &[1]).bernoulli(&mut rng).is_err());
    assert!(Tensor::from_vec(vec![1i64], &[1])
        .unwrap()
        .bernoulli(&mut rng)
        .is_err());

    let m = zeros(&[2, 3]);
    err_with(m.narrow(1, 2, 2), &["narrow", "2..4", "size 3"]);
    err_with(m.narrow(0, 3, 0), &["narrow", "size 2"]);
    err_with(m.narrow(0, usize::MAX, 2), &["narrow"]);
    #[allow(clippy::reversed_empty_ranges)]
    let bad_range = 2..1;
    err_with(m.slice(1, bad_range), &["slice"]);
    err_with(m.slice(1, 1..5), &["narrow"]);
    let e = err_with(m.squeeze(0), &["squeeze", "size 2", "not 1"]);
    assert!(matches!(e, Error::InvalidArgument { op: "squeeze", .. }));
    err_with(
        zeros(&[2, 2, 2]).permute(&[0, 1, 1]),
        &["permute", "repeated"],
    );
    err_with(zeros(&[2, 2]).permute(&[-1, 1]), &["permute", "repeated"]);
    err_with(Tensor::cat(&[], 0), &["cat", "no tensors"]);
    err_with(Tensor::stack(&[], 0), &["stack", "no tensors"]);
    let e = m.argmax(0, KeepDim::No);
    assert!(e.is_ok());
    err_with(zeros(&[0, 2]).max(&[0], KeepDim::No), &["max", "zero-size"]);
    err_with(zeros(&[0, 2]).argmax(0, KeepDim::No), &["argmax", "empty"]);
}

#[test]
fn cuda_is_an_error_not_a_panic() {
    let x = zeros(&[2]);
    let e = x.to_device(Device::Cuda(0)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DeviceUnavailable {
                device: Device::Cuda(0),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("Cuda(0)"), "{e}");
    // Moving to where it already is is fine.
    assert!(x.to_device(Device::Cpu).unwrap().same_storage(&x));
}

#[test]
fn errors_are_std_errors() {
    let e: Box<dyn std::error::Error> = Box::new(zeros(&[2]).add(&zeros(&[3])).unwrap_err());
    assert!(e.to_string().starts_with("add: shape mismatch"));
    assert!(e.source().is_none());
}

#[test]
fn absurd_shapes_are_errors_not_panics() {
    let huge = [usize::MAX / 2, 4];
    assert!(Tensor::zeros(&huge, DType::F32)
        .unwrap_err()
        .to_string()
        .contains("too many elements"));
    assert!(Tensor::eye(usize::MAX / 2, DType::F32).is_err());
    assert!(Tensor::arange(0.0, 1e30, 1.0, DType::F32).is_err());
    let x = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    assert!(x.reshape(&[usize::MAX, 2]).is_err());
}

#[test]
fn relu_propagates_nan() {
    let x = Tensor::from_vec(vec![f32::NAN, -1.0, 2.0], &[3]).unwrap();
    let y = x.relu().unwrap().to_vec::<f32>().unwrap();
    assert!(y[0].is_nan());
    assert_eq!(&y[1..], &[0.0, 2.0]);
}

//! Regression tests for inputs that once reached unsound or aborting code:
//! shapes whose element count overflows, views outside their storage,
//! allocations the system refuses, and kernel entry points handed
//! inconsistent arguments. Each must be a clean `Err`, never a crash,
//! a panic or a result read from outside a buffer.

use ferrite::ops::conv::cpu::{conv2d_backward_input, conv2d_direct, conv2d_forward, ConvGeom};
use ferrite::ops::conv::winograd;
use ferrite::ops::Conv2dParams;
use ferrite::{DType, Error, Tensor};

const BIG: usize = 1 << 40;

fn ones(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, DType::F32).unwrap()
}

fn message(r: ferrite::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.shape()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn matmul_of_expanded_operands_with_an_unaddressable_output_is_refused() {
    // [2^40, 1] · [1, 2^40] would be a [2^40, 2^40] output: 2^80 elements.
    let a = ones(&[1, 1]).expand(&[BIG, 1]).unwrap();
    let b = ones(&[1, 1]).expand(&[1, BIG]).unwrap();
    let msg = message(a.matmul(&b));
    assert!(msg.contains("too many elements"), "{msg}");
    // A window of the operands still multiplies correctly.
    let a = a.narrow(0, 5, 3).unwrap();
    let b = b.narrow(1, 7, 2).unwrap();
    let p = a.matmul(&b).unwrap();
    assert_eq!(p.shape(), &[3, 2]);
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![1.0; 6]);
}

#[test]
fn broadcasting_to_an_unaddressable_shape_is_refused() {
    // Each view is fine (2^32 elements over one stored value); their
    // broadcast sum would have 2^64.
    let a = ones(&[1, 1]).expand(&[1 << 32, 1]).unwrap();
    let b = ones(&[1, 1]).expand(&[1, 1 << 32]).unwrap();
    for r in [a.add(&b), a.mul(&b), a.maximum(&b)] {
        let msg = message(r);
        assert!(msg.contains("too many elements"), "{msg}");
    }
    let msg = message(a.eq(&b));
    assert!(msg.contains("too many elements"), "{msg}");
}

#[test]
fn expanding_to_an_unaddressable_shape_is_refused() {
    let msg = message(ones(&[1, 1]).expand(&[BIG, BIG]));
    assert!(msg.contains("too many elements"), "{msg}");
    let msg = message(
        ones(&[1])
            .reshape(&[1, 1])
            .unwrap()
            .broadcast_to(&[BIG, BIG]),
    );
    assert!(msg.contains("too many elements"), "{msg}");
}

#[test]
fn empty_shapes_whose_other_extents_overflow_are_refused() {
    // No element, but row-major strides of [0, 2^32, 2^32] overflow usize.
    let shape = [0, 1 << 32, 1 << 32];
    let msg = message(Tensor::zeros(&shape, DType::F32));
    assert!(msg.contains("too many elements"), "{msg}");
    let msg = message(Tensor::from_vec(Vec::<f32>::new(), &shape));
    assert!(msg.contains("too many elements"), "{msg}");
    let msg = message(ones(&[0]).reshape(&shape));
    assert!(msg.contains("too many elements"), "{msg}");
    // Empty shapes that are addressable stay legal.
    assert_eq!(
        Tensor::zeros(&[0, 1 << 20, 3], DType::F32).unwrap().numel(),
        0
    );
}

#[test]
fn allocations_the_system_refuses_are_errors() {
    // 2^56 f32 elements (256 PiB): a legal shape, an impossible buffer.
    let r = Tensor::zeros(&[1 << 28, 1 << 28], DType::F32);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{:?}", r.err());
    let msg = message(Tensor::zeros(&[1 << 28, 1 << 28], DType::F32));
    assert!(msg.contains("out of memory"), "{msg}");
    // The same through an op: materialising a broadcast view.
    let big = ones(&[1, 1]).expand(&[1 << 28, 1 << 28]).unwrap();
    let r = big.contiguous();
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{:?}", r.err());
    let r = big.add(&ones(&[1]));
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{:?}", r.err());
}

#[test]
fn conv_geometry_rejects_inconsistent_groups_and_channels() {
    let p = Conv2dParams::default().groups(2);
    // c_out = 3 is not a multiple of 2 groups: once wrote 2 planes and
    // claimed 3.
    assert!(ConvGeom::new([1, 4, 5, 5], [3, 2, 3, 3], &p).is_err());
    // Weight input channels must be C / groups.
    assert!(ConvGeom::new([1, 4, 5, 5], [4, 4, 3, 3], &p).is_err());
    let zero = Conv2dParams::default().stride(0);
    assert!(ConvGeom::new([1, 4, 5, 5], [4, 4, 3, 3], &zero).is_err());
    assert!(ConvGeom::new([1, 4, 5, 5], [4, 4, 0, 3], &Conv2dParams::default()).is_err());
}

#[test]
fn conv_geometry_with_an_enormous_padding_names_the_padding() {
    let p = Conv2dParams::default().padding(usize::MAX / 2 + 1);
    let e = ConvGeom::new([1, 1, 4, 4], [1, 1, 3, 3], &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("padding") && e.contains("too large"), "{e}");
    // Padding that fits the arithmetic but makes an unaddressable output.
    let p = Conv2dParams::default().padding(1 << 40);
    let e = ConvGeom::new([1, 1, 4, 4], [1, 1, 3, 3], &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("too many elements"), "{e}");
    // Through the tensor op as well.
    let x = ones(&[1, 1, 4, 4]);
    let w = ones(&[1, 1, 3, 3]);
    let e = message(x.conv2d(&w, None, p));
    assert!(e.contains("too many elements"), "{e}");
    // A kernel larger than the padded input says so.
    let e = message(x.conv2d(&ones(&[1, 1, 7, 7]), None, Conv2dParams::default()));
    assert!(e.contains("larger than the padded input"), "{e}");
}

#[test]
fn conv_kernels_check_their_buffers_against_the_geometry() {
    let p = Conv2dParams::default().padding(1);
    let g = ConvGeom::new([2, 3, 5, 5], [4, 3, 3, 3], &p).unwrap();
    let x = vec![0.5f32; 2 * 3 * 5 * 5];
    let w = vec![0.25f32; 4 * 3 * 3 * 3];
    let dy = vec![1.0f32; 2 * 4 * 5 * 5];
    assert!(conv2d_forward(&x, &w, None, &g).is_ok());
    assert!(conv2d_forward(&x[1..], &w, None, &g).is_err());
    assert!(conv2d_forward(&x, &w[..10], None, &g).is_err());
    assert!(conv2d_forward(&x, &w, Some(&[1.0f32; 3]), &g).is_err());
    assert!(conv2d_direct(&x[..7], &w, None, &g).is_err());
    assert!(conv2d_backward_input(&dy[..dy.len() - 1], &w, &g).is_err());
    // Longer buffers are fine: only the prefix is read.
    let mut longer = x.clone();
    longer.extend([9.0; 5]);
    assert_eq!(
        conv2d_forward(&longer, &w, None, &g).unwrap(),
        conv2d_forward(&x, &w, None, &g).unwrap()
    );
    // Winograd refuses geometries it does not compute instead of panicking.
    let strided = ConvGeom::new([2, 3, 5, 5], [4, 3, 3, 3], &p.stride(2)).unwrap();
    assert!(winograd::conv2d_forward(&x, &w, None, &strided).is_err());
    assert!(winograd::conv2d_backward_weight(&x, &dy, &strided).is_err());
}

#[test]
fn narrowing_empty_tensors_stays_legal() {
    // An empty view keeps its offset inside the storage.
    let e = Tensor::zeros(&[0, 5], DType::F32).unwrap();
    let n = e.narrow(1, 3, 2).unwrap();
    assert_eq!(n.shape(), &[0, 2]);
    assert_eq!(n.sum_all().unwrap().to_vec::<f32>().unwrap(), vec![0.0]);
    assert_eq!(e.chunks(2, 1).unwrap().len(), 3);
    let x = ones(&[4, 3]);
    assert_eq!(x.narrow(0, 4, 0).unwrap().shape(), &[0, 3]);
    // cat backward narrows the gradient, empty parts included.
    let a = Tensor::zeros(&[0, 3], DType::F32)
        .unwrap()
        .requires_grad_(true);
    let b = ones(&[2, 3]).requires_grad_(true);
    let y = Tensor::cat(&[a.clone(), b.clone()], 0).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&a).unwrap().shape(), &[0, 3]);
    assert_eq!(g.get(&b).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 6]);
}

#[test]
fn more_outputs_too_large_to_allocate_are_errors() {
    let oom = |r: ferrite::Result<Tensor>| match r {
        Err(Error::OutOfMemory { .. }) => {}
        other => panic!(
            "expected OutOfMemory, got {:?}",
            other.map(|t| t.shape().to_vec())
        ),
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    oom(Tensor::randn(
        &[1 << 28, 1 << 28],
        0.0,
        1.0,
        DType::F32,
        &mut rng,
    ));
    oom(Tensor::rand(
        &[1 << 28, 1 << 28],
        0.0,
        1.0,
        DType::F32,
        &mut rng,
    ));
    oom(Tensor::eye(1 << 28, DType::F32));
    // A batch of 2^40 one-element products: the batch bookkeeping alone
    // is too large.
    let a = ones(&[1, 1, 1]).expand(&[BIG, 1, 1]).unwrap();
    let r = a.matmul(&ones(&[1, 1]));
    assert!(r.is_err(), "{:?}", r.map(|t| t.shape().to_vec()));
    // 2^40 rows selected from a single one.
    let idx = Tensor::zeros(&[1], DType::I64)
        .unwrap()
        .expand(&[BIG])
        .unwrap();
    let r = ones(&[1, 1 << 20]).index_select(0, &idx);
    assert!(r.is_err(), "{:?}", r.map(|t| t.shape().to_vec()));
    // Concatenating views whose total is unaddressable.
    let huge = ones(&[1, 1]).expand(&[1 << 59, 1]).unwrap();
    let r = Tensor::cat(&[huge.clone(), huge.clone(), huge], 0);
    assert!(r.is_err(), "{:?}", r.map(|t| t.shape().to_vec()));
}

#[test]
fn convolutions_without_channels_do_not_panic() {
    let x = Tensor::zeros(&[1, 16, 5, 5], DType::F32)
        .unwrap()
        .requires_grad_(true);
    let w = Tensor::zeros(&[0, 16, 3, 3], DType::F32)
        .unwrap()
        .requires_grad_(true);
    let y = x
        .conv2d(&w, None, Conv2dParams::default().padding(1))
        .unwrap();
    assert_eq!(y.shape(), &[1, 0, 5, 5]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        g.get(&x).unwrap().to_vec::<f32>().unwrap(),
        vec![0.0; 16 * 25]
    );
    // The public Winograd kernel with no channels at all.
    let p = Conv2dParams::default().padding(1);
    let g = ConvGeom::new([1, 0, 5, 5], [0, 0, 3, 3], &p).unwrap();
    assert!(winograd::conv2d_forward::<f32>(&[], &[], None, &g)
        .unwrap()
        .is_empty());
}

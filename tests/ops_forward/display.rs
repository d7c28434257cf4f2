//! Display formatting against PyTorch and reading data out (to_vec, to_vec2, to_scalar).

use super::helpers::{t32, t64};
use ferrite::{DType, Tensor};

// ----- display -----------------------------------------------------------

#[test]
fn display_matches_pytorch() {
    let t = t32(&[1.5, -2.0, 3.0, 4.0], &[2, 2]);
    assert_eq!(
        format!("{t}"),
        "tensor([[ 1.5000, -2.0000],\n        [ 3.0000,  4.0000]])"
    );
    assert_eq!(
        format!("{}", t32(&[1.0, 2.0, 3.0], &[3])),
        "tensor([1., 2., 3.])"
    );
    assert_eq!(format!("{}", t32(&[-1.0, 2.0], &[2])), "tensor([-1.,  2.])");
    assert_eq!(
        format!("{}", Tensor::from_vec(vec![1i64, -20, 300], &[3]).unwrap()),
        "tensor([  1, -20, 300])"
    );
    assert_eq!(format!("{}", Tensor::scalar(3.5f32)), "tensor(3.5000)");
    assert_eq!(format!("{}", Tensor::scalar(2.0f32)), "tensor(2.)");
    assert_eq!(format!("{}", Tensor::scalar(5i64)), "tensor(5)");
    assert_eq!(
        format!("{}", t32(&[1.5, f32::NAN, f32::INFINITY], &[3])),
        "tensor([1.5000,    nan,    inf])"
    );
    // Scientific notation, with Python's two-digit signed exponent.
    assert_eq!(
        format!("{}", t32(&[1e-5, -1.0], &[2])),
        "tensor([ 1.0000e-05, -1.0000e+00])"
    );
    assert_eq!(
        format!("{}", t32(&[1.0, 2000.0], &[2])),
        "tensor([1.0000e+00, 2.0000e+03])"
    );
    // 3-D: blank line between matrices.
    let c = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[2, 2, 2]);
    assert_eq!(
        format!("{c}"),
        "tensor([[[1., 2.],\n         [3., 4.]],\n\n        [[5., 6.],\n         [7., 8.]]])"
    );
    // Empty tensors.
    assert_eq!(
        format!("{}", Tensor::zeros(&[0], DType::F32).unwrap()),
        "tensor([])"
    );
    assert_eq!(
        format!("{}", Tensor::zeros(&[0, 3], DType::F32).unwrap()),
        "tensor([], size=(0, 3))"
    );
    // A non-contiguous view prints its logical order.
    assert_eq!(
        format!("{}", t.t().unwrap()),
        "tensor([[ 1.5000,  3.0000],\n        [-2.0000,  4.0000]])"
    );
    // Other dtypes carry a suffix (ferrite spells the dtype its own way).
    let d = format!("{}", t64(&[0.5, 0.25], &[2]));
    assert!(d.starts_with("tensor([0.5000, 0.2500], dtype="), "{d}");
}

#[test]
fn display_wraps_and_summarizes_like_pytorch() {
    // Lines wrap at 80 columns: 9 elements of width 6 per line here.
    let halves: Vec<f32> = (0..20).map(|i| i as f32 / 2.0).collect();
    assert_eq!(
        format!("{}", t32(&halves, &[20])),
        "tensor([0.0000, 0.5000, 1.0000, 1.5000, 2.0000, 2.5000, 3.0000, 3.5000, 4.0000,\n        \
         4.5000, 5.0000, 5.5000, 6.0000, 6.5000, 7.0000, 7.5000, 8.0000, 8.5000,\n        \
         9.0000, 9.5000])"
    );
    // Over 1000 elements: three items at each edge around " ...".
    let digits: Vec<f32> = (0..2000).map(|i| (i % 10) as f32).collect();
    assert_eq!(
        format!("{}", t32(&digits, &[2000])),
        "tensor([0., 1., 2.,  ..., 7., 8., 9.])"
    );
    let rows = format!("{}", t32(&digits, &[100, 20]));
    let row = "[0., 1., 2.,  ..., 7., 8., 9.]";
    assert_eq!(
        rows,
        format!(
            "tensor([{row},\n        {row},\n        {row},\n        ...,\n        \
             {row},\n        {row},\n        {row}])"
        )
    );
    // Only the printed elements choose the format: the hidden middle is
    // not integral, the edges are.
    let mut mixed: Vec<f32> = vec![0.5; 2000];
    mixed[..3].copy_from_slice(&[1.0, 2.0, 3.0]);
    mixed[1997..].copy_from_slice(&[4.0, 5.0, 6.0]);
    assert_eq!(
        format!("{}", t32(&mixed, &[2000])),
        "tensor([1., 2., 3.,  ..., 4., 5., 6.])"
    );
    // A summarised 1-D f32 range: scientific notation, wrapped.
    let range: Vec<f32> = (0..2000).map(|i| i as f32).collect();
    assert_eq!(
        format!("{}", t32(&range, &[2000])),
        "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n        \
         1.9990e+03])"
    );
}

// ----- moving data out -----------------------------------------------------

#[test]
fn to_vec_to_vec2_to_scalar() {
    let x = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(
        x.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(
        x.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
    );
    assert_eq!(
        x.t().unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 4.0], vec![2.0, 5.0], vec![3.0, 6.0]]
    );
    let col = x.narrow(1, 2, 1).unwrap();
    assert_eq!(col.to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
    assert_eq!(
        Tensor::zeros(&[2, 0], DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![Vec::<f32>::new(), Vec::new()]
    );
    assert!(Tensor::zeros(&[0, 4], DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .is_empty());
    assert_eq!(Tensor::scalar(2.5f64).to_scalar::<f64>().unwrap(), 2.5);
    assert_eq!(t32(&[7.0], &[1, 1]).to_scalar::<f32>().unwrap(), 7.0);
    assert_eq!(
        x.narrow(1, 1, 1)
            .unwrap()
            .narrow(0, 1, 1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        5.0
    );
    assert_eq!(
        Tensor::from_vec(vec![3i64, -4], &[2])
            .unwrap()
            .to_f64_vec()
            .unwrap(),
        vec![3.0, -4.0]
    );
}

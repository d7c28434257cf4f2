//! Views (reshape, permute, narrow, squeeze, cat, stack) and indexing (gather, scatter).

use super::helpers::{f64s, numel, ref_permute, t32, t64};
use ferrite::{DType, KeepDim, Tensor};

// ----- views -------------------------------------------------------------

fn iota(shape: &[usize]) -> (Tensor, Vec<f64>) {
    let data: Vec<f64> = (0..numel(shape)).map(|i| i as f64).collect();
    (t64(&data, shape).to_dtype(DType::F32).unwrap(), data)
}

#[test]
fn reshape_views_and_copies() {
    let (x, data) = iota(&[2, 3, 4]);
    let r = x.reshape(&[6, 4]).unwrap();
    assert!(
        r.same_storage(&x),
        "reshape of a contiguous tensor is a view"
    );
    assert_eq!((r.shape(), f64s(&r)), (&[6, 4][..], data.clone()));
    let ri = x.reshape_infer(&[-1, 8]).unwrap();
    assert_eq!(ri.shape(), &[3, 8]);
    assert!(ri.same_storage(&x));

    // Permuted [3, 2, 4] (strides [4, 12, 1]): splitting the last dim is a
    // view, merging everything is not.
    let p = x.permute(&[1, 0, 2]).unwrap();
    let pdata = ref_permute(&data, &[2, 3, 4], &[1, 0, 2]);
    let v = p.reshape(&[3, 2, 2, 2]).unwrap();
    assert!(v.same_storage(&x), "viewable reshape of a permuted tensor");
    assert_eq!(f64s(&v), pdata);
    let c = p.reshape(&[24]).unwrap();
    assert!(!c.same_storage(&x), "non-viewable reshape must copy");
    assert!(c.is_contiguous());
    assert_eq!(f64s(&c), pdata);
    let c2 = p.reshape(&[6, 4]).unwrap();
    assert!(!c2.same_storage(&x));
    assert_eq!(f64s(&c2), pdata);
    // A transposed matrix cannot be flattened without a copy.
    let (m, md) = iota(&[3, 4]);
    let mt = m.t().unwrap();
    let flat = mt.reshape(&[12]).unwrap();
    assert!(!flat.same_storage(&m));
    assert_eq!(f64s(&flat), ref_permute(&md, &[3, 4], &[1, 0]));
    // A narrowed tensor: [2, 3, 2] with strides [12, 4, 1].
    let n = x.narrow(2, 0, 2).unwrap();
    let ndata: Vec<f64> = data
        .iter()
        .cloned()
        .filter(|v| (*v as usize) % 4 < 2)
        .collect();
    let nv = n.reshape(&[6, 2]).unwrap();
    assert!(nv.same_storage(&x));
    assert_eq!(f64s(&nv), ndata);
    let nc = n.reshape(&[12]).unwrap();
    assert!(!nc.same_storage(&x));
    assert_eq!(f64s(&nc), ndata);
    // Writing through a copy does not touch the original; through a view it does.
    ferrite::no_grad(|| nc.assign(&Tensor::zeros(&[12], DType::F32).unwrap())).unwrap();
    assert_eq!(f64s(&x), data);
}

#[test]
fn permute_transpose_narrow_slice() {
    let (x, data) = iota(&[2, 3, 4]);
    let p = x.permute(&[2, 0, 1]).unwrap();
    assert_eq!(p.shape(), &[4, 2, 3]);
    assert_eq!(p.strides(), &[1, 12, 4]);
    assert!(p.same_storage(&x) && !p.is_contiguous());
    assert_eq!(f64s(&p), ref_permute(&data, &[2, 3, 4], &[2, 0, 1]));
    let pn = x.permute(&[-1, 0, -2]).unwrap();
    assert_eq!(pn.shape(), &[4, 2, 3]);

    let t = x.transpose(0, 2).unwrap();
    assert_eq!(t.shape(), &[4, 3, 2]);
    assert_eq!(f64s(&t), ref_permute(&data, &[2, 3, 4], &[2, 1, 0]));
    let (m, _) = iota(&[2, 3]);
    assert_eq!(
        m.t().unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![0.0, 3.0], vec![1.0, 4.0], vec![2.0, 5.0]]
    );

    let n = x.narrow(1, 1, 2).unwrap();
    assert_eq!(n.shape(), &[2, 2, 4]);
    assert!(n.same_storage(&x));
    let want: Vec<f64> = data
        .iter()
        .cloned()
        .filter(|v| (*v as usize / 4) % 3 >= 1)
        .collect();
    assert_eq!(f64s(&n), want);
    let s = x.slice(2, 1..3).unwrap();
    assert_eq!(s.shape(), &[2, 3, 2]);
    let want: Vec<f64> = data
        .iter()
        .cloned()
        .filter(|v| (1..3).contains(&(*v as usize % 4)))
        .collect();
    assert_eq!(f64s(&s), want);
    assert_eq!(x.slice(0, 1..1).unwrap().shape(), &[0, 3, 4]);
    let last = x.narrow(-1, 3, 1).unwrap();
    assert_eq!(f64s(&last), vec![3.0, 7.0, 11.0, 15.0, 19.0, 23.0]);

    let chunks = t32(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5]).chunks(2, 0).unwrap();
    let parts: Vec<Vec<f32>> = chunks.iter().map(|c| c.to_vec().unwrap()).collect();
    assert_eq!(parts, vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0]]);

    // A view written in place is seen through the base tensor.
    let (base, _) = iota(&[4, 3]);
    let rows = base.narrow(0, 1, 2).unwrap();
    assert!(rows.is_contiguous());
    ferrite::no_grad(|| rows.assign(&Tensor::full(&[2, 3], -1.0, DType::F32).unwrap())).unwrap();
    assert_eq!(
        f64s(&base),
        vec![0.0, 1.0, 2.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 9.0, 10.0, 11.0]
    );
}

#[test]
fn squeeze_unsqueeze_broadcast_flatten_contiguous() {
    let (x, data) = iota(&[2, 3]);
    let u0 = x.unsqueeze(0).unwrap();
    assert_eq!(u0.shape(), &[1, 2, 3]);
    let u1 = x.unsqueeze(1).unwrap();
    assert_eq!(u1.shape(), &[2, 1, 3]);
    let ul = x.unsqueeze(-1).unwrap();
    assert_eq!(ul.shape(), &[2, 3, 1]);
    for u in [&u0, &u1, &ul] {
        assert!(u.same_storage(&x) && u.is_contiguous());
        assert_eq!(f64s(u), data);
    }
    let back = u1.squeeze(1).unwrap();
    assert_eq!(back.shape(), &[2, 3]);
    assert_eq!(ul.squeeze(-1).unwrap().shape(), &[2, 3]);
    assert!(back.same_storage(&x));

    let row = t32(&[1.0, 2.0, 3.0], &[3]);
    let b = row.broadcast_to(&[2, 3]).unwrap();
    assert_eq!(b.strides(), &[0, 1]);
    assert!(b.same_storage(&row));
    assert_eq!(
        b.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0]]
    );
    let col = t32(&[1.0, 2.0], &[2, 1]);
    let e = col.expand(&[2, 2, 3]).unwrap();
    assert_eq!(e.shape(), &[2, 2, 3]);
    assert_eq!(
        f64s(&e),
        vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    );
    // A broadcast view feeds ops like any tensor.
    assert_eq!(
        f64s(&b.sum(&[0], KeepDim::No).unwrap()),
        vec![2.0, 4.0, 6.0]
    );

    let (y, ydata) = iota(&[2, 3, 4]);
    let f = y.flatten(1, 2).unwrap();
    assert_eq!(f.shape(), &[2, 12]);
    assert!(f.same_storage(&y));
    assert_eq!(y.flatten(0, -1).unwrap().shape(), &[24]);
    assert_eq!(y.flatten(0, 1).unwrap().shape(), &[6, 4]);
    let pf = y.permute(&[2, 1, 0]).unwrap().flatten(0, -1).unwrap();
    assert_eq!(f64s(&pf), ref_permute(&ydata, &[2, 3, 4], &[2, 1, 0]));

    let same = y.contiguous().unwrap();
    assert!(
        same.same_storage(&y),
        "contiguous() of a contiguous tensor is free"
    );
    let p = y.permute(&[1, 2, 0]).unwrap();
    let pc = p.contiguous().unwrap();
    assert!(!pc.same_storage(&y));
    assert!(pc.is_contiguous());
    assert_eq!(pc.strides(), &[8, 2, 1]);
    assert_eq!(f64s(&pc), ref_permute(&ydata, &[2, 3, 4], &[1, 2, 0]));
    let copy = y.contiguous_copy().unwrap();
    assert!(!copy.same_storage(&y));
    assert_eq!(f64s(&copy), ydata);
}

#[test]
fn cat_and_stack() {
    let a = t32(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = t32(&[5.0, 6.0], &[2, 1]);
    let c1 = Tensor::cat(&[a.clone(), b.clone()], 1).unwrap();
    assert_eq!(
        c1.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 5.0], vec![3.0, 4.0, 6.0]]
    );
    let cm = Tensor::cat(&[a.clone(), b.clone()], -1).unwrap();
    assert_eq!(f64s(&cm), f64s(&c1));
    let r = t32(&[7.0, 8.0], &[1, 2]);
    let c0 = Tensor::cat(&[a.clone(), r.clone(), a.clone()], 0).unwrap();
    assert_eq!(c0.shape(), &[5, 2]);
    assert_eq!(
        f64s(&c0),
        vec![1.0, 2.0, 3.0, 4.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0]
    );
    // Non-contiguous and empty parts.
    let ct = Tensor::cat(
        &[
            a.t().unwrap(),
            Tensor::zeros(&[2, 0], DType::F32).unwrap(),
            b.clone(),
        ],
        1,
    )
    .unwrap();
    assert_eq!(
        ct.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]
    );
    let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    let j = Tensor::from_vec(vec![3i64], &[1]).unwrap();
    assert_eq!(
        Tensor::cat(&[i, j], 0).unwrap().to_vec::<i64>().unwrap(),
        vec![1, 2, 3]
    );

    let s0 = Tensor::stack(&[a.clone(), a.mul_scalar(10.0).unwrap()], 0).unwrap();
    assert_eq!(s0.shape(), &[2, 2, 2]);
    assert_eq!(f64s(&s0), vec![1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
    let s1 = Tensor::stack(&[a.clone(), a.mul_scalar(10.0).unwrap()], 1).unwrap();
    assert_eq!(s1.shape(), &[2, 2, 2]);
    assert_eq!(f64s(&s1), vec![1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0]);
    let s2 = Tensor::stack(&[a.clone(), a.mul_scalar(10.0).unwrap()], -1).unwrap();
    assert_eq!(s2.shape(), &[2, 2, 2]);
    assert_eq!(f64s(&s2), vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
    let v = Tensor::stack(&[t32(&[1.0], &[]), t32(&[2.0], &[])], 0).unwrap();
    assert_eq!((v.shape(), f64s(&v)), (&[2][..], vec![1.0, 2.0]));
}

// ----- indexing ----------------------------------------------------------

fn idx(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

#[test]
fn index_select_gather_scatter_index_add() {
    let x = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &[3, 3]);
    assert_eq!(
        x.index_select(0, &idx(&[2, 0, 2], &[3]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![
            vec![7.0, 8.0, 9.0],
            vec![1.0, 2.0, 3.0],
            vec![7.0, 8.0, 9.0]
        ]
    );
    assert_eq!(
        x.index_select(-1, &idx(&[1, 1], &[2]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![vec![2.0, 2.0], vec![5.0, 5.0], vec![8.0, 8.0]]
    );
    assert_eq!(
        x.t()
            .unwrap()
            .index_select(0, &idx(&[0], &[1]))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        vec![vec![1.0, 4.0, 7.0]]
    );
    assert_eq!(x.index_select(0, &idx(&[], &[0])).unwrap().shape(), &[0, 3]);

    let g = x.gather(1, &idx(&[0, 0, 1, 0, 2, 1], &[3, 2])).unwrap();
    assert_eq!(
        g.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 1.0], vec![5.0, 4.0], vec![9.0, 8.0]]
    );
    let g0 = x.gather(0, &idx(&[2, 1, 0], &[1, 3])).unwrap();
    assert_eq!(g0.to_vec2::<f32>().unwrap(), vec![vec![7.0, 5.0, 3.0]]);
    let gt = x.t().unwrap().gather(1, &idx(&[2, 0], &[2, 1])).unwrap();
    assert_eq!(gt.to_vec2::<f32>().unwrap(), vec![vec![7.0], vec![2.0]]);
    let gi = Tensor::from_vec(vec![10i64, 20, 30], &[3])
        .unwrap()
        .gather(0, &idx(&[2, 2, 0], &[3]))
        .unwrap();
    assert_eq!(gi.to_vec::<i64>().unwrap(), vec![30, 30, 10]);

    let z = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let src = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let s = z
        .scatter_add(1, &idx(&[0, 1, 0, 2, 2, 2], &[2, 3]), &src)
        .unwrap();
    assert_eq!(
        s.to_vec2::<f32>().unwrap(),
        vec![vec![4.0, 2.0, 0.0], vec![0.0, 0.0, 15.0]]
    );
    assert_eq!(f64s(&z), vec![0.0; 6], "scatter_add is out of place");
    let s0 = Tensor::ones(&[3, 2], DType::F64)
        .unwrap()
        .scatter_add(0, &idx(&[2, 0], &[1, 2]), &t64(&[5.0, 7.0], &[1, 2]))
        .unwrap();
    assert_eq!(f64s(&s0), vec![1.0, 8.0, 1.0, 1.0, 6.0, 1.0]);

    let base = t64(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &[3, 2]);
    let add = base
        .index_add(
            0,
            &idx(&[0, 2, 0], &[3]),
            &t64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]),
        )
        .unwrap();
    assert_eq!(
        add.to_vec2::<f64>().unwrap(),
        vec![vec![7.0, 9.0], vec![1.0, 1.0], vec![4.0, 5.0]]
    );
    assert_eq!(f64s(&base), vec![1.0; 6], "index_add is out of place");
    let add1 = base
        .index_add(
            1,
            &idx(&[1, 1], &[2]),
            &t64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]),
        )
        .unwrap();
    assert_eq!(f64s(&add1), vec![1.0, 4.0, 1.0, 8.0, 1.0, 12.0]);
    // Half precision goes through f32.
    let hb = base.to_dtype(DType::BF16).unwrap();
    let hadd = hb
        .index_add(
            0,
            &idx(&[1], &[1]),
            &t64(&[0.5, 0.25], &[1, 2]).to_dtype(DType::BF16).unwrap(),
        )
        .unwrap();
    assert_eq!(hadd.dtype(), DType::BF16);
    assert_eq!(f64s(&hadd), vec![1.0, 1.0, 1.5, 1.25, 1.0, 1.0]);
}

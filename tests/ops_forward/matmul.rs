//! Matmul: small, batched with broadcasting, and large shapes against a naive reference.

use super::helpers::{
    assert_close, bcast_source, f64s, numel, ref_broadcast_shape, ref_permute, t32, t64, unravel,
};
use crate::common::rng;
use ferrite::{DType, KeepDim, Tensor};

/// Naive `[m, k] x [k, n]` in f64.
fn ref_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
    c
}

// ----- matmul ------------------------------------------------------------

#[test]
fn matmul_small_shapes() {
    let v = t32(&[1.0, 2.0, 3.0], &[3]);
    let dot = v.matmul(&t32(&[4.0, 5.0, 6.0], &[3])).unwrap();
    assert_eq!(dot.shape(), &[] as &[usize]);
    assert_eq!(dot.to_scalar::<f32>().unwrap(), 32.0);

    let b = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let vb = v.matmul(&b).unwrap();
    assert_eq!(
        (vb.shape(), vb.to_vec::<f32>().unwrap()),
        (&[2][..], vec![22.0, 28.0])
    );

    let a = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let av = a.matmul(&t32(&[1.0, 0.0, -1.0], &[3])).unwrap();
    assert_eq!(
        (av.shape(), av.to_vec::<f32>().unwrap()),
        (&[2][..], vec![-2.0, -2.0])
    );

    let ab = a.matmul(&b).unwrap();
    assert_eq!(
        ab.to_vec2::<f32>().unwrap(),
        vec![vec![22.0, 28.0], vec![49.0, 64.0]]
    );
    // Transposed views, no copy needed: (Bᵀ Aᵀ) = (A B)ᵀ.
    let btat = b.t().unwrap().matmul(&a.t().unwrap()).unwrap();
    assert_eq!(
        btat.to_vec2::<f32>().unwrap(),
        vec![vec![22.0, 49.0], vec![28.0, 64.0]]
    );
    // A times its own transpose (same storage on both sides).
    let aat = a.matmul(&a.t().unwrap()).unwrap();
    assert_eq!(
        aat.to_vec2::<f32>().unwrap(),
        vec![vec![14.0, 32.0], vec![32.0, 77.0]]
    );
    // A narrowed view with an offset.
    let a1 = a.narrow(0, 1, 1).unwrap();
    assert_eq!(
        a1.matmul(&b).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![49.0, 64.0]]
    );
    // F64 and BF16.
    let a64 = a.to_dtype(DType::F64).unwrap();
    let b64 = b.to_dtype(DType::F64).unwrap();
    assert_eq!(
        a64.matmul(&b64).unwrap().to_vec2::<f64>().unwrap(),
        vec![vec![22.0, 28.0], vec![49.0, 64.0]]
    );
    let ah = a.to_dtype(DType::BF16).unwrap();
    let bh = b.to_dtype(DType::BF16).unwrap();
    let abh = ah.matmul(&bh).unwrap();
    assert_eq!(abh.dtype(), DType::BF16);
    assert_eq!(f64s(&abh), vec![22.0, 28.0, 49.0, 64.0]);
    // k = 0: an empty sum.
    let z = Tensor::zeros(&[2, 0], DType::F32)
        .unwrap()
        .matmul(&Tensor::zeros(&[0, 3], DType::F32).unwrap())
        .unwrap();
    assert_eq!((z.shape(), f64s(&z)), (&[2, 3][..], vec![0.0; 6]));
}

#[test]
fn large_outputs_never_show_stale_values() {
    // Large buffers are recycled between ops: results that are sums over
    // nothing, or only partly computed, must still come out right. Rows of
    // 256 f32 make every tensor below as large as the smallest cached buffer.
    let rows = ferrite::backend::cpu::pool::MIN_CACHED_BYTES / (4 * 256);
    for _ in 0..3 {
        let junk = Tensor::full(&[rows, 256], 7.0, DType::F32)
            .unwrap()
            .add_scalar(1.0)
            .unwrap();
        assert_eq!(junk.to_vec::<f32>().unwrap()[0], 8.0);
        drop(junk);
        let a = Tensor::zeros(&[rows, 0], DType::F32).unwrap();
        let b = Tensor::zeros(&[0, 256], DType::F32).unwrap();
        let z = a.matmul(&b).unwrap();
        assert!(z.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
        let e = Tensor::zeros(&[0, rows * 256], DType::F32).unwrap();
        let s = e.sum(&[0], KeepDim::No).unwrap();
        assert!(s.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
        let x = Tensor::ones(&[rows, 256], DType::F32).unwrap();
        let sm = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert!(sm.iter().all(|&v| v == 1.0 / 256.0));
        let idx = Tensor::from_vec(vec![0i64; rows], &[rows]).unwrap();
        let ia = Tensor::zeros(&[rows, 256], DType::F32)
            .unwrap()
            .index_add(0, &idx, &x)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(ia[..256].iter().all(|&v| v == rows as f32));
        assert!(ia[256..].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn matmul_batched_with_broadcast() {
    let check = |sa: &[usize], sb: &[usize], seed: u64| {
        let a = Tensor::randn(sa, 0.0, 1.0, DType::F64, &mut rng(seed)).unwrap();
        let b = Tensor::randn(sb, 0.0, 1.0, DType::F64, &mut rng(seed + 1)).unwrap();
        let (va, vb) = (f64s(&a), f64s(&b));
        // Promote 1-D operands as torch.matmul does.
        let sa2: Vec<usize> = if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.to_vec()
        };
        let sb2: Vec<usize> = if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.to_vec()
        };
        let (m, k, n) = (sa2[sa2.len() - 2], sa2[sa2.len() - 1], sb2[sb2.len() - 1]);
        let batch = ref_broadcast_shape(&sa2[..sa2.len() - 2], &sb2[..sb2.len() - 2]);
        let mut want = Vec::new();
        for bi in 0..numel(&batch) {
            let idx = unravel(bi, &batch);
            let pick = |data: &[f64], s: &[usize], rows: usize, cols: usize| -> Vec<f64> {
                let bs = &s[..s.len() - 2];
                let off = bcast_source(&idx, bs) * rows * cols;
                data[off..off + rows * cols].to_vec()
            };
            want.extend(ref_matmul(
                &pick(&va, &sa2, m, k),
                &pick(&vb, &sb2, k, n),
                m,
                k,
                n,
            ));
        }
        let mut want_shape = batch.clone();
        if sa.len() > 1 {
            want_shape.push(m);
        }
        if sb.len() > 1 {
            want_shape.push(n);
        }
        let got = a.matmul(&b).unwrap();
        assert_eq!(got.shape(), want_shape.as_slice(), "{sa:?} x {sb:?}");
        assert_close(
            &format!("{sa:?} x {sb:?}"),
            &f64s(&got),
            &want,
            1e-12,
            1e-12,
        );
    };
    check(&[2, 1, 2, 3], &[3, 3, 2], 1);
    check(&[4, 2, 3], &[3, 5], 3);
    check(&[2, 3], &[4, 3, 2], 5);
    check(&[3], &[2, 3, 4], 7);
    check(&[2, 3, 4], &[4], 9);
    check(&[1, 2, 3], &[5, 3, 1], 11);

    // Strided operands: transposed matrices inside a batch, permuted batch
    // dims and broadcast (stride-0) rows.
    let a = Tensor::randn(&[2, 4, 3], 0.0, 1.0, DType::F64, &mut rng(13)).unwrap();
    let b = Tensor::randn(&[4, 2, 5], 0.0, 1.0, DType::F64, &mut rng(14)).unwrap();
    let at = a.transpose(1, 2).unwrap(); // [2, 3, 4]
    let bp = b.permute(&[1, 0, 2]).unwrap(); // [2, 4, 5]
    let va = ref_permute(&f64s(&a), &[2, 4, 3], &[0, 2, 1]);
    let vb = ref_permute(&f64s(&b), &[4, 2, 5], &[1, 0, 2]);
    let got = at.matmul(&bp).unwrap();
    assert_eq!(got.shape(), &[2, 3, 5]);
    let mut want = ref_matmul(&va[..12], &vb[..20], 3, 4, 5);
    want.extend(ref_matmul(&va[12..], &vb[20..], 3, 4, 5));
    assert_close("strided batch", &f64s(&got), &want, 1e-12, 1e-12);
    let row = t64(&[1.0, 2.0, 3.0], &[3]).broadcast_to(&[2, 3]).unwrap();
    let m = t64(&[1.0, 0.0, 0.0, 1.0, 1.0, -1.0], &[3, 2]);
    assert_eq!(
        row.matmul(&m).unwrap().to_vec2::<f64>().unwrap(),
        vec![vec![4.0, -1.0], vec![4.0, -1.0]]
    );
    let col = t64(&[2.0, -1.0], &[2, 1]).broadcast_to(&[2, 3]).unwrap();
    assert_eq!(
        m.matmul(&col).unwrap().to_vec2::<f64>().unwrap(),
        vec![
            vec![2.0, 2.0, 2.0],
            vec![-1.0, -1.0, -1.0],
            vec![3.0, 3.0, 3.0]
        ]
    );
}

#[test]
fn matmul_large_against_naive() {
    let (m, k, n) = (300, 200, 250);
    let a = Tensor::rand(&[m, k], -1.0, 1.0, DType::F32, &mut rng(31)).unwrap();
    let b = Tensor::rand(&[k, n], -1.0, 1.0, DType::F32, &mut rng(32)).unwrap();
    let (va, vb) = (f64s(&a), f64s(&b));
    let want = ref_matmul(&va, &vb, m, k, n);
    let got = a.matmul(&b).unwrap();
    assert_eq!(got.shape(), &[m, n]);
    assert_close("300x200x250", &f64s(&got), &want, 1e-4, 1e-5);

    // The same product through transposed storage: (Bᵀ)ᵀ with B stored [n, k].
    let bt = b.t().unwrap().contiguous().unwrap();
    let got_t = a.matmul(&bt.t().unwrap()).unwrap();
    assert_close("transposed rhs", &f64s(&got_t), &want, 1e-4, 1e-5);
    let at = a.t().unwrap().contiguous().unwrap();
    let got_tt = at.t().unwrap().matmul(&b).unwrap();
    assert_close("transposed lhs", &f64s(&got_tt), &want, 1e-4, 1e-5);

    // Short and wide: split into column panels.
    let (m, k, n) = (3, 300, 1000);
    let a = Tensor::rand(&[m, k], -1.0, 1.0, DType::F64, &mut rng(33)).unwrap();
    let b = Tensor::rand(&[k, n], -1.0, 1.0, DType::F64, &mut rng(34)).unwrap();
    let want = ref_matmul(&f64s(&a), &f64s(&b), m, k, n);
    assert_close(
        "3x300x1000",
        &f64s(&a.matmul(&b).unwrap()),
        &want,
        1e-10,
        1e-10,
    );

    // Many products in a batch: one task per product.
    let (bn, s) = (8, 64);
    let a = Tensor::rand(&[bn, s, s], -1.0, 1.0, DType::F32, &mut rng(35)).unwrap();
    let b = Tensor::rand(&[bn, s, s], -1.0, 1.0, DType::F32, &mut rng(36)).unwrap();
    let (va, vb) = (f64s(&a), f64s(&b));
    let got = f64s(&a.matmul(&b).unwrap());
    for i in 0..bn {
        let span = i * s * s..(i + 1) * s * s;
        let want = ref_matmul(&va[span.clone()], &vb[span.clone()], s, s, s);
        assert_close(&format!("batch {i}"), &got[span], &want, 1e-4, 1e-5);
    }
}

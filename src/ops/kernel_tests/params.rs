//! Unit tests of the argument structs: offsets, merged dims, sizes.
use crate::ground::Layout;
use crate::ops::conv::params::Im2colParams;
use crate::ops::elementwise::params::ElementwiseParams;
use crate::ops::index::params::{GatherParams, IndexSelectParams};
use crate::ops::norm::params::BatchNormParams;
use crate::ops::reduce::params::StridedReduceParams;

/// The offset of element `i` (row-major in the params' shape) of
/// operand `k`, the way the kernel's `operand_offset` computes it.
fn kernel_offset(p: &ElementwiseParams, k: usize, mut i: i64) -> i64 {
    if p.contiguous == 1 {
        return p.offsets[k] + i;
    }
    let mut off = p.offsets[k];
    for d in (0..p.ndim as usize).rev() {
        off += (i % p.shape[d]) * p.strides[k][d];
        i /= p.shape[d];
    }
    off
}

/// The offset of element `i` of `layout` straight from its strides.
fn layout_offset(layout: &Layout, mut i: usize) -> i64 {
    let mut off = layout.offset();
    for d in (0..layout.ndim()).rev() {
        off += (i % layout.shape()[d]) * layout.strides()[d];
        i /= layout.shape()[d];
    }
    off as i64
}

fn check_offsets(shape: &[usize], operands: &[&Layout]) -> ElementwiseParams {
    let p = ElementwiseParams::new(shape, operands).unwrap();
    for i in 0..p.numel {
        for (k, l) in operands.iter().enumerate() {
            assert_eq!(
                kernel_offset(&p, k, i),
                layout_offset(l, i as usize),
                "element {i} of operand {k}"
            );
        }
    }
    p
}

#[test]
fn contiguous_operands_take_the_flat_path() {
    let l = Layout::contiguous(&[2, 3, 4]);
    let p = check_offsets(&[2, 3, 4], &[&l, &l]);
    assert_eq!(p.contiguous, 1);
    assert_eq!((p.ndim, p.shape[0], p.numel), (1, 24, 24));
    // A narrowed contiguous view keeps its offset on the flat path.
    let n = Layout::contiguous(&[5, 4]).narrow(0, 2, 3);
    let p = check_offsets(&[3, 4], &[&n]);
    assert_eq!((p.contiguous, p.offsets[0]), (1, 8));
    assert_eq!(ElementwiseParams::flat(10), {
        let l = Layout::contiguous(&[10]);
        ElementwiseParams::new(&[10], &[&l]).unwrap()
    });
}

#[test]
fn broadcast_and_permuted_operands_map_every_element() {
    let out = [3, 4, 5];
    let a = Layout::contiguous(&[4, 1]).broadcast_to(&out);
    let b = Layout::contiguous(&[5, 4, 3]).permute(&[2, 1, 0]);
    let c = Layout::contiguous(&[3, 4, 5]);
    let p = check_offsets(&out, &[&a, &b, &c]);
    assert_eq!(p.contiguous, 0);
    assert!(p.strides[0].contains(&0), "broadcast dims have stride 0");
    // Scalars and empty tensors.
    let s = Layout::contiguous(&[]);
    check_offsets(&[], &[&s]);
    let e = Layout::contiguous(&[0, 3]);
    assert_eq!(ElementwiseParams::new(&[0, 3], &[&e]).unwrap().numel, 0);
}

#[test]
fn elementwise_params_reject_bad_operands() {
    let l = Layout::contiguous(&[2, 3]);
    assert!(ElementwiseParams::new(&[2, 3], &[]).is_err());
    assert!(ElementwiseParams::new(&[2, 3], &[&l, &l, &l, &l]).is_err());
    assert!(ElementwiseParams::new(&[3, 2], &[&l]).is_err());
    // Nine dims that cannot merge (every other one permuted).
    let shape = [2usize; 9];
    let order = [1, 0, 3, 2, 5, 4, 7, 6, 8];
    let p = Layout::contiguous(&shape).permute(&order);
    assert!(ElementwiseParams::new(&shape, &[&p]).is_err());
}

#[test]
fn strided_reduce_splits_kept_and_reduced_dims() {
    let l = Layout::contiguous(&[2, 3, 4]);
    let p = StridedReduceParams::new(&l, &[1]).unwrap();
    assert_eq!((p.out_numel, p.red_numel), (8, 3));
    assert_eq!((p.out_ndim, p.red_ndim), (2, 1));
    assert_eq!(&p.out_shape[..2], &[2, 4]);
    assert_eq!(&p.out_strides[..2], &[12, 1]);
    assert_eq!((p.red_shape[0], p.red_strides[0]), (3, 4));
    let all = StridedReduceParams::new(&l, &[0, 1, 2]).unwrap();
    assert_eq!((all.out_numel, all.red_numel, all.out_ndim), (1, 24, 0));
    assert!(StridedReduceParams::new(&l, &[3]).is_err());
    assert!(StridedReduceParams::new(&l, &[1, 1]).is_err());
}

#[test]
fn im2col_params_refuse_empty_sizes() {
    let p = Im2colParams::new(2, (3, 8, 8), (3, 3), (4, 4), (2, 2), (1, 1), (1, 1)).unwrap();
    assert_eq!((p.oh, p.ow, p.small), (4, 4, 1));
    assert!(Im2colParams::new(1, (1, 2, 2), (3, 3), (0, 0), (1, 1), (0, 0), (1, 1)).is_err());
}

#[test]
fn batch_norm_params_fold_the_spatial_size() {
    let b = BatchNormParams::new(&[4, 3, 5, 6], 1e-5, 0.1, true).unwrap();
    assert_eq!((b.n, b.c, b.s, b.update_running), (4, 3, 30, 1));
    assert_eq!(
        BatchNormParams::new(&[4, 3], 1e-5, 0.1, false).unwrap().s,
        1
    );
    assert!(BatchNormParams::new(&[4], 1e-5, 0.1, false).is_err());
}

#[test]
fn index_params_split_the_shape_around_the_indexed_dim() {
    let p = IndexSelectParams::new(&[2, 3, 4, 5], 1, 7);
    assert_eq!((p.outer, p.size, p.inner, p.count), (2, 3, 20, 7));
    let p = IndexSelectParams::new(&[6], 0, 0);
    assert_eq!((p.outer, p.size, p.inner, p.count), (1, 6, 1, 0));
}

#[test]
fn gather_params_walk_the_index_or_the_scatter_block() {
    // Data 4×5×6 seen through a transposed layout, index 3×2×6 along dim 1.
    let data = Layout::contiguous(&[6, 5, 4]).permute(&[2, 1, 0]);
    let (shape, strides) = (data.shape(), data.strides());
    let g = GatherParams::new("gather", (shape, strides, 3), &[3, 2, 6], 1, false).unwrap();
    assert_eq!(
        (g.numel, g.ndim, g.dim, g.index_len, g.size),
        (36, 3, 1, 2, 5)
    );
    assert_eq!(&g.walk[..3], &[3, 2, 6]);
    assert_eq!(&g.index_strides[..3], &[12, 6, 1]);
    assert_eq!(&g.data_strides[..3], &[1, 4, 20]);
    assert_eq!(g.data_offset, 3);
    let s = GatherParams::new("scatter_add", (shape, strides, 0), &[3, 2, 6], 1, true).unwrap();
    assert_eq!(
        &s.walk[..3],
        &[3, 5, 6],
        "scatter walks the data's extent along dim"
    );
    assert_eq!(s.numel, 90);
    assert_eq!(
        &s.index_strides[..3],
        &[12, 6, 1],
        "the index stays contiguous"
    );
    let nine = [1usize; 9];
    assert!(GatherParams::new("gather", (&nine, &nine, 0), &nine, 0, false).is_err());
    assert!(GatherParams::new("gather", (&[2, 2], &[2, 1], 0), &[2], 0, false).is_err());
}

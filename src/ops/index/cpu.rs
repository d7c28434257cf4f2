//! CPU kernels of the indexing family: `index_select`, `index_add`,
//! `gather` and `scatter_add`.
//!
//! Inputs are handled as `outer × size × inner` around the indexed
//! dimension (index_select/index_add) or walked element by element with
//! the indexed coordinate replaced by the index value (gather/scatter_add).
//! Indices are validated before any element is touched.

use crate::error::{Error, Result};
use crate::tensor::{with_storage, CpuStorage, Float, Layout, StorageElement};

/// Checks every index lies in `0..size`.
pub fn check_indices(op: &'static str, idx: &[i64], size: usize) -> Result<()> {
    match idx.iter().find(|&&i| i < 0 || i as usize >= size) {
        Some(&bad) => Err(Error::IndexOutOfRange {
            op,
            index: bad,
            size,
        }),
        None => Ok(()),
    }
}

/// `out[o, j, i] = src[o, idx[j], i]` over a contiguous source of shape
/// `outer × size × inner`.
pub fn index_select(
    src: &CpuStorage,
    offset: usize,
    (outer, size, inner): (usize, usize, usize),
    idx: &[i64],
) -> Result<CpuStorage> {
    let len = crate::tensor::checked_numel("index_select", &[outer, idx.len(), inner])?;
    with_storage!(src, |v: T| {
        let v = &v[offset..offset + outer * size * inner];
        let mut out: Vec<T> = crate::backend::cpu::pool::try_with_capacity(len)?;
        for o in 0..outer {
            for &j in idx {
                let start = (o * size + j as usize) * inner;
                out.extend_from_slice(&v[start..start + inner]);
            }
        }
        Ok(T::into_storage(out))
    })
}

fn index_add_typed<T: Float + StorageElement>(
    dst: &mut [T],
    src: &[T],
    (outer, size, inner): (usize, usize, usize),
    idx: &[i64],
) {
    let n = idx.len();
    for o in 0..outer {
        for (j, &t) in idx.iter().enumerate() {
            let d = (o * size + t as usize) * inner;
            let s = (o * n + j) * inner;
            for (x, &y) in dst[d..d + inner].iter_mut().zip(&src[s..s + inner]) {
                *x += y;
            }
        }
    }
}

/// `dst[o, idx[j], i] += src[o, j, i]`; both contiguous from offset 0.
pub fn index_add(
    dst: &mut CpuStorage,
    src: &CpuStorage,
    dims: (usize, usize, usize),
    idx: &[i64],
) -> Result<()> {
    match (dst, src) {
        (CpuStorage::F32(d), CpuStorage::F32(s)) => index_add_typed(d, s, dims, idx),
        (CpuStorage::F64(d), CpuStorage::F64(s)) => index_add_typed(d, s, dims, idx),
        (d, _) => {
            return Err(Error::UnsupportedDType {
                op: "index_add",
                dtype: d.dtype(),
            })
        }
    }
    Ok(())
}

/// Visits every element of `shape` in row-major order with its
/// multi-index, for the gather/scatter walks.
fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for lin in 0..n {
        f(lin, &idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Storage offset of `pos` in `l` with coordinate `dim` replaced by `at`.
fn offset_with(l: &Layout, pos: &[usize], dim: usize, at: usize) -> usize {
    l.offset()
        + pos
            .iter()
            .zip(l.strides())
            .enumerate()
            .map(|(d, (&i, &s))| if d == dim { at * s } else { i * s })
            .sum::<usize>()
}

/// `out[p] = src[p with coordinate dim := idx[p]]` for every position `p`
/// of the (contiguous) index tensor.
pub fn gather(
    src: &CpuStorage,
    ls: &Layout,
    dim: usize,
    idx: &[i64],
    idx_shape: &[usize],
) -> CpuStorage {
    with_storage!(src, |v: T| {
        let mut out: Vec<T> = Vec::with_capacity(idx.len());
        for_each_index(idx_shape, |lin, pos| {
            out.push(v[offset_with(ls, pos, dim, idx[lin] as usize)]);
        });
        T::into_storage(out)
    })
}

fn scatter_add_typed<T: Float>(
    dst: &mut [T],
    ld: &Layout,
    src: &[T],
    lsrc: &Layout,
    dim: usize,
    idx: &[i64],
    idx_shape: &[usize],
) {
    for_each_index(idx_shape, |lin, pos| {
        let s = offset_with(lsrc, pos, dim, pos[dim]);
        dst[offset_with(ld, pos, dim, idx[lin] as usize)] += src[s];
    });
}

/// `dst[p with coordinate dim := idx[p]] += src[p]` for every position `p`
/// of the index tensor; `dst` contiguous, `src` strided.
pub fn scatter_add(
    dst: &mut CpuStorage,
    ld: &Layout,
    src: &CpuStorage,
    lsrc: &Layout,
    dim: usize,
    idx: &[i64],
    idx_shape: &[usize],
) -> Result<()> {
    match (dst, src) {
        (CpuStorage::F32(d), CpuStorage::F32(s)) => {
            scatter_add_typed(d, ld, s, lsrc, dim, idx, idx_shape)
        }
        (CpuStorage::F64(d), CpuStorage::F64(s)) => {
            scatter_add_typed(d, ld, s, lsrc, dim, idx, idx_shape)
        }
        (d, _) => {
            return Err(Error::UnsupportedDType {
                op: "scatter_add",
                dtype: d.dtype(),
            })
        }
    }
    Ok(())
}

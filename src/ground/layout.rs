//! Shapes, strides and the index arithmetic of views.
//!
//! A [`Layout`] maps a multi-index `(i0, i1, ...)` to the storage position
//! `offset + Σ ik * strides[k]`. Views (permute, narrow, broadcast, ...) only
//! build a new layout over the same storage; nothing here touches data.

use crate::error::{Error, Result};

/// Shape, strides (in elements) and starting offset of a tensor view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// The most elements a tensor may have: every byte offset of an 8-byte
/// element must fit in `isize`, as Rust's allocations require.
pub const MAX_NUMEL: usize = isize::MAX as usize / 8;

/// Row-major (C-order) strides of a shape.
///
/// Shapes that passed [`checked_numel`] get exact strides; for others the
/// running product saturates instead of overflowing (such strides are never
/// used: no tensor can have that shape).
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc = acc.saturating_mul(d);
    }
    strides
}

/// The element count of `shape`, or an error naming `op` when it does not
/// fit in memory addressing (so absurd shapes fail cleanly, not by panic).
///
/// The product of the *non-zero* extents must fit as well: an empty shape
/// such as `[0, 2^32, 2^32]` holds no element, but its row-major strides
/// would still overflow, and so would any index arithmetic over it.
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let too_many = || Error::bad_shape(op, format!("shape {shape:?} has too many elements"));
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_NUMEL)
        .ok_or_else(too_many)?;
    Ok(if shape.contains(&0) { 0 } else { nonzero })
}

/// Normalises a possibly negative dimension index against `ndim`.
pub fn normalize_dim(op: &'static str, dim: isize, ndim: usize) -> Result<usize> {
    let d = if dim < 0 { dim + ndim as isize } else { dim };
    if d < 0 || d >= ndim as isize {
        return Err(Error::DimOutOfRange { op, dim, ndim });
    }
    Ok(d as usize)
}

/// Normalises a set of dimensions, rejecting duplicates. Returns them sorted.
pub fn normalize_dims(op: &'static str, dims: &[isize], ndim: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = normalize_dim(op, d, ndim)?;
        if out.contains(&d) {
            return Err(Error::invalid(op, format!("dimension {d} given twice")));
        }
        out.push(d);
    }
    out.sort_unstable();
    Ok(out)
}

/// The NumPy broadcast of two shapes, or an error naming `op` when they do
/// not broadcast or the result has too many elements to address.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() {
            1
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            1
        } else {
            b[i - (n - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                })
            }
        };
    }
    checked_numel(op, &out)?;
    Ok(out)
}

impl Layout {
    /// A contiguous row-major layout of `shape` starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// The extent of each dimension.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The storage step of each dimension, in elements (0 for broadcast dims).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Storage position of element `(0, 0, ...)`.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when elements are laid out row-major without gaps (any offset).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// The range of storage positions this layout may touch, or `None` when
    /// that range is not addressable (its end overflows `usize`).
    pub fn storage_span(&self) -> Option<std::ops::Range<usize>> {
        if self.shape.contains(&0) {
            return Some(self.offset..self.offset);
        }
        let last = self
            .shape
            .iter()
            .zip(&self.strides)
            .try_fold(0usize, |acc, (&d, &s)| {
                acc.checked_add((d - 1).checked_mul(s)?)
            })?;
        let end = self.offset.checked_add(last)?.checked_add(1)?;
        Some(self.offset..end)
    }

    /// Checks the invariant every tensor's layout keeps: its element count
    /// passes [`checked_numel`] and every position it addresses lies inside
    /// a storage of `storage_len` elements. Kernels index storage through
    /// layouts without further checks, so this is what makes them sound.
    pub fn check_fits(&self, op: &'static str, storage_len: usize) -> Result<()> {
        checked_numel(op, &self.shape)?;
        match self.storage_span() {
            Some(span) if span.end <= storage_len => Ok(()),
            _ => Err(Error::bad_shape(
                op,
                format!(
                    "view of shape {:?}, strides {:?}, offset {} reaches outside its storage of {storage_len} elements",
                    self.shape, self.strides, self.offset
                ),
            )),
        }
    }

    /// Reorders dimensions: dimension `i` of the result is `dims[i]` of `self`.
    pub fn permute(&self, dims: &[usize]) -> Layout {
        Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        }
    }

    /// Restricts dimension `dim` to `start..start + len`.
    /// An empty result keeps the offset: it addresses nothing, and its
    /// offset must stay inside the storage like every other layout's.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        l.shape[dim] = len;
        if !l.shape.contains(&0) {
            l.offset += start * self.strides[dim];
        }
        l
    }

    /// Views `self` with the (already validated) broadcast `shape`: new leading
    /// dims and size-1 dims that grow get stride 0.
    pub fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let lead = shape.len() - self.ndim();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.ndim() {
            strides[lead + i] = if self.shape[i] == 1 && shape[lead + i] != 1 {
                0
            } else {
                self.strides[i]
            };
        }
        Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        }
    }

    /// Inserts a size-1 dimension at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        let stride = if dim < self.ndim() {
            self.strides[dim] * self.shape[dim]
        } else {
            1
        };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, stride);
        l
    }

    /// Removes dimension `dim`, which must have size 1.
    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        l.shape.remove(dim);
        l.strides.remove(dim);
        l
    }

    /// A view with a new shape of equal element count, if the current strides
    /// allow one without copying (always true for contiguous layouts).
    ///
    /// Walks old dimensions from the innermost outwards in "chunks" of dims
    /// that are contiguous with each other, and spreads each chunk over new
    /// dimensions of the same element count (the algorithm PyTorch's `view`
    /// uses). Returns `None` when a chunk boundary falls inside a new dim.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() || self.numel() == 0 {
            return Some(Layout {
                shape: shape.to_vec(),
                strides: contiguous_strides(shape),
                offset: self.offset,
            });
        }
        let (old_shape, old_strides) = (&self.shape, &self.strides);
        let mut strides = vec![0; shape.len()];
        let mut view_d = shape.len() as isize - 1;
        let mut chunk_base_stride = *old_strides.last()?;
        let (mut tensor_numel, mut view_numel) = (1, 1);
        for tensor_d in (0..old_shape.len()).rev() {
            tensor_numel *= old_shape[tensor_d];
            let chunk_ends = tensor_d == 0
                || (old_shape[tensor_d - 1] != 1
                    && old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride);
            if chunk_ends {
                while view_d >= 0 && (view_numel < tensor_numel || shape[view_d as usize] == 1) {
                    strides[view_d as usize] = view_numel * chunk_base_stride;
                    view_numel *= shape[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if tensor_d > 0 {
                    chunk_base_stride = old_strides[tensor_d - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if view_d != -1 {
            return None;
        }
        Some(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }
}

/// Merges adjacent dimensions that are contiguous with each other in every one
/// of the given stride sets, so that strided loops get long inner runs.
///
/// Returns the collapsed shape and one collapsed stride vector per input.
pub fn collapse_dims<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
) -> (Vec<usize>, [Vec<usize>; K]) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: [Vec<usize>; K] = std::array::from_fn(|_| Vec::new());
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && !out_shape.is_empty() {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && (0..K).all(|k| out_strides[k].last() == Some(&(strides[k][i] * d)));
        if mergeable {
            *out_shape.last_mut().unwrap() *= d;
            for k in 0..K {
                *out_strides[k].last_mut().unwrap() = strides[k][i];
            }
        } else {
            out_shape.push(d);
            for k in 0..K {
                out_strides[k].push(strides[k][i]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in out_strides.iter_mut() {
            s.push(1);
        }
    }
    (out_shape, out_strides)
}

/// Walks the linear index range `start..start + len` of `shape` (row-major
/// order) for `K` operands at once, calling `f(linear, offsets, run_len)` for
/// each run of elements that is contiguous along the innermost dimension.
///
/// Within a run, operand `k` advances by `strides[k][last]` per element.
/// This is the one strided loop every CPU kernel builds on: contiguous
/// tensors collapse to a single dimension and produce one long run.
pub fn walk_runs<const K: usize>(
    shape: &[usize],
    strides: &[Vec<usize>; K],
    base: [usize; K],
    start: usize,
    len: usize,
    mut f: impl FnMut(usize, [usize; K], usize),
) {
    if len == 0 {
        return;
    }
    let nd = shape.len();
    let inner = shape[nd - 1];
    // Decompose `start` into a multi-index.
    let mut idx = vec![0usize; nd];
    let mut rem = start;
    for d in (0..nd).rev() {
        idx[d] = rem % shape[d];
        rem /= shape[d];
    }
    let mut offs = base;
    for k in 0..K {
        for d in 0..nd {
            offs[k] += idx[d] * strides[k][d];
        }
    }
    let mut done = 0;
    while done < len {
        let run = (inner - idx[nd - 1]).min(len - done);
        f(start + done, offs, run);
        done += run;
        if done == len {
            break;
        }
        // Advance the multi-index by `run`: the inner dim wraps to 0, carry up.
        for k in 0..K {
            offs[k] += run * strides[k][nd - 1];
        }
        idx[nd - 1] += run;
        let mut d = nd - 1;
        while idx[d] == shape[d] && d > 0 {
            for k in 0..K {
                offs[k] -= shape[d] * strides[k][d];
                offs[k] += strides[k][d - 1];
            }
            idx[d] = 0;
            idx[d - 1] += 1;
            d -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_element_counts_use_checked_arithmetic() {
        assert!(checked_numel("t", &[0, 1 << 32, 1 << 32]).is_err());
        assert_eq!(checked_numel("t", &[0, 1 << 20]).unwrap(), 0);
        assert_eq!(checked_numel("t", &[]).unwrap(), 1);
        let l = Layout::contiguous(&[1, 1]).broadcast_to(&[3, 1 << 40]);
        assert_eq!(l.storage_span(), Some(0..1));
        assert!(l.check_fits("t", 1).is_ok());
        assert!(l.check_fits("t", 0).is_err());
        // A layout whose last position overflows usize has no span.
        let wide = Layout {
            shape: vec![9],
            strides: vec![(1 << 61) + 1],
            offset: 0,
        };
        assert_eq!(wide.storage_span(), None);
        assert!(wide.check_fits("t", 16).is_err());
    }

    #[test]
    fn reshape_of_permuted_view_only_when_possible() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let p = l.permute(&[1, 0, 2]); // shape [3,2,4], strides [4,12,1]
        assert!(p.reshape(&[24]).is_none());
        let m = p.reshape(&[3, 2, 2, 2]).unwrap();
        assert_eq!(m.strides(), &[4, 12, 2, 1]);
        let t = l.permute(&[0, 2, 1]); // [2,4,3] strides [12,1,4]
        assert!(t.reshape(&[8, 3]).is_none());
        let n = l.narrow(2, 0, 2); // [2,3,2] strides [12,4,1]
        assert!(n.reshape(&[6, 2]).is_some());
        assert!(n.reshape(&[12]).is_none());
    }

    #[test]
    fn checked_numel_rejects_empty_shapes_with_overflowing_dims() {
        assert_eq!(checked_numel("t", &[2, 0, 3]).unwrap(), 0);
        assert_eq!(checked_numel("t", &[]).unwrap(), 1);
        assert!(checked_numel("t", &[0, 1 << 32, 1 << 32]).is_err());
        assert!(checked_numel("t", &[1 << 31, 0, 1 << 31]).is_err());
        assert_eq!(checked_numel("t", &[0, 1 << 20, 1 << 20]).unwrap(), 0);
        assert_eq!(
            contiguous_strides(&[0, 1 << 20, 1 << 20]),
            vec![1 << 40, 1 << 20, 1]
        );
    }

    #[test]
    fn walk_runs_visits_every_offset_once() {
        let l = Layout::contiguous(&[3, 4]).permute(&[1, 0]);
        let (shape, strides) = collapse_dims(l.shape(), [l.strides()]);
        let mut seen = vec![];
        walk_runs(&shape, &strides, [0], 2, 7, |_, [o], n| {
            for i in 0..n {
                seen.push(o + i * strides[0][shape.len() - 1]);
            }
        });
        // Transposed order of a 3x4 matrix, elements 2..9.
        assert_eq!(seen, vec![8, 1, 5, 9, 2, 6, 10]);
    }
}

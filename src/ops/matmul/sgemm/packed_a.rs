//! Packed left operands of [`super::sgemm_packed`]: [`PackedA`], packed
//! from a strided matrix or straight from its values, micro-panel by
//! micro-panel ([`PackedA::from_panels`]), and the spare buffers that
//! dropped ones leave for the next.

use super::pack::pack_a;
use super::{Kernel, Line, KC, MC, MR};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Mutex;

/// Buffers of dropped [`PackedA`]s, kept for the next ones: a Winograd
/// convolution packs 16 matrices per call (16 MB for 512 channels), and
/// fresh allocations that size come from the OS and page-fault on first
/// touch, which measured 15-20 % of such a call.
static SPARE: Mutex<Vec<Vec<Line>>> = Mutex::new(Vec::new());

/// Most bytes [`SPARE`] keeps.
const SPARE_BYTES: usize = 64 << 20;

/// An empty buffer with room for `lines`: the smallest spare that fits,
/// or a new one. `None` when the memory cannot be reserved.
fn spare_buffer(lines: usize) -> Option<Vec<Line>> {
    let reused = {
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        let best = (0..spare.len())
            .filter(|&i| spare[i].capacity() >= lines)
            .min_by_key(|&i| spare[i].capacity());
        best.map(|i| spare.swap_remove(i))
    };
    if let Some(mut data) = reused {
        data.clear();
        return Some(data);
    }
    let mut data = Vec::new();
    data.try_reserve_exact(lines).ok()?;
    Some(data)
}

impl Drop for PackedA {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.capacity() == 0 {
            return; // nothing to keep (e.g. the size-only value of `from_panels`)
        }
        let bytes = |v: &Vec<Line>| v.capacity() * std::mem::size_of::<Line>();
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        if spare.iter().map(bytes).sum::<usize>() + bytes(&data) <= SPARE_BYTES {
            spare.push(data);
        }
    }
}

/// One micro-panel of a matrix packed by [`PackedA::from_panels`]: rows
/// `row .. row + rows` (`row` a multiple of [`MR`]; the panel's other rows
/// are padding) and columns `col .. col + depth`.
pub struct Panel {
    /// First row.
    pub row: usize,
    /// Rows of the matrix in the panel (at most [`MR`]).
    pub rows: usize,
    /// First column.
    pub col: usize,
    /// Columns in the panel.
    pub depth: usize,
}

/// The start of a packed buffer, shared by the tasks of
/// [`PackedA::from_panels`], each of which writes its own panels.
struct Base(*mut MaybeUninit<f32>);
// SAFETY: the tasks write disjoint ranges (see `from_panels`).
unsafe impl Send for Base {}
unsafe impl Sync for Base {}

/// The matrix [`PackedA::new`] packs, read by the tasks of
/// [`PackedA::from_panels`].
struct Source(*const f32);
// SAFETY: the tasks only read through it, and the caller of `new`
// vouches that the addressed elements stay live during the packing.
unsafe impl Send for Source {}
unsafe impl Sync for Source {}

impl Source {
    /// The element `offset` elements from the start.
    ///
    /// # Safety
    /// The element lies inside the caller's buffer.
    unsafe fn at(&self, offset: isize) -> *const f32 {
        unsafe { self.0.offset(offset) }
    }
}

/// An `m × k` left operand packed once, in the block order [`sgemm_packed`]
/// reads: for each block of [`MC`] rows (padded to a multiple of [`MR`]),
/// its `KC`-deep blocks of micro-panels one after another.
pub struct PackedA {
    data: Vec<Line>,
    m: usize,
    k: usize,
}

impl PackedA {
    /// Packs the `m × k` matrix at `a` with element strides `(rsa, csa)`,
    /// micro-panel by micro-panel through [`PackedA::from_panels`].
    /// `None` when the packed copy cannot be allocated (the caller then
    /// multiplies unpacked).
    ///
    /// # Safety
    /// [`super::available`] must be true; every element the strides
    /// address must lie inside a live buffer.
    pub unsafe fn new(
        m: usize,
        k: usize,
        a: *const f32,
        (rsa, csa): (isize, isize),
    ) -> Option<Self> {
        let (a, kernel) = (Source(a), Kernel::current());
        // Safety: `pack_a` writes all `depth × MR` values of the one panel
        // it is given, zeros for the rows past `panel.rows` included; the
        // panel's rows and columns lie inside `a`, and the CPU runs
        // `kernel` (the caller's contract).
        let mut packed = unsafe {
            Self::from_panels(1, m, k, |panel, outs| {
                let src = a.at(panel.row as isize * rsa + panel.col as isize * csa);
                let out = outs[0].as_mut_ptr().cast::<f32>();
                pack_a(kernel, panel.rows, panel.depth, src, (rsa, csa), out);
            })
        }?;
        packed.pop()
    }

    /// `count` matrices of `m × k`, packed straight from their values
    /// rather than copied from a matrix: for every micro-panel, `fill`
    /// gets the [`Panel`] and one `depth × MR` slice per matrix, and must
    /// write all of each (`out[i][p·MR + r]` = element `(row + r, col + p)`
    /// of matrix `i`, and 0 for `r ≥ rows`). Panels are filled in
    /// parallel. `None` when the memory cannot be reserved.
    ///
    /// # Safety
    /// `fill` must write every value of every slice it is handed: the
    /// products read all of them.
    pub unsafe fn from_panels(
        count: usize,
        m: usize,
        k: usize,
        fill: impl Fn(&Panel, &mut [&mut [MaybeUninit<f32>]]) + Sync,
    ) -> Option<Vec<Self>> {
        let len = m.next_multiple_of(MR).checked_mul(k)?;
        let mut buffers: Vec<Vec<Line>> = Vec::with_capacity(count);
        for _ in 0..count {
            buffers.push(spare_buffer(len.div_ceil(16))?);
        }
        let shape = PackedA {
            data: Vec::new(),
            m,
            k,
        };
        let mut panels = Vec::new();
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            for pc in (0..k).step_by(KC) {
                let depth = KC.min(k - pc);
                for ir in (0..mc).step_by(MR) {
                    let panel = Panel {
                        row: ic + ir,
                        rows: MR.min(mc - ir),
                        col: pc,
                        depth,
                    };
                    panels.push((panel, shape.offset(ic, pc) + ir * depth));
                }
            }
        }
        let bases: Vec<Base> = buffers
            .iter_mut()
            .map(|b| Base(b.as_mut_ptr().cast::<MaybeUninit<f32>>()))
            .collect();
        panels.par_iter().for_each(|(panel, at)| {
            // Safety: each panel's `depth × MR` values start at `at` inside
            // the m_padded × k reserved values, and panels do not overlap
            // (they tile the packed layout), so these slices are disjoint
            // from every other task's.
            let mut outs: Vec<&mut [MaybeUninit<f32>]> = bases
                .iter()
                .map(|b| unsafe { std::slice::from_raw_parts_mut(b.0.add(*at), panel.depth * MR) })
                .collect();
            fill(panel, &mut outs);
        });
        Some(
            buffers
                .into_iter()
                .map(|mut data| {
                    // SAFETY: the panels cover every row block (padded to
                    // MR) at every depth, and `fill` wrote all of each, so
                    // all `len` f32 are written; a final partial line's
                    // tail is never read. `Line` is plain f32 data.
                    unsafe { data.set_len(len.div_ceil(16)) };
                    PackedA { data, m, k }
                })
                .collect(),
        )
    }

    /// Rows of the packed matrix.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Columns of the packed matrix (the inner dimension of products).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// The packed values, padding included (tests compare packings).
    #[cfg(test)]
    pub(crate) fn values(&self) -> &[f32] {
        let len = self.m.next_multiple_of(MR) * self.k;
        // Safety: `from_panels` wrote all m_padded × k values.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<f32>(), len) }
    }

    /// Where the block at rows `ic..` and depth `pc..` starts: the row
    /// blocks before it hold `ic × k` values (all full, `MC` a multiple
    /// of `MR`), and its own depth blocks before `pc` hold `mc_padded × pc`.
    fn offset(&self, ic: usize, pc: usize) -> usize {
        let mc_padded = MC.min(self.m - ic).next_multiple_of(MR);
        ic * self.k + mc_padded * pc
    }

    /// The packed block at rows `ic..`, depth `pc..`.
    pub(super) fn block(&self, ic: usize, pc: usize) -> *const f32 {
        // Safety: `offset` stays inside the m_padded × k values.
        unsafe { self.data.as_ptr().cast::<f32>().add(self.offset(ic, pc)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_packing_reuses_the_spare_buffers() {
        if !super::super::available() {
            return;
        }
        // Each call takes two buffers from the spare list and gives two
        // back; nothing else may pile up there (other tests share it, so
        // the bound is loose: 300 calls would leave 300 entries if every
        // call added one).
        for _ in 0..300 {
            // Safety: the fill writes every value it is handed.
            let packed = unsafe {
                PackedA::from_panels(2, 13, 20, |_, outs| {
                    for out in outs.iter_mut() {
                        out.iter_mut().for_each(|v| {
                            v.write(1.0);
                        });
                    }
                })
            }
            .expect("a small allocation");
            assert_eq!((packed[0].rows(), packed[0].cols()), (13, 20));
        }
        let entries = SPARE.lock().unwrap_or_else(|e| e.into_inner()).len();
        assert!(entries < 150, "{entries} spare buffers after 300 calls");
    }
}

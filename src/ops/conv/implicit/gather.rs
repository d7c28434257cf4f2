//! The gathers of the implicit-GEMM convolution: rows of the unrolled
//! matrix (one kernel tap of one input channel each) over a run of output
//! pixels, read straight from the NCHW input with masked vector loads
//! (16-lane AVX-512 vectors, or pairs of 8-lane AVX2 ones).
//!
//! A run of output pixels is cut into segments of up to 16 pixels (one
//! vector; never across a micro-panel), each made of parts: the pixels of
//! one output row in one image. For a given tap, a part's values are
//! consecutive input values at stride 1 and every other one at stride 2,
//! so each part is a masked load that puts them in the segment's lanes
//! (stride 1), or in the lanes of a 32-value pair of vectors of which a
//! permute keeps the even ones (stride 2; a part whose values straddle
//! the pair's halves loads into both). Segments take as many parts as fit:
//! ResNet-18's 4-pixel rows at stride 2 fill a segment with four loads, a
//! permute and one store, where a segment per row took eight loads, four
//! permutes and four masked stores.
//! Everything that depends only on the kernel tap `(ki, kj)` and the
//! segment, and not on the channel, is worked out once per run
//! ([`RunPlan`]): where each part's values start and which lanes fall
//! inside the plane (masks; the others, padding, are zeros). Filling a
//! row is then a masked load per part, a permute at stride 2, and a store
//! per segment.

use super::super::geom::ConvGeom;
use crate::ops::matmul::sgemm::Kernel;
use std::arch::x86_64::*;

/// Pixels of one segment at most: one vector.
const LANES: usize = 16;

/// Where [`RunPlan::fill`] puts pixel `q` (counted from the run's start)
/// of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// At `q`: the row is one run (a weight gradient's runs, transposed
    /// afterwards).
    Run,
    /// In micro-panels of `width` pixels, `depth` rows each: at
    /// `(q / width)·width·depth + q % width` (a forward product's packed
    /// right operand, rows `width` apart).
    Panels { width: usize, depth: usize },
}

/// A run of at most [`LANES`] consecutive output pixels (inside one
/// micro-panel).
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Where the segment's first value goes in a filled row.
    dst: usize,
    /// Lanes written: the segment's pixels.
    keep: u16,
}

/// One masked load of one tap at one part of a segment: lane `l` of the
/// vector (or half) reads the input at `offset + l`, an offset from
/// `x + c·h·w` (the image's group offset included; it may point outside
/// the plane), where bit `l` of `lanes` is set: the part's lanes inside
/// the plane. Lanes outside every load's mask are zeros (padding).
#[derive(Clone, Copy, Debug)]
struct Load {
    offset: isize,
    lanes: u16,
}

/// The pixels of one segment in one output row: the image's group base in
/// the input, the input row and column of tap (0, 0) at its first pixel,
/// its first lane in the segment and its pixel count.
#[derive(Clone, Copy, Debug)]
struct Part {
    base: usize,
    y0: isize,
    x0: isize,
    lane: usize,
    pixels: usize,
}

/// The gathers of one run of output pixels, for every tap.
pub(super) struct RunPlan {
    segs: Vec<Segment>,
    /// Loads per segment into the vector (stride 1) or the low half of
    /// the pair (stride 2), and into its high half: the most any segment
    /// has, the others' lists padded with loads of no lanes, so that the
    /// fills' loops have fixed counts (see [`RunPlan::fill`]).
    lo: usize,
    hi: usize,
    /// `loads[(t·segs.len() + s)·(lo + hi) ..]`: the `lo` then the `hi`
    /// loads of tap `t = ki·kw + kj` at segment `s`.
    loads: Vec<Load>,
    /// One past the largest position a filled row writes.
    row_end: usize,
    /// One past the last input value any load may read, channel 0.
    read_end: usize,
    /// Kernel taps `kh·kw`: unrolled rows per input channel.
    taps: usize,
    /// Values per channel plane, `h·w`.
    plane: usize,
    /// Whether the horizontal stride is 2 (else 1).
    stride2: bool,
}

/// Most plans [`Plans`] keeps.
const PLANS_KEPT: usize = 8;

/// The plans of one task's products, built once and reused: the products
/// of a tile's images (and groups) gather the same runs of pixels, from
/// inputs that start elsewhere. On the RGB stems, one product per image,
/// building each image's plan took as long as its gathers.
#[derive(Default)]
pub(super) struct Plans(Vec<((usize, usize, Layout), RunPlan)>);

impl Plans {
    /// The plan of `RunPlan::new(g, q0, len, layout)`, built unless kept.
    /// At most [`PLANS_KEPT`] are kept (the runs of one product's blocks
    /// of columns), all dropped when a new one would exceed that; the
    /// geometry must be the same on every call.
    pub(super) fn get(&mut self, g: &ConvGeom, q0: usize, len: usize, layout: Layout) -> &RunPlan {
        let key = (q0, len, layout);
        let at = match self.0.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                if self.0.len() == PLANS_KEPT {
                    self.0.clear();
                }
                self.0.push((key, RunPlan::new(g, q0, len, layout)));
                self.0.len() - 1
            }
        };
        &self.0[at].1
    }
}

/// Whether [`RunPlan`] handles the horizontal stride `sw`.
pub(super) fn stride_supported(sw: usize) -> bool {
    matches!(sw, 1 | 2)
}

/// The lanes `l < lanes` with `0 ≤ ix0 + l < w`, as a bit mask.
fn inside(ix0: isize, lanes: usize, w: usize) -> u32 {
    let lo = (-ix0).clamp(0, lanes as isize);
    let hi = (w as isize - ix0).clamp(0, lanes as isize);
    if hi <= lo {
        0
    } else {
        ((1u64 << hi) - (1u64 << lo)) as u32
    }
}

impl RunPlan {
    /// The plan of output pixels `q0 .. q0 + len`, numbered across images
    /// (`q = i·oh·ow + oy·ow + ox`), image `i`'s group at `i·image_len` in
    /// the input that [`RunPlan::fill`] is given (from the group of the
    /// run's first image on). Panics unless the stride is
    /// [`stride_supported`].
    pub(super) fn new(g: &ConvGeom, q0: usize, len: usize, layout: Layout) -> Self {
        assert!(stride_supported(g.stride.1));
        let (cols, sw) = (g.col_cols(), g.stride.1);
        let mut segs = Vec::new();
        // Every segment's parts, in order; segment s's from starts[s].
        let (mut parts, mut starts) = (Vec::new(), Vec::new());
        let (mut q, end) = (q0, q0 + len);
        while q < end {
            let r = q - q0;
            // Pixels the segment takes: to the run's end, one vector, and
            // the end of its micro-panel.
            let room = match layout {
                Layout::Run => LANES,
                Layout::Panels { width, .. } => LANES.min(width - r % width),
            }
            .min(end - q);
            let dst = match layout {
                Layout::Run => r,
                Layout::Panels { width, depth } => r / width * width * depth + r % width,
            };
            starts.push(parts.len());
            let mut lane = 0;
            while lane < room {
                let p = q + lane;
                let (i, at) = (p / cols, p % cols);
                let (oy, ox) = (at / g.ow, at % g.ow);
                let pixels = (g.ow - ox).min(room - lane);
                parts.push(Part {
                    base: i * g.image_len(),
                    y0: (oy * g.stride.0) as isize - g.padding.0 as isize,
                    x0: (ox * sw) as isize - g.padding.1 as isize,
                    lane,
                    pixels,
                });
                lane += pixels;
            }
            segs.push(Segment {
                dst,
                keep: ((1u32 << room) - 1) as u16,
            });
            q += room;
        }
        starts.push(parts.len());
        let seg_parts = |s: usize| &parts[starts[s]..starts[s + 1]];
        // A part covers lanes sw·lane .. sw·(lane + pixels) of the vector
        // (stride 1) or of the pair (stride 2); it loads into each half it
        // reaches.
        let reaches = |p: &Part, h: usize| {
            sw * p.lane < LANES * (h + 1) && sw * (p.lane + p.pixels) > LANES * h
        };
        let most = |h: usize| {
            let count = |s| seg_parts(s).iter().filter(|p| reaches(p, h)).count();
            (0..segs.len()).map(count).max().unwrap_or(0)
        };
        let (lo, hi) = (most(0), if sw == 2 { most(1) } else { 0 });
        // Each segment's loads, the same list for every tap: a part and
        // the half it loads into, or nothing (padding to `lo` and `hi`).
        let mut slots: Vec<Option<(&Part, usize)>> = Vec::with_capacity(segs.len() * (lo + hi));
        for s in 0..segs.len() {
            for (h, count) in [(0, lo), (1, hi)] {
                let at = slots.len();
                let into_h = seg_parts(s).iter().filter(|p| reaches(p, h));
                slots.extend(into_h.map(|p| Some((p, h))));
                slots.resize(at + count, None);
            }
        }
        let mut loads = Vec::with_capacity(g.kh * g.kw * slots.len());
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let (dy, dx) = ((ki * g.dilation.0) as isize, (kj * g.dilation.1) as isize);
                // Lane l of half h is lane 16h + l of the part's lanes
                // sw·lane ..; the ones whose input column lies inside the
                // plane are read.
                loads.extend(slots.iter().map(|slot| {
                    let Some((p, h)) = *slot else {
                        return Load {
                            offset: 0,
                            lanes: 0,
                        };
                    };
                    let (iy, ix, from) = (p.y0 + dy, p.x0 + dx, sw * p.lane);
                    // Bits of the pair's 32 lanes (or the vector's 16).
                    let bits = if (0..g.h as isize).contains(&iy) {
                        u64::from(inside(ix, sw * p.pixels, g.w)) << from
                    } else {
                        0
                    };
                    // The input column of lane 0 of half h.
                    let lane0 = ix - from as isize + (LANES * h) as isize;
                    Load {
                        offset: p.base as isize + iy * g.w as isize + lane0,
                        lanes: (bits >> (LANES * h)) as u16,
                    }
                }));
            }
        }
        let row_end = segs
            .iter()
            .map(|s| s.dst + s.keep.count_ones() as usize)
            .max()
            .unwrap_or(0);
        let read_end = parts.iter().map(|p| p.base + g.h * g.w).max().unwrap_or(0);
        RunPlan {
            segs,
            lo,
            hi,
            loads,
            row_end,
            read_end,
            taps: g.kh * g.kw,
            plane: g.h * g.w,
            stride2: sw == 2,
        }
    }

    /// Pixels of each segment, in order.
    #[cfg(test)]
    pub(super) fn segment_pixels(&self) -> Vec<usize> {
        self.segs
            .iter()
            .map(|s| s.keep.count_ones() as usize)
            .collect()
    }

    /// Fills `rows` rows of the unrolled matrix, from row `k0` (`k =
    /// (c·kh + ki)·kw + kj`), row `r` at `dst[r·stride ..]` in the plan's
    /// layout: `x[base + c·h·w + iy·w + ix]` at each pixel, 0 where
    /// `(iy, ix)` is outside the plane. Positions of `dst` that no pixel
    /// maps to are left as they are.
    ///
    /// # Panics
    /// When the rows reach past `dst`, or the channels past `x`, or the
    /// CPU does not run `kernel`.
    pub(super) fn fill(
        &self,
        kernel: Kernel,
        x: &[f32],
        (k0, rows): (usize, usize),
        dst: &mut [f32],
        stride: usize,
    ) {
        if rows == 0 || self.segs.is_empty() {
            return;
        }
        let last_channel = (k0 + rows - 1) / self.taps;
        assert!(
            self.read_end + last_channel * self.plane <= x.len(),
            "gather past the input"
        );
        assert!(
            (rows - 1) * stride + self.row_end <= dst.len(),
            "gather past its rows"
        );
        assert!(kernel.cpu_has());
        let (x, dst) = (x.as_ptr(), dst.as_mut_ptr());
        // Safety: the CPU runs `kernel`; the writes of row r (the lanes a
        // segment keeps) lie in `dst[r·stride .. r·stride + row_end]`,
        // inside `dst`; the loads read, of channel c ≤ last_channel, only
        // lanes inside an input row (the masks), which lies inside the
        // image's plane, whose end is at most read_end + c·h·w ≤ x.len().
        // The counts of the common plans are constants, so the loops over
        // a segment's loads unroll: segments of one part (rows of 16
        // pixels or more, stride 1 or 2), of two to four rows at stride 1
        // (rows of 8, 7 or 4 pixels) or 2 (of 14 or 7 pixels, or 4).
        macro_rules! fill_with {
            ($fill:ident) => {
                match (self.lo, self.hi) {
                    (1, 0) => self.$fill::<1, 0>(x, k0, rows, dst, stride),
                    (2, 0) => self.$fill::<2, 0>(x, k0, rows, dst, stride),
                    (3, 0) => self.$fill::<3, 0>(x, k0, rows, dst, stride),
                    (4, 0) => self.$fill::<4, 0>(x, k0, rows, dst, stride),
                    (1, 1) => self.$fill::<1, 1>(x, k0, rows, dst, stride),
                    (1, 2) => self.$fill::<1, 2>(x, k0, rows, dst, stride),
                    (2, 2) => self.$fill::<2, 2>(x, k0, rows, dst, stride),
                    _ => self.$fill::<0, 0>(x, k0, rows, dst, stride),
                }
            };
        }
        unsafe {
            match kernel {
                Kernel::Avx512 => fill_with!(fill_avx512),
                Kernel::Avx2 => fill_with!(fill_avx2),
            }
        }
    }

    /// The segments and loads of the `rows` unrolled rows from row `k0`:
    /// calls `row(r, channel offset, loads of the row's tap)` for each.
    #[inline(always)]
    fn for_each_row(&self, k0: usize, rows: usize, mut row: impl FnMut(usize, usize, &[Load])) {
        let n = self.segs.len() * (self.lo + self.hi);
        let (taps, plane) = (self.taps, self.plane);
        let (mut c, mut t) = (k0 / taps, k0 % taps);
        for r in 0..rows {
            row(r, c * plane, &self.loads[t * n..(t + 1) * n]);
            t += 1;
            if t == taps {
                t = 0;
                c += 1;
            }
        }
    }

    /// The loads per segment, `(lo, hi)`: `(LO, HI)` where `LO` is not 0
    /// (then they are the plan's, a constant for the fills' loops), the
    /// plan's otherwise.
    #[inline(always)]
    fn counts<const LO: usize, const HI: usize>(&self) -> (usize, usize) {
        if LO > 0 {
            debug_assert_eq!((LO, HI), (self.lo, self.hi));
            (LO, HI)
        } else {
            (self.lo, self.hi)
        }
    }

    /// [`RunPlan::fill`] in AVX-512.
    ///
    /// # Safety
    /// As checked by [`RunPlan::fill`].
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_avx512<const LO: usize, const HI: usize>(
        &self,
        x: *const f32,
        k0: usize,
        rows: usize,
        dst: *mut f32,
        stride: usize,
    ) {
        let (lo_n, hi_n) = self.counts::<LO, HI>();
        // Lane l of the permute takes lane 2l of the 32 lanes (lo, hi).
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        self.for_each_row(k0, rows, |r, channel, loads| {
            let channel = x.wrapping_add(channel);
            let out = dst.wrapping_add(r * stride);
            for (s, loads) in self.segs.iter().zip(loads.chunks_exact(lo_n + hi_n)) {
                let (lo, hi) = loads.split_at(lo_n);
                // Only lanes inside the plane are loaded, so the addresses
                // of the others (wrapping arithmetic) are never read. The
                // loads' lanes are disjoint, and zero-masked loads do not
                // wait on each other as merging ones would.
                let load = |v, ld: &Load| {
                    let at = channel.wrapping_offset(ld.offset);
                    let lanes = unsafe { _mm512_maskz_loadu_ps(ld.lanes, at) };
                    // (An integer or: `_mm512_or_ps` needs AVX512DQ.)
                    _mm512_castsi512_ps(_mm512_or_si512(
                        _mm512_castps_si512(v),
                        _mm512_castps_si512(lanes),
                    ))
                };
                let v = lo.iter().fold(_mm512_setzero_ps(), load);
                let v = if self.stride2 {
                    let hi = hi.iter().fold(_mm512_setzero_ps(), load);
                    _mm512_permutex2var_ps(v, even, hi)
                } else {
                    v
                };
                unsafe { _mm512_mask_storeu_ps(out.add(s.dst), s.keep, v) };
            }
        });
    }

    /// [`RunPlan::fill`] in AVX2: each 16-lane vector as two 8-lane
    /// halves, masks expanded from the bits of [`Load`] and [`Segment`].
    ///
    /// # Safety
    /// As checked by [`RunPlan::fill`].
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2<const LO: usize, const HI: usize>(
        &self,
        x: *const f32,
        k0: usize,
        rows: usize,
        dst: *mut f32,
        stride: usize,
    ) {
        let (lo_n, hi_n) = self.counts::<LO, HI>();
        let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        // Lanes whose bit is set in the low 8 bits of `bits`.
        let mask = |bits: u32| {
            let sel = _mm256_and_si256(_mm256_set1_epi32((bits & 0xff) as i32), bit);
            _mm256_cmpeq_epi32(sel, bit)
        };
        // The even lanes of the 16 values (a, b), in order.
        let even = |a: __m256, b: __m256| {
            let pairs = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a, b));
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(pairs))
        };
        self.for_each_row(k0, rows, |r, channel, loads| {
            let channel = x.wrapping_add(channel);
            let out = dst.wrapping_add(r * stride);
            for (s, loads) in self.segs.iter().zip(loads.chunks_exact(lo_n + hi_n)) {
                let (lo, hi) = loads.split_at(lo_n);
                // Each load into a pair of halves, its lanes' values or'ed
                // in (the loads' lanes are disjoint, masked-off lanes are
                // zero and never fault, and a half without lanes is not
                // loaded), so the addresses of the other lanes (wrapping
                // arithmetic) are never read.
                let load = |(a, b): (__m256, __m256), ld: &Load| {
                    let (at, bits) = (channel.wrapping_offset(ld.offset), u32::from(ld.lanes));
                    let half = |v, at: *const f32, bits: u32| {
                        if bits & 0xff == 0 {
                            v
                        } else {
                            _mm256_or_ps(v, unsafe { _mm256_maskload_ps(at, mask(bits)) })
                        }
                    };
                    (half(a, at, bits), half(b, at.wrapping_add(8), bits >> 8))
                };
                let zero = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (v0, v1) = lo.iter().fold(zero, load);
                let (v0, v1) = if self.stride2 {
                    let (v2, v3) = hi.iter().fold(zero, load);
                    (even(v0, v1), even(v2, v3))
                } else {
                    (v0, v1)
                };
                let keep = u32::from(s.keep);
                // Safety: the lanes kept lie inside the row (see `fill`).
                unsafe {
                    let o = out.add(s.dst);
                    if keep == 0xffff {
                        _mm256_storeu_ps(o, v0);
                        _mm256_storeu_ps(o.add(8), v1);
                    } else {
                        _mm256_maskstore_ps(o, mask(keep), v0);
                        _mm256_maskstore_ps(o.wrapping_add(8), mask(keep >> 8), v1);
                    }
                }
            }
        });
    }
}

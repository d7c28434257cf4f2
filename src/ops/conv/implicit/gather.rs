//! The gathers of the implicit-GEMM convolution: rows of the unrolled
//! matrix (one kernel tap of one input channel each) over a run of output
//! pixels, read straight from the NCHW input with masked vector loads
//! (16-lane AVX-512 vectors, or pairs of 8-lane AVX2 ones).
//!
//! A run of output pixels is cut into segments of up to 16 pixels (one
//! vector; never across a micro-panel), each made of parts: the pixels of
//! one output row in one image (of the whole image for a 1×1 layer at
//! stride 1 without padding, whose plane is read in order). For a given
//! tap, a part's values are consecutive input values at stride 1 and every
//! other one at stride 2, so each part is one masked load that puts them
//! in the segment's lanes (stride 1), or two that put them in the lanes of
//! a 32-value pair of vectors of which a permute keeps the even ones
//! (stride 2; one where the part lies in one half). Segments take as many
//! parts as fit:
//! ResNet-18's 4-pixel rows at stride 2 fill a segment with four masked
//! loads, one permute and one store, where a segment per row took eight
//! loads, four permutes and four masked stores.
//! Everything that depends only on the kernel tap `(ki, kj)` and the
//! segment, and not on the channel, is worked out once per run
//! ([`RunPlan`]): where each part's values start and which lanes fall
//! inside the plane (masks; the others, padding, are zeros). Filling a
//! row is then a masked load or two per part, a permute at stride 2, and
//! a store per segment. The per-image weight gradients at stride 2 read a
//! column-split copy of each image instead (`Plans::per_image`,
//! `split_columns`): one masked load per part, as at stride 1.

use super::super::geom::ConvGeom;
use super::split_columns::{inside_every_other, split_position, Source};
use crate::backend::cpu::simd::avx2::{even_lanes, lane_mask};
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

/// The loads of one tap at one part of a segment: lane `l` of the vector
/// (stride 1), or of the pair of vectors (stride 2: lanes 16.. are the
/// high one's), reads the input at `offset + l`, an offset from
/// `x + c·h·w` (the image's group offset included; it may point outside
/// the plane), where bit `l` of `lanes` is set: the part's lanes inside
/// the plane. Lanes outside every load's mask are zeros (padding).
#[derive(Clone, Copy, Debug)]
struct Load {
    offset: isize,
    lanes: u32,
}

/// The pixels of one segment in one output row (or one image, see
/// [`RunPlan::new`]): the image's group base in the input, the input row
/// and column of tap (0, 0) at its first pixel, its first lane in the
/// segment and its pixel count.
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
    /// Parts per segment: the most any segment has, the others' loads
    /// padded with loads of no lanes, so that the fills' loops have fixed
    /// counts (see [`RunPlan::fill`]).
    parts: usize,
    /// `loads[(t·segs.len() + s)·parts ..]`: the loads of tap `t = ki·kw +
    /// kj` at segment `s`, a part each.
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

/// Whether [`RunPlan`] handles the horizontal stride `sw`.
pub(super) fn stride_supported(sw: usize) -> bool {
    matches!(sw, 1 | 2)
}

/// The lanes `l < lanes` with `0 ≤ ix0 + l < w`, as a bit mask.
pub(super) fn inside(ix0: isize, lanes: usize, w: usize) -> u32 {
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
    ///
    /// With an `order`, the run is of positions `q0 .. q0 + len` whose
    /// pixels are `order[q]`: a part then takes the pixels of consecutive
    /// positions that follow each other along an output row. Panics when
    /// the order is shorter than the run.
    ///
    /// The loads read the input as `source` lays it out; a
    /// [`Source::SplitColumns`] plan needs a horizontal stride of 2.
    pub(super) fn new(
        g: &ConvGeom,
        q0: usize,
        len: usize,
        layout: Layout,
        order: Option<&[u32]>,
        source: Source,
    ) -> Self {
        assert!(stride_supported(g.stride.1));
        let split = source == Source::SplitColumns;
        assert!(!split || g.stride.1 == 2, "split columns at stride 2 only");
        let pixel = |q: usize| order.map_or(q, |o| o[q] as usize);
        let (cols, sw) = (g.col_cols(), g.stride.1);
        // A 1×1 layer at stride 1 without padding reads each image's
        // plane in order, so a part runs on across output rows to the
        // image's end: on 7×7 planes one load per image in a segment
        // instead of one per row (up to four).
        let plane_in_order = (g.kh, g.kw, g.stride, g.padding) == (1, 1, (1, 1), (0, 0));
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
                let p = pixel(q + lane);
                let (i, at) = (p / cols, p % cols);
                let (oy, ox) = (at / g.ow, at % g.ow);
                let row_left = if plane_in_order { cols - at } else { g.ow - ox };
                let most = row_left.min(room - lane);
                let pixels = 1
                    + (1..most)
                        .take_while(|&d| pixel(q + lane + d) == p + d)
                        .count();
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
        // Each segment's parts, padded to the most any has (`None`).
        let most = (0..segs.len())
            .map(|s| seg_parts(s).len())
            .max()
            .unwrap_or(0);
        let mut slots: Vec<Option<&Part>> = Vec::with_capacity(segs.len() * most);
        for s in 0..segs.len() {
            slots.extend(seg_parts(s).iter().map(Some));
            slots.resize((s + 1) * most, None);
        }
        let mut loads = Vec::with_capacity(g.kh * g.kw * slots.len());
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let (dy, dx) = ((ki * g.dilation.0) as isize, (kj * g.dilation.1) as isize);
                // A part covers lanes sw·lane .. sw·(lane + pixels) of the
                // vector (stride 1) or of the pair (stride 2), or lanes
                // lane .. lane + pixels of the vector over split columns;
                // the ones whose input column lies inside the plane are
                // read.
                loads.extend(slots.iter().map(|slot| {
                    let Some(p) = slot else {
                        return Load {
                            offset: 0,
                            lanes: 0,
                        };
                    };
                    let (iy, ix) = (p.y0 + dy, p.x0 + dx);
                    let row = p.base as isize + iy * g.w as isize;
                    let in_rows = (0..g.h as isize).contains(&iy);
                    if split {
                        // Lane l reads column ix + 2l, at split_position(ix) + l.
                        let lanes = if in_rows {
                            inside_every_other(ix, p.pixels, g.w) << p.lane
                        } else {
                            0
                        };
                        return Load {
                            offset: row + split_position(ix, g.w) - p.lane as isize,
                            lanes,
                        };
                    }
                    let from = sw * p.lane;
                    let lanes = if plane_in_order {
                        ((1u32 << p.pixels) - 1) << from
                    } else if in_rows {
                        inside(ix, sw * p.pixels, g.w) << from
                    } else {
                        0
                    };
                    // Lane 0 reads the input column ix - from.
                    Load {
                        offset: row + ix - from as isize,
                        lanes,
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
            parts: most,
            loads,
            row_end,
            read_end,
            taps: g.kh * g.kw,
            plane: g.h * g.w,
            stride2: sw == 2 && !split,
        }
    }

    /// Loads the plan holds (its size, for [`Plans`]' budget).
    pub(super) fn load_count(&self) -> usize {
        self.loads.len()
    }

    /// Parts per segment (the most any segment has).
    #[cfg(test)]
    pub(super) fn most_parts(&self) -> usize {
        self.parts
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
    /// layout: `x[i·image_len + c·h·w + iy·w + ix]` at each pixel of the
    /// run's image `i` (counted from the one whose group is at the start
    /// of `x`), 0 where `(iy, ix)` is outside the plane. Positions of
    /// `dst` that no pixel maps to are left as they are.
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
        // The part counts of the common plans are constants, so the loops
        // over a segment's loads unroll: one part (rows of 16 pixels or
        // more), or two to four rows of 8, 7 or 4 pixels.
        macro_rules! fill_with {
            ($fill:ident, $stride2:literal) => {
                match self.parts {
                    1 => self.$fill::<1, $stride2>(x, k0, rows, dst, stride),
                    2 => self.$fill::<2, $stride2>(x, k0, rows, dst, stride),
                    3 => self.$fill::<3, $stride2>(x, k0, rows, dst, stride),
                    4 => self.$fill::<4, $stride2>(x, k0, rows, dst, stride),
                    _ => self.$fill::<0, $stride2>(x, k0, rows, dst, stride),
                }
            };
        }
        // Safety: the CPU runs `kernel`; the writes of row r (the lanes a
        // segment keeps) lie in `dst[r·stride .. r·stride + row_end]`,
        // inside `dst`; the loads read, of channel c ≤ last_channel, only
        // lanes inside an input row (the masks), which lies inside the
        // image's plane, whose end is at most read_end + c·h·w ≤ x.len().
        unsafe {
            match (kernel, self.stride2) {
                (Kernel::Avx512, false) => fill_with!(fill_avx512, false),
                (Kernel::Avx512, true) => fill_with!(fill_avx512, true),
                (Kernel::Avx2, false) => fill_with!(fill_avx2, false),
                (Kernel::Avx2, true) => fill_with!(fill_avx2, true),
            }
        }
    }

    /// The segments and loads of the `rows` unrolled rows from row `k0`:
    /// calls `row(r, channel offset, loads of the row's tap)` for each.
    #[inline(always)]
    fn for_each_row(&self, k0: usize, rows: usize, mut row: impl FnMut(usize, usize, &[Load])) {
        let n = self.segs.len() * self.parts;
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

    /// The parts per segment: `P` where it is not 0 (then it is the
    /// plan's, a constant for the fills' loops), the plan's otherwise.
    #[inline(always)]
    fn parts<const P: usize>(&self) -> usize {
        if P > 0 {
            debug_assert_eq!(P, self.parts);
            P
        } else {
            self.parts
        }
    }

    /// [`RunPlan::fill`] in AVX-512.
    ///
    /// # Safety
    /// As checked by [`RunPlan::fill`].
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_avx512<const P: usize, const STRIDE2: bool>(
        &self,
        x: *const f32,
        k0: usize,
        rows: usize,
        dst: *mut f32,
        stride: usize,
    ) {
        let parts = self.parts::<P>();
        // Lane l of the permute takes lane 2l of the 32 lanes (lo, hi).
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        // Lanes of `a` or `b` (an integer or: `_mm512_or_ps` needs
        // AVX512DQ).
        let or = |a: __m512, b: __m512| {
            _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_castps_si512(a),
                _mm512_castps_si512(b),
            ))
        };
        self.for_each_row(k0, rows, |r, channel, loads| {
            let channel = x.wrapping_add(channel);
            let out = dst.wrapping_add(r * stride);
            for (s, loads) in self.segs.iter().zip(loads.chunks_exact(parts)) {
                // Only lanes inside the plane are loaded, so the addresses
                // of the others (wrapping arithmetic) are never read, and a
                // load without lanes is skipped (at stride 2, the half a
                // part does not reach: a branch measured cheaper than the
                // load on 8-pixel rows). The loads' lanes are disjoint,
                // and zero-masked loads do not wait on each other as
                // merging ones would.
                let load = |v, at: *const f32, lanes: u32| {
                    if lanes & 0xffff == 0 {
                        return v;
                    }
                    or(v, unsafe { _mm512_maskz_loadu_ps(lanes as __mmask16, at) })
                };
                let zero = _mm512_setzero_ps();
                let v = if STRIDE2 {
                    let (lo, hi) = loads.iter().fold((zero, zero), |(lo, hi), ld| {
                        let at = channel.wrapping_offset(ld.offset);
                        let hi = load(hi, at.wrapping_add(16), ld.lanes >> 16);
                        (load(lo, at, ld.lanes), hi)
                    });
                    _mm512_permutex2var_ps(lo, even, hi)
                } else {
                    let at = |ld: &Load| channel.wrapping_offset(ld.offset);
                    loads.iter().fold(zero, |v, ld| load(v, at(ld), ld.lanes))
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
    unsafe fn fill_avx2<const P: usize, const STRIDE2: bool>(
        &self,
        x: *const f32,
        k0: usize,
        rows: usize,
        dst: *mut f32,
        stride: usize,
    ) {
        let parts = self.parts::<P>();
        let (mask, even) = (lane_mask, even_lanes);
        self.for_each_row(k0, rows, |r, channel, loads| {
            let channel = x.wrapping_add(channel);
            let out = dst.wrapping_add(r * stride);
            for (s, loads) in self.segs.iter().zip(loads.chunks_exact(parts)) {
                // Each load's 16 or 32 lanes as 8-lane quarters, its lanes'
                // values or'ed in (the loads' lanes are disjoint, masked-off
                // lanes are zero and never fault, and a quarter without
                // lanes is not loaded), so the addresses of the other lanes
                // (wrapping arithmetic) are never read.
                let quarter = |v, at: *const f32, bits: u32| {
                    if bits & 0xff == 0 {
                        v
                    } else {
                        _mm256_or_ps(v, unsafe { _mm256_maskload_ps(at, mask(bits)) })
                    }
                };
                let zero = _mm256_setzero_ps();
                let (v0, v1) = if STRIDE2 {
                    // Written out quarter by quarter: as `[0, 1, 2, 3].map`
                    // the closure was left out of line in some builds, and
                    // the stride-2 rows with AVX2 ran 1.6× slower.
                    let mut q = [zero; 4];
                    for ld in loads {
                        let (at, bits) = (channel.wrapping_offset(ld.offset), ld.lanes);
                        q[0] = quarter(q[0], at, bits);
                        q[1] = quarter(q[1], at.wrapping_add(8), bits >> 8);
                        q[2] = quarter(q[2], at.wrapping_add(16), bits >> 16);
                        q[3] = quarter(q[3], at.wrapping_add(24), bits >> 24);
                    }
                    (even(q[0], q[1]), even(q[2], q[3]))
                } else {
                    loads.iter().fold((zero, zero), |(v0, v1), ld| {
                        let (at, bits) = (channel.wrapping_offset(ld.offset), ld.lanes);
                        (
                            quarter(v0, at, bits),
                            quarter(v1, at.wrapping_add(8), bits >> 8),
                        )
                    })
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

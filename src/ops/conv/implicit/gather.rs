//! The gathers of the implicit-GEMM convolution: rows of the unrolled
//! matrix (one kernel tap of one input channel each) over a run of output
//! pixels, read straight from the NCHW input with masked vector loads
//! (one 16-lane AVX-512 vector per segment, or two 8-lane AVX2 ones).
//!
//! A run of output pixels is cut into segments, each inside one image and
//! at most 16 pixels long, so that for a given tap a segment reads one
//! input row, or two where a short output row's segment takes the start
//! of the next row too (planes at most 8 pixels wide would otherwise fill
//! half of every vector or less): contiguous for stride 1 (a second
//! masked load merges the next row's lanes), every other value for
//! stride 2 (two loads, of one row or, when the first row fills exactly
//! the first 8 lanes, of the two, and a permute that keeps the even
//! lanes; rows of 4 pixels at stride 2 still fill 4 lanes).
//! Everything that depends only on the kernel tap `(ki, kj)` and the
//! segment, and not on the channel, is worked out once per run
//! ([`RunPlan`]): where the segment's values start in its image and which
//! lanes fall inside the plane (masks; the others, padding, are zeros).
//! Filling a row is then a masked load or two, a permute and a masked
//! store per segment.

use super::super::geom::ConvGeom;
use crate::ops::matmul::sgemm::Kernel;
use std::arch::x86_64::*;

/// Pixels of one segment at most: one vector.
const LANES: usize = 16;

/// Where [`RunPlan::fill`] puts pixel `q` (counted from the run's start)
/// of a row.
#[derive(Clone, Copy, Debug)]
pub(super) enum Layout {
    /// At `q`: the row is one run (a weight gradient's runs, transposed
    /// afterwards).
    Run,
    /// In micro-panels of `width` pixels, `depth` rows each: at
    /// `(q / width)·width·depth + q % width` (a forward product's packed
    /// right operand, rows `width` apart).
    Panels { width: usize, depth: usize },
}

/// A run of at most [`LANES`] output pixels inside one image (and one
/// micro-panel): pixels of one output row, and where they reach its end,
/// possibly the first pixels of the next.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Where the segment's first value goes in a filled row.
    dst: usize,
    /// Lanes written: the segment's pixels.
    keep: u16,
}

/// Where the values of one tap at one segment come from, as offsets from
/// `x + c·h·w` (the image's group offset included; they may point into
/// the padding), and which lanes of each load lie inside the plane (none
/// where the input row is padding). Stride 2: 16 input values at `offset`
/// (bits 0–15 of `inside`) and 16 at `hi` (bits 16–31), `offset + 16`
/// unless the segment's second part starts a new row. Stride 1: lane `l`
/// reads `offset + l` where bit `l` is set and `hi + l` where bit `16 + l`
/// is (the second part's lanes; none in a one-row segment).
#[derive(Clone, Copy, Debug)]
struct Load {
    offset: isize,
    hi: isize,
    inside: u32,
}

/// The gathers of one run of output pixels, for every tap.
pub(super) struct RunPlan {
    segs: Vec<Segment>,
    /// `loads[t·segs.len() + s]`: tap `t = ki·kw + kj`, segment `s`.
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
    /// Whether any segment takes two output rows; without, the fills run
    /// the one-row loads alone. (Measured before loops were aligned: the
    /// two-row code on one-row segments made the AVX2 64→128 stride-2
    /// forward 3–4 % slower, most of it where the micro-kernel's loop then
    /// landed; the split costs nothing, so it stays.)
    two_rows: bool,
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
    /// (`q = i·oh·ow + oy·ow + ox`); image `i`'s group starts at `base0 +
    /// i·image_len` in the input. Panics unless the stride is
    /// [`stride_supported`].
    pub(super) fn new(g: &ConvGeom, base0: usize, q0: usize, len: usize, layout: Layout) -> Self {
        assert!(stride_supported(g.stride.1));
        let (cols, sw) = (g.col_cols(), g.stride.1);
        let mut segs = Vec::new();
        // Per segment: the image base and its parts, each the input row and
        // column of tap (0, 0) at its first pixel and its pixel count.
        let mut origins = Vec::new();
        let (mut q, end) = (q0, q0 + len);
        while q < end {
            let (i, p) = (q / cols, q % cols);
            let (oy, ox) = (p / g.ow, p % g.ow);
            let r = q - q0;
            // Pixels the segment may take: to the run's end, one vector,
            // and the end of its micro-panel.
            let room = match layout {
                Layout::Run => LANES,
                Layout::Panels { width, .. } => LANES.min(width - r % width),
            }
            .min(end - q);
            let first = (g.ow - ox).min(room);
            // The next output row's first pixels, where this row ends
            // inside the segment (and, for stride 2, fills the first half:
            // its values are the even lanes of the first load).
            let second = if first < room && oy + 1 < g.oh && (sw == 1 || first == LANES / 2) {
                g.ow.min(room - first).min(LANES - first)
            } else {
                0
            };
            let run = first + second;
            let dst = match layout {
                Layout::Run => r,
                Layout::Panels { width, depth } => r / width * width * depth + r % width,
            };
            segs.push(Segment {
                dst,
                keep: ((1u32 << run) - 1) as u16,
            });
            let origin = |oy: usize, ox: usize| {
                let y0 = (oy * g.stride.0) as isize - g.padding.0 as isize;
                (y0, (ox * sw) as isize - g.padding.1 as isize)
            };
            let parts = [(origin(oy, ox), first), (origin(oy + 1, 0), second)];
            origins.push((base0 + i * g.image_len(), parts));
            q += run;
        }
        let mut loads = Vec::with_capacity(g.kh * g.kw * segs.len());
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                for &(base, parts) in &origins {
                    // Where part `(y0, x0)` of `n` pixels reads for this
                    // tap, and which of its `sw·n` input positions are
                    // inside the plane.
                    let at = |((y0, x0), n): ((isize, isize), usize)| {
                        let iy = y0 + (ki * g.dilation.0) as isize;
                        let ix = x0 + (kj * g.dilation.1) as isize;
                        let row_inside = n > 0 && (0..g.h as isize).contains(&iy);
                        let bits = if row_inside {
                            inside(ix, sw * n, g.w)
                        } else {
                            0
                        };
                        (base as isize + iy * g.w as isize + ix, bits)
                    };
                    let ((offset, lo_bits), (next, hi_bits)) = (at(parts[0]), at(parts[1]));
                    let first = parts[0].1;
                    loads.push(match (sw, parts[1].1) {
                        // One row: the second load continues it.
                        (_, 0) => Load {
                            offset,
                            hi: offset + 16,
                            inside: lo_bits,
                        },
                        // The next row's values in the second load (lanes
                        // 8.. of the result, as first == 8).
                        (2, _) => Load {
                            offset,
                            hi: next,
                            inside: lo_bits | hi_bits << 16,
                        },
                        // Lane first + j reads the next row's value j.
                        _ => Load {
                            offset,
                            hi: next - first as isize,
                            inside: lo_bits | hi_bits << (16 + first),
                        },
                    });
                }
            }
        }
        let row_end = segs
            .iter()
            .map(|s| s.dst + s.keep.count_ones() as usize)
            .max()
            .unwrap_or(0);
        let read_end = origins.last().map_or(0, |o| o.0 + g.h * g.w);
        RunPlan {
            segs,
            loads,
            row_end,
            read_end,
            taps: g.kh * g.kw,
            plane: g.h * g.w,
            stride2: sw == 2,
            two_rows: origins.iter().any(|o| o.1[1].1 > 0),
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
        unsafe {
            match kernel {
                Kernel::Avx512 if self.two_rows => {
                    self.fill_avx512::<true>(x, k0, rows, dst, stride)
                }
                Kernel::Avx512 => self.fill_avx512::<false>(x, k0, rows, dst, stride),
                Kernel::Avx2 if self.two_rows => self.fill_avx2::<true>(x, k0, rows, dst, stride),
                Kernel::Avx2 => self.fill_avx2::<false>(x, k0, rows, dst, stride),
            }
        }
    }

    /// The segments and loads of the `rows` unrolled rows from row `k0`:
    /// calls `row(r, channel offset, loads of the row's tap)` for each.
    #[inline(always)]
    fn for_each_row(&self, k0: usize, rows: usize, mut row: impl FnMut(usize, usize, &[Load])) {
        let (taps, plane, n) = (self.taps, self.plane, self.segs.len());
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

    /// [`RunPlan::fill`] in AVX-512.
    ///
    /// # Safety
    /// As checked by [`RunPlan::fill`].
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_avx512<const TWO_ROWS: bool>(
        &self,
        x: *const f32,
        k0: usize,
        rows: usize,
        dst: *mut f32,
        stride: usize,
    ) {
        // Lane l of the permute takes lane 2l of the 32 lanes (lo, hi).
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        self.for_each_row(k0, rows, |r, channel, loads| {
            let channel = x.wrapping_add(channel);
            let out = dst.wrapping_add(r * stride);
            for (s, ld) in self.segs.iter().zip(loads) {
                // Only lanes inside the plane are loaded, so the addresses
                // of the others (wrapping arithmetic) are never read.
                let at = channel.wrapping_offset(ld.offset);
                let hi = if TWO_ROWS {
                    channel.wrapping_offset(ld.hi)
                } else {
                    at.wrapping_add(16)
                };
                let (lo_lanes, hi_lanes) = (ld.inside as __mmask16, (ld.inside >> 16) as __mmask16);
                let v = if !self.stride2 {
                    let v = unsafe { _mm512_maskz_loadu_ps(lo_lanes, at) };
                    if !TWO_ROWS || hi_lanes == 0 {
                        v
                    } else {
                        unsafe { _mm512_mask_loadu_ps(v, hi_lanes, hi) }
                    }
                } else {
                    let lo = unsafe { _mm512_maskz_loadu_ps(lo_lanes, at) };
                    let hi = unsafe { _mm512_maskz_loadu_ps(hi_lanes, hi) };
                    _mm512_permutex2var_ps(lo, even, hi)
                };
                unsafe { _mm512_mask_storeu_ps(out.add(s.dst), s.keep, v) };
            }
        });
    }

    /// [`RunPlan::fill`] in AVX2: each 16-lane segment as two 8-lane
    /// halves, masks expanded from the bits of [`Load`] and [`Segment`].
    ///
    /// # Safety
    /// As checked by [`RunPlan::fill`].
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2<const TWO_ROWS: bool>(
        &self,
        x: *const f32,
        k0: usize,
        rows: usize,
        dst: *mut f32,
        stride: usize,
    ) {
        let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        // Lanes whose bit is set in the low 8 bits of `bits`.
        let mask = |bits: u32| {
            let sel = _mm256_and_si256(_mm256_set1_epi32((bits & 0xff) as i32), bit);
            _mm256_cmpeq_epi32(sel, bit)
        };
        // Only lanes inside the plane are loaded (masked-off lanes are
        // zero and never fault), so the addresses of the others (wrapping
        // arithmetic) are never read.
        let load = |at: *const f32, bits: u32| unsafe { _mm256_maskload_ps(at, mask(bits)) };
        // The even lanes of the 16 values (a, b), in order.
        let even = |a: __m256, b: __m256| {
            let pairs = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a, b));
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(pairs))
        };
        self.for_each_row(k0, rows, |r, channel, loads| {
            let channel = x.wrapping_add(channel);
            let out = dst.wrapping_add(r * stride);
            for (s, ld) in self.segs.iter().zip(loads) {
                let (at, bits) = (channel.wrapping_offset(ld.offset), ld.inside);
                let hi = if TWO_ROWS {
                    channel.wrapping_offset(ld.hi)
                } else {
                    at.wrapping_add(16)
                };
                let (v0, v1) = if !self.stride2 {
                    let (v0, v1) = (load(at, bits), load(at.wrapping_add(8), bits >> 8));
                    if !TWO_ROWS || bits >> 16 == 0 {
                        (v0, v1)
                    } else {
                        // The lanes of the two loads are disjoint, and
                        // masked-off lanes are zero.
                        let merge = |v, at: *const f32, bits| _mm256_or_ps(v, load(at, bits));
                        (
                            merge(v0, hi, bits >> 16),
                            merge(v1, hi.wrapping_add(8), bits >> 24),
                        )
                    }
                } else {
                    let q = [
                        load(at, bits),
                        load(at.wrapping_add(8), bits >> 8),
                        load(hi, bits >> 16),
                        load(hi.wrapping_add(8), bits >> 24),
                    ];
                    (even(q[0], q[1]), even(q[2], q[3]))
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

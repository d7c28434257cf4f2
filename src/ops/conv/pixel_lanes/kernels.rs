//! The per-image loops and register-blocked kernels of the pixel-lane
//! weight gradient, one body written once (`lane_kernels!`) and compiled
//! for AVX-512 (16 lanes, blocks of 8 output channels) and AVX2 (8
//! lanes, blocks of 3).

use super::TAPS;
use crate::backend::cpu::simd::avx2::lane_mask;
use crate::backend::cpu::simd::VectorIsa;
use crate::ops::conv::geom::ConvGeom;
use std::arch::x86_64::*;

/// Adds image `n`'s lane-wise sums to `acc` (`dw`'s layout, each element
/// `L` lanes wide), on the kernels of `isa`.
pub(super) fn add_image(
    isa: VectorIsa,
    acc: &mut [f32],
    x: &[f32],
    dy: &[f32],
    g: &ConvGeom,
    n: usize,
) {
    assert!(
        isa != VectorIsa::Baseline && isa.cpu_has(),
        "{isa:?} kernels on this CPU"
    );
    let lanes = isa.f32_lanes();
    assert_eq!(acc.len(), g.c_out * g.cg() * g.kh * TAPS * lanes);
    assert!(x.len() >= g.n * g.image_len() && dy.len() >= g.n * g.out_image_len() && n < g.n);
    // Safety: the CPU runs the kernels of `isa` (asserted), and the
    // buffers hold what the geometry addresses (asserted above).
    unsafe {
        match isa {
            VectorIsa::Avx512 => avx512::add_image(acc, x, dy, g, n),
            VectorIsa::Avx2 => avx2::add_image(acc, x, dy, g, n),
            VectorIsa::Baseline => unreachable!("asserted above"),
        }
    }
}

/// The lanes of one chunk of `L` output pixels (`x0 .. x0 + L` of a
/// row) that a row of `dy` and the input row under each tap have: the
/// output's lanes (`x < ow`) and, per tap `j`, those whose input column
/// `x + j − pw` lies inside the row as well. Bit `l` is lane `l`.
fn chunk_lanes(g: &ConvGeom, x0: usize, lanes: usize) -> (u32, [u32; TAPS]) {
    let out = (0..lanes)
        .filter(|l| x0 + l < g.ow)
        .fold(0, |m, l| m | 1 << l);
    let tap = |j: usize| {
        (0..lanes)
            .filter(|l| {
                let ix = (x0 + l + j) as isize - g.padding.1 as isize;
                out >> l & 1 == 1 && ix >= 0 && (ix as usize) < g.w
            })
            .fold(0, |m, l| m | 1 << l)
    };
    (out, [tap(0), tap(1), tap(2)])
}

/// Generates one instruction set's `add_image` and its kernel.
macro_rules! lane_kernels {
    (
        $isa:ident, $feature:literal, $lanes:expr, $block:expr, $M:ty,
        zero: $zero:expr, mask: $mask:path, masked_load: $mload:path,
        loadu: $loadu:path, storeu: $storeu:path, fmadd: $fmadd:path
    ) => {
        mod $isa {
            use super::*;

            /// Lanes per vector.
            const L: usize = $lanes;
            /// Output channels per register block.
            const BLOCK: usize = $block;

            /// One chunk's lane masks (see `chunk_lanes`).
            struct Chunk {
                full: bool,
                out: $M,
                taps: [$M; TAPS],
            }

            /// Where one kernel call reads and adds: the lane sums of
            /// output channels `o0 .. o0 + OB` (tap 0 of each at `acc +
            /// o·acc_stride`, taps `L` floats apart), their `dy` planes
            /// (`dy + o·plane`), the input plane, the output rows whose
            /// input row under kernel row `i` lies inside it, and that
            /// row's offset.
            struct Job {
                acc: *mut f32,
                acc_stride: usize,
                dy: *const f32,
                plane: usize,
                x: *const f32,
                rows: std::ops::Range<usize>,
                row_shift: isize,
            }

            /// Adds image `n`'s lane sums to `acc`.
            ///
            /// # Safety
            /// The CPU runs this instruction set; `acc` is `dw`'s length
            /// times `L`; `x` and `dy` hold the geometry's batch.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn add_image(
                acc: &mut [f32],
                x: &[f32],
                dy: &[f32],
                g: &ConvGeom,
                n: usize,
            ) {
                let mut chunks = Vec::with_capacity(g.ow.div_ceil(L));
                for x0 in (0..g.ow).step_by(L) {
                    let (out, [t0, t1, t2]) = chunk_lanes(g, x0, L);
                    let masks = [$mask(out), $mask(t0), $mask(t1), $mask(t2)];
                    let all = (1u32 << L) - 1;
                    chunks.push(Chunk {
                        full: [out, t0, t1, t2] == [all; 4],
                        out: masks[0],
                        taps: [masks[1], masks[2], masks[3]],
                    });
                }
                let (og, cg, kh) = (g.og(), g.cg(), g.kh);
                let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
                let (ph, pw) = (g.padding.0 as isize, g.padding.1 as isize);
                let acc_stride = cg * kh * TAPS * L;
                for gi in 0..g.groups {
                    for o0 in (0..og).step_by(BLOCK) {
                        let ob = (og - o0).min(BLOCK);
                        let o_global = gi * og + o0;
                        let dy_block = (n * g.c_out + o_global) * plane;
                        for c in 0..cg {
                            let x_plane = (n * g.c_in + gi * cg + c) * in_plane;
                            for i in 0..kh {
                                // Output rows y whose input row y + i − ph
                                // lies inside 0..h.
                                let shift = i as isize - ph;
                                let first = (-shift).max(0) as usize;
                                let end = (g.h as isize - shift).clamp(0, g.oh as isize) as usize;
                                // Safety (offsets): inside `acc`, `dy` and
                                // `x` by the geometry (checked by the
                                // caller).
                                let job = Job {
                                    acc: acc
                                        .as_mut_ptr()
                                        .add((o_global * cg + c) * kh * TAPS * L + i * TAPS * L),
                                    acc_stride,
                                    dy: dy.as_ptr().add(dy_block),
                                    plane,
                                    // pw columns before the plane: tap j
                                    // of chunk x0 reads columns
                                    // x0 + j − pw, its lanes outside the
                                    // row masked.
                                    x: x.as_ptr().add(x_plane).wrapping_offset(-pw),
                                    rows: first..end.max(first),
                                    row_shift: shift,
                                };
                                run_block(&job, ob, &chunks, g);
                            }
                        }
                    }
                }
            }

            /// The kernel over `ob` channels from the job's first: blocks
            /// of `BLOCK`, then 4 (where `BLOCK` is larger), 2 and 1.
            ///
            /// # Safety
            /// As `add_image`, for the job's channels and rows.
            #[target_feature(enable = $feature)]
            unsafe fn run_block(job: &Job, ob: usize, chunks: &[Chunk], g: &ConvGeom) {
                let mut done = 0;
                while done < ob {
                    let at = Job {
                        acc: job.acc.wrapping_add(done * job.acc_stride),
                        dy: job.dy.wrapping_add(done * job.plane),
                        rows: job.rows.clone(),
                        ..*job
                    };
                    let left = ob - done;
                    // Safety: channels done.. of the job are the caller's.
                    done += unsafe {
                        if left >= BLOCK {
                            kernel::<BLOCK>(&at, chunks, g);
                            BLOCK
                        } else if left >= 4 && BLOCK > 4 {
                            kernel::<4>(&at, chunks, g);
                            4
                        } else if left >= 2 {
                            kernel::<2>(&at, chunks, g);
                            2
                        } else {
                            kernel::<1>(&at, chunks, g);
                            1
                        }
                    };
                }
            }

            /// `OB` output channels × 3 taps of lane sums, held in
            /// registers over the job's rows.
            ///
            /// # Safety
            /// As `add_image`, for the job's channels and rows.
            #[target_feature(enable = $feature)]
            #[inline]
            unsafe fn kernel<const OB: usize>(job: &Job, chunks: &[Chunk], g: &ConvGeom) {
                // Safety (loads and stores): the job's rows and channels
                // lie inside the buffers, and masked lanes are not read.
                let mut sums = [[$zero; TAPS]; OB];
                for (o, row) in sums.iter_mut().enumerate() {
                    for (j, s) in row.iter_mut().enumerate() {
                        *s = $loadu(job.acc.add(o * job.acc_stride + j * L));
                    }
                }
                for y in job.rows.clone() {
                    let iy = (y as isize + job.row_shift) as usize;
                    let x_row = job.x.wrapping_add(iy * g.w);
                    let dy_row = job.dy.add(y * g.ow);
                    for (k, chunk) in chunks.iter().enumerate() {
                        let x0 = k * L;
                        let x_at = |j: usize| x_row.wrapping_add(x0 + j);
                        let dy_at = |o: usize| dy_row.add(o * job.plane + x0);
                        // Chunks with every lane inside take plain loads
                        // (AVX2's masked load costs an arithmetic slot).
                        if chunk.full {
                            let xs = [$loadu(x_at(0)), $loadu(x_at(1)), $loadu(x_at(2))];
                            for (o, row) in sums.iter_mut().enumerate() {
                                let d = $loadu(dy_at(o));
                                for (s, &xv) in row.iter_mut().zip(&xs) {
                                    *s = $fmadd(xv, d, *s);
                                }
                            }
                        } else {
                            let xs = [
                                $mload(chunk.taps[0], x_at(0)),
                                $mload(chunk.taps[1], x_at(1)),
                                $mload(chunk.taps[2], x_at(2)),
                            ];
                            for (o, row) in sums.iter_mut().enumerate() {
                                let d = $mload(chunk.out, dy_at(o));
                                for (s, &xv) in row.iter_mut().zip(&xs) {
                                    *s = $fmadd(xv, d, *s);
                                }
                            }
                        }
                    }
                }
                for (o, row) in sums.iter().enumerate() {
                    for (j, &s) in row.iter().enumerate() {
                        $storeu(job.acc.add(o * job.acc_stride + j * L), s);
                    }
                }
            }
        }
    };
}

/// AVX-512's masked load with the operands in `lane_kernels!`'s order.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_avx512(mask: __mmask16, p: *const f32) -> __m512 {
    unsafe { _mm512_maskz_loadu_ps(mask, p) }
}

/// A lane bit mask as AVX-512's mask register.
#[inline]
#[target_feature(enable = "avx512f")]
fn mask_avx512(bits: u32) -> __mmask16 {
    bits as __mmask16
}

/// AVX2's masked load (lanes whose mask is clear read as zero).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_avx2(mask: __m256i, p: *const f32) -> __m256 {
    unsafe { _mm256_maskload_ps(p, mask) }
}

lane_kernels!(
    avx512, "avx512f", 16, 8, __mmask16,
    zero: _mm512_setzero_ps(), mask: mask_avx512, masked_load: load_avx512,
    loadu: _mm512_loadu_ps, storeu: _mm512_storeu_ps, fmadd: _mm512_fmadd_ps
);

// Blocks of 3 channels on AVX2: 9 accumulators, 3 input vectors, a `dy`
// vector and a mask fit the 16 ymm registers. Blocks of 4 (12 + 3 + 1)
// left the compiler one register short, and the accumulator it kept on
// the stack made the kernel 1.3–1.9× slower (RGB stem, 16 → 16 at 32²).
lane_kernels!(
    avx2, "avx2,fma", 8, 3, __m256i,
    zero: _mm256_setzero_ps(), mask: lane_mask, masked_load: load_avx2,
    loadu: _mm256_loadu_ps, storeu: _mm256_storeu_ps, fmadd: _mm256_fmadd_ps
);

// Matrix multiplication C = alpha · A·B + beta · C, batched.
//
// Operands are strided matrices: element (i, l) of A (m × k) is at
// `a[i·a_row + l·a_col]`, likewise B (k × n) and C (m × n), and batch item b
// starts `b·a_batch` (b_batch, c_batch) elements further. A transposed
// operand is the same buffer with its two strides swapped, so no transpose
// is ever copied; a batch stride of 0 broadcasts one matrix over the batch.
// When beta is 0, C is only written (never read), so it may hold garbage.
//
// Launch (src/backend/cuda/launch.rs, `sgemm`, `tensor_core_gemm`):
// blockIdx.x walks the tiles of n, blockIdx.y the tiles of m and
// blockIdx.z the batch, each as a grid-stride loop, so a grid clamped in
// any dimension (to the hardware limits, or by the emulator) still covers
// every tile.

struct GemmParams {
    i64 m, n, k;
    i64 batch;
    i64 a_row, a_col;
    i64 b_row, b_col;
    i64 c_row, c_col;
    i64 a_batch, b_batch, c_batch;
    float alpha;
    float beta;
};
static_assert(sizeof(GemmParams) == 112, "GemmParams layout");

// ---------------------------------------------------------------- f32 SGEMM
// Tiled shared-memory SGEMM with register blocking (the classic
// "128×128×8, 8×8 per thread" kernel).
//
// A block of 256 threads computes a 128×128 tile of C. For each step of 8
// along k it stages a 128×8 slice of A (stored transposed, As[k][m]) and an
// 8×128 slice of B (Bs[k][n]) in shared memory, zero-filling out-of-range
// elements, so edge tiles need no special code. Thread (ty, tx) of the
// 16×16 thread grid owns the 8×8 outputs at rows ty + 16·i and columns
// tx + 16·j: in the inner loop a warp reads 16 consecutive Bs entries
// (no bank conflict) and 2 distinct As entries (broadcast), and each thread
// performs 64 FMAs per 16 shared-memory loads. The epilogue writes 16
// consecutive columns per half-warp.

#define SG_BM 128
#define SG_BN 128
#define SG_BK 8
#define SG_THREADS 256

extern "C" __global__ void __launch_bounds__(SG_THREADS)
gemm_fwd_f32(GemmParams p, const float* a, const float* b, float* c) {
    __shared__ float As[SG_BK][SG_BM];
    __shared__ float Bs[SG_BK][SG_BN];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const i64 tiles_m = (p.m + SG_BM - 1) / SG_BM;
    const i64 tiles_n = (p.n + SG_BN - 1) / SG_BN;

    for (i64 batch = blockIdx.z; batch < p.batch; batch += gridDim.z) {
        const float* A = a + batch * p.a_batch;
        const float* B = b + batch * p.b_batch;
        float* C = c + batch * p.c_batch;
        for (i64 tile_m = blockIdx.y; tile_m < tiles_m; tile_m += gridDim.y) {
            for (i64 tile_n = blockIdx.x; tile_n < tiles_n; tile_n += gridDim.x) {
                const i64 row0 = tile_m * SG_BM;
                const i64 col0 = tile_n * SG_BN;
                float acc[8][8];
                #pragma unroll
                for (int i = 0; i < 8; ++i)
                    #pragma unroll
                    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

                for (i64 k0 = 0; k0 < p.k; k0 += SG_BK) {
                    // Stage A[row0.., k0..] transposed and B[k0.., col0..].
                    for (int l = tid; l < SG_BM * SG_BK; l += SG_THREADS) {
                        int r = l / SG_BK, kk = l % SG_BK;
                        i64 gi = row0 + r, gk = k0 + kk;
                        As[kk][r] = (gi < p.m && gk < p.k) ? A[gi * p.a_row + gk * p.a_col] : 0.0f;
                    }
                    for (int l = tid; l < SG_BK * SG_BN; l += SG_THREADS) {
                        int kk = l / SG_BN, cc = l % SG_BN;
                        i64 gk = k0 + kk, gj = col0 + cc;
                        Bs[kk][cc] = (gk < p.k && gj < p.n) ? B[gk * p.b_row + gj * p.b_col] : 0.0f;
                    }
                    __syncthreads();
                    #pragma unroll
                    for (int kk = 0; kk < SG_BK; ++kk) {
                        float ra[8], rb[8];
                        #pragma unroll
                        for (int i = 0; i < 8; ++i) ra[i] = As[kk][ty + 16 * i];
                        #pragma unroll
                        for (int j = 0; j < 8; ++j) rb[j] = Bs[kk][tx + 16 * j];
                        #pragma unroll
                        for (int i = 0; i < 8; ++i)
                            #pragma unroll
                            for (int j = 0; j < 8; ++j) acc[i][j] += ra[i] * rb[j];
                    }
                    __syncthreads();
                }

                #pragma unroll
                for (int i = 0; i < 8; ++i) {
                    i64 gi = row0 + ty + 16 * i;
                    if (gi >= p.m) continue;
                    #pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        i64 gj = col0 + tx + 16 * j;
                        if (gj >= p.n) continue;
                        float* out = C + gi * p.c_row + gj * p.c_col;
                        float v = p.alpha * acc[i][j];
                        if (p.beta != 0.0f) v += p.beta * *out;
                        *out = v;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- bf16 / f16 tensor cores
// Half-precision GEMM on tensor cores with f32 accumulation, through the PTX
// instruction `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}` (sm_80+).
// The output is written in the input type, or in f32 (`gemm_fwd_bf16_to_f32`,
// mixed precision); only the epilogue differs.
//
// A block of 128 threads (4 warps, 2×2) computes a 64×64 tile of C; each
// warp owns a 32×32 sub-tile, i.e. 2×4 mma tiles of 16×8, and keeps their
// 32 f32 accumulators in registers. For each step of 32 along k the block
// stages A[64][32] and B transposed, Bt[64 n][32 k], in shared memory (raw
// 16-bit values, out-of-range ones zero), rows padded to 40 elements so
// that rows start on different banks. With k contiguous in both staged
// tiles, every fragment register (two consecutive k values) is one aligned
// 32-bit shared-memory load.
//
// Fragment layout of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"),
// with g = lane / 4 and t = lane % 4:
//   A (16×16, row-major): a0 = A[g][2t..2t+1],   a1 = A[g+8][2t..2t+1],
//                         a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]
//   B (16×8, "col"):      b0 = B[2t..2t+1][g],   b1 = B[2t+8..2t+9][g]
//   C (16×8, f32):        c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
// (the lower k index in the lower 16 bits of each register).

#define TC_BM 64
#define TC_BN 64
#define TC_BK 32
#define TC_PAD 8
#define TC_THREADS 128

// The 32-bit word holding elements (r, k) and (r, k + 1) of a staged tile.
__device__ __forceinline__ u32 pair_at(const unsigned short (*tile)[TC_BK + TC_PAD], int r, int k) {
    FERRITE_CHECK_ALIGNED(&tile[r][k], 4);
    return *reinterpret_cast<const u32*>(&tile[r][k]);
}

// D = A·B + D for one 16×8×16 tile; `BF16` selects bf16 or f16 inputs.
template <bool BF16>
__device__ __forceinline__ void mma_16x8x16(float d[4], const u32 a[4], const u32 b[2]) {
#if defined(FERRITE_EMULATOR)
    // The emulated GPU computes the instruction from the fragment layout above.
    ::ferrite_emu::mma_m16n8k16(d, a, b, BF16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (BF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
#else
    // Tensor-core mma of this shape needs sm_80; the host refuses to launch
    // these kernels on older GPUs, so reaching this is a bug.
    __trap();
#endif
}

// The tensor-core GEMM: inputs of type T (bf16 when BF16, else f16), f32
// accumulators, and an output of type TOut (T itself, or f32 for a
// mixed-precision product whose output keeps the accumulators' precision).
template <typename T, typename TOut, bool BF16>
__device__ __forceinline__ void gemm_tensor_core(const GemmParams& p, const T* a, const T* b, TOut* c) {
    __shared__ __align__(16) unsigned short As[TC_BM][TC_BK + TC_PAD];
    __shared__ __align__(16) unsigned short Bt[TC_BN][TC_BK + TC_PAD];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int warp_m = (warp >> 1) * 32, warp_n = (warp & 1) * 32;
    const i64 tiles_m = (p.m + TC_BM - 1) / TC_BM;
    const i64 tiles_n = (p.n + TC_BN - 1) / TC_BN;

    for (i64 batch = blockIdx.z; batch < p.batch; batch += gridDim.z) {
        const T* A = a + batch * p.a_batch;
        const T* B = b + batch * p.b_batch;
        TOut* C = c + batch * p.c_batch;
        for (i64 tile_m = blockIdx.y; tile_m < tiles_m; tile_m += gridDim.y) {
            for (i64 tile_n = blockIdx.x; tile_n < tiles_n; tile_n += gridDim.x) {
                const i64 row0 = tile_m * TC_BM;
                const i64 col0 = tile_n * TC_BN;
                float acc[2][4][4];
                #pragma unroll
                for (int i = 0; i < 2; ++i)
                    #pragma unroll
                    for (int j = 0; j < 4; ++j)
                        #pragma unroll
                        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

                for (i64 k0 = 0; k0 < p.k; k0 += TC_BK) {
                    for (int l = tid; l < TC_BM * TC_BK; l += TC_THREADS) {
                        int r = l / TC_BK, kk = l % TC_BK;
                        i64 gi = row0 + r, gk = k0 + kk;
                        As[r][kk] = (gi < p.m && gk < p.k) ? A[gi * p.a_row + gk * p.a_col].bits : 0;
                    }
                    for (int l = tid; l < TC_BN * TC_BK; l += TC_THREADS) {
                        int cc = l % TC_BN, kk = l / TC_BN;
                        i64 gj = col0 + cc, gk = k0 + kk;
                        Bt[cc][kk] = (gk < p.k && gj < p.n) ? B[gk * p.b_row + gj * p.b_col].bits : 0;
                    }
                    __syncthreads();
                    #pragma unroll
                    for (int ks = 0; ks < TC_BK; ks += 16) {
                        u32 fa[2][4], fb[4][2];
                        #pragma unroll
                        for (int i = 0; i < 2; ++i) {
                            int r = warp_m + 16 * i;
                            fa[i][0] = pair_at(As, r + g, ks + 2 * t);
                            fa[i][1] = pair_at(As, r + g + 8, ks + 2 * t);
                            fa[i][2] = pair_at(As, r + g, ks + 2 * t + 8);
                            fa[i][3] = pair_at(As, r + g + 8, ks + 2 * t + 8);
                        }
                        #pragma unroll
                        for (int j = 0; j < 4; ++j) {
                            int cn = warp_n + 8 * j;
                            fb[j][0] = pair_at(Bt, cn + g, ks + 2 * t);
                            fb[j][1] = pair_at(Bt, cn + g, ks + 2 * t + 8);
                        }
                        #pragma unroll
                        for (int i = 0; i < 2; ++i)
                            #pragma unroll
                            for (int j = 0; j < 4; ++j) mma_16x8x16<BF16>(acc[i][j], fa[i], fb[j]);
                    }
                    __syncthreads();
                }

                #pragma unroll
                for (int i = 0; i < 2; ++i) {
                    #pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        #pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            i64 gi = row0 + warp_m + 16 * i + g + (e >= 2 ? 8 : 0);
                            i64 gj = col0 + warp_n + 8 * j + 2 * t + (e & 1);
                            if (gi >= p.m || gj >= p.n) continue;
                            TOut* out = C + gi * p.c_row + gj * p.c_col;
                            float v = p.alpha * acc[i][j][e];
                            if (p.beta != 0.0f) v += p.beta * to_f32(*out);
                            *out = from_f32<TOut>(v);
                        }
                    }
                }
            }
        }
    }
}

// C = alpha·A·B + beta·C in bf16: bf16 operands, f32 accumulation, the
// result rounded to bf16 once.
extern "C" __global__ void __launch_bounds__(TC_THREADS)
gemm_fwd_bf16(GemmParams p, const bf16* a, const bf16* b, bf16* c) {
    gemm_tensor_core<bf16, bf16, true>(p, a, b, c);
}

// The same in f16.
extern "C" __global__ void __launch_bounds__(TC_THREADS)
gemm_fwd_f16(GemmParams p, const f16* a, const f16* b, f16* c) {
    gemm_tensor_core<f16, f16, false>(p, a, b, c);
}

// The mixed-precision product: bf16 operands, f32 accumulation and an f32
// C (never rounded to bf16). Matmul and conv2d of f32 tensors under bf16
// autocast run here on bf16 copies of their operands.
extern "C" __global__ void __launch_bounds__(TC_THREADS)
gemm_fwd_bf16_to_f32(GemmParams p, const bf16* a, const bf16* b, float* c) {
    gemm_tensor_core<bf16, float, true>(p, a, b, c);
}

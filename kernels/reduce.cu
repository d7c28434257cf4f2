// Reductions: sum / mean / max / logsumexp / argmax over the last dim,
// softmax and log-softmax over the last dim (forward and backward), and
// sum / mean / max over arbitrary dims through a strided layout.
//
// Row kernels (`*_fwd_f32` on RowParams) see the input as `rows × cols`,
// row r starting at `r · row_stride`, elements of a row contiguous.
// Launch: one block per row (32 to 1024 threads, a multiple of 32), the grid
// strided over rows (src/backend/cuda/launch.rs, `rows`). Threads of a block
// read the row with a block-sized stride, so a warp reads 32 consecutive
// floats (coalesced); each thread accumulates its share in a register, then
// the block combines the partials with warp shuffles and one shared-memory
// exchange (block_sum / block_max in common.cuh). All arithmetic is f32.

struct RowParams {
    i64 rows;
    i64 cols;
    i64 row_stride;   // elements between the starts of consecutive input rows
};
static_assert(sizeof(RowParams) == 24, "RowParams layout");

// Sum / mean / max of each row; out[r] is one value. An empty row gives 0
// (sum), NaN (mean, 0/0) and -inf (max); the tensor layer rejects the
// latter two before launching.
// Sums accumulate in f64 and round once, as the CPU combines its partial
// sums in f64: both devices then agree to the last bit on most rows.
extern "C" __global__ void sum_fwd_f32(RowParams p, const float* x, float* out) {
    __shared__ double scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* row = x + r * p.row_stride;
        double acc = 0.0;
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) acc += (double)row[j];
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) out[r] = (float)acc;
    }
}

extern "C" __global__ void mean_fwd_f32(RowParams p, const float* x, float* out) {
    __shared__ double scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* row = x + r * p.row_stride;
        double acc = 0.0;
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) acc += (double)row[j];
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) out[r] = (float)(acc / (double)p.cols);
    }
}

// Max propagates NaN, like the CPU kernel.
extern "C" __global__ void max_fwd_f32(RowParams p, const float* x, float* out) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* row = x + r * p.row_stride;
        float acc = neg_inf();
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) acc = nan_max(acc, row[j]);
        acc = block_max(acc, scratch);
        if (threadIdx.x == 0) out[r] = acc;
    }
}

// log Σ exp(x) = m + log Σ exp(x − m) with m the row max (no overflow).
// An all −∞ row gives −∞ (not NaN); a +∞ or NaN entry gives +∞ or NaN.
extern "C" __global__ void logsumexp_fwd_f32(RowParams p, const float* x, float* out) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* row = x + r * p.row_stride;
        float m = neg_inf();
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) m = nan_max(m, row[j]);
        m = block_max(m, scratch);
        bool finite_max = isfinite(m);
        float s = 0.0f;
        if (finite_max) {
            for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) s += expf(row[j] - m);
        }
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) out[r] = finite_max ? m + logf(s) : m;
    }
}

// ---------------------------------------------------------------- argmax
// Index (i64) of the largest element of each row: the first one on ties, and
// the first NaN if there is one (the CPU rule). Each thread scans its
// elements in increasing order; candidates (value, index) are then combined
// pairwise with the same rule, by shuffles and through shared memory.

struct ArgBest {
    float v;
    i64 i;
};

__device__ __forceinline__ ArgBest arg_better(ArgBest a, ArgBest b) {
    bool a_nan = a.v != a.v, b_nan = b.v != b.v;
    if (a_nan != b_nan) return a_nan ? a : b;
    if (a_nan || a.v == b.v) return a.i < b.i ? a : b;
    return a.v > b.v ? a : b;
}

__device__ __forceinline__ ArgBest warp_argmax(ArgBest c) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        ArgBest o;
        o.v = __shfl_xor_sync(0xffffffffu, c.v, offset);
        o.i = __shfl_xor_sync(0xffffffffu, c.i, offset);
        c = arg_better(c, o);
    }
    return c;
}

extern "C" __global__ void argmax_fwd_f32(RowParams p, const float* x, i64* out) {
    __shared__ float best_v[32];
    __shared__ i64 best_i[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* row = x + r * p.row_stride;
        ArgBest c;
        c.v = neg_inf();
        c.i = 0x7fffffffffffffffLL;  // loses every tie: any element beats it
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) {
            ArgBest e;
            e.v = row[j];
            e.i = j;
            c = arg_better(c, e);
        }
        c = warp_argmax(c);
        if (lane == 0) {
            best_v[warp] = c.v;
            best_i[warp] = c.i;
        }
        __syncthreads();
        if (warp == 0) {
            c.v = lane < warps ? best_v[lane] : neg_inf();
            c.i = lane < warps ? best_i[lane] : 0x7fffffffffffffffLL;
            c = warp_argmax(c);
            if (lane == 0) out[r] = c.i;
        }
        __syncthreads();
    }
}

// ---------------------------------------------------------------- softmax
// y = exp(x − m) / Σ exp(x − m) over each row (m the row max), and
// log_softmax y = x − m − log Σ exp(x − m). Three passes over the row:
// max, sum, write (rows are re-read from L2/L1; the simple form is kept for
// clarity). Output rows are contiguous (`rows × cols`).

// The maximum m of a row and Σ exp(x − m) over it, both reduced over the
// block (every thread gets them): the first two passes of (log-)softmax.
__device__ void row_max_sum_exp(const float* row, i64 cols, float* scratch, float* m_out, float* s_out) {
    float m = neg_inf();
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) m = nan_max(m, row[j]);
    m = block_max(m, scratch);
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += expf(row[j] - m);
    *m_out = m;
    *s_out = block_sum(s, scratch);
}

extern "C" __global__ void softmax_fwd_f32(RowParams p, const float* x, float* y) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* row = x + r * p.row_stride;
        float m, s;
        row_max_sum_exp(row, p.cols, scratch, &m, &s);
        float inv = 1.0f / s;
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) {
            y[r * p.cols + j] = expf(row[j] - m) * inv;
        }
    }
}

extern "C" __global__ void log_softmax_fwd_f32(RowParams p, const float* x, float* y) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* row = x + r * p.row_stride;
        float m, s;
        row_max_sum_exp(row, p.cols, scratch, &m, &s);
        // (x - max) - log(sum), not x - (max + log(sum)): at large logits
        // the rounding of max + log(sum) would swamp log(sum).
        float log_sum = logf(s);
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) {
            y[r * p.cols + j] = (row[j] - m) - log_sum;
        }
    }
}

// Backward, from the saved output y and the upstream gradient dy (both
// contiguous `rows × cols`, so `row_stride` is ignored):
// softmax: dx = y · (dy − Σ dy·y); log_softmax: dx = dy − exp(y) · Σ dy.
extern "C" __global__ void softmax_bwd_f32(RowParams p, const float* y, const float* dy,
                                           float* dx) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        i64 base = r * p.cols;
        float dot = 0.0f;
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) dot += dy[base + j] * y[base + j];
        dot = block_sum(dot, scratch);
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) {
            dx[base + j] = y[base + j] * (dy[base + j] - dot);
        }
    }
}

extern "C" __global__ void log_softmax_bwd_f32(RowParams p, const float* y, const float* dy,
                                               float* dx) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {
        i64 base = r * p.cols;
        float total = 0.0f;
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) total += dy[base + j];
        total = block_sum(total, scratch);
        for (i64 j = threadIdx.x; j < p.cols; j += blockDim.x) {
            dx[base + j] = dy[base + j] - expf(y[base + j]) * total;
        }
    }
}

// ---------------------------------------------------------------- strided
// Reduction over any set of dims of any strided view. The kept dims
// (`out_shape`, `out_strides`) index the contiguous output; the reduced dims
// (`red_shape`, `red_strides`) are walked by each thread with an odometer
// (no division per element). Launch: one thread per output element,
// grid-stride (`elementwise` in launch.rs). When the innermost kept dim is
// contiguous in the input (reducing dim 0 or a middle dim of a contiguous
// tensor), neighbouring threads read neighbouring addresses at every step.

struct StridedReduceParams {
    i64 out_numel;
    i64 red_numel;
    i64 offset;
    i64 out_shape[FERRITE_MAX_DIMS];
    i64 out_strides[FERRITE_MAX_DIMS];
    i64 red_shape[FERRITE_MAX_DIMS];
    i64 red_strides[FERRITE_MAX_DIMS];
    int out_ndim;
    int red_ndim;
};
static_assert(sizeof(StridedReduceParams) == 288, "StridedReduceParams layout");

// Offset of the first reduced element of output element `o`.
__device__ __forceinline__ i64 kept_offset(const StridedReduceParams& p, i64 o) {
    i64 off = p.offset;
    for (int d = p.out_ndim - 1; d >= 0; --d) {
        off += (o % p.out_shape[d]) * p.out_strides[d];
        o /= p.out_shape[d];
    }
    return off;
}

// Calls `visit(x[base + offset])` for every reduced element, in row-major
// order of the reduced dims.
template <typename F>
__device__ __forceinline__ void for_each_reduced(const StridedReduceParams& p, const float* x,
                                                 i64 base, F visit) {
    i64 coord[FERRITE_MAX_DIMS];
    for (int d = 0; d < p.red_ndim; ++d) coord[d] = 0;
    i64 off = base;
    for (i64 k = 0; k < p.red_numel; ++k) {
        visit(x[off]);
        // Advance the odometer: bump the last dim, carrying into earlier ones.
        for (int d = p.red_ndim - 1; d >= 0; --d) {
            off += p.red_strides[d];
            if (++coord[d] < p.red_shape[d]) break;
            off -= coord[d] * p.red_strides[d];
            coord[d] = 0;
        }
    }
}

extern "C" __global__ void sum_strided_fwd_f32(StridedReduceParams p, const float* x, float* out) {
    for (i64 o = grid_first(); o < p.out_numel; o += grid_stride()) {
        double acc = 0.0;
        for_each_reduced(p, x, kept_offset(p, o), [&](float v) { acc += (double)v; });
        out[o] = (float)acc;
    }
}

extern "C" __global__ void mean_strided_fwd_f32(StridedReduceParams p, const float* x, float* out) {
    for (i64 o = grid_first(); o < p.out_numel; o += grid_stride()) {
        double acc = 0.0;
        for_each_reduced(p, x, kept_offset(p, o), [&](float v) { acc += (double)v; });
        out[o] = (float)(acc / (double)p.red_numel);
    }
}

extern "C" __global__ void max_strided_fwd_f32(StridedReduceParams p, const float* x, float* out) {
    for (i64 o = grid_first(); o < p.out_numel; o += grid_stride()) {
        float acc = neg_inf();
        for_each_reduced(p, x, kept_offset(p, o), [&](float v) { acc = nan_max(acc, v); });
        out[o] = acc;
    }
}

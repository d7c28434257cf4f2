// im2col and its adjoint col2im for 2-D convolution on NCHW images, with the
// batch folded into the GEMM.
//
// A convolution is one GEMM `W[O, C·KH·KW] · col[C·KH·KW, N·OH·OW]` for the
// whole batch: col holds, for every output position of every image, the
// input patch it sees (zeros for padding), so the GEMM's N dimension is
// N·OH·OW (wide tiles even where OH·OW is 4×4) instead of one GEMM per
// image. With groups, group g uses the row block g of col and of W. im2col
// builds col; col2im (the backward of im2col) adds the columns back onto the
// image, which gives the input gradient from `Wᵀ · dY`.
//
// Layout: x is `N × C × H × W` contiguous; col is `(C·KH·KW) × (N·OH·OW)`
// row-major, rows ordered (c, ky, kx) like the weight's flattened dims,
// columns ordered (image, oy, ox).
// Launch: 1-D grid-stride (`elementwise` in launch.rs) over the elements of
// the tensor written: col for im2col, x for col2im.
// Types: x and the gradients are f32; col is f32 or, for the bf16
// mixed-precision GEMMs, bf16 (`im2col_fwd_f32_to_bf16`). col2im reads f32.
//
// Index decomposition: the flat index is split into its coordinates with
// 32-bit divisions when every extent fits (`p.small`, the common case; a
// 64-bit division costs several times a 32-bit one on the GPU), 64-bit ones
// otherwise.

struct Im2colParams {
    i64 n, c, h, w;
    i64 kh, kw;
    i64 oh, ow;
    i64 stride_h, stride_w;
    i64 pad_h, pad_w;
    i64 dil_h, dil_w;
    i64 small;  // 1 when col and x have fewer than 2^31 elements
};
static_assert(sizeof(Im2colParams) == 120, "Im2colParams layout");

// (row, image, oy, ox) of col element i.
template <typename I>
__device__ __forceinline__ void col_coords(const Im2colParams& p, I i, I* row, I* img, I* oy, I* ox) {
    const I ow = (I)p.ow, oh = (I)p.oh, n = (I)p.n;
    I q = i / ow;
    *ox = i - q * ow;
    I q2 = q / oh;
    *oy = q - q2 * oh;
    I q3 = q2 / n;
    *img = q2 - q3 * n;
    *row = q3;
}

// One thread per col element: reads the input pixel
// (oy·sh − ph + ky·dh, ox·sw − pw + kx·dw) of its image, or 0 outside it.
// Consecutive threads write consecutive ox (coalesced).
template <typename I>
__device__ __forceinline__ float im2col_value(const Im2colParams& p, const float* x, I i) {
    I row, img, oy, ox;
    col_coords<I>(p, i, &row, &img, &oy, &ox);
    const I kw = (I)p.kw, kh = (I)p.kh;
    I r1 = row / kw;
    I kx = row - r1 * kw;
    I ch = r1 / kh;
    I ky = r1 - ch * kh;
    i64 iy = (i64)oy * p.stride_h - p.pad_h + (i64)ky * p.dil_h;
    i64 ix = (i64)ox * p.stride_w - p.pad_w + (i64)kx * p.dil_w;
    bool inside = iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
    return inside ? x[(((i64)img * p.c + ch) * p.h + iy) * p.w + ix] : 0.0f;
}

// Writes the whole column buffer from the f32 input, each value stored as T.
template <typename T>
__device__ __forceinline__ void im2col(const Im2colParams& p, const float* x, T* col) {
    const i64 total = p.c * p.kh * p.kw * p.n * p.oh * p.ow;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        float v = p.small ? im2col_value<u32>(p, x, (u32)i) : im2col_value<i64>(p, x, i);
        col[i] = from_f32<T>(v);
    }
}

// im2col of an f32 input into an f32 column buffer.
extern "C" __global__ void im2col_fwd_f32(Im2colParams p, const float* x, float* col) {
    im2col<float>(p, x, col);
}

// im2col of an f32 input into a bf16 column buffer (each value rounded to
// nearest, ties to even): the operand of the mixed-precision tensor-core
// GEMM, made without an f32 column buffer or a separate cast pass.
extern "C" __global__ void im2col_fwd_f32_to_bf16(Im2colParams p, const float* x, bf16* col) {
    im2col<bf16>(p, x, col);
}

// The backward of im2col (col2im): one thread per input pixel gathers every
// col entry that copied it, i.e. every (ky, kx) whose output position
// oy = (iy + ph − ky·dh) / sh (likewise ox) is a whole number inside the
// output. Gathering instead of scattering needs no atomics and sums in a
// fixed order, so the result is deterministic. Overwrites dx.
template <typename I>
__device__ __forceinline__ float col2im_value(const Im2colParams& p, const float* col, I i) {
    const I w = (I)p.w, h = (I)p.h, c = (I)p.c;
    I q = i / w;
    I ix = i - q * w;
    I q2 = q / h;
    I iy = q - q2 * h;
    I img = q2 / c;
    I ch = q2 - img * c;
    const i64 cols = p.n * p.oh * p.ow;
    float acc = 0.0f;
    for (i64 ky = 0; ky < p.kh; ++ky) {
        i64 ty = (i64)iy + p.pad_h - ky * p.dil_h;
        if (ty < 0 || ty % p.stride_h != 0) continue;
        i64 oy = ty / p.stride_h;
        if (oy >= p.oh) continue;
        for (i64 kx = 0; kx < p.kw; ++kx) {
            i64 tx = (i64)ix + p.pad_w - kx * p.dil_w;
            if (tx < 0 || tx % p.stride_w != 0) continue;
            i64 ox = tx / p.stride_w;
            if (ox >= p.ow) continue;
            i64 row = ((i64)ch * p.kh + ky) * p.kw + kx;
            acc += col[row * cols + ((i64)img * p.oh + oy) * p.ow + ox];
        }
    }
    return acc;
}

// col2im of an f32 column buffer (the input gradient; the mixed-precision
// GEMM writes that buffer in f32, so the sums stay f32 too).
extern "C" __global__ void im2col_bwd_f32(Im2colParams p, const float* col, float* dx) {
    const i64 total = p.n * p.c * p.h * p.w;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        dx[i] = p.small ? col2im_value<u32>(p, col, (u32)i) : col2im_value<i64>(p, col, i);
    }
}

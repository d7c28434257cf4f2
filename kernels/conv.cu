// im2col and its adjoint col2im for 2-D convolution on NCHW images.
//
// A convolution is `W[O, C·KH·KW] · col[C·KH·KW, OH·OW]` per image, where
// col holds, for every output position, the input patch it sees (zeros for
// padding). im2col builds col; col2im (the backward of im2col) adds the
// columns back onto the image, which gives the input gradient from
// `Wᵀ · dy`. The GEMMs are gemm.cu's.
//
// Layout: x is `n × C × H × W` contiguous; col is `n × (C·KH·KW) × (OH·OW)`
// contiguous, rows ordered (c, ky, kx) like the weight's flattened dims.
// Launch: 1-D grid-stride (`elementwise` in launch.rs) over the elements of
// the tensor written: col for im2col, x for col2im.

struct Im2colParams {
    i64 n, c, h, w;
    i64 kh, kw;
    i64 oh, ow;
    i64 stride_h, stride_w;
    i64 pad_h, pad_w;
    i64 dil_h, dil_w;
};
static_assert(sizeof(Im2colParams) == 112, "Im2colParams layout");

// One thread per col element (image, c, ky, kx, oy, ox): reads the input
// pixel (oy·sh − ph + ky·dh, ox·sw − pw + kx·dw), or 0 outside the image.
// Consecutive threads write consecutive ox (coalesced) and read pixels
// `stride_w` apart.
extern "C" __global__ void im2col_fwd_f32(Im2colParams p, const float* x, float* col) {
    const i64 spatial = p.oh * p.ow;
    const i64 rows = p.c * p.kh * p.kw;
    const i64 total = p.n * rows * spatial;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 ox = i % p.ow;
        i64 oy = (i / p.ow) % p.oh;
        i64 row = (i / spatial) % rows;
        i64 img = i / (spatial * rows);
        i64 kx = row % p.kw;
        i64 ky = (row / p.kw) % p.kh;
        i64 ch = row / (p.kw * p.kh);
        i64 iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
        i64 ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
        bool inside = iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
        col[i] = inside ? x[((img * p.c + ch) * p.h + iy) * p.w + ix] : 0.0f;
    }
}

// The backward of im2col (col2im): one thread per input pixel gathers every
// col entry that copied it, i.e. every (ky, kx) whose output position
// oy = (iy + ph − ky·dh) / sh (likewise ox) is a whole number inside the
// output. Gathering instead of scattering needs no atomics and sums in a
// fixed order, so the result is deterministic. Overwrites dx.
extern "C" __global__ void im2col_bwd_f32(Im2colParams p, const float* col, float* dx) {
    const i64 spatial = p.oh * p.ow;
    const i64 rows = p.c * p.kh * p.kw;
    const i64 total = p.n * p.c * p.h * p.w;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 ix = i % p.w;
        i64 iy = (i / p.w) % p.h;
        i64 ch = (i / (p.w * p.h)) % p.c;
        i64 img = i / (p.w * p.h * p.c);
        const float* col_img = col + img * rows * spatial;
        float acc = 0.0f;
        for (i64 ky = 0; ky < p.kh; ++ky) {
            i64 ty = iy + p.pad_h - ky * p.dil_h;
            if (ty < 0 || ty % p.stride_h != 0) continue;
            i64 oy = ty / p.stride_h;
            if (oy >= p.oh) continue;
            for (i64 kx = 0; kx < p.kw; ++kx) {
                i64 tx = ix + p.pad_w - kx * p.dil_w;
                if (tx < 0 || tx % p.stride_w != 0) continue;
                i64 ox = tx / p.stride_w;
                if (ox >= p.ow) continue;
                i64 row = (ch * p.kh + ky) * p.kw + kx;
                acc += col_img[row * spatial + oy * p.ow + ox];
            }
        }
        dx[i] = acc;
    }
}

// 2-D pooling on contiguous `planes × H × W` buffers (planes = N·C):
// max (with argmax indices), average and adaptive average, forward and
// backward.
//
// Windows follow the CPU kernels (src/ops/pool/cpu.rs) exactly: output o
// along an axis covers the padded coordinates [o·stride − pad,
// o·stride − pad + kernel), clamped to the input [0, in) for reading and to
// the padded extent [−pad, in + pad) for average pooling's
// count_include_pad divisor. Adaptive windows are
// [⌊o·in/out⌋, ⌈(o+1)·in/out⌉).
//
// Launch: 1-D grid-stride (`elementwise` in launch.rs), one thread per
// output element for the forwards and one per input element for the
// backwards. A backward thread gathers from the outputs whose window
// contains its input, in increasing output order, so it needs no atomics,
// is deterministic, and adds in the same order as the CPU kernels.

struct Pool2dParams {
    i64 planes;
    i64 h, w;
    i64 oh, ow;
    i64 kh, kw;
    i64 stride_h, stride_w;
    i64 pad_h, pad_w;
    int count_include_pad;
    int _unused;
};
static_assert(sizeof(Pool2dParams) == 96, "Pool2dParams layout");

// The input range [lo, hi) read by output o along one axis, and the window
// length clamped to the padded extent (average pooling's divisor).
struct Span {
    i64 lo, hi, padded_len;
};

// a / b for a ≥ 0, b > 0 (32-bit when both fit; see divmod).
__device__ __forceinline__ i64 quot(i64 a, i64 b) {
    i64 q, r;
    divmod(a, b, &q, &r);
    return q;
}

__device__ __forceinline__ Span pool_span(i64 o, i64 in, i64 kernel, i64 stride, i64 pad) {
    i64 start = o * stride - pad;
    i64 end_padded = min(start + kernel, in + pad);
    Span s;
    s.lo = max(start, (i64)0);
    s.hi = max(min(end_padded, in), s.lo);
    s.padded_len = max(end_padded - start, (i64)0);
    return s;
}

__device__ __forceinline__ Span adaptive_span(i64 o, i64 in, i64 out) {
    Span s;
    s.lo = quot(o * in, out);
    s.hi = quot((o + 1) * in + out - 1, out);
    s.padded_len = s.hi - s.lo;
    return s;
}

// The outputs [first, last] along one axis whose window may contain input
// coordinate i (window start o·stride − pad ≤ i < start + kernel), clamped
// to [0, out − 1]; empty when first > last.
__device__ __forceinline__ void windows_containing(i64 i, i64 out, i64 kernel, i64 stride,
                                                   i64 pad, i64* first, i64* last) {
    i64 lowest = i + pad - kernel + 1;  // o·stride ≥ lowest
    *first = lowest <= 0 ? 0 : quot(lowest + stride - 1, stride);
    *last = min(quot(i + pad, stride), out - 1);
}

// ---------------------------------------------------------------- max
// Scans the window row by row; a value replaces the running maximum when it
// is greater or NaN (ties keep the first maximum; padding acts as −∞). The
// index is the flat position iy·W + ix within the plane.
extern "C" __global__ void max_pool2d_fwd_f32(Pool2dParams p, const float* x, float* y, i64* idx) {
    const i64 total = p.planes * p.oh * p.ow;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, ox, oy, plane;
        divmod(i, p.ow, &row, &ox);
        divmod(row, p.oh, &plane, &oy);
        Span r = pool_span(oy, p.h, p.kh, p.stride_h, p.pad_h);
        Span c = pool_span(ox, p.w, p.kw, p.stride_w, p.pad_w);
        const float* in = x + plane * p.h * p.w;
        float best = neg_inf();
        i64 at = r.lo * p.w + c.lo;
        for (i64 iy = r.lo; iy < r.hi; ++iy) {
            for (i64 ix = c.lo; ix < c.hi; ++ix) {
                float v = in[iy * p.w + ix];
                if (v > best || v != v) {
                    best = v;
                    at = iy * p.w + ix;
                }
            }
        }
        y[i] = best;
        idx[i] = at;
    }
}

// dx[input] = Σ dy[o] over the outputs o whose saved index is this input.
extern "C" __global__ void max_pool2d_bwd_f32(Pool2dParams p, const float* dy, const i64* idx,
                                              float* dx) {
    const i64 total = p.planes * p.h * p.w;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, ix, iy, plane;
        divmod(i, p.w, &row, &ix);
        divmod(row, p.h, &plane, &iy);
        i64 oy0, oy1, ox0, ox1;
        windows_containing(iy, p.oh, p.kh, p.stride_h, p.pad_h, &oy0, &oy1);
        windows_containing(ix, p.ow, p.kw, p.stride_w, p.pad_w, &ox0, &ox1);
        const i64 me = iy * p.w + ix;
        const i64 base = plane * p.oh * p.ow;
        float acc = 0.0f;
        for (i64 oy = oy0; oy <= oy1; ++oy) {
            for (i64 ox = ox0; ox <= ox1; ++ox) {
                i64 o = base + oy * p.ow + ox;
                if (idx[o] == me) acc += dy[o];
            }
        }
        dx[i] = acc;
    }
}

// ---------------------------------------------------------------- average
// Divisor: the padded window area with count_include_pad, else the number
// of inputs read. A window that reads nothing gives 0.
__device__ __forceinline__ i64 avg_divisor(const Pool2dParams& p, Span r, Span c) {
    return p.count_include_pad ? r.padded_len * c.padded_len : (r.hi - r.lo) * (c.hi - c.lo);
}

extern "C" __global__ void avg_pool2d_fwd_f32(Pool2dParams p, const float* x, float* y) {
    const i64 total = p.planes * p.oh * p.ow;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, ox, oy, plane;
        divmod(i, p.ow, &row, &ox);
        divmod(row, p.oh, &plane, &oy);
        Span r = pool_span(oy, p.h, p.kh, p.stride_h, p.pad_h);
        Span c = pool_span(ox, p.w, p.kw, p.stride_w, p.pad_w);
        if (r.hi <= r.lo || c.hi <= c.lo) {
            y[i] = 0.0f;
            continue;
        }
        const float* in = x + plane * p.h * p.w;
        float sum = 0.0f;
        for (i64 iy = r.lo; iy < r.hi; ++iy)
            for (i64 ix = c.lo; ix < c.hi; ++ix) sum += in[iy * p.w + ix];
        y[i] = sum / (float)avg_divisor(p, r, c);
    }
}

extern "C" __global__ void avg_pool2d_bwd_f32(Pool2dParams p, const float* dy, float* dx) {
    const i64 total = p.planes * p.h * p.w;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, ix, iy, plane;
        divmod(i, p.w, &row, &ix);
        divmod(row, p.h, &plane, &iy);
        i64 oy0, oy1, ox0, ox1;
        windows_containing(iy, p.oh, p.kh, p.stride_h, p.pad_h, &oy0, &oy1);
        windows_containing(ix, p.ow, p.kw, p.stride_w, p.pad_w, &ox0, &ox1);
        const float* g = dy + plane * p.oh * p.ow;
        float acc = 0.0f;
        for (i64 oy = oy0; oy <= oy1; ++oy) {
            Span r = pool_span(oy, p.h, p.kh, p.stride_h, p.pad_h);
            if (iy < r.lo || iy >= r.hi) continue;
            for (i64 ox = ox0; ox <= ox1; ++ox) {
                Span c = pool_span(ox, p.w, p.kw, p.stride_w, p.pad_w);
                if (ix < c.lo || ix >= c.hi) continue;
                acc += g[oy * p.ow + ox] / (float)avg_divisor(p, r, c);
            }
        }
        dx[i] = acc;
    }
}

// ---------------------------------------------------------------- adaptive average
// Uses planes, h, w, oh, ow of the parameters; the window sizes come from
// the input and output sizes alone.
extern "C" __global__ void adaptive_avg_pool2d_fwd_f32(Pool2dParams p, const float* x, float* y) {
    const i64 total = p.planes * p.oh * p.ow;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, ox, oy, plane;
        divmod(i, p.ow, &row, &ox);
        divmod(row, p.oh, &plane, &oy);
        Span r = adaptive_span(oy, p.h, p.oh);
        Span c = adaptive_span(ox, p.w, p.ow);
        const float* in = x + plane * p.h * p.w;
        float sum = 0.0f;
        for (i64 iy = r.lo; iy < r.hi; ++iy)
            for (i64 ix = c.lo; ix < c.hi; ++ix) sum += in[iy * p.w + ix];
        y[i] = sum / (float)((r.hi - r.lo) * (c.hi - c.lo));
    }
}

// Input i lies in the windows of outputs ⌊i·out/in⌋ ≤ o < ⌈(i+1)·out/in⌉;
// each candidate is still checked against its span.
extern "C" __global__ void adaptive_avg_pool2d_bwd_f32(Pool2dParams p, const float* dy, float* dx) {
    const i64 total = p.planes * p.h * p.w;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, ix, iy, plane;
        divmod(i, p.w, &row, &ix);
        divmod(row, p.h, &plane, &iy);
        i64 oy0 = quot(iy * p.oh, p.h), oy1 = min(quot((iy + 1) * p.oh + p.h - 1, p.h), p.oh);
        i64 ox0 = quot(ix * p.ow, p.w), ox1 = min(quot((ix + 1) * p.ow + p.w - 1, p.w), p.ow);
        const float* g = dy + plane * p.oh * p.ow;
        float acc = 0.0f;
        for (i64 oy = oy0; oy < oy1; ++oy) {
            Span r = adaptive_span(oy, p.h, p.oh);
            if (iy < r.lo || iy >= r.hi) continue;
            for (i64 ox = ox0; ox < ox1; ++ox) {
                Span c = adaptive_span(ox, p.w, p.ow);
                if (ix < c.lo || ix >= c.hi) continue;
                acc += g[oy * p.ow + ox] / (float)((r.hi - r.lo) * (c.hi - c.lo));
            }
        }
        dx[i] = acc;
    }
}

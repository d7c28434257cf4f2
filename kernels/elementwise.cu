// Elementwise kernels: unary maps, binary ops with broadcasting,
// comparisons, where, casts and strided copies.
//
// Launch: a 1-D grid of 256-thread blocks, grid-stride over the output
// elements (src/backend/cuda/launch.rs, `elementwise`).
//
// Memory access: the output is always contiguous (row-major in `shape`).
// When every operand is contiguous with the output's shape
// (`p.contiguous`), operand k is read at `offsets[k] + i`: consecutive threads
// touch consecutive addresses (coalesced). Otherwise operand k is read at
// `offsets[k] + Σ_d coord_d(i) · strides[k][d]`; a broadcast dimension has
// stride 0, so broadcasting, permuted and sliced views all need no copy.
// Arithmetic is done in f32 for every storage dtype (bf16/f16 are widened on
// load and rounded once on store).

struct ElementwiseParams {
    i64 numel;                                // output elements
    i64 shape[FERRITE_MAX_DIMS];              // output shape (first `ndim` used)
    i64 strides[3][FERRITE_MAX_DIMS];         // operand strides, in elements
    i64 offsets[3];                           // operand offsets, in elements
    int ndim;
    int contiguous;                           // 1: operand k is read at offsets[k] + i
    float alpha;                              // scalar argument (powf exponent, clamp low)
    float beta;                               // scalar argument (clamp high)
};
static_assert(sizeof(ElementwiseParams) == 304, "ElementwiseParams layout");

// Offset of output element `i` in operand `k`.
__device__ __forceinline__ i64 operand_offset(const ElementwiseParams& p, int k, i64 i) {
    if (p.contiguous) return p.offsets[k] + i;
    // Split i into coordinates, innermost first, with 32-bit divisions
    // whenever the values fit (divmod in common.cuh).
    i64 off = p.offsets[k];
    for (int d = p.ndim - 1; d >= 0; --d) {
        i64 q, r;
        divmod(i, p.shape[d], &q, &r);
        off += r * p.strides[k][d];
        i = q;
    }
    return off;
}

// ---------------------------------------------------------------- unary
// y = f(x), and for a few activations the fused backward dx = dy · f'(x)
// (written from the saved input or output, whichever is cheaper).

#define UNARY_OPS(X)                                                                 \
    X(neg, -x)                                                                       \
    X(exp, expf(x))                                                                  \
    X(log, logf(x))                                                                  \
    X(sqrt, sqrtf(x))                                                                \
    X(rsqrt, 1.0f / sqrtf(x))                                                        \
    X(abs, fabsf(x))                                                                 \
    X(sign, x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f))                             \
    X(relu, (x > 0.0f || x != x) ? x : 0.0f)                                         \
    X(step, x > 0.0f ? 1.0f : 0.0f)                                                  \
    X(sigmoid, sigmoid_f32(x))                                                       \
    X(tanh, tanhf(x))                                                                \
    X(gelu, x * normal_cdf(x))                                                       \
    X(gelu_derivative, normal_cdf(x) + x * 0.3989422804014327f * expf(-0.5f * x * x)) \
    X(softplus, x > 20.0f ? x : log1pf(expf(x)))                                     \
    X(powf, powf(x, p.alpha))                                                        \
    X(clamp, x < p.alpha ? p.alpha : (x > p.beta ? p.beta : x))                      \
    X(in_range, (x >= p.alpha && x <= p.beta) ? 1.0f : 0.0f)                         \
    X(affine, x * p.alpha + p.beta)                                                  \
    X(finite_or_zero, isfinite(x) ? x : 0.0f)

// The logistic function without overflow: e^x / (1 + e^x) for x < 0.
__device__ __forceinline__ float sigmoid_f32(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

// The standard normal CDF Φ(x) = (1 + erf(x / √2)) / 2.
__device__ __forceinline__ float normal_cdf(float x) {
    return 0.5f * (1.0f + erff(x * 0.7071067811865476f));
}

#define DEFINE_UNARY(name, expr, T, N)                                               \
    extern "C" __global__ void name##_fwd_##N(ElementwiseParams p, const T* in, T* out) { \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {                \
            float x = to_f32(in[operand_offset(p, 0, i)]);                           \
            out[i] = from_f32<T>(expr);                                              \
        }                                                                            \
    }

#define UNARY_F32(name, expr) DEFINE_UNARY(name, expr, float, f32)
#define UNARY_BF16(name, expr) DEFINE_UNARY(name, expr, bf16, bf16)
#define UNARY_F16(name, expr) DEFINE_UNARY(name, expr, f16, f16)
UNARY_OPS(UNARY_F32)
UNARY_OPS(UNARY_BF16)
UNARY_OPS(UNARY_F16)

// Backward of the activations: operand 0 is the upstream gradient dy,
// operand 1 the saved tensor (x for relu, y = f(x) for sigmoid and tanh).
// relu keeps the CPU's rule: dy where x > 0, else dy·0, so a −0 or NaN
// gradient stays −0 or NaN (a plain 0 would hide a NaN upstream).
#define ACTIVATION_BWD(X)                                                            \
    X(relu, s > 0.0f ? dy : dy * 0.0f)                                               \
    X(sigmoid, dy * s * (1.0f - s))                                                  \
    X(tanh, dy * (1.0f - s * s))

#define DEFINE_ACTIVATION_BWD(name, expr)                                            \
    extern "C" __global__ void name##_bwd_f32(ElementwiseParams p, const float* grad,   \
                                              const float* saved, float* out) {      \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {                \
            float dy = grad[operand_offset(p, 0, i)];                                \
            float s = saved[operand_offset(p, 1, i)];                                \
            out[i] = expr;                                                           \
        }                                                                            \
    }
ACTIVATION_BWD(DEFINE_ACTIVATION_BWD)

// ---------------------------------------------------------------- binary
// out = a ∘ b with NumPy broadcasting through the operand strides.
// maximum/minimum propagate NaN like the CPU kernels.

__device__ __forceinline__ float nan_min(float a, float b) {
    return (a != a || a < b) ? a : (b != b ? b : (a < b ? a : b));
}

#define BINARY_OPS(X)                                                                \
    X(add, a + b)                                                                    \
    X(sub, a - b)                                                                    \
    X(mul, a * b)                                                                    \
    X(div, a / b)                                                                    \
    X(maximum, nan_max(a, b))                                                        \
    X(minimum, nan_min(a, b))                                                        \
    X(pow, powf(a, b))

#define DEFINE_BINARY(name, expr, T, N)                                              \
    extern "C" __global__ void name##_fwd_##N(ElementwiseParams p, const T* lhs,     \
                                              const T* rhs, T* out) {                \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {                \
            float a = to_f32(lhs[operand_offset(p, 0, i)]);                          \
            float b = to_f32(rhs[operand_offset(p, 1, i)]);                          \
            out[i] = from_f32<T>(expr);                                              \
        }                                                                            \
    }

#define BINARY_F32(name, expr) DEFINE_BINARY(name, expr, float, f32)
#define BINARY_BF16(name, expr) DEFINE_BINARY(name, expr, bf16, bf16)
#define BINARY_F16(name, expr) DEFINE_BINARY(name, expr, f16, f16)
BINARY_OPS(BINARY_F32)
BINARY_OPS(BINARY_BF16)
BINARY_OPS(BINARY_F16)

// ---------------------------------------------------------------- comparisons
// out = (a ∘ b) as a u8 mask (1 true, 0 false); NaN compares false except `ne`.

#define COMPARE_OPS(X)                                                               \
    X(eq, a == b)                                                                    \
    X(ne, a != b)                                                                    \
    X(lt, a < b)                                                                     \
    X(le, a <= b)                                                                    \
    X(gt, a > b)                                                                     \
    X(ge, a >= b)

#define DEFINE_COMPARE(name, expr, T, N)                                             \
    extern "C" __global__ void name##_fwd_##N(ElementwiseParams p, const T* lhs,     \
                                              const T* rhs, u8* out) {               \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {                \
            float a = to_f32(lhs[operand_offset(p, 0, i)]);                          \
            float b = to_f32(rhs[operand_offset(p, 1, i)]);                          \
            out[i] = (expr) ? 1 : 0;                                                 \
        }                                                                            \
    }

#define COMPARE_F32(name, expr) DEFINE_COMPARE(name, expr, float, f32)
#define COMPARE_BF16(name, expr) DEFINE_COMPARE(name, expr, bf16, bf16)
#define COMPARE_F16(name, expr) DEFINE_COMPARE(name, expr, f16, f16)
COMPARE_OPS(COMPARE_F32)
COMPARE_OPS(COMPARE_BF16)
COMPARE_OPS(COMPARE_F16)

// ---------------------------------------------------------------- where
// out = cond ? a : b, with cond a u8 mask (operand 0), a and b operands 1, 2.
// The selected value is copied bit for bit (no round trip through f32).

#define DEFINE_WHERE(T, N)                                                              \
    extern "C" __global__ void where_fwd_##N(ElementwiseParams p, const u8* cond,    \
                                             const T* a, const T* b, T* out) {       \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {                \
            bool take_a = cond[operand_offset(p, 0, i)] != 0;                        \
            out[i] = take_a ? a[operand_offset(p, 1, i)] : b[operand_offset(p, 2, i)]; \
        }                                                                            \
    }
DEFINE_WHERE(float, f32)
DEFINE_WHERE(bf16, bf16)
DEFINE_WHERE(f16, f16)

// ---------------------------------------------------------------- copies and casts
// copy: gathers a strided view (operand 0) into a contiguous buffer, bit for
// bit (the `contiguous()` of a view). cast: the same gather with a dtype
// conversion through f32 (bf16/f16 round to nearest even; float -> integer
// truncates toward zero and saturates; NaN -> 0).

#define DEFINE_COPY(T, N)                                                               \
    extern "C" __global__ void copy_fwd_##N(ElementwiseParams p, const T* in, T* out) { \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {                \
            out[i] = in[operand_offset(p, 0, i)];                                    \
        }                                                                            \
    }
DEFINE_COPY(float, f32)
DEFINE_COPY(bf16, bf16)
DEFINE_COPY(f16, f16)
DEFINE_COPY(u8, u8)
DEFINE_COPY(i64, i64)

#define DEFINE_CAST(S, SN, D, DN)                                                            \
    extern "C" __global__ void cast_##SN##_to_##DN(ElementwiseParams p, const S* in, D* out) { \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {                \
            out[i] = from_f32<D>(to_f32(in[operand_offset(p, 0, i)]));               \
        }                                                                            \
    }
DEFINE_CAST(float, f32, bf16, bf16)
DEFINE_CAST(float, f32, f16, f16)
DEFINE_CAST(float, f32, u8, u8)
DEFINE_CAST(float, f32, i64, i64)
DEFINE_CAST(bf16, bf16, float, f32)
DEFINE_CAST(bf16, bf16, f16, f16)
DEFINE_CAST(f16, f16, float, f32)
DEFINE_CAST(f16, f16, bf16, bf16)
DEFINE_CAST(u8, u8, float, f32)
DEFINE_CAST(u8, u8, bf16, bf16)
DEFINE_CAST(u8, u8, f16, f16)
DEFINE_CAST(i64, i64, float, f32)

// fill: every element of a contiguous buffer set to `p.alpha` (zeros, ones).
#define DEFINE_FILL(T, N)                                                               \
    extern "C" __global__ void fill_fwd_##N(ElementwiseParams p, T* out) {           \
        T v = from_f32<T>(p.alpha);                                                  \
        for (i64 i = grid_first(); i < p.numel; i += grid_stride()) out[i] = v;      \
    }
DEFINE_FILL(float, f32)
DEFINE_FILL(bf16, bf16)
DEFINE_FILL(f16, f16)

// add_int: `x[i] += by` over a contiguous i64 buffer, in place (counters such
// as batch norm's `num_batches_tracked`, updated without a round trip to the
// host).
extern "C" __global__ void add_int_fwd_i64(i64 numel, i64 by, i64* x) {
    for (i64 i = grid_first(); i < numel; i += grid_stride()) x[i] += by;
}

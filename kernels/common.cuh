// Shared definitions of ferrite's CUDA kernels.
//
// This prelude is prepended to every kernels/<family>.cu source before NVRTC
// compiles it (see src/backend/cuda/compile.rs), so the kernels need no
// include path and no CUDA toolkit headers: half-precision values are
// carried as raw 16-bit patterns and converted with a few lines of bit
// arithmetic or one PTX `cvt` instruction.
//
// Conventions of every kernel:
// - entry points are `extern "C"` and named <op>_<fwd|bwd|step>_<dtype>;
// - scalar arguments travel in one struct passed by value, mirrored by a
//   #[repr(C)] struct in src/ops/<family>/params.rs (a static_assert on its
//   size here and a const assert there keep the two in step);
// - indices are 64-bit and loops are grid-stride, so any launch grid covers
//   any number of elements.

#define FERRITE_MAX_DIMS 8

// FERRITE_CHECK_ALIGNED(ptr, n): before a vector access through a
// reinterpret_cast pointer, checks that `ptr` is n-byte aligned on the
// emulated GPU (which defines it); nothing under NVRTC.
#ifndef FERRITE_CHECK_ALIGNED
#define FERRITE_CHECK_ALIGNED(ptr, n) ((void)0)
#endif

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;

// bfloat16 and IEEE half, as raw bits. Distinct structs (not typedefs of
// the same integer) so that overloads below can tell them apart.
struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

// bf16 -> f32 is exact: the bf16 bits are the top half of the f32 bits.
__device__ __forceinline__ float to_f32(bf16 h) {
    return __uint_as_float(((u32)h.bits) << 16);
}

// f32 -> bf16 rounds to nearest, ties to even; NaN stays a (quiet) NaN.
// Same rule as the `half` crate used on the CPU.
__device__ __forceinline__ bf16 bf16_from_f32(float f) {
    u32 u = __float_as_uint(f);
    bf16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h.bits = (unsigned short)((u >> 16) | 0x40u);
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
        h.bits = (unsigned short)(u >> 16);
    }
    return h;
}

// f16 <-> f32 with the hardware conversion (round to nearest even). The
// emulated GPU (FERRITE_EMULATOR, kernels/emulation/) has no PTX: it
// computes the same conversions in C++.
__device__ __forceinline__ float to_f32(f16 h) {
    float f;
#ifdef FERRITE_EMULATOR
    f = ::ferrite_emu::f16_to_f32(h.bits);
#else
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
#endif
    return f;
}

__device__ __forceinline__ f16 f16_from_f32(float f) {
    f16 h;
#ifdef FERRITE_EMULATOR
    h.bits = ::ferrite_emu::f32_to_f16(f);
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
#endif
    return h;
}

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(u8 x) { return (float)x; }
__device__ __forceinline__ float to_f32(i64 x) { return (float)x; }

// from_f32<T>(x): the value x stored as T (float -> integer truncates
// toward zero, like Rust's `as`, saturating at the type's range).
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return bf16_from_f32(x); }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) { return f16_from_f32(x); }
template <> __device__ __forceinline__ u8 from_f32<u8>(float x) {
    return x != x ? 0 : (x <= 0.0f ? 0 : (x >= 255.0f ? 255 : (u8)x));
}
template <> __device__ __forceinline__ i64 from_f32<i64>(float x) {
    return x != x ? 0 : (i64)x;
}

// −∞ (math.h, and with it INFINITY, is not available without headers).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// Sum and max of a value over the 32 lanes of a warp (butterfly shuffles:
// every lane ends with the result).
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

// Max that propagates NaN (the CPU rule for `max`).
__device__ __forceinline__ float nan_max(float a, float b) {
    return (a != a || a > b) ? a : (b != b ? b : (a > b ? a : b));
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// Block-wide reductions for blocks whose size is a multiple of 32 (at most
// 1024 threads): each warp reduces with shuffles, warp leaders meet in
// shared memory, and the first warp reduces the partials. Every thread gets
// the result. `scratch` must hold 32 values and may be reused after the
// call returns (the trailing barrier protects it).
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ double block_sum(double v, double* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : neg_inf();
    v = warp_max(v);
    __syncthreads();
    return v;
}

// The global index of this thread and the total number of threads of the
// grid, for grid-stride loops `for (i = first; i < n; i += stride)`.
__device__ __forceinline__ i64 grid_first() {
    return (i64)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ i64 grid_stride() {
    return (i64)gridDim.x * blockDim.x;
}

// q = a / b and r = a % b for 0 ≤ a and 0 < b, in 32-bit arithmetic when
// both fit in 32 bits (a 64-bit division costs several times more on the
// GPU), in 64-bit otherwise. For decomposing a flat index per element.
__device__ __forceinline__ void divmod(i64 a, i64 b, i64* q, i64* r) {
    if ((u64)a <= 0xffffffffull && (u64)b <= 0xffffffffull) {
        u32 qq = (u32)a / (u32)b;
        *q = (i64)qq;
        *r = (i64)((u32)a - qq * (u32)b);
    } else {
        *q = a / b;
        *r = a - *q * b;
    }
}

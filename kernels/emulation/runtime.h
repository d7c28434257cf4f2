// The SIMT runtime of ferrite's emulated GPU: the CUDA dialect the kernels
// use, defined in C++ so that kernels/common.cuh and kernels/<family>.cu
// compile unchanged as host code (build.rs puts this header first in every
// family's translation unit and defines FERRITE_EMULATOR).
//
// Execution model (scheduler.cpp): a launch runs its blocks one after the
// other on the calling OS thread; every CUDA thread of a block is a fiber
// (fiber.cpp) that runs until it reaches a sync point (__syncthreads, a
// warp shuffle, __syncwarp, mma.sync) or returns. Between sync points no
// other thread runs, so atomics are plain read-modify-writes and
// `__shared__` is a function-local `static` (one block at a time).
// Collective operations are strict: a barrier must be reached by every
// thread of the block, a warp collective by all 32 lanes with the full
// mask; anything else aborts the launch with an error, never hangs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

#define FERRITE_EMULATOR 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __constant__ static const
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

// Checks that a vector load or store through `ptr` is aligned to `n` bytes
// (common.cuh defines it as nothing for NVRTC).
#define FERRITE_CHECK_ALIGNED(ptr, n) \
    ::ferrite_emu::check_aligned((const void*)(ptr), (n), __FILE__, __LINE__)

namespace ferrite_emu {

// CUDA's uint3 / dim3.
struct dim3 {
    unsigned x, y, z;
};

// What a kernel sees of the running thread (the first member of its fiber).
struct ThreadState {
    dim3 idx;
};

// The running fiber, and the geometry of the block being run.
extern ThreadState* g_current;
extern dim3 g_block_idx, g_block_dim, g_grid_dim;

// The kinds of warp collectives; all lanes of a warp must meet at the same.
enum Collective : int {
    kShflIdx,
    kShflUp,
    kShflDown,
    kShflXor,
    kBallot,
    kSyncWarp,
    kMmaBf16,
    kMmaF16,
};

// Aborts the launch from inside a kernel: records the message (printf
// format) and switches back to the scheduler; never returns.
[[noreturn]] void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));

// Waits at the block barrier.
void syncthreads();

// A shuffle, ballot or __syncwarp of `kind` with the lane's value (`bits`,
// `size` bytes) and lane argument; returns the value the lane receives.
unsigned long long warp_collective(int kind, unsigned mask, unsigned long long bits, int size,
                                   int lane_arg, int width);

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.f32 for the calling lane.
void mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2], bool bf16);

// The IEEE half <-> float conversions of PTX `cvt` (round to nearest even).
float f16_to_f32(unsigned short h);
unsigned short f32_to_f16(float f);

// Fails the launch unless `ptr` is a multiple of `n` bytes.
inline void check_aligned(const void* ptr, unsigned n, const char* file, int line) {
    if (reinterpret_cast<unsigned long long>(ptr) % n != 0) {
        fail("misaligned %u-byte access at %p (%s:%d)", n, ptr, file, line);
    }
}

// One kernel of the table build.rs generates: its name, a thunk that calls
// it with arguments read from `args[i]` (aligned copies of the bytes the
// host passed), and the size of each parameter.
struct KernelEntry {
    const char* name;
    void (*call)(void* const* args);
    size_t n_args;
    const size_t* arg_sizes;
};

// The kernels of one family (one translation unit).
struct KernelTable {
    const char* family;
    const KernelEntry* entries;
    size_t count;
};

// Deduces a kernel's parameter types from its function pointer.
template <class F>
struct Signature;

template <class... A>
struct Signature<void (*)(A...)> {
    static constexpr size_t count = sizeof...(A);
    static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(A)..., 0};

    // Calls F(*(A0*)args[0], *(A1*)args[1], ...).
    template <void (*F)(A...), size_t... I>
    static void call_with(void* const* args, std::index_sequence<I...>) {
        F(*static_cast<A*>(args[I])...);
    }

    template <void (*F)(A...)>
    static void call(void* const* args) {
        call_with<F>(args, std::index_sequence_for<A...>{});
    }
};

}  // namespace ferrite_emu

// A table entry for kernel `name` (used by the generated tables).
#define FERRITE_EMU_KERNEL(name)                                                     \
    ::ferrite_emu::KernelEntry {                                                     \
        #name, &::ferrite_emu::Signature<decltype(&name)>::template call<&name>,     \
            ::ferrite_emu::Signature<decltype(&name)>::count,                        \
            ::ferrite_emu::Signature<decltype(&name)>::sizes                         \
    }

using dim3 = ferrite_emu::dim3;
using uint3 = ferrite_emu::dim3;

#define threadIdx (::ferrite_emu::g_current->idx)
#define blockIdx (::ferrite_emu::g_block_idx)
#define blockDim (::ferrite_emu::g_block_dim)
#define gridDim (::ferrite_emu::g_grid_dim)
static const int warpSize = 32;

// ---------------------------------------------------------------- sync
inline void __syncthreads() { ferrite_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    ferrite_emu::warp_collective(ferrite_emu::kSyncWarp, mask, 0, 0, 0, 32);
}
inline void __threadfence() {}
inline void __threadfence_block() {}
[[noreturn]] inline void __trap() { ferrite_emu::fail("__trap() called"); }

// Shuffles of any trivially copyable value of at most 8 bytes.
template <class T>
inline T ferrite_emu_shuffle(int kind, unsigned mask, T v, int lane_arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle type");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = ferrite_emu::warp_collective(kind, mask, bits, (int)sizeof(T), lane_arg, width);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    return ferrite_emu_shuffle(ferrite_emu::kShflIdx, mask, v, src_lane, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ferrite_emu_shuffle(ferrite_emu::kShflUp, mask, v, (int)delta, width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ferrite_emu_shuffle(ferrite_emu::kShflDown, mask, v, (int)delta, width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return ferrite_emu_shuffle(ferrite_emu::kShflXor, mask, v, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return (unsigned)ferrite_emu::warp_collective(ferrite_emu::kBallot, mask, predicate != 0, 4, 0,
                                                  32);
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
    return __ballot_sync(mask, predicate) == mask;
}

// ---------------------------------------------------------------- atomics
// Fibers only switch at sync points, so a plain read-modify-write is atomic.
template <class T>
inline T ferrite_emu_atomic_add(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return ferrite_emu_atomic_add(p, v);
}
inline float atomicAdd(float* p, float v) { return ferrite_emu_atomic_add(p, v); }
inline double atomicAdd(double* p, double v) { return ferrite_emu_atomic_add(p, v); }
inline int atomicAdd(int* p, int v) {
    // Wrapping, like the hardware (no signed-overflow UB).
    return (int)ferrite_emu_atomic_add(reinterpret_cast<unsigned*>(p), (unsigned)v);
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return ferrite_emu_atomic_add(p, v); }
template <class T>
inline T atomicExch(T* p, T v) {
    T old = *p;
    *p = v;
    return old;
}
template <class T>
inline T atomicCAS(T* p, T compare, T v) {
    T old = *p;
    if (old == compare) *p = v;
    return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
    T old = *p;
    if (v < old) *p = v;
    return old;
}

// ---------------------------------------------------------------- bit casts and integer
template <class To, class From>
inline To ferrite_emu_bit_cast(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit cast size");
    To r;
    std::memcpy(&r, &v, sizeof(To));
    return r;
}
inline float __int_as_float(int i) { return ferrite_emu_bit_cast<float>(i); }
inline float __uint_as_float(unsigned i) { return ferrite_emu_bit_cast<float>(i); }
inline int __float_as_int(float f) { return ferrite_emu_bit_cast<int>(f); }
inline unsigned __float_as_uint(float f) { return ferrite_emu_bit_cast<unsigned>(f); }
inline double __longlong_as_double(long long i) { return ferrite_emu_bit_cast<double>(i); }
inline long long __double_as_longlong(double d) { return ferrite_emu_bit_cast<long long>(d); }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T>
inline T __ldg(const T* p) {
    return *p;
}

// ---------------------------------------------------------------- math
// The C library's functions (correctly rounded or within an ulp or two,
// like CUDA's non-intrinsic versions); `-ffp-contract=off` keeps every
// multiply and add separately rounded.
using std::isfinite;
using std::isinf;
using std::isnan;
using std::max;
using std::min;
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }

// A small SIMT emulator that runs ferrite's CUDA kernels on the CPU, so that
// their index arithmetic, tiling and reductions can be checked without a GPU
// (see check.py and docs/CUDA.md).
//
// One std::thread per CUDA thread of a block, a std::barrier for
// __syncthreads, and a per-warp exchange buffer for __shfl_xor_sync; blocks
// run one after the other, so a `static` array stands in for __shared__
// memory. Device intrinsics are replaced by their definitions; the f16
// conversions use _Float16, and mma.sync.m16n8k16 is computed from the
// fragment layout of the PTX ISA (the same layout gemm.cu assumes, so this
// checks the kernel against that reading of the spec, not the hardware).
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(x)
#define __align__(x) __attribute__((aligned(x)))
#define __CUDA_ARCH__ 900

typedef unsigned short u16;
using std::isfinite;
using std::max;
using std::min;

struct Dim3 {
    unsigned x, y, z;
};
static Dim3 blockIdx{0, 0, 0}, gridDim{1, 1, 1}, blockDim{1, 1, 1};
thread_local Dim3 threadIdx{0, 0, 0};

inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline void __trap() { abort(); }

// The block being run: its barrier and, per warp, a barrier and an exchange
// buffer (one 8-byte slot per lane for shuffles, six words per lane for mma
// fragments).
struct Warp {
    std::barrier<>* bar;
    unsigned long long slot[32];
    unsigned frag[32][6];
};
static std::barrier<>* g_block_barrier;
static std::vector<Warp> g_warps;
static std::mutex g_atomic;

inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

// Each lane publishes its value, the warp waits, each lane reads its
// partner's, the warp waits again before the slots are reused.
template <class T> T __shfl_xor_sync(unsigned, T v, int offset) {
    int lane = threadIdx.x & 31;
    Warp& w = g_warps[threadIdx.x >> 5];
    memcpy(&w.slot[lane], &v, sizeof(T));
    w.bar->arrive_and_wait();
    T r;
    memcpy(&r, &w.slot[lane ^ offset], sizeof(T));
    w.bar->arrive_and_wait();
    return r;
}

inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    std::lock_guard<std::mutex> lock(g_atomic);
    unsigned long long old = *p;
    *p += v;
    return old;
}

// A bf16 or f16 bit pattern as a float.
inline float h2f(unsigned short b, bool bf) {
    if (bf) return __uint_as_float(((unsigned)b) << 16);
    _Float16 h;
    memcpy(&h, &b, 2);
    return (float)h;
}

// mma.sync.aligned.m16n8k16.row.col.f32 (bf16 or f16 inputs): the warp
// gathers every lane's fragments, rebuilds A (16×16) and B (16×8) with
// g = lane / 4, t = lane % 4 as the PTX ISA lays them out, and each lane
// adds the products to its four accumulators.
inline void emulate_mma(float d[4], const unsigned a[4], const unsigned b[2], bool bf) {
    int lane = threadIdx.x & 31;
    Warp& w = g_warps[threadIdx.x >> 5];
    for (int i = 0; i < 4; i++) w.frag[lane][i] = a[i];
    w.frag[lane][4] = b[0];
    w.frag[lane][5] = b[1];
    w.bar->arrive_and_wait();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        for (int h = 0; h < 2; h++) {
            auto half = [&](int reg) { return h2f((w.frag[l][reg] >> (16 * h)) & 0xffff, bf); };
            A[g][2 * t + h] = half(0);
            A[g + 8][2 * t + h] = half(1);
            A[g][2 * t + 8 + h] = half(2);
            A[g + 8][2 * t + 8 + h] = half(3);
            B[2 * t + h][g] = half(4);
            B[2 * t + 8 + h][g] = half(5);
        }
    }
    w.bar->arrive_and_wait();
    int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; e++) {
        int r = g + (e >= 2 ? 8 : 0), c = 2 * t + (e & 1);
        float s = d[e];
        for (int k = 0; k < 16; k++) s += A[r][k] * B[k][c];
        d[e] = s;
    }
}

// Runs `kernel` (a call of one kernel with its arguments) over `grid`, each
// block with `threads` threads (the last warp may be partial).
inline void launch(Dim3 grid, unsigned threads, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = {x, y, z};
                std::barrier<> block_barrier(threads);
                g_block_barrier = &block_barrier;
                unsigned warps = (threads + 31) / 32;
                g_warps.assign(warps, Warp{});
                for (unsigned i = 0; i < warps; i++) {
                    g_warps[i].bar = new std::barrier<>(std::min(32u, threads - 32 * i));
                }
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; t++) {
                    pool.emplace_back([&, t] {
                        threadIdx = {t, 0, 0};
                        kernel();
                    });
                }
                for (auto& th : pool) th.join();
                for (auto& w : g_warps) delete w.bar;
            }
}

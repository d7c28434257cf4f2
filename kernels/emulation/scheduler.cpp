// The scheduler of the emulated GPU: runs a launch block by block, each CUDA
// thread as a fiber, and implements the block barrier and the warp
// collectives strictly (see runtime.h for the model, abi.cpp for the C
// entry points).
#include "scheduler.h"

#include <cstdarg>
#include <cstdio>

namespace ferrite_emu {

ThreadState* g_current = nullptr;
dim3 g_block_idx = {0, 0, 0};
dim3 g_block_dim = {1, 1, 1};
dim3 g_grid_dim = {1, 1, 1};
Launch* g_launch = nullptr;

namespace {

// The CUDA name of a collective, for messages.
const char* collective_name(int kind) {
    switch (kind) {
        case kShflIdx: return "__shfl_sync";
        case kShflUp: return "__shfl_up_sync";
        case kShflDown: return "__shfl_down_sync";
        case kShflXor: return "__shfl_xor_sync";
        case kBallot: return "__ballot_sync";
        case kSyncWarp: return "__syncwarp";
        case kMmaBf16: return "mma.sync.m16n8k16 (bf16)";
        case kMmaF16: return "mma.sync.m16n8k16 (f16)";
        default: return "a warp collective";
    }
}

// "thread 37" for 1-D blocks, "thread (x,y,z)" otherwise.
std::string thread_name(const Fiber& f) {
    char buf[64];
    if (g_block_dim.y == 1 && g_block_dim.z == 1) {
        snprintf(buf, sizeof buf, "thread %u", f.state.idx.x);
    } else {
        snprintf(buf, sizeof buf, "thread (%u,%u,%u)", f.state.idx.x, f.state.idx.y,
                 f.state.idx.z);
    }
    return buf;
}

// What a suspended or finished fiber is doing, for messages.
std::string wait_name(const Fiber& f) {
    switch (f.wait) {
        case Wait::Barrier: return "waits at __syncthreads()";
        case Wait::Warp: return std::string("waits at ") + collective_name(f.kind);
        case Wait::Done: return "has exited";
        default: return "is running";
    }
}

// Suspends the running fiber in state `w` and returns to the scheduler;
// returns when the scheduler resumes it.
void yield(Wait w) {
    Launch* L = g_launch;
    Fiber* f = L->running;
    f->wait = w;
    context_switch(&f->ctx, &L->scheduler);
}

// Where every fiber starts: runs the kernel, then reports completion.
void fiber_entry() {
    Launch* L = g_launch;
    L->kernel->call(L->args);
    Fiber* f = L->running;
    f->wait = Wait::Done;
    context_switch(&f->ctx, &L->scheduler);
    __builtin_unreachable();  // a finished fiber is never resumed
}

// Checks the common preconditions of a warp collective (full mask, whole
// warp in the block) and returns the calling fiber.
Fiber* enter_collective(int kind, unsigned mask) {
    Launch* L = g_launch;
    Fiber* f = L->running;
    if (mask != 0xffffffffu) {
        fail("%s with mask 0x%08x: the emulator requires the full mask 0xffffffff",
             collective_name(kind), mask);
    }
    if ((f->linear & ~31u) + 32 > L->threads) {
        fail("%s in a partial warp (block of %u threads): all 32 lanes must take part",
             collective_name(kind), L->threads);
    }
    f->kind = kind;
    L->synchronised = true;
    return f;
}

// The lane whose value lane `l` receives from a shuffle (CUDA semantics,
// including `width` sub-groups; out-of-group sources give the own value).
int shuffle_source(int kind, int l, int arg, int width) {
    int base = l & ~(width - 1), pos = l & (width - 1);
    switch (kind) {
        case kShflIdx: return base + (((arg % width) + width) % width);
        case kShflUp: return pos >= arg ? l - arg : l;
        case kShflDown: return pos + arg < width ? l + arg : l;
        default: {
            int src = l ^ (arg & 31);
            return src < base + width ? src : l;
        }
    }
}

// One of the 16-bit halves of a fragment register as a float.
float half_of(unsigned reg, int h, bool bf16) {
    unsigned short bits = (unsigned short)(reg >> (16 * h));
    return bf16 ? __uint_as_float((unsigned)bits << 16) : f16_to_f32(bits);
}

// mma.m16n8k16 for the 32 lanes `w`: rebuilds A (16×16) and B (16×8) from
// the fragments with g = lane / 4, t = lane % 4 as the PTX ISA lays them
// out ("Matrix Fragments for mma.m16n8k16", lower k in the lower half of a
// register), then each lane's four accumulators get Σ_k A·B added in
// increasing k (products are exact in f32 for 16-bit inputs).
void complete_mma(Fiber* w, bool bf16) {
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        const unsigned* r = w[l].frag;
        for (int h = 0; h < 2; h++) {
            A[g][2 * t + h] = half_of(r[0], h, bf16);
            A[g + 8][2 * t + h] = half_of(r[1], h, bf16);
            A[g][2 * t + 8 + h] = half_of(r[2], h, bf16);
            A[g + 8][2 * t + 8 + h] = half_of(r[3], h, bf16);
            B[2 * t + h][g] = half_of(r[4], h, bf16);
            B[2 * t + 8 + h][g] = half_of(r[5], h, bf16);
        }
    }
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        for (int e = 0; e < 4; e++) {
            int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
            float s = w[l].acc[e];
            for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
            w[l].acc[e] = s;
        }
    }
}

// Completes the collective all 32 lanes of warp `w` wait at, or records an
// error when they wait at different ones.
bool complete_warp(Launch& L, Fiber* w) {
    for (int l = 1; l < 32; l++) {
        if (w[l].kind != w[0].kind || w[l].size != w[0].size) {
            L.fail_from_scheduler("divergent warp collective: " + thread_name(w[0]) + " " +
                                  wait_name(w[0]) + " while " + thread_name(w[l]) + " " +
                                  wait_name(w[l]));
            return false;
        }
    }
    switch (w[0].kind) {
        case kShflIdx:
        case kShflUp:
        case kShflDown:
        case kShflXor:
            for (int l = 0; l < 32; l++) {
                int width = w[l].width;
                if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
                    L.fail_from_scheduler(std::string(collective_name(w[l].kind)) +
                                          ": width must be a power of two up to 32");
                    return false;
                }
                w[l].result = w[shuffle_source(w[l].kind, l, w[l].lane_arg, width)].value;
            }
            break;
        case kBallot: {
            unsigned long long bits = 0;
            for (int l = 0; l < 32; l++) bits |= (unsigned long long)(w[l].value != 0) << l;
            for (int l = 0; l < 32; l++) w[l].result = bits;
            break;
        }
        case kMmaBf16:
        case kMmaF16: complete_mma(w, w[0].kind == kMmaBf16); break;
        default: break;
    }
    for (int l = 0; l < 32; l++) w[l].wait = Wait::Ready;
    return true;
}

// Explains why no fiber can proceed (some wait at a barrier or collective
// that others will never reach) and records it as the launch's error.
void report_deadlock(Launch& L) {
    const Fiber* waiting = nullptr;
    const Fiber* other = nullptr;
    for (const Fiber& f : L.fibers) {
        if (f.wait == Wait::Warp) {
            // A warp collective some lane of the warp does not reach.
            const Fiber* w = &L.fibers[f.linear & ~31u];
            for (int l = 0; l < 32; l++) {
                if (w[l].wait != Wait::Warp) {
                    L.fail_from_scheduler("deadlock at a warp collective: " + thread_name(f) +
                                          " " + wait_name(f) + " but " + thread_name(w[l]) +
                                          " of its warp " + wait_name(w[l]));
                    return;
                }
            }
        }
        if (f.wait == Wait::Barrier && !waiting) waiting = &f;
        if (f.wait != Wait::Barrier && !other) other = &f;
    }
    if (waiting && other) {
        L.fail_from_scheduler("divergent barrier: " + thread_name(*waiting) + " " +
                              wait_name(*waiting) + " but " + thread_name(*other) + " " +
                              wait_name(*other) + "; every thread of the block must reach it");
    } else {
        L.fail_from_scheduler("deadlock: no thread can proceed");
    }
}

}  // namespace

// Records the first error of a kernel thread and abandons the block: the
// fiber switches to the scheduler and is never resumed.
void fail(const char* format, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, format);
    vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    Launch* L = g_launch;
    if (!L || !L->running) {
        // Not inside a launch (a kernel called directly): nothing to return to.
        fprintf(stderr, "ferrite emulator: %s\n", buf);
        abort();
    }
    Fiber* f = L->running;
    L->fail_from_scheduler(std::string(buf) + " in " + thread_name(*f));
    f->wait = Wait::Done;
    context_switch(&f->ctx, &L->scheduler);
    __builtin_unreachable();
}

// Records the first error of the launch.
void Launch::fail_from_scheduler(const std::string& message) {
    if (!failed) {
        failed = true;
        error = message;
    }
}

void syncthreads() {
    g_launch->synchronised = true;
    yield(Wait::Barrier);
}

unsigned long long warp_collective(int kind, unsigned mask, unsigned long long bits, int size,
                                   int lane_arg, int width) {
    Fiber* f = enter_collective(kind, mask);
    f->value = bits;
    f->size = size;
    f->lane_arg = lane_arg;
    f->width = width;
    yield(Wait::Warp);
    return f->result;
}

void mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2], bool bf16) {
    Fiber* f = enter_collective(bf16 ? kMmaBf16 : kMmaF16, 0xffffffffu);
    f->size = 0;
    for (int i = 0; i < 4; i++) f->frag[i] = a[i];
    f->frag[4] = b[0];
    f->frag[5] = b[1];
    for (int i = 0; i < 4; i++) f->acc[i] = d[i];
    yield(Wait::Warp);
    for (int i = 0; i < 4; i++) d[i] = f->acc[i];
}

// Runs block g_block_idx: passes over the ready fibers in thread order
// (descending with `reverse`), each running to its next sync point; then
// completes the warps whose 32 lanes all wait at a collective, or releases
// the barrier when every thread waits at it; anything else is an error.
bool run_block(Launch& L, bool reverse) {
    const unsigned n = L.threads;
    const dim3 bd = g_block_dim;
    for (unsigned t = 0; t < n; t++) {
        Fiber& f = L.fibers[t];
        f.state.idx = {t % bd.x, (t / bd.x) % bd.y, t / (bd.x * bd.y)};
        f.linear = t;
        f.wait = Wait::Ready;
        context_init(&f.ctx, stack_at(t), fiber_entry);
    }
    for (;;) {
        for (unsigned i = 0; i < n; i++) {
            Fiber& f = L.fibers[reverse ? n - 1 - i : i];
            if (f.wait != Wait::Ready) continue;
            L.running = &f;
            g_current = &f.state;
            context_switch(&L.scheduler, &f.ctx);
            L.running = nullptr;
            if (L.failed) return false;
        }
        unsigned done = 0, barrier = 0;
        for (const Fiber& f : L.fibers) {
            done += f.wait == Wait::Done;
            barrier += f.wait == Wait::Barrier;
        }
        if (done == n) break;
        bool released = false;
        for (unsigned first = 0; first + 32 <= n; first += 32) {
            Fiber* w = &L.fibers[first];
            bool all = true;
            for (int l = 0; l < 32 && all; l++) all = w[l].wait == Wait::Warp;
            if (!all) continue;
            if (!complete_warp(L, w)) return false;
            released = true;
        }
        if (released) continue;
        if (barrier == n) {
            for (Fiber& f : L.fibers) f.wait = Wait::Ready;
            continue;
        }
        report_deadlock(L);
        return false;
    }
    for (unsigned t = 0; t < n; t++) {
        if (!stack_canary_ok(stack_at(t))) {
            L.fail_from_scheduler("stack overflow in " + thread_name(L.fibers[t]) +
                                  " (fiber stacks hold 64 KiB)");
            return false;
        }
    }
    return true;
}

// f16 bits -> f32: exact; subnormals normalised; NaN gives the canonical
// NaN (0x7fffffff) as PTX `cvt` does.
float f16_to_f32(unsigned short h) {
    unsigned sign = (unsigned)(h & 0x8000u) << 16;
    unsigned exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    unsigned bits;
    if (exp == 0x1f) {
        bits = man ? 0x7fffffffu : (sign | 0x7f800000u);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            int e = -14;
            while (!(man & 0x400u)) {
                man <<= 1;
                e--;
            }
            bits = sign | ((unsigned)(e + 127) << 23) | ((man & 0x3ffu) << 13);
        }
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    return __uint_as_float(bits);
}

// f32 -> f16 bits, rounded to nearest, ties to even (cvt.rn.f16.f32):
// overflow gives ±inf, tiny values round into the subnormals or to ±0,
// NaN gives the canonical NaN 0x7fff.
unsigned short f32_to_f16(float f) {
    unsigned u = __float_as_uint(f);
    unsigned sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7fff;
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (a >= 0x38800000u) {                                          // normal: >= 2^-14
        unsigned h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13));
        unsigned rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (unsigned short)(sign | h);
    }
    if (a <= 0x33000000u) return (unsigned short)sign;  // <= 2^-25: ties to even give 0
    unsigned mant = (a & 0x7fffffu) | 0x800000u;
    int shift = -((int)(a >> 23) - 127 + 1);  // 14..24
    unsigned h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return (unsigned short)(sign | h);
}

}  // namespace ferrite_emu

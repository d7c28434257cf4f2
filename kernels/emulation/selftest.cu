// Kernels that exercise the emulated GPU itself (its strict checks and
// collectives), compiled into it as one more family by build.rs. Not an
// NVRTC family: src/backend/cuda/compile.rs does not know these.

// Each thread writes, at its global linear index, 1 + its linear index in
// the block, so the host sees every thread ran exactly once with the
// geometry it expects. `out` holds gridDim·blockDim entries.
extern "C" __global__ void selftest_geometry(unsigned* out) {
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    out[b * threads + t] += 1 + t;
}

// Sums each run of blockDim.x floats (blockDim.x a power of two, at most
// 256) with a shared-memory tree, one run per block, grid-stride over runs.
extern "C" __global__ void selftest_block_sum(const float* x, float* out, i64 runs) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x;
    for (i64 r = blockIdx.x; r < runs; r += gridDim.x) {
        s[t] = x[r * blockDim.x + t];
        __syncthreads();
        for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (t < stride) s[t] += s[t + stride];
            __syncthreads();
        }
        if (t == 0) out[r] = s[0];
        __syncthreads();
    }
}

// The same with the barrier after the loads missing: a thread may add a
// partner's slot before the partner wrote it (a race).
extern "C" __global__ void selftest_block_sum_racy(const float* x, float* out, i64 runs) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x;
    for (i64 r = blockIdx.x; r < runs; r += gridDim.x) {
        s[t] = x[r * blockDim.x + t];
        for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (t < stride) s[t] += s[t + stride];
            __syncthreads();
        }
        if (t == 0) out[r] = s[0];
        __syncthreads();
    }
}

// Threads below 16 wait at a barrier the others never reach.
extern "C" __global__ void selftest_divergent_barrier(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
}

// Half of each warp shuffles with xor, the other half with down.
extern "C" __global__ void selftest_divergent_shuffle(int* out) {
    int v = (int)threadIdx.x;
    if ((threadIdx.x & 31) < 16) {
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    } else {
        v = __shfl_down_sync(0xffffffffu, v, 1);
    }
    out[threadIdx.x] = v;
}

// A shuffle with a partial mask (refused by the emulator).
extern "C" __global__ void selftest_partial_mask(int* out) {
    out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, (int)threadIdx.x, 1);
}

// Thread 3 traps.
extern "C" __global__ void selftest_trap(int* out) {
    if (threadIdx.x == 3) __trap();
    out[threadIdx.x] = 1;
}

// Writes element n of an n-element buffer (one past the end).
extern "C" __global__ void selftest_write_past_end(float* out, i64 n) {
    if (threadIdx.x == 0 && blockIdx.x == 0) out[n] = 1.0f;
}

// A 4-byte load from a 2-byte aligned address.
extern "C" __global__ void selftest_misaligned(const unsigned short* p, u32* out) {
    FERRITE_CHECK_ALIGNED(p + 1, 4);
    out[0] = *reinterpret_cast<const u32*>(p + 1);
}

// Each lane l of a warp writes 6 results: shfl(idx 31 - l), up 1, down 2,
// xor 5, xor 3 with width 4, ballot(l odd). Values are 100 + global lane.
extern "C" __global__ void selftest_shuffles(int* out) {
    int v = 100 + (int)threadIdx.x, l = (int)(threadIdx.x & 31);
    int* o = out + 6 * threadIdx.x;
    o[0] = __shfl_sync(0xffffffffu, v, 31 - l);
    o[1] = __shfl_up_sync(0xffffffffu, v, 1);
    o[2] = __shfl_down_sync(0xffffffffu, v, 2);
    o[3] = __shfl_xor_sync(0xffffffffu, v, 5);
    o[4] = __shfl_xor_sync(0xffffffffu, v, 3, 4);
    o[5] = (int)__ballot_sync(0xffffffffu, l & 1);
}

// Indexing kernels: index_select, index_add, gather, scatter_add, and the
// bounds check of i64 index tensors. Mirrors src/ops/index/cpu.rs.
//
// Launch: 1-D grid-stride (`elementwise` in launch.rs), one thread per
// output element. Flat indices are split with `divmod` (32-bit when the
// sizes fit).
//
// Indices are validated before the data kernels run (`index_check_fwd_i64`,
// whose result the host reads), so the data kernels only guard against an
// out-of-range index for memory safety.
//
// The accumulating kernels (index_add, scatter_add) use no atomics: each
// thread owns one output element, starts from its current value and adds
// the contributions that land on it in increasing source order, which is
// the order of the CPU loops. Results are deterministic and bit for bit
// those of the CPU.

// ---------------------------------------------------------------- bounds check
struct IndexCheckParams {
    i64 count;  // number of indices
    i64 size;   // valid indices are 0 ≤ i < size
};
static_assert(sizeof(IndexCheckParams) == 16, "IndexCheckParams layout");

// first_bad[0] ← min(first_bad[0], i) for every index i outside [0, size):
// the host initialises it to u64::MAX and reads it back (an integer minimum
// does not depend on the order of the atomics).
extern "C" __global__ void index_check_fwd_i64(IndexCheckParams p, const i64* idx,
                                               u64* first_bad) {
    for (i64 i = grid_first(); i < p.count; i += grid_stride()) {
        i64 v = idx[i];
        if (v < 0 || v >= p.size) atomicMin(first_bad, (u64)i);
    }
}

// ---------------------------------------------------------------- index_select / index_add
// The data seen as outer × size × inner around the indexed dim; `count`
// indices (a 1-D index tensor) pick or receive slices along it.
struct IndexSelectParams {
    i64 outer, size, inner;
    i64 count;
};
static_assert(sizeof(IndexSelectParams) == 32, "IndexSelectParams layout");

// out[o, j, i] = src[o, idx[j], i]; `out` is outer × count × inner.
template <typename T>
__device__ __forceinline__ void index_select_impl(const IndexSelectParams& p, const T* src,
                                                  const i64* idx, T* out) {
    const i64 total = p.outer * p.count * p.inner;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, in, o, j;
        divmod(i, p.inner, &row, &in);
        divmod(row, p.count, &o, &j);
        i64 t = idx[j];
        out[i] = (u64)t < (u64)p.size ? src[(o * p.size + t) * p.inner + in] : T{};
    }
}

#define DEFINE_INDEX_SELECT(T, N)                                                          \
    extern "C" __global__ void index_select_fwd_##N(IndexSelectParams p, const T* src,     \
                                                    const i64* idx, T* out) {             \
        index_select_impl<T>(p, src, idx, out);                                           \
    }
DEFINE_INDEX_SELECT(float, f32)
DEFINE_INDEX_SELECT(bf16, bf16)
DEFINE_INDEX_SELECT(f16, f16)
DEFINE_INDEX_SELECT(u8, u8)
DEFINE_INDEX_SELECT(i64, i64)

// out[o, t, i] += Σ src[o, j, i] over the j with idx[j] = t, in increasing
// j; `out` (outer × size × inner) holds the input on entry, `src` is
// outer × count × inner. One thread per output element scans the indices.
extern "C" __global__ void index_add_fwd_f32(IndexSelectParams p, const float* src,
                                             const i64* idx, float* out) {
    const i64 total = p.outer * p.size * p.inner;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 row, in, o, t;
        divmod(i, p.inner, &row, &in);
        divmod(row, p.size, &o, &t);
        float acc = out[i];
        const float* s = src + o * p.count * p.inner + in;
        for (i64 j = 0; j < p.count; ++j) {
            if (idx[j] == t) acc += s[j * p.inner];
        }
        out[i] = acc;
    }
}

// ---------------------------------------------------------------- gather / scatter_add
// A walk over the positions of `walk` (rank ndim ≤ FERRITE_MAX_DIMS). The
// index tensor (and scatter_add's source) is contiguous with shape
// index_shape, which equals `walk` except that gather walks it whole and
// scatter_add walks `size` positions along `dim` instead of `index_len`.
struct GatherParams {
    i64 numel;                              // positions walked
    i64 walk[FERRITE_MAX_DIMS];             // shape walked
    i64 index_strides[FERRITE_MAX_DIMS];    // contiguous strides of the index shape
    i64 data_strides[FERRITE_MAX_DIMS];     // strides of the data (gather input, scatter output)
    i64 data_offset;                        // offset of the data's first element
    i64 index_len;                          // index_shape[dim]
    i64 size;                               // data extent along dim: valid indices
    int ndim;
    int dim;
};
static_assert(sizeof(GatherParams) == 232, "GatherParams layout");

// out[q] = data[q with coordinate dim := idx[q]], q over the index shape;
// the data is read through its strides (any view).
template <typename T>
__device__ __forceinline__ void gather_impl(const GatherParams& p, const T* data, const i64* idx,
                                            T* out) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        i64 rest = i, off = p.data_offset;
        for (int d = p.ndim - 1; d >= 0; --d) {
            i64 c;
            divmod(rest, p.walk[d], &rest, &c);
            if (d != p.dim) off += c * p.data_strides[d];
        }
        i64 t = idx[i];
        out[i] = (u64)t < (u64)p.size ? data[off + t * p.data_strides[p.dim]] : T{};
    }
}

#define DEFINE_GATHER(T, N)                                                                \
    extern "C" __global__ void gather_fwd_##N(GatherParams p, const T* data, const i64* idx, \
                                              T* out) {                                   \
        gather_impl<T>(p, data, idx, out);                                                \
    }
DEFINE_GATHER(float, f32)
DEFINE_GATHER(bf16, bf16)
DEFINE_GATHER(f16, f16)
DEFINE_GATHER(u8, u8)
DEFINE_GATHER(i64, i64)

// out[q] += Σ src[r] over the index positions r that differ from q only
// along dim and have idx[r] = q[dim], in increasing r[dim] (the CPU's
// row-major order). q walks the index shape with `size` positions along
// dim; output elements outside that block keep their value.
extern "C" __global__ void scatter_add_fwd_f32(GatherParams p, const float* src, const i64* idx,
                                               float* out) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        i64 rest = i, off = p.data_offset, base = 0, at = 0;
        for (int d = p.ndim - 1; d >= 0; --d) {
            i64 c;
            divmod(rest, p.walk[d], &rest, &c);
            off += c * p.data_strides[d];
            if (d == p.dim) {
                at = c;
            } else {
                base += c * p.index_strides[d];
            }
        }
        const i64 step = p.index_strides[p.dim];
        float acc = out[off];
        for (i64 k = 0; k < p.index_len; ++k) {
            if (idx[base + k * step] == at) acc += src[base + k * step];
        }
        out[off] = acc;
    }
}

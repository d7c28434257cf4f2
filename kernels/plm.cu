// Partial Label Masking (src/ops/plm): the per-batch mask and the
// prediction histograms of src/plm.
//
// Targets are f32 labels that must be exactly 0 or 1. The kernels that read
// them record the smallest flat index of any other value (NaN included) in
// *first_bad with atomicMin; the host initialises it to 2^64 − 1, reads it
// back and refuses the batch when it changed.

// ---------------------------------------------------------------- masks
// Philox4x32-10 exactly as src/ops/plm/philox.rs: key = (seed lo, seed hi),
// counter = (block lo, block hi, batch lo, batch hi); element e of mask
// `batch` (e its index in the whole batch, also when a slice is drawn)
// uses word e mod 4 of block ⌊e/4⌋, converted to the uniform
// u = (bits >> 8) · 2^-24 (exact in f32 and f64). The CPU compares u with
// the f64 keep probability, so the keep arrays are f64 here too and the
// comparison is done in f64: the mask is bit-for-bit the CPU mask.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// Ten Philox rounds on the 128-bit counter `ctr` with key (k0, k1).
__device__ __forceinline__ void philox4x32_10(u32 ctr[4], u32 k0, u32 k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        u32 hi0 = __umulhi(PHILOX_M0, ctr[0]), lo0 = PHILOX_M0 * ctr[0];
        u32 hi1 = __umulhi(PHILOX_M1, ctr[2]), lo1 = PHILOX_M1 * ctr[2];
        u32 x0 = hi1 ^ ctr[1] ^ k0;
        u32 x2 = hi0 ^ ctr[3] ^ k1;
        ctr[0] = x0;
        ctr[1] = lo1;
        ctr[2] = x2;
        ctr[3] = lo0;
    }
}

struct PlmMaskParams {
    u64 seed;
    u64 batch;      // mask number t
    i64 numel;      // elements of the slice drawn, rows·C
    i64 classes;    // C
    i64 first;      // global index of the slice's first element, first_row·C
};
static_assert(sizeof(PlmMaskParams) == 40, "PlmMaskParams layout");

// Draws the elements [first, first + numel) of mask `batch` (a slice of
// whole rows of a larger batch; first = 0 for a whole batch) into
// mask[g − first]. One thread per Philox block (4 consecutive global
// elements), grid-stride over the blocks ⌊first/4⌋ to
// ⌊(first + numel − 1)/4⌋; lanes outside the slice (before `first` in the
// first block, past the end in the last) are skipped. Element g with
// target y (1 = positive) is kept (1.0) when u < keep_pos[c] (positive) or
// u < keep_neg[c] (negative), c = (g − first) mod C; the class follows the
// loop (skipped lanes advance it too) without a 64-bit modulo per element.
// Targets other than 0 and 1 are recorded in *first_bad by their local
// index g − first.
extern "C" __global__ void plm_mask_fwd_f32(PlmMaskParams p, const float* targets,
                                            const double* keep_pos, const double* keep_neg,
                                            float* mask, u64* first_bad) {
    const i64 first_block = p.first / 4;
    const i64 skip = p.first - first_block * 4;  // lanes of the first block before the slice
    // (first + numel ≤ 2^63 − 1, checked by the host: no rounding up past it)
    const i64 blocks = p.numel > 0 ? (p.first + p.numel - 1) / 4 - first_block + 1 : 0;
    const i64 stride = grid_stride();
    const i64 class_step = (stride * 4) % p.classes;
    // Class of lane 0 of block first_block + i, the local index 4·i − skip
    // mod C (in [0, C) also when that lane lies before the slice).
    i64 c0 = (grid_first() * 4 - skip) % p.classes;
    if (c0 < 0) c0 += p.classes;
    for (i64 i = grid_first(); i < blocks; i += stride) {
        const u64 blk = (u64)(first_block + i);
        u32 ctr[4] = {(u32)blk, (u32)(blk >> 32), (u32)p.batch, (u32)(p.batch >> 32)};
        philox4x32_10(ctr, (u32)p.seed, (u32)(p.seed >> 32));
        i64 c = c0;
        i64 e = i * 4 - skip;  // local index of lane 0
        for (int lane = 0; lane < 4; ++lane, ++e) {
            if (e >= p.numel) break;
            if (e >= 0) {
                float y = targets[e];
                if (y != 0.0f && y != 1.0f) atomicMin(first_bad, (u64)e);
                double u = (double)(ctr[lane] >> 8) * (1.0 / 16777216.0);
                double keep = y == 1.0f ? keep_pos[c] : keep_neg[c];
                mask[e] = u < keep ? 1.0f : 0.0f;
            }
            if (++c == p.classes) c = 0;
        }
        c0 += class_step;
        if (c0 >= p.classes) c0 -= p.classes;
    }
}

// ---------------------------------------------------------------- histograms
// Counts one batch into the four PLM histograms (src/plm/histogram.rs):
// pos_pred / neg_pred are `[bin][class]` counts of the predicted
// probabilities of positive / negative elements, pos_labels / neg_labels
// count labels per class, `discarded` counts NaN or out-of-[0, 1]
// probabilities. The bin is min(⌊p·n_bins⌋, n_bins − 1) computed in f64 like
// the CPU. One thread per element, 64-bit atomicAdd into global memory
// (integer counts: the result does not depend on the order). The counts
// accumulate over the batches of an epoch; the host checks the targets
// first (plm_targets_check_fwd_f32), so no invalid batch is ever counted.

struct PlmHistogramParams {
    i64 numel;
    i64 classes;
    i64 n_bins;
};
static_assert(sizeof(PlmHistogramParams) == 24, "PlmHistogramParams layout");

// Adds one batch of probabilities and 0/1 targets to the counts.
extern "C" __global__ void plm_histogram_fwd_f32(PlmHistogramParams p, const float* probs,
                                                 const float* targets, u64* pos_pred,
                                                 u64* neg_pred, u64* pos_labels, u64* neg_labels,
                                                 u64* discarded) {
    const i64 stride = grid_stride();
    const i64 class_step = stride % p.classes;
    i64 c = grid_first() % p.classes;
    for (i64 e = grid_first(); e < p.numel; e += stride) {
        bool positive = targets[e] == 1.0f;
        atomicAdd(positive ? &pos_labels[c] : &neg_labels[c], 1ull);
        double pr = (double)probs[e];
        if (!(pr >= 0.0 && pr <= 1.0)) {
            atomicAdd(discarded, 1ull);
        } else {
            i64 bin = (i64)(pr * (double)p.n_bins);
            if (bin > p.n_bins - 1) bin = p.n_bins - 1;
            atomicAdd(positive ? &pos_pred[bin * p.classes + c] : &neg_pred[bin * p.classes + c],
                      1ull);
        }
        c += class_step;
        if (c >= p.classes) c -= p.classes;
    }
}

// Records in *first_bad the smallest flat index of a target that is not
// exactly 0 or 1 (`p.numel` targets; the other fields are unused).
extern "C" __global__ void plm_targets_check_fwd_f32(PlmHistogramParams p, const float* targets,
                                                     u64* first_bad) {
    for (i64 e = grid_first(); e < p.numel; e += grid_stride()) {
        float y = targets[e];
        if (y != 0.0f && y != 1.0f) atomicMin(first_bad, (u64)e);
    }
}

// Per-element multi-label losses on logits, and the PLM mask sampler and
// histogram of src/plm.
//
// Loss kernels mirror src/loss/formulas.rs term by term: every loss is
// ℓ(z, y) of one logit z and one target y, written with the stable pieces
// p = σ(z), q = 1 − p, softplus(±z) computed from e = exp(−|z|) only, so no
// exp overflows and no 1 − p cancels. `<loss>_fwd_f32` writes ℓ per element;
// `<loss>_bwd_f32` writes dz = dy · dℓ/dz, where dy is either one value for
// every element (dy_stride = 0: the gradient of a sum or mean reduction,
// already divided by the count) or one per element (dy_stride = 1).
// Launch: 1-D grid-stride over the elements (`elementwise` in launch.rs).

struct SigmoidLossParams {
    i64 numel;
    i64 classes;        // C: the class of element e is e mod C (for pos_weight)
    i64 dy_stride;      // 0 or 1, see above
    float gamma;        // focal
    float alpha;        // focal, used when has_alpha
    float gamma_pos;    // ASL
    float gamma_neg;    // ASL
    float clip;         // ASL
    int has_alpha;      // focal: 0 means α_t = 1
};
static_assert(sizeof(SigmoidLossParams) == 48, "SigmoidLossParams layout");

// σ(z), 1 − σ(z), softplus(z) = −ln(1 − p), softplus(−z) = −ln p.
struct SigmoidParts {
    float p, q, sp_pos, sp_neg;
};

__device__ __forceinline__ SigmoidParts sigmoid_parts(float z) {
    float e = expf(-fabsf(z));
    float log1p_e = log1pf(e);
    float big = 1.0f / (1.0f + e);
    float small = e * big;
    SigmoidParts s;
    s.p = z >= 0.0f ? big : small;
    s.q = z >= 0.0f ? small : big;
    s.sp_pos = fmaxf(z, 0.0f) + log1p_e;
    s.sp_neg = fmaxf(-z, 0.0f) + log1p_e;
    return s;
}

// BCE with positive weight w₊: ℓ = w₊·y·softplus(−z) + (1 − y)·softplus(z),
// dℓ/dz = (1 − y)·p − w₊·y·q.
__device__ __forceinline__ void bce_eval(float z, float y, float pw, float* loss, float* grad) {
    SigmoidParts s = sigmoid_parts(z);
    float not_y = 1.0f - y;
    *loss = pw * y * s.sp_neg + not_y * s.sp_pos;
    *grad = not_y * s.p - pw * y * s.q;
}

// Focal loss (torchvision's sigmoid_focal_loss): with ce the BCE,
// m = 1 − p_t and α_t = α·y + (1 − α)(1 − y): ℓ = α_t·ce·m^γ,
// dℓ/dz = α_t·m^γ·((p − y) + γ·ce·(1 − 2y)·p·q/m).
__device__ __forceinline__ void focal_eval(const SigmoidLossParams& prm, float z, float y,
                                           float* loss, float* grad) {
    SigmoidParts s = sigmoid_parts(z);
    float not_y = 1.0f - y;
    float ce = y * s.sp_neg + not_y * s.sp_pos;
    float dce = not_y * s.p - y * s.q;
    float m = s.p * not_y + s.q * y;
    float mg = powf(m, prm.gamma);
    float alpha_t = prm.has_alpha ? prm.alpha * y + (1.0f - prm.alpha) * not_y : 1.0f;
    float pq_over_m = m > 0.0f ? s.p * s.q / m : 0.0f;
    float dm_term = prm.gamma * ce * (not_y - y) * pq_over_m;
    *loss = alpha_t * ce * mg;
    *grad = alpha_t * mg * (dce + dm_term);
}

// ASL (Ridnik et al. 2021): ℓ = y·ℓ₊ + (1 − y)·ℓ₋ with ℓ₊ = −q^γ₊·ln p and
// ℓ₋ = −p_m^γ₋·ln(1 − p_m), p_m = max(p − clip, 0); derivatives as in
// formulas.rs (ℓ₋ and its derivative are 0 where p ≤ clip).
__device__ __forceinline__ void asl_eval(const SigmoidLossParams& prm, float z, float y,
                                         float* loss, float* grad) {
    SigmoidParts s = sigmoid_parts(z);
    float not_y = 1.0f - y;
    float qg = powf(s.q, prm.gamma_pos);
    float pos = qg * s.sp_neg;
    float dpos = -qg * (prm.gamma_pos * s.p * s.sp_neg + s.q);

    float pm, ln_keep, q_ratio;
    if (prm.clip == 0.0f) {
        pm = s.p;
        ln_keep = -s.sp_pos;
        q_ratio = 1.0f;
    } else {
        pm = s.p - prm.clip;
        ln_keep = pm < 0.5f ? log1pf(-pm) : logf(s.q + prm.clip);
        q_ratio = s.q / (s.q + prm.clip);
    }
    float neg = 0.0f, dneg = 0.0f;
    if (pm > 0.0f) {
        float pmg = powf(pm, prm.gamma_neg);
        neg = -pmg * ln_keep;
        float focus = prm.gamma_neg == 0.0f ? 0.0f : prm.gamma_neg * s.q * ln_keep / pm;
        dneg = s.p * pmg * (q_ratio - focus);
    }
    *loss = y * pos + not_y * neg;
    *grad = y * dpos + not_y * dneg;
}

extern "C" __global__ void bce_logits_fwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                              const float* pos_weight, float* loss) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        float pw = pos_weight ? pos_weight[i % p.classes] : 1.0f, l, g;
        bce_eval(z[i], y[i], pw, &l, &g);
        loss[i] = l;
    }
}

extern "C" __global__ void bce_logits_bwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                              const float* pos_weight, const float* dy,
                                              float* dz) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        float pw = pos_weight ? pos_weight[i % p.classes] : 1.0f, l, g;
        bce_eval(z[i], y[i], pw, &l, &g);
        dz[i] = dy[i * p.dy_stride] * g;
    }
}

extern "C" __global__ void focal_fwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                         float* loss) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        float l, g;
        focal_eval(p, z[i], y[i], &l, &g);
        loss[i] = l;
    }
}

extern "C" __global__ void focal_bwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                         const float* dy, float* dz) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        float l, g;
        focal_eval(p, z[i], y[i], &l, &g);
        dz[i] = dy[i * p.dy_stride] * g;
    }
}

extern "C" __global__ void asl_fwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                       float* loss) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        float l, g;
        asl_eval(p, z[i], y[i], &l, &g);
        loss[i] = l;
    }
}

extern "C" __global__ void asl_bwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                       const float* dy, float* dz) {
    for (i64 i = grid_first(); i < p.numel; i += grid_stride()) {
        float l, g;
        asl_eval(p, z[i], y[i], &l, &g);
        dz[i] = dy[i * p.dy_stride] * g;
    }
}

// ---------------------------------------------------------------- PLM masks
// Philox4x32-10 exactly as src/plm/philox.rs: key = (seed lo, seed hi),
// counter = (block lo, block hi, batch lo, batch hi); element e of mask
// `batch` uses word e mod 4 of block ⌊e/4⌋, converted to the uniform
// u = (bits >> 8) · 2^-24 (exact in f32 and f64). The CPU compares u with
// the f64 keep probability, so the keep arrays are f64 here too and the
// comparison is done in f64: the mask is bit-for-bit the CPU mask.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

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
    i64 numel;      // B·C
    i64 classes;    // C
};
static_assert(sizeof(PlmMaskParams) == 32, "PlmMaskParams layout");

// One thread per Philox block (4 consecutive elements), grid-stride over
// ⌈numel/4⌉ blocks. Element e with target y (1 = positive) is kept (1.0)
// when u < keep_pos[c] (positive) or u < keep_neg[c] (negative), c = e mod C.
extern "C" __global__ void plm_mask_fwd_f32(PlmMaskParams p, const float* targets,
                                            const double* keep_pos, const double* keep_neg,
                                            float* mask) {
    const i64 blocks = (p.numel + 3) / 4;
    for (i64 blk = grid_first(); blk < blocks; blk += grid_stride()) {
        u32 ctr[4] = {(u32)blk, (u32)((u64)blk >> 32), (u32)p.batch, (u32)(p.batch >> 32)};
        philox4x32_10(ctr, (u32)p.seed, (u32)(p.seed >> 32));
        for (int lane = 0; lane < 4; ++lane) {
            i64 e = blk * 4 + lane;
            if (e >= p.numel) break;
            i64 c = e % p.classes;
            double u = (double)(ctr[lane] >> 8) * (1.0 / 16777216.0);
            double keep = targets[e] == 1.0f ? keep_pos[c] : keep_neg[c];
            mask[e] = u < keep ? 1.0f : 0.0f;
        }
    }
}

// ---------------------------------------------------------------- PLM histograms
// Counts one batch into the four PLM histograms (src/plm/histogram.rs):
// pos_pred / neg_pred are `[bin][class]` counts of the predicted
// probabilities of positive / negative elements, pos_labels / neg_labels
// count labels per class, `discarded` counts NaN or out-of-[0, 1]
// probabilities. The bin is min(⌊p·n_bins⌋, n_bins − 1) computed in f64 like
// the CPU. One thread per element, 64-bit atomicAdd into global memory
// (the histograms are small and the batch is one pass).

struct PlmHistogramParams {
    i64 numel;
    i64 classes;
    i64 n_bins;
};
static_assert(sizeof(PlmHistogramParams) == 24, "PlmHistogramParams layout");

extern "C" __global__ void plm_histogram_fwd_f32(PlmHistogramParams p, const float* probs,
                                                 const float* targets, u64* pos_pred,
                                                 u64* neg_pred, u64* pos_labels, u64* neg_labels,
                                                 u64* discarded) {
    for (i64 e = grid_first(); e < p.numel; e += grid_stride()) {
        i64 c = e % p.classes;
        bool positive = targets[e] == 1.0f;
        atomicAdd(positive ? &pos_labels[c] : &neg_labels[c], 1ull);
        double pr = (double)probs[e];
        if (!(pr >= 0.0 && pr <= 1.0)) {
            atomicAdd(discarded, 1ull);
            continue;
        }
        i64 bin = (i64)(pr * (double)p.n_bins);
        if (bin > p.n_bins - 1) bin = p.n_bins - 1;
        atomicAdd(positive ? &pos_pred[bin * p.classes + c] : &neg_pred[bin * p.classes + c], 1ull);
    }
}

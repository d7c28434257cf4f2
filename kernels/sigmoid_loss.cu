// Per-element multi-label losses on logits (src/ops/sigmoid_loss): fused
// BCE-with-logits, focal loss and ASL.
//
// The kernels mirror src/ops/sigmoid_loss/formulas.rs term by term, in the
// same operation order (this family is compiled with --fmad=false): every
// loss is ℓ(z, y) of one logit z and one target y, written with the stable
// pieces p = σ(z), q = 1 − p, softplus(±z) computed from e = exp(−|z|)
// only, so no exp overflows and no 1 − p cancels, even at |z| = 100. The
// exponential is the CPU's own polynomial (exp_f32), bit for bit on every
// device; log1pf, logf and powf are the device's (libm on the emulated GPU,
// hence the CPU's values there; within a few ulps on a real GPU).
//
// `<loss>_fwd_f32` writes out[i] = dy[i] · w[i] · ℓ and `<loss>_bwd_f32`
// writes out[i] = dy[i] · w[i] · dℓ/dz, where the weight w, the positive
// weight pw (BCE only) and the scale dy are read cyclically (element i
// reads index i mod len): a `[C]` vector for `[B, C]` logits, a single
// value, or one value per element. The forward's dy is a single 1; the
// backward's is the upstream gradient (one value for a sum, already divided
// by the count for a mean, or one per element).
//
// The forward also checks the targets: the smallest flat index of a target
// outside [0, 1] (NaN included) is written to *first_bad with atomicMin
// (the host initialises it to 2^64 − 1 and reads it back).
//
// Launch: 1-D grid-stride over the elements (`elementwise` in launch.rs).
// The cyclic indices advance with the loop (no 64-bit modulo per element).

struct SigmoidLossParams {
    i64 numel;
    i64 w_len;          // length of the cyclic weight (>= 1)
    i64 pw_len;         // length of the cyclic positive weight (>= 1)
    i64 dy_len;         // length of the cyclic scale (>= 1)
    float gamma;        // focal
    float alpha;        // focal, used when has_alpha
    float gamma_pos;    // ASL
    float gamma_neg;    // ASL
    float clip;         // ASL
    int has_alpha;      // focal: 0 means α_t = 1
};
static_assert(sizeof(SigmoidLossParams) == 56, "SigmoidLossParams layout");

// A cyclic index j = i mod len that follows a grid-stride loop over i: the
// modulo is taken once per thread, then each step adds stride mod len and
// wraps with one comparison.
struct CyclicIndex {
    i64 j, step, len;
};

__device__ __forceinline__ CyclicIndex cyclic_start(i64 first, i64 stride, i64 len) {
    CyclicIndex c;
    c.j = first % len;
    c.step = stride % len;
    c.len = len;
    return c;
}

__device__ __forceinline__ void cyclic_next(CyclicIndex& c) {
    c.j += c.step;
    if (c.j >= c.len) c.j -= c.len;
}

// e^x exactly as the CPU's `exp_f32` (src/ground/dtype.rs): Cody–Waite
// range reduction x = n·ln2 + r, a degree-7 Taylor polynomial for e^r, and
// 2^n built in the exponent bits; 0 below −87.3, +inf above ln(f32::MAX).
// Plain multiplies and adds (no contraction in this family), so every
// device rounds it as the CPU does.
__device__ __forceinline__ float exp_f32(float x) {
    const float LOG2E = 1.44269504088896340736f;
    const float LN2_HI = 0.69314575f;
    const float LN2_LO = 1.4286068e-6f;
    const float ROUND = 12582912.0f;  // 1.5 · 2^23
    const float MAX_ARG = 88.72283f;
    float xc = x < -87.3f ? -87.3f : x;
    xc = xc > MAX_ARG ? MAX_ARG : xc;
    float t = xc * LOG2E + ROUND;
    float n = t - ROUND;
    float r = (xc - n * LN2_HI) - n * LN2_LO;
    float p = 1.0f +
              r * (1.0f +
                   r * (0.5f +
                        r * (1.0f / 6.0f +
                             r * (1.0f / 24.0f +
                                  r * (1.0f / 120.0f + r * (1.0f / 720.0f + r * (1.0f / 5040.0f)))))));
    int n_int = (int)__float_as_uint(t) - (int)__float_as_uint(ROUND);
    int top = n_int > 127 ? 1 : 0;
    float scale = __uint_as_float(((u32)(n_int - top + 127)) << 23);
    float y = p * scale;
    if (top) y = y * 2.0f;
    if (x > MAX_ARG) return __uint_as_float(0x7f800000u);
    if (x < -87.3f) return 0.0f;
    if (x != x) return x;
    return y;
}

// σ(z), 1 − σ(z), softplus(z) = −ln(1 − p), softplus(−z) = −ln p.
struct SigmoidParts {
    float p, q, sp_pos, sp_neg;
};

__device__ __forceinline__ SigmoidParts sigmoid_parts(float z) {
    float e = exp_f32(-fabsf(z));
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
__device__ __forceinline__ void bce_eval(const SigmoidLossParams&, float z, float y, float pw,
                                         float* loss, float* grad) {
    SigmoidParts s = sigmoid_parts(z);
    float not_y = 1.0f - y;
    *loss = pw * y * s.sp_neg + not_y * s.sp_pos;
    *grad = not_y * s.p - pw * y * s.q;
}

// Focal loss (torchvision's sigmoid_focal_loss): with ce the BCE,
// m = 1 − p_t and α_t = α·y + (1 − α)(1 − y): ℓ = α_t·ce·m^γ,
// dℓ/dz = α_t·m^γ·((p − y) + γ·ce·(1 − 2y)·p·q/m).
__device__ __forceinline__ void focal_eval(const SigmoidLossParams& prm, float z, float y, float,
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
__device__ __forceinline__ void asl_eval(const SigmoidLossParams& prm, float z, float y, float,
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
    if (!(pm <= 0.0f)) {
        float pmg = powf(pm, prm.gamma_neg);
        neg = -pmg * ln_keep;
        float focus = prm.gamma_neg == 0.0f ? 0.0f : prm.gamma_neg * s.q * ln_keep / pm;
        dneg = s.p * pmg * (q_ratio - focus);
    }
    *loss = y * pos + not_y * neg;
    *grad = y * dpos + not_y * dneg;
}

// The shared loop: out[i] = dy[i] · w[i] · (ℓ or dℓ/dz), cyclic reads; with
// `first_bad`, records the smallest index of a target outside [0, 1].
template <void (*EVAL)(const SigmoidLossParams&, float, float, float, float*, float*)>
__device__ __forceinline__ void sigmoid_loss_loop(const SigmoidLossParams& p, const float* z,
                                                  const float* y, const float* w,
                                                  const float* pw, const float* dy, float* out,
                                                  bool derivative, u64* first_bad) {
    const i64 first = grid_first(), stride = grid_stride();
    CyclicIndex jw = cyclic_start(first, stride, p.w_len);
    CyclicIndex jp = cyclic_start(first, stride, p.pw_len);
    CyclicIndex jd = cyclic_start(first, stride, p.dy_len);
    for (i64 i = first; i < p.numel; i += stride) {
        float yi = y[i];
        if (first_bad && !(yi >= 0.0f && yi <= 1.0f)) atomicMin(first_bad, (u64)i);
        float l, g;
        EVAL(p, z[i], yi, pw[jp.j], &l, &g);
        out[i] = dy[jd.j] * w[jw.j] * (derivative ? g : l);
        cyclic_next(jw);
        cyclic_next(jp);
        cyclic_next(jd);
    }
}

// BCE with logits: per-element loss, and the targets check.
extern "C" __global__ void bce_logits_fwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                              const float* w, const float* pw, const float* dy,
                                              float* out, u64* first_bad) {
    sigmoid_loss_loop<bce_eval>(p, z, y, w, pw, dy, out, false, first_bad);
}

// BCE with logits: per-element gradient with respect to the logit.
extern "C" __global__ void bce_logits_bwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                              const float* w, const float* pw, const float* dy,
                                              float* out) {
    sigmoid_loss_loop<bce_eval>(p, z, y, w, pw, dy, out, true, nullptr);
}

// Focal loss: per-element loss, and the targets check.
extern "C" __global__ void focal_fwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                         const float* w, const float* pw, const float* dy,
                                         float* out, u64* first_bad) {
    sigmoid_loss_loop<focal_eval>(p, z, y, w, pw, dy, out, false, first_bad);
}

// Focal loss: per-element gradient with respect to the logit.
extern "C" __global__ void focal_bwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                         const float* w, const float* pw, const float* dy,
                                         float* out) {
    sigmoid_loss_loop<focal_eval>(p, z, y, w, pw, dy, out, true, nullptr);
}

// ASL: per-element loss, and the targets check.
extern "C" __global__ void asl_fwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                       const float* w, const float* pw, const float* dy,
                                       float* out, u64* first_bad) {
    sigmoid_loss_loop<asl_eval>(p, z, y, w, pw, dy, out, false, first_bad);
}

// ASL: per-element gradient with respect to the logit.
extern "C" __global__ void asl_bwd_f32(SigmoidLossParams p, const float* z, const float* y,
                                       const float* w, const float* pw, const float* dy,
                                       float* out) {
    sigmoid_loss_loop<asl_eval>(p, z, y, w, pw, dy, out, true, nullptr);
}

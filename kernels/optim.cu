// Fused optimizer updates: one pass over a parameter, its gradient and its
// state buffers, updated in place. Same formulas and operation order as
// src/ops/optim/cpu.rs (PyTorch's single-tensor implementations); the
// host folds the step-dependent constants (bias corrections, 1 − β, ...)
// in f64 and rounds them to f32 once, as the CPU does. This family is
// compiled with --fmad=false, so no multiply-add is contracted and each
// operation rounds as on the CPU.
//
// Launch: 1-D grid-stride over the n elements (`elementwise` in launch.rs);
// every access is at index i, coalesced.

struct SgdParams {
    i64 n;
    float lr;
    float weight_decay;
    float momentum;
    float dampening_complement;  // 1 − dampening
    int nesterov;
    int first_step;              // the momentum buffer starts as the gradient
    int has_buf;                 // 0: plain SGD, `buf` is unused (may be null)
    int _unused;
};
static_assert(sizeof(SgdParams) == 40, "SgdParams layout");

// d = g + wd·p; with momentum: buf = d on the first step, else
// buf = μ·buf + (1 − τ)·d, then d = d + μ·buf (Nesterov) or d = buf;
// finally p −= lr·d.
extern "C" __global__ void sgd_step_f32(SgdParams h, float* p, const float* g, float* buf) {
    for (i64 i = grid_first(); i < h.n; i += grid_stride()) {
        float d = g[i] + h.weight_decay * p[i];
        if (h.has_buf) {
            float b = h.first_step ? d : h.momentum * buf[i] + h.dampening_complement * d;
            buf[i] = b;
            d = h.nesterov ? d + h.momentum * b : b;
        }
        p[i] = p[i] - h.lr * d;
    }
}

struct AdamParams {
    i64 n;
    float step_size;        // lr / (1 − β1ᵗ)
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float eps;
    float bc2_sqrt;         // √(1 − β2ᵗ)
    float decay;            // 1 − lr·wd (AdamW)
    float weight_decay;     // wd (Adam's L2 term)
    int decoupled;          // 1: AdamW
    int _unused;
};
static_assert(sizeof(AdamParams) == 48, "AdamParams layout");

// AdamW: p *= 1 − lr·wd; Adam: g += wd·p. Then m += (1 − β1)(g − m),
// v = β2·v + (1 − β2)·g², p −= step_size · m / (√v / √(1 − β2ᵗ) + ε).
extern "C" __global__ void adam_step_f32(AdamParams h, float* p, const float* g, float* m,
                                         float* v) {
    for (i64 i = grid_first(); i < h.n; i += grid_stride()) {
        float pi = p[i];
        float gi = g[i];
        if (h.decoupled) {
            pi = pi * h.decay;
        } else {
            gi = gi + h.weight_decay * pi;
        }
        float mi = m[i] + h.one_minus_beta1 * (gi - m[i]);
        float vi = h.beta2 * v[i] + h.one_minus_beta2 * gi * gi;
        float denom = sqrtf(vi) / h.bc2_sqrt + h.eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - h.step_size * (mi / denom);
    }
}

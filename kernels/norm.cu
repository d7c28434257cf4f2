// Batch normalisation over the channels of a contiguous `N × C × S` input
// (S = product of the spatial dims, 1 for a rank-2 input); channel c owns
// the N runs x[n, c, 0..S]. Mirrors src/ops/norm/cpu.rs.
//
// Two kinds of kernels:
// - per-channel statistics (batch_norm_stats_fwd, batch_norm_moments_fwd,
//   batch_norm_reduce_bwd): one block per channel (grid-stride over
//   channels, 32 to 1024 threads, `rows` in launch.rs with rows = C). The
//   block's threads stride over the channel's M = N·S elements
//   (consecutive threads read consecutive s, so accesses are coalesced
//   when S ≥ 32) and accumulate in f64, shifted by the channel's first
//   element like the CPU kernel, which avoids the cancellation of
//   Σx² − (Σx)²/M.
// - per-element maps (batch_norm_fwd, batch_norm_eval_fwd, batch_norm_bwd,
//   batch_norm_eval_bwd): 1-D grid-stride over the N·C·S elements
//   (`elementwise` in launch.rs); channel = (i / S) mod C;
//   batch_norm_eval_stats_fwd: 1-D over the C channels.
// `weight` and `bias` may be null (no affine transform: 1 and 0).

struct BatchNormParams {
    i64 n, c, s;
    float eps;
    float momentum;
    int update_running;  // stats: also update running_mean / running_var
    int _unused;
};
static_assert(sizeof(BatchNormParams) == 40, "BatchNormParams layout");

__device__ __forceinline__ i64 bn_index(const BatchNormParams& p, i64 ch, i64 m) {
    // Element m (0 ≤ m < N·S) of channel ch.
    i64 n, s;
    divmod(m, p.s, &n, &s);
    return (n * p.c + ch) * p.s + s;
}

__device__ __forceinline__ i64 bn_channel(const BatchNormParams& p, i64 i) {
    // The channel of flat element i of the N × C × S input.
    i64 row, s, n, ch;
    divmod(i, p.s, &row, &s);
    divmod(row, p.c, &n, &ch);
    return ch;
}

// The moments of channel ch, valid on thread 0 (every thread of the block
// must call it): *mean and *var_sum = Σ(x − mean)², from sums in f64
// shifted by the channel's first element (as the CPU kernel). A rounding
// error that leaves var_sum slightly negative is clamped to 0 (NaN stays NaN).
__device__ __forceinline__ void bn_moments(const BatchNormParams& p, const float* x, i64 ch,
                                           double* scratch, double* mean, double* var_sum) {
    const i64 count = p.n * p.s;
    const double shift = count > 0 ? (double)x[ch * p.s] : 0.0;
    double s1 = 0.0, s2 = 0.0;
    for (i64 m = threadIdx.x; m < count; m += blockDim.x) {
        double d = (double)x[bn_index(p, ch, m)] - shift;
        s1 += d;
        s2 += d * d;
    }
    s1 = block_sum(s1, scratch);
    s2 = block_sum(s2, scratch);
    double v = s2 - s1 * s1 / (double)count;
    *mean = shift + s1 / (double)count;
    *var_sum = v < 0.0 ? 0.0 : v;
}

// Training statistics of each channel: save_mean = mean, save_invstd =
// 1/√(biased var + eps); with update_running, running_mean and running_var
// move towards the batch mean and the unbiased variance by `momentum`
// (running ← momentum·batch + (1 − momentum)·running, in f64).
extern "C" __global__ void batch_norm_stats_fwd_f32(BatchNormParams p, const float* x,
                                                    float* save_mean, float* save_invstd,
                                                    float* running_mean, float* running_var) {
    __shared__ double scratch[32];
    const i64 count = p.n * p.s;
    for (i64 ch = blockIdx.x; ch < p.c; ch += gridDim.x) {
        double mean, var_sum;
        bn_moments(p, x, ch, scratch, &mean, &var_sum);
        if (threadIdx.x == 0) {
            save_mean[ch] = (float)mean;
            save_invstd[ch] = (float)(1.0 / sqrt(var_sum / (double)count + (double)p.eps));
            if (p.update_running) {
                double mom = (double)p.momentum;
                double unbiased = var_sum / (double)(count - 1);
                running_mean[ch] = (float)(mom * mean + (1.0 - mom) * (double)running_mean[ch]);
                running_var[ch] = (float)(mom * unbiased + (1.0 - mom) * (double)running_var[ch]);
            }
        }
    }
}

// The moments of each channel in f64, for statistics combined with those
// of other inputs (synchronised batch norm merges every rank's): mean[ch]
// and m2[ch] = Σ(x − mean)², the values batch_norm_stats_fwd_f32 derives
// its statistics from. The count per channel is N·S.
extern "C" __global__ void batch_norm_moments_fwd_f32(BatchNormParams p, const float* x,
                                                      double* mean, double* m2) {
    __shared__ double scratch[32];
    for (i64 ch = blockIdx.x; ch < p.c; ch += gridDim.x) {
        double mu, var_sum;
        bn_moments(p, x, ch, scratch, &mu, &var_sum);
        if (threadIdx.x == 0) {
            mean[ch] = mu;
            m2[ch] = var_sum;
        }
    }
}

// y = (x − mean_c) · (w_c · invstd_c) + b_c, from the training statistics.
extern "C" __global__ void batch_norm_fwd_f32(BatchNormParams p, const float* x, const float* mean,
                                              const float* invstd, const float* weight,
                                              const float* bias, float* y) {
    const i64 total = p.n * p.c * p.s;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 ch = bn_channel(p, i);
        float scale = (weight ? weight[ch] : 1.0f) * invstd[ch];
        y[i] = (x[i] - mean[ch]) * scale + (bias ? bias[ch] : 0.0f);
    }
}

// Eval mode, the statistics the backward uses: save_mean = running_mean and
// save_invstd = 1/√(running_var + eps), the values batch_norm_eval_fwd
// computes (copies, so later changes of the running statistics do not
// reach the backward).
extern "C" __global__ void batch_norm_eval_stats_fwd_f32(BatchNormParams p,
                                                         const float* running_mean,
                                                         const float* running_var,
                                                         float* save_mean, float* save_invstd) {
    for (i64 ch = grid_first(); ch < p.c; ch += grid_stride()) {
        save_mean[ch] = running_mean[ch];
        save_invstd[ch] = 1.0f / sqrtf(running_var[ch] + p.eps);
    }
}

// Eval mode: the same map with the running statistics,
// invstd = 1/√(running_var + eps).
extern "C" __global__ void batch_norm_eval_fwd_f32(BatchNormParams p, const float* x,
                                                   const float* running_mean,
                                                   const float* running_var, const float* weight,
                                                   const float* bias, float* y) {
    const i64 total = p.n * p.c * p.s;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 ch = bn_channel(p, i);
        float invstd = 1.0f / sqrtf(running_var[ch] + p.eps);
        float scale = (weight ? weight[ch] : 1.0f) * invstd;
        y[i] = (x[i] - running_mean[ch]) * scale + (bias ? bias[ch] : 0.0f);
    }
}

// The per-channel sums of the training backward, in f64:
// sum_dy = Σ dy and sum_dy_xmu = Σ dy·(x − mean). Also writes the parameter
// gradients when asked (non-null): grad_weight = sum_dy_xmu · invstd and
// grad_bias = sum_dy.
extern "C" __global__ void batch_norm_reduce_bwd_f32(BatchNormParams p, const float* dy,
                                                     const float* x, const float* mean,
                                                     const float* invstd, float* sum_dy,
                                                     float* sum_dy_xmu, float* grad_weight,
                                                     float* grad_bias) {
    __shared__ double scratch[32];
    const i64 count = p.n * p.s;
    for (i64 ch = blockIdx.x; ch < p.c; ch += gridDim.x) {
        const double mu = (double)mean[ch];
        double g1 = 0.0, g2 = 0.0;
        for (i64 m = threadIdx.x; m < count; m += blockDim.x) {
            i64 i = bn_index(p, ch, m);
            double g = (double)dy[i];
            g1 += g;
            g2 += g * ((double)x[i] - mu);
        }
        g1 = block_sum(g1, scratch);
        g2 = block_sum(g2, scratch);
        if (threadIdx.x == 0) {
            sum_dy[ch] = (float)g1;
            sum_dy_xmu[ch] = (float)g2;
            if (grad_weight) grad_weight[ch] = (float)(g2 * (double)invstd[ch]);
            if (grad_bias) grad_bias[ch] = (float)g1;
        }
    }
}

// Training-mode input gradient, the closed form
// dx = a·dy + q1·(x − mean) + q0 with a = w·invstd,
// q1 = −a·invstd²·Σdy(x − mean)/M and q0 = −a·Σdy/M (M = N·S).
extern "C" __global__ void batch_norm_bwd_f32(BatchNormParams p, const float* dy, const float* x,
                                              const float* mean, const float* invstd,
                                              const float* weight, const float* sum_dy,
                                              const float* sum_dy_xmu, float* dx) {
    const i64 total = p.n * p.c * p.s;
    const float count = (float)(p.n * p.s);
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 ch = bn_channel(p, i);
        float is = invstd[ch];
        float a = (weight ? weight[ch] : 1.0f) * is;
        float q1 = -a * is * is * sum_dy_xmu[ch] / count;
        float q0 = -a * sum_dy[ch] / count;
        dx[i] = a * dy[i] + q1 * (x[i] - mean[ch]) + q0;
    }
}

// Eval-mode input gradient: the statistics are constants, so
// dx = dy · (w · invstd), invstd saved by batch_norm_eval_stats_fwd.
extern "C" __global__ void batch_norm_eval_bwd_f32(BatchNormParams p, const float* dy,
                                                   const float* invstd, const float* weight,
                                                   float* dx) {
    const i64 total = p.n * p.c * p.s;
    for (i64 i = grid_first(); i < total; i += grid_stride()) {
        i64 ch = bn_channel(p, i);
        float scale = (weight ? weight[ch] : 1.0f) * invstd[ch];
        dx[i] = dy[i] * scale;
    }
}

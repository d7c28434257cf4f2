// Runs ferrite's CUDA kernels on the CPU under simt.h. Each command reads
// its inputs from raw little-endian files in the current directory and
// writes raw outputs beside them; check.py prepares the inputs, calls this
// program and compares the outputs with PyTorch.
#include "kernels_emulated.h"
#include <string>

template <class T> std::vector<T> rd(const char* name, size_t n) {
    std::vector<T> v(n);
    FILE* f = fopen(name, "rb");
    if (!f || fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "cannot read %s\n", name); exit(1); }
    fclose(f);
    return v;
}
template <class T> void wr(const char* name, const std::vector<T>& v) {
    FILE* f = fopen(name, "wb");
    fwrite(v.data(), sizeof(T), v.size(), f);
    fclose(f);
}

int main(int argc, char** argv) {
    std::string cmd = argv[1];
    auto A = [&](int i) { return (i64)atoll(argv[i]); };
    auto F = [&](int i) { return (float)atof(argv[i]); };
    const Dim3 one{1, 1, 1};
    if (cmd == "philox") {  // the three Random123 known answers
        u32 c[3][4] = {{0, 0, 0, 0}, {~0u, ~0u, ~0u, ~0u}, {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}};
        u32 k[3][2] = {{0, 0}, {~0u, ~0u}, {0xa4093822, 0x299f31d0}};
        for (int i = 0; i < 3; ++i) {
            philox4x32_10(c[i], k[i][0], k[i][1]);
            printf("%08x %08x %08x %08x\n", c[i][0], c[i][1], c[i][2], c[i][3]);
        }
    } else if (cmd == "elementwise") {  // x: n floats; a: [3,1,5], b: [4,5]
        i64 n = A(2);
        auto x = rd<float>("x.bin", n);
        ElementwiseParams p{};
        p.numel = n; p.ndim = 1; p.shape[0] = n; p.contiguous = 1;
        std::vector<float> y(n);
        std::vector<bf16> hb(n);
        std::vector<f16> hf(n);
        launch(one, 1, [&] { sigmoid_fwd_f32(p, x.data(), y.data()); }); wr("sigmoid.bin", y);
        launch(one, 1, [&] { gelu_fwd_f32(p, x.data(), y.data()); }); wr("gelu.bin", y);
        launch(one, 1, [&] { softplus_fwd_f32(p, x.data(), y.data()); }); wr("softplus.bin", y);
        launch(one, 1, [&] { relu_fwd_f32(p, x.data(), y.data()); }); wr("relu.bin", y);
        p.alpha = -1.0f; p.beta = 0.5f;
        launch(one, 1, [&] { clamp_fwd_f32(p, x.data(), y.data()); }); wr("clamp.bin", y);
        launch(one, 1, [&] { cast_f32_to_bf16(p, x.data(), hb.data()); }); wr("bf16.bin", hb);
        launch(one, 1, [&] { cast_f32_to_f16(p, x.data(), hf.data()); }); wr("f16.bin", hf);
        launch(one, 1, [&] { cast_bf16_to_f32(p, hb.data(), y.data()); }); wr("bf16_back.bin", y);
        ElementwiseParams q{};
        q.numel = 60; q.ndim = 3; q.shape[0] = 3; q.shape[1] = 4; q.shape[2] = 5;
        i64 sa[3] = {5, 0, 1}, sb[3] = {0, 5, 1};
        for (int d = 0; d < 3; ++d) { q.strides[0][d] = sa[d]; q.strides[1][d] = sb[d]; }
        auto a = rd<float>("a.bin", 15);
        auto b = rd<float>("b.bin", 20);
        std::vector<float> o(60);
        std::vector<u8> m(60);
        launch(one, 1, [&] { sub_fwd_f32(q, a.data(), b.data(), o.data()); }); wr("sub.bin", o);
        launch(one, 1, [&] { lt_fwd_f32(q, a.data(), b.data(), m.data()); }); wr("lt.bin", m);
    } else if (cmd == "plm_mask") {
        PlmMaskParams p{strtoull(argv[2], 0, 10), strtoull(argv[3], 0, 10), A(4), A(5)};
        auto t = rd<float>("targets.bin", p.numel);
        auto kp = rd<double>("kp.bin", p.classes), kn = rd<double>("kn.bin", p.classes);
        std::vector<float> m(p.numel);
        std::vector<u64> bad(1, ~0ull);
        launch({2, 1, 1}, 64, [&] { plm_mask_fwd_f32(p, t.data(), kp.data(), kn.data(), m.data(), bad.data()); });
        wr("mask.bin", m);
    } else if (cmd == "hist") {
        PlmHistogramParams p{A(2), A(3), A(4)};
        auto pr = rd<float>("p.bin", p.numel), t = rd<float>("t.bin", p.numel);
        std::vector<u64> pp(p.n_bins * p.classes), np(p.n_bins * p.classes), pl(p.classes), nl(p.classes), d(1);
        launch({3, 1, 1}, 64, [&] {
            plm_histogram_fwd_f32(p, pr.data(), t.data(), pp.data(), np.data(), pl.data(), nl.data(), d.data());
        });
        wr("pp.bin", pp); wr("np.bin", np); wr("pl.bin", pl); wr("nl.bin", nl); wr("d.bin", d);
    } else if (cmd == "pool") {
        Pool2dParams p{A(2), A(3), A(4), A(5), A(6), A(7), A(8), A(9), A(10), A(11), A(12), (int)A(13), 0};
        size_t nin = p.planes * p.h * p.w, nout = p.planes * p.oh * p.ow;
        auto x = rd<float>("x.bin", nin), dy = rd<float>("dy.bin", nout);
        std::vector<float> y(nout), dx(nin);
        std::vector<i64> idx(nout);
        const Dim3 g{3, 1, 1};
        launch(g, 32, [&] { max_pool2d_fwd_f32(p, x.data(), y.data(), idx.data()); }); wr("max_y.bin", y); wr("max_idx.bin", idx);
        launch(g, 32, [&] { max_pool2d_bwd_f32(p, dy.data(), idx.data(), dx.data()); }); wr("max_dx.bin", dx);
        launch(g, 32, [&] { avg_pool2d_fwd_f32(p, x.data(), y.data()); }); wr("avg_y.bin", y);
        launch(g, 32, [&] { avg_pool2d_bwd_f32(p, dy.data(), dx.data()); }); wr("avg_dx.bin", dx);
        launch(g, 32, [&] { adaptive_avg_pool2d_fwd_f32(p, x.data(), y.data()); }); wr("ad_y.bin", y);
        launch(g, 32, [&] { adaptive_avg_pool2d_bwd_f32(p, dy.data(), dx.data()); }); wr("ad_dx.bin", dx);
    } else if (cmd == "im2col") {
        Im2colParams p{A(2), A(3), A(4), A(5), A(6), A(7), A(8), A(9), A(10), A(11), A(12), A(13), A(14), A(15)};
        size_t nin = p.n * p.c * p.h * p.w, ncol = p.n * p.c * p.kh * p.kw * p.oh * p.ow;
        auto x = rd<float>("x.bin", nin), g = rd<float>("g.bin", ncol);
        std::vector<float> col(ncol), dx(nin);
        launch({2, 1, 1}, 32, [&] { im2col_fwd_f32(p, x.data(), col.data()); }); wr("col.bin", col);
        launch({2, 1, 1}, 32, [&] { im2col_bwd_f32(p, g.data(), dx.data()); }); wr("dx.bin", dx);
    } else if (cmd == "loss") {
        // numel, w_len, pw_len, dy_len, then the hyper-parameters.
        SigmoidLossParams p{A(2), 1, A(3), 1, F(4), F(5), F(6), F(7), F(8), (int)A(9)};
        auto z = rd<float>("z.bin", p.numel), y = rd<float>("y.bin", p.numel);
        auto pw = rd<float>("pw.bin", p.pw_len), dy = rd<float>("dyl.bin", p.numel);
        std::vector<float> one_v(1, 1.0f), l(p.numel), g(p.numel);
        std::vector<u64> bad(1, ~0ull);
        SigmoidLossParams q = p;
        q.dy_len = p.numel;  // the backward's upstream gradient is per element
        const float *w = one_v.data(), *ones = one_v.data();
        launch(one, 1, [&] { bce_logits_fwd_f32(p, z.data(), y.data(), w, pw.data(), ones, l.data(), bad.data()); }); wr("bce_l.bin", l);
        launch(one, 1, [&] { bce_logits_bwd_f32(q, z.data(), y.data(), w, pw.data(), dy.data(), g.data()); }); wr("bce_g.bin", g);
        p.pw_len = 1; q.pw_len = 1;
        launch(one, 1, [&] { focal_fwd_f32(p, z.data(), y.data(), w, ones, ones, l.data(), bad.data()); }); wr("focal_l.bin", l);
        launch(one, 1, [&] { focal_bwd_f32(q, z.data(), y.data(), w, ones, dy.data(), g.data()); }); wr("focal_g.bin", g);
        launch(one, 1, [&] { asl_fwd_f32(p, z.data(), y.data(), w, ones, ones, l.data(), bad.data()); }); wr("asl_l.bin", l);
        launch(one, 1, [&] { asl_bwd_f32(q, z.data(), y.data(), w, ones, dy.data(), g.data()); }); wr("asl_g.bin", g);
    } else if (cmd == "bn") {
        i64 n = A(2), c = A(3), s = A(4);
        BatchNormParams p{n, c, s, F(5), 0.1f, 1, 0};
        size_t N = n * c * s;
        auto x = rd<float>("x.bin", N), dy = rd<float>("dy.bin", N);
        auto w = rd<float>("w.bin", c), b = rd<float>("b.bin", c), rm = rd<float>("rm.bin", c), rv = rd<float>("rv.bin", c);
        std::vector<float> mean(c), invstd(c), sdy(c), sdx(c), gw(c), gb(c), y(N), dx(N);
        launch({2, 1, 1}, 64, [&] { batch_norm_eval_fwd_f32(p, x.data(), rm.data(), rv.data(), w.data(), b.data(), y.data()); }); wr("ye.bin", y);
        launch({2, 1, 1}, 64, [&] { batch_norm_eval_bwd_f32(p, dy.data(), rv.data(), w.data(), dx.data()); }); wr("dxe.bin", dx);
        launch({2, 1, 1}, 64, [&] { batch_norm_stats_fwd_f32(p, x.data(), mean.data(), invstd.data(), rm.data(), rv.data()); });
        launch({2, 1, 1}, 64, [&] { batch_norm_fwd_f32(p, x.data(), mean.data(), invstd.data(), w.data(), b.data(), y.data()); });
        launch({2, 1, 1}, 64, [&] {
            batch_norm_reduce_bwd_f32(p, dy.data(), x.data(), mean.data(), invstd.data(), sdy.data(), sdx.data(), gw.data(), gb.data());
        });
        launch({2, 1, 1}, 64, [&] {
            batch_norm_bwd_f32(p, dy.data(), x.data(), mean.data(), invstd.data(), w.data(), sdy.data(), sdx.data(), dx.data());
        });
        wr("y.bin", y); wr("dx.bin", dx); wr("rm_out.bin", rm); wr("rv_out.bin", rv); wr("gw.bin", gw); wr("gb.bin", gb);
    } else if (cmd == "strided") {  // x: [a, b, c] contiguous, reduced dims as a bit mask
        i64 shape[3] = {A(2), A(3), A(4)}, strides[3] = {A(3) * A(4), A(4), 1};
        int mask = (int)A(5);
        StridedReduceParams p{};
        p.out_numel = p.red_numel = 1;
        for (int d = 0; d < 3; d++) {
            if (mask >> d & 1) {
                p.red_shape[p.red_ndim] = shape[d]; p.red_strides[p.red_ndim++] = strides[d]; p.red_numel *= shape[d];
            } else {
                p.out_shape[p.out_ndim] = shape[d]; p.out_strides[p.out_ndim++] = strides[d]; p.out_numel *= shape[d];
            }
        }
        auto x = rd<float>("x.bin", shape[0] * shape[1] * shape[2]);
        std::vector<float> o(p.out_numel);
        launch(one, 32, [&] { sum_strided_fwd_f32(p, x.data(), o.data()); }); wr("sum.bin", o);
        launch(one, 32, [&] { max_strided_fwd_f32(p, x.data(), o.data()); }); wr("max.bin", o);
    } else if (cmd == "rows") {
        i64 rows = A(2), cols = A(3);
        unsigned threads = A(4);
        const Dim3 g{(unsigned)A(5), 1, 1};
        RowParams p{rows, cols, cols};
        auto x = rd<float>("x.bin", rows * cols), dy = rd<float>("dy.bin", rows * cols);
        std::vector<float> o(rows), y(rows * cols), dx(rows * cols);
        std::vector<i64> idx(rows);
        launch(g, threads, [&] { sum_fwd_f32(p, x.data(), o.data()); }); wr("sum.bin", o);
        launch(g, threads, [&] { mean_fwd_f32(p, x.data(), o.data()); }); wr("mean.bin", o);
        launch(g, threads, [&] { max_fwd_f32(p, x.data(), o.data()); }); wr("max.bin", o);
        launch(g, threads, [&] { logsumexp_fwd_f32(p, x.data(), o.data()); }); wr("lse.bin", o);
        launch(g, threads, [&] { argmax_fwd_f32(p, x.data(), idx.data()); }); wr("argmax.bin", idx);
        launch(g, threads, [&] { softmax_fwd_f32(p, x.data(), y.data()); }); wr("sm.bin", y);
        launch(g, threads, [&] { softmax_bwd_f32(p, y.data(), dy.data(), dx.data()); }); wr("smb.bin", dx);
        launch(g, threads, [&] { log_softmax_fwd_f32(p, x.data(), y.data()); }); wr("lsm.bin", y);
        launch(g, threads, [&] { log_softmax_bwd_f32(p, y.data(), dy.data(), dx.data()); }); wr("lsmb.bin", dx);
    } else if (cmd == "gemm") {  // A stored [batch][m][k] or, with ta, [batch][k][m]
        i64 batch = A(2), m = A(3), k = A(4), n = A(5);
        int ta = A(6), dt = A(7);
        unsigned gy = A(8), gz = A(9);
        GemmParams p{m, n, k, batch, ta ? 1 : k, ta ? m : 1, n, 1, n, 1, m * k, k * n, m * n, 1.0f, F(10)};
        if (dt == 0) {
            auto a = rd<float>("a.bin", batch * m * k), b = rd<float>("b.bin", batch * k * n), c = rd<float>("c.bin", batch * m * n);
            launch({(unsigned)((n + 127) / 128), gy, gz}, 256, [&] { gemm_fwd_f32(p, a.data(), b.data(), c.data()); });
            wr("c_out.bin", c);
        } else {
            auto a = rd<u16>("a.bin", batch * m * k), b = rd<u16>("b.bin", batch * k * n), c = rd<u16>("c.bin", batch * m * n);
            const Dim3 g{(unsigned)((n + 63) / 64), gy, gz};
            if (dt == 1) launch(g, 128, [&] { gemm_fwd_bf16(p, (const bf16*)a.data(), (const bf16*)b.data(), (bf16*)c.data()); });
            else launch(g, 128, [&] { gemm_fwd_f16(p, (const f16*)a.data(), (const f16*)b.data(), (f16*)c.data()); });
            wr("c_out.bin", c);
        }
    } else {
        fprintf(stderr, "unknown command %s\n", cmd.c_str());
        return 2;
    }
    return 0;
}

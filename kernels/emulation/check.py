"""Runs ferrite's CUDA kernels on the CPU (simt.h) and compares them with
PyTorch: a check of the kernels' index arithmetic, tiling, reductions and
numerics that needs no GPU. It does not replace the GPU tests
(tests/cuda_device.rs): the emulator runs the C++ of the kernels, not the
PTX NVRTC makes of them, and models mma.sync from the PTX ISA's description.

Needs g++ (C++20) and PyTorch:
    /tmp/torchenv/bin/python kernels/emulation/check.py
"""
import os
import subprocess
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
FAMILIES = ["elementwise", "reduce", "gemm", "conv", "pool", "norm", "sigmoid_loss", "plm"]


def emulated_source():
    """common.cuh + every family, with the three inline-PTX spots replaced by
    their host equivalents (f16 conversions, mma.sync)."""
    common = open(os.path.join(KERNELS, "common.cuh")).read()
    common = common.replace('asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));', "f = h2f(h.bits, false);")
    common = common.replace(
        'asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));',
        "{ _Float16 v = (_Float16)f; memcpy(&h.bits, &v, 2); }",
    )
    parts = ['#include "simt.h"', common]
    for family in FAMILIES:
        src = open(os.path.join(KERNELS, family + ".cu")).read()
        if family == "gemm":
            start = src.index("#if defined(FERRITE_EMULATOR)")
            end = src.index("#endif", start) + len("#endif")
            src = src[:start] + "emulate_mma(d, a, b, BF16);" + src[end:]
        parts.append(src)
    return "\n".join(parts)


WORK = tempfile.mkdtemp(prefix="ferrite-emulation-")
open(os.path.join(WORK, "kernels_emulated.h"), "w").write(emulated_source())
subprocess.run(
    ["g++", "-std=c++20", "-O1", "-pthread", "-I", HERE, "-I", WORK, "-o", os.path.join(WORK, "harness"),
     os.path.join(HERE, "harness.cpp")],
    check=True,
)
os.chdir(WORK)
rng = np.random.default_rng(0)


def run(*args):
    subprocess.run(["./harness", *map(str, args)], check=True)


def out(name, dtype=np.float32):
    return np.fromfile(name, dtype=dtype)


def save(**arrays):
    for name, a in arrays.items():
        np.asarray(a).tofile(name + ".bin")


def close(name, got, want, atol, rtol=0.0):
    want = np.asarray(want, dtype=np.float64).ravel()
    ok = np.allclose(got, want, atol=atol, rtol=rtol, equal_nan=True)
    assert ok, f"{name}: max error {np.nanmax(np.abs(got - want))}"


# ---------------------------------------------------------------- Philox and PLM
kat = subprocess.run(["./harness", "philox"], check=True, capture_output=True, text=True).stdout.split("\n")
assert kat[:3] == ["6627e8d5 e169c58d bc57ac4c 9b00dbd8", "408f276d 41c83b0e a20bc7c6 6d5451fd",
                   "d16cfe09 94fdcceb 5001e420 24126ea1"], kat


def philox(c, k):
    """Philox4x32-10 in Python, checked against the same known answers."""
    x = list(c)
    for r in range(10):
        if r > 0:
            k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
        p0, p1 = 0xD2511F53 * x[0], 0xCD9E8D57 * x[2]
        x = [(p1 >> 32) ^ x[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ x[3] ^ k[1], p0 & 0xFFFFFFFF]
    return x


assert "%08x" % philox([0, 0, 0, 0], [0, 0])[0] == "6627e8d5"
B, C, seed, batch = 31, 7, 0x123456789ABCDEF0, (1 << 40) + 3
targets = (rng.random(B * C) < 0.3).astype(np.float32)
kp, kn = rng.random(C), rng.random(C)
save(targets=targets, kp=kp, kn=kn)
run("plm_mask", seed, batch, B * C, C)
want = []
for e in range(B * C):
    blk = e // 4
    word = philox([blk & 0xFFFFFFFF, blk >> 32, batch & 0xFFFFFFFF, batch >> 32],
                  [seed & 0xFFFFFFFF, seed >> 32])[e % 4]
    keep = kp[e % C] if targets[e] == 1 else kn[e % C]
    want.append(1.0 if (word >> 8) / 16777216.0 < keep else 0.0)
assert np.array_equal(out("mask.bin"), np.array(want, np.float32)), "plm mask"

B, C, bins = 40, 5, 10
p = rng.random(B * C).astype(np.float32)
p[:4] = [1.0, 0.0, np.nan, 1.5]
t = (rng.random(B * C) < 0.3).astype(np.float32)
save(p=p, t=t)
run("hist", B * C, C, bins)
pp, npp = np.zeros((bins, C), np.uint64), np.zeros((bins, C), np.uint64)
pl, nl, discarded = np.zeros(C, np.uint64), np.zeros(C, np.uint64), 0
for e in range(B * C):
    c, pos, pd = e % C, t[e] == 1.0, float(p[e])
    (pl if pos else nl)[c] += 1
    if not 0 <= pd <= 1:
        discarded += 1
        continue
    (pp if pos else npp)[min(int(pd * bins), bins - 1), c] += 1
assert np.array_equal(out("pp.bin", np.uint64), pp.ravel()) and np.array_equal(out("np.bin", np.uint64), npp.ravel())
assert np.array_equal(out("pl.bin", np.uint64), pl) and np.array_equal(out("nl.bin", np.uint64), nl)
assert out("d.bin", np.uint64)[0] == discarded
print("philox, plm mask, plm histogram: ok")

# ---------------------------------------------------------------- elementwise
x = np.concatenate([rng.normal(0, 4, 200), [0.0, -0.0, np.inf, -np.inf, np.nan, 30.0, -30.0, 1 + 2**-8, 1 + 3 * 2**-8,
                                               65520.0, 1e-8]]).astype(np.float32)
a, b = rng.normal(size=(3, 1, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
save(x=x, a=a, b=b)
run("elementwise", len(x))
t = torch.tensor(x, dtype=torch.float64)
close("sigmoid", out("sigmoid.bin"), torch.sigmoid(t), 1e-7, 1e-6)
close("gelu", out("gelu.bin"), F.gelu(t), 1e-6, 1e-5)
close("softplus", out("softplus.bin"), F.softplus(t), 1e-6, 1e-6)
close("relu", out("relu.bin"), torch.where(torch.isnan(t), t, F.relu(t)), 0)
close("clamp", out("clamp.bin"), torch.where(torch.isnan(t), t, t.clamp(-1, 0.5)), 0)
same = ~np.isnan(x)


def bits(h):
    return h.view(torch.int16).numpy().view(np.uint16)


tb, th = torch.tensor(x).to(torch.bfloat16), torch.tensor(x).to(torch.float16)
assert np.array_equal(out("bf16.bin", np.uint16)[same], bits(tb)[same]), "f32 -> bf16 rounding"
assert np.array_equal(out("f16.bin", np.uint16)[same], bits(th)[same]), "f32 -> f16 rounding"
close("bf16 -> f32 (NaN stays NaN)", out("bf16_back.bin"), tb.to(torch.float64), 0)
assert np.array_equal(out("sub.bin"), (np.broadcast_to(a, (3, 4, 5)) - b).ravel()), "broadcast sub"
assert np.array_equal(out("lt.bin", np.uint8), (np.broadcast_to(a, (3, 4, 5)) < b).ravel().astype(np.uint8)), "lt"
print("elementwise: ok")

# ---------------------------------------------------------------- reductions
for rows, cols, threads, grid in [(5, 100, 128, 2), (3, 1, 32, 3), (4, 1000, 512, 1), (2, 33, 64, 2)]:
    x = rng.normal(0, 3, (rows, cols)).astype(np.float32)
    if cols > 5:
        x[1, 3] = x[1, 5] = x[1].max() + 1  # a tie: the first index wins
    if rows > 3:
        x[3, min(2, cols - 1)] = np.nan
    dy = rng.normal(size=(rows, cols)).astype(np.float32)
    save(x=x, dy=dy)
    run("rows", rows, cols, threads, grid)
    t, g = torch.tensor(x, dtype=torch.float64), torch.tensor(dy, dtype=torch.float64)
    close("sum", out("sum.bin"), t.sum(1), 1e-4)
    close("mean", out("mean.bin"), t.mean(1), 1e-5)
    close("max", out("max.bin"), t.amax(1), 0)
    close("logsumexp", out("lse.bin"), torch.logsumexp(t, 1), 1e-5)
    assert np.array_equal(out("argmax.bin", np.int64), torch.tensor(x).argmax(1).numpy()), "argmax"
    for name, f in [("sm", torch.softmax), ("lsm", torch.log_softmax)]:
        tt = t.clone().requires_grad_(True)
        y = f(tt, 1)
        y.backward(g)
        close(name, out(name + ".bin"), y.detach(), 1e-5)
        close(name + " backward", out(name + "b.bin"), tt.grad, 1e-5)
x = rng.normal(size=(3, 4, 5)).astype(np.float32)
save(x=x)
for mask in range(8):
    run("strided", 3, 4, 5, mask)
    dims = tuple(d for d in range(3) if mask >> d & 1)
    close(f"sum over {dims}", out("sum.bin"), x.astype(np.float64).sum(axis=dims) if dims else x, 1e-5)
    close(f"max over {dims}", out("max.bin"), x.max(axis=dims) if dims else x, 0)
print("reductions: ok")


# ---------------------------------------------------------------- GEMM
def to_half(v, dt):
    h = torch.tensor(v).to(torch.bfloat16 if dt == 1 else torch.float16)
    return h.view(torch.int16).numpy(), h.to(torch.float64).numpy()


def from_half(bits, dt):
    h = torch.tensor(bits.view(np.int16)).view(torch.bfloat16 if dt == 1 else torch.float16)
    return h.to(torch.float64).numpy()


for batch, m, k, n, ta, gy, gz, beta in [(1, 257, 129, 65, 0, 3, 1, 0.0), (3, 130, 20, 129, 1, 1, 2, 0.5),
                                         (2, 5, 0, 3, 0, 1, 1, 0.0), (1, 64, 48, 64, 0, 1, 1, 0.0)]:
    a = rng.uniform(-1, 1, (batch, m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (batch, k, n)).astype(np.float32)
    c = rng.uniform(-1, 1, (batch, m, n)).astype(np.float32)
    stored = a.transpose(0, 2, 1).copy() if ta else a
    for dt in [0, 1, 2]:  # f32, bf16, f16
        if dt == 0:
            save(a=stored, b=b, c=c)
            aw, bw, cw = stored.astype(np.float64), b.astype(np.float64), c.astype(np.float64)
        else:
            (ab, aw), (bb, bw), (cb, cw) = to_half(stored, dt), to_half(b, dt), to_half(c, dt)
            save(a=ab, b=bb, c=cb)
        run("gemm", batch, m, k, n, ta, dt, gy, gz, beta)
        ref = (aw.transpose(0, 2, 1) if ta else aw) @ bw + beta * cw
        got = out("c_out.bin").astype(np.float64) if dt == 0 else from_half(out("c_out.bin", np.uint16), dt)
        unit = [1e-5, 2**-8, 2**-11][dt]
        err = np.abs(got.reshape(ref.shape) - ref)
        assert (err <= unit * np.abs(ref) + 1e-5 * k + 1e-6).all(), ("gemm", dt, batch, m, k, n, err.max())
print("gemm (f32 tiles, bf16/f16 mma): ok")

# ---------------------------------------------------------------- conv, pool
for N, Cc, H, W, kh, kw, sh, sw, ph, pw, dh, dw in [(2, 3, 9, 8, 3, 3, 2, 1, 1, 2, 1, 2), (1, 2, 5, 5, 1, 1, 1, 1, 0, 0, 1, 1),
                                                    (1, 1, 7, 6, 3, 2, 3, 2, 2, 0, 2, 1)]:
    x = torch.randn(N, Cc, H, W)
    args = dict(dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
    col = F.unfold(x, (kh, kw), **args)
    g = torch.randn_like(col)
    oh, ow = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    save(x=x.numpy(), g=g.numpy())
    run("im2col", N, Cc, H, W, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw)
    assert np.array_equal(out("col.bin"), col.numpy().ravel()), "im2col"
    close("col2im", out("dx.bin"), F.fold(g, (H, W), (kh, kw), **args), 1e-5)
for N, Cc, H, W, k, s, p, ceil in [(2, 3, 9, 8, 3, 2, 1, False), (1, 2, 7, 7, 3, 2, 1, True), (1, 1, 5, 6, 2, 2, 0, False),
                                   (2, 2, 6, 5, 3, 1, 1, False)]:
    x = torch.randn(N, Cc, H, W)
    x.view(-1)[5] = x.view(-1)[6]  # a tie
    xm = x.clone().requires_grad_(True)
    y, idx = F.max_pool2d(xm, k, s, p, ceil_mode=ceil, return_indices=True)
    oh, ow = y.shape[2:]
    dy = torch.randn_like(y)
    y.backward(dy)
    save(x=x.numpy(), dy=dy.numpy())
    for cip in [1, 0]:
        run("pool", N * Cc, H, W, oh, ow, k, k, s, s, p, p, cip)
        close("max pool", out("max_y.bin"), y.detach(), 0)
        assert np.array_equal(out("max_idx.bin", np.int64), idx.numpy().ravel()), "max pool indices"
        close("max pool backward", out("max_dx.bin"), xm.grad, 1e-6)
        xa = x.clone().requires_grad_(True)
        ya = F.avg_pool2d(xa, k, s, p, ceil_mode=ceil, count_include_pad=bool(cip))
        ya.backward(dy)
        close("avg pool", out("avg_y.bin"), ya.detach(), 1e-6)
        close("avg pool backward", out("avg_dx.bin"), xa.grad, 1e-6)
        xd = x.clone().requires_grad_(True)
        yd = F.adaptive_avg_pool2d(xd, (oh, ow))
        yd.backward(dy)
        close("adaptive pool", out("ad_y.bin"), yd.detach(), 1e-6)
        close("adaptive pool backward", out("ad_dx.bin"), xd.grad, 1e-6)
x = torch.randn(1, 2, 3, 4)
xd = x.clone().requires_grad_(True)
yd = F.adaptive_avg_pool2d(xd, (5, 7))  # up-sampling: overlapping windows
dy = torch.randn_like(yd)
yd.backward(dy)
save(x=x.numpy(), dy=dy.numpy())
run("pool", 2, 3, 4, 5, 7, 1, 1, 1, 1, 0, 0, 0)
close("adaptive pool (up)", out("ad_y.bin"), yd.detach(), 1e-6)
close("adaptive pool (up) backward", out("ad_dx.bin"), xd.grad, 1e-6)
print("im2col, col2im, pooling: ok")

# ---------------------------------------------------------------- batch norm
N, Cc, S, eps = 4, 3, 50, 1e-5
x = (torch.randn(N, Cc, S) * 2 + 100).double()
dy, w, b = torch.randn(N, Cc, S).double(), torch.randn(Cc).double(), torch.randn(Cc).double()
rm, rv = torch.randn(Cc).double(), (torch.rand(Cc) + 0.5).double()
f32 = lambda v: v.numpy().astype(np.float32)
save(x=f32(x), dy=f32(dy), w=f32(w), b=f32(b), rm=f32(rm), rv=f32(rv))
run("bn", N, Cc, S, eps)
xe = x.clone().requires_grad_(True)
ye = F.batch_norm(xe, rm, rv, w, b, training=False, eps=eps)
ye.backward(dy)
close("batch norm eval", out("ye.bin"), ye.detach(), 1e-4)
close("batch norm eval backward", out("dxe.bin"), xe.grad, 1e-5)
rm2, rv2 = rm.clone(), rv.clone()
xt, wt, bt = x.clone().requires_grad_(True), w.clone().requires_grad_(True), b.clone().requires_grad_(True)
yt = F.batch_norm(xt, rm2, rv2, wt, bt, training=True, momentum=0.1, eps=eps)
yt.backward(dy)
close("batch norm train", out("y.bin"), yt.detach(), 1e-4)
close("batch norm backward", out("dx.bin"), xt.grad, 1e-4)
close("running mean", out("rm_out.bin"), rm2, 1e-5)
close("running var", out("rv_out.bin"), rv2, 1e-5, 1e-5)
close("weight grad", out("gw.bin"), wt.grad, 1e-3, 1e-5)
close("bias grad", out("gb.bin"), bt.grad, 1e-4)
print("batch norm: ok")

# ---------------------------------------------------------------- losses
n, Cc = 600, 6
z = np.concatenate([rng.normal(0, 4, n - 6), [-100, 100, 0, -30, 30, 1e-3]]).astype(np.float32)
y = rng.choice([0.0, 1.0, 0.3], n).astype(np.float32)
pw, dyl = rng.uniform(0.5, 3, Cc).astype(np.float32), rng.normal(size=n).astype(np.float32)
save(z=z, y=y, pw=pw, dyl=dyl)
gamma, alpha, gp, gn, clip = 2.0, 0.25, 1.0, 4.0, 0.05
run("loss", n, Cc, gamma, alpha, gp, gn, clip, 1)
zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
yt, dyt = torch.tensor(y, dtype=torch.float64), torch.tensor(dyl, dtype=torch.float64)
pwt = torch.tensor(pw, dtype=torch.float64).repeat(n // Cc)


def focal(z):
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, yt, reduction="none")
    pt = p * yt + (1 - p) * (1 - yt)
    return (alpha * yt + (1 - alpha) * (1 - yt)) * ce * (1 - pt) ** gamma


def asl(z):
    p = torch.sigmoid(z)
    pm = (p - clip).clamp(min=0)
    return -(yt * (1 - p) ** gp * F.logsigmoid(z) + (1 - yt) * pm**gn * torch.log1p(-pm))


for name, f in [("bce", lambda z: F.binary_cross_entropy_with_logits(z, yt, pos_weight=pwt, reduction="none")),
                ("focal", focal), ("asl", asl)]:
    zt.grad = None
    loss = f(zt)
    (loss * dyt).sum().backward()
    close(name, out(name + "_l.bin"), loss.detach(), 1e-6, 1e-5)
    close(name + " gradient", out(name + "_g.bin"), zt.grad, 1e-6, 1e-4)
print("losses: ok")
print("every emulated kernel matches PyTorch")

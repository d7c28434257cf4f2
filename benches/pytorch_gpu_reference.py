"""PyTorch GPU reference for the rows `ferrite bench --device cuda` prints.

Times the same work on the same GPU, the same way (a warm-up call, then
samples of about a millisecond of calls, each ending with a device
synchronisation; the median), and writes rows that join with ferrite's
JSON on (bench, dtype, shape):

- gemm_nn / gemm_nt: cuBLAS f32 with TF32 off and on, and bf16;
- conv2d_fwd / conv2d_fwd_bwd: cuDNN f32, strict (TF32 off) and default,
  and bf16 autocast;
- copy, add, mul, relu, cast, sum_all, sum_rows, softmax: GB/s of bytes
  read + written;
- resnet18_cifar_train: eager CIFAR ResNet-18 training steps (SGD with
  momentum 0.9, weight decay 5e-4) in f32 strict (TF32 off everywhere), f32
  default (PyTorch's defaults) and bf16 autocast, with the peak GPU memory
  (torch.cuda.max_memory_allocated).

Usage (PyTorch with CUDA is only needed here, never by ferrite):

    python3 benches/pytorch_gpu_reference.py --json > torch.json
    python3 benches/pytorch_gpu_reference.py --tiny      # the sizes of `ferrite bench --tiny`

Exits with status 3 and a message on stderr when PyTorch or a CUDA GPU is
missing, so a script can tell "not available" from a failure.
"""

import argparse
import json
import statistics
import sys
import time

UNAVAILABLE = 3

FULL = dict(sizes=[1024, 2048, 4096, 8192], conv_batch=128, conv_div=1, elems=1 << 27,
            train_batches=[128, 256], train_steps=10, width_div=1, image=32, budget_ms=1000)
TINY = dict(sizes=[64, 128], conv_batch=2, conv_div=16, elems=1 << 14,
            train_batches=[2], train_steps=2, width_div=16, image=8, budget_ms=1)
# The 3x3 convolutions of the CIFAR ResNet-18 (Cin, Cout, H = W), as in
# ferrite's bench::cuda::RESNET_CONV_SHAPES.
RESNET_CONV_SHAPES = [(3, 64, 32), (64, 64, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4)]


def load_torch():
    """torch, or exit with UNAVAILABLE and the reason."""
    try:
        import torch
    except ImportError as e:
        print(f"pytorch_gpu_reference: PyTorch is not installed ({e}); nothing to compare",
              file=sys.stderr)
        sys.exit(UNAVAILABLE)
    if not torch.cuda.is_available():
        print(f"pytorch_gpu_reference: PyTorch {torch.__version__} sees no CUDA GPU "
              f"(built for CUDA {torch.version.cuda}); nothing to compare", file=sys.stderr)
        sys.exit(UNAVAILABLE)
    return torch


def time_median(torch, fn, budget_s):
    """Median seconds of one call of fn, as ferrite's bench::cuda::time_on."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - start, 1e-9)
    reps = int(min(max(-(-1e-3 // one), 1), 100))
    times = []
    begin = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - begin < budget_s and len(times) < 50):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def row(bench, dtype, shape, impl, seconds, amount, unit, peak_mib=None):
    scale = {"TFLOP/s": 1e12, "GB/s": 1e9, "img/s": 1.0}[unit]
    return {"bench": bench, "dtype": dtype, "shape": shape, "impl": impl,
            "median_ms": seconds * 1e3, "rate": amount / seconds / scale, "unit": unit,
            "peak_memory_mib": peak_mib}


def set_tf32(torch, matmul, cudnn):
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def gemm_rows(torch, cfg, budget):
    rows = []
    for n in cfg["sizes"]:
        a32 = torch.randn(n, n, device="cuda")
        b32 = -a32
        variants = [("f32", torch.float32, "torch f32 (tf32 off)", False),
                    ("f32", torch.float32, "torch f32 (tf32 on)", True),
                    ("bf16", torch.bfloat16, "torch bf16", False)]
        for dtype, tdtype, impl, tf32 in variants:
            set_tf32(torch, tf32, tf32)
            a, b = a32.to(tdtype), b32.to(tdtype)
            for bench, rhs in [("gemm_nn", b), ("gemm_nt", b.t())]:
                t = time_median(torch, lambda: torch.matmul(a, rhs), budget)
                rows.append(row(bench, dtype, f"{n}x{n}x{n}", impl, t, 2.0 * n ** 3, "TFLOP/s"))
        del a32, b32
    return rows


def conv_rows(torch, cfg, budget):
    import torch.nn.functional as F
    rows = []
    batch, div = cfg["conv_batch"], cfg["conv_div"]
    for cin, cout, hw in RESNET_CONV_SHAPES:
        cin = 3 if cin == 3 else max(cin // div, 1)
        cout = max(cout // div, 1)
        x = torch.randn(batch, cin, hw, hw, device="cuda")
        w = torch.randn(cout, cin, 3, 3, device="cuda", requires_grad=True)
        xg = x.clone().requires_grad_(True)
        flops = 2.0 * batch * cout * hw * hw * cin * 9
        shape = f"{batch}x{cin}x{hw}x{hw}->{cout}"

        def fwd(autocast):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                F.conv2d(x, w, padding=1)

        def fwd_bwd(autocast):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                y = F.conv2d(xg, w, padding=1)
            y.backward(torch.ones_like(y))
            xg.grad = None
            w.grad = None

        for impl, dtype, tf32, autocast in [("torch f32 strict", "f32", False, False),
                                            ("torch f32 default", "f32", True, False),
                                            ("torch bf16 autocast", "bf16", True, True)]:
            set_tf32(torch, False, tf32)
            rows.append(row("conv2d_fwd", dtype, shape, impl,
                            time_median(torch, lambda: fwd(autocast), budget), flops, "TFLOP/s"))
            rows.append(row("conv2d_fwd_bwd", dtype, shape, impl,
                            time_median(torch, lambda: fwd_bwd(autocast), budget), 3 * flops,
                            "TFLOP/s"))
    return rows


def memory_rows(torch, cfg, budget):
    n = max(cfg["elems"], 1024)
    cols = 1024
    src = torch.zeros(4 * n, dtype=torch.uint8, device="cuda")
    x = torch.randn(n, device="cuda")
    y = torch.randn(n, device="cuda")
    xh, yh = x.bfloat16(), y.bfloat16()
    m = x.reshape(n // cols, cols)
    rs = f"{n // cols}x{cols}"
    work = [
        ("copy", "u8", f"{4 * n}", 8 * n, lambda: src.clone()),
        ("add", "f32", f"{n}", 12 * n, lambda: x + y),
        ("add", "bf16", f"{n}", 6 * n, lambda: xh + yh),
        ("mul", "f32", f"{n}", 12 * n, lambda: x * y),
        ("relu", "f32", f"{n}", 8 * n, lambda: torch.relu(x)),
        ("cast", "f32->bf16", f"{n}", 6 * n, lambda: x.bfloat16()),
        ("sum_all", "f32", f"{n}", 4 * n, lambda: x.sum()),
        ("sum_rows", "f32", rs, 4 * n, lambda: m.sum(1)),
        ("softmax", "f32", rs, 8 * n, lambda: torch.softmax(m, 1)),
    ]
    return [row(bench, dtype, shape, "torch", time_median(torch, fn, budget), nbytes, "GB/s")
            for bench, dtype, shape, nbytes, fn in work]


def cifar_resnet18(torch, widths, classes=10):
    """torchvision's resnet18 with a 3x3 stride-1 stem and no max-pool, as
    ferrite's `resnet18_cifar` (widths 64, 128, 256, 512 unless narrowed)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return F.relu(y + self.shortcut(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            layers, cin = [], widths[0]
            for cout, stride in zip(widths, [1, 2, 2, 2]):
                layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layers(x)
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return Net()


def train_rows(torch, cfg):
    import torch.nn.functional as F
    rows = []
    div, side = cfg["width_div"], cfg["image"]
    widths = [max(w // div, 1) for w in (64, 128, 256, 512)]
    for batch in cfg["train_batches"]:
        shape = f"batch {batch}"
        if side != 32 or div != 1:
            shape += f", {side}x{side} images, widths / {div}"
        for impl, dtype, tf32, autocast in [("torch eager f32 strict", "f32", False, False),
                                            ("torch eager f32 default", "f32", None, False),
                                            ("torch eager bf16 autocast", "bf16", None, True)]:
            if tf32 is None:
                set_tf32(torch, False, True)  # PyTorch's defaults
            else:
                set_tf32(torch, tf32, tf32)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            torch.manual_seed(0)
            net = cifar_resnet18(torch, widths).cuda()
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            x = torch.randn(batch, 3, side, side, device="cuda")
            y = torch.arange(batch, device="cuda") % 10

            def step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    loss = F.cross_entropy(net(x), y)
                loss.backward()
                opt.step()

            step()
            torch.cuda.synchronize()
            times = []
            for _ in range(max(cfg["train_steps"], 1)):
                start = time.perf_counter()
                step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            peak = torch.cuda.max_memory_allocated() / 2 ** 20
            rows.append(row("resnet18_cifar_train", dtype, shape, impl, statistics.median(times),
                            batch, "img/s", peak))
            del net, opt, x, y
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the sizes of `ferrite bench --tiny`")
    parser.add_argument("--sizes", help="comma-separated GEMM sizes")
    parser.add_argument("--conv-batch", type=int)
    parser.add_argument("--elems", type=int)
    parser.add_argument("--train-batches", help="comma-separated training batch sizes")
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--budget-ms", type=int)
    parser.add_argument("--filter", help="only benches whose name contains this")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    cfg = dict(TINY if args.tiny else FULL)
    if args.sizes:
        cfg["sizes"] = [int(s) for s in args.sizes.split(",")]
    if args.train_batches:
        cfg["train_batches"] = [int(s) for s in args.train_batches.split(",")]
    for key in ["conv_batch", "elems", "train_steps", "budget_ms"]:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)

    torch = load_torch()
    budget = cfg["budget_ms"] / 1e3
    wanted = lambda name: args.filter is None or args.filter in name
    rows = []
    if wanted("gemm_nn") or wanted("gemm_nt"):
        rows += [r for r in gemm_rows(torch, cfg, budget) if wanted(r["bench"])]
    if wanted("conv2d_fwd") or wanted("conv2d_fwd_bwd"):
        rows += [r for r in conv_rows(torch, cfg, budget) if wanted(r["bench"])]
    if any(wanted(b) for b in ["copy", "add", "mul", "relu", "cast", "sum_all", "sum_rows",
                               "softmax"]):
        rows += [r for r in memory_rows(torch, cfg, budget) if wanted(r["bench"])]
    if wanted("resnet18_cifar_train"):
        rows += train_rows(torch, cfg)
    report = {"tool": "pytorch", "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "device": torch.cuda.get_device_name(0),
              "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"PyTorch {report['torch']} (CUDA {report['cuda']}, cuDNN {report['cudnn']}) "
          f"on {report['device']}\n")
    print("| bench | dtype | shape | impl | median | rate | peak memory |")
    print("|---|---|---|---|---:|---:|---:|")
    for r in rows:
        peak = "" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f} MiB"
        print(f"| {r['bench']} | {r['dtype']} | {r['shape']} | {r['impl']} | "
              f"{r['median_ms']:.3f} ms | {r['rate']:.4g} {r['unit']} | {peak} |")


if __name__ == "__main__":
    main()

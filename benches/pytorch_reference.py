"""PyTorch CPU reference for the numbers `ferrite bench` prints.

Times the same work, the same way: conv2d forward and forward + backward
(input and weight gradients) at batch 32, 3x3, padding 1, on the four
ResNet shapes; training-mode batch norm on 32x64x32x32, forward and
forward + backward; and the CIFAR ResNet-18 training step (3x3 stem, no
max-pool; forward, cross-entropy, backward, SGD with momentum 0.9 and
weight decay 5e-4) on a random 3x32x32 batch of 32. Medians over repeated
runs after a warm-up, like ferrite.

Usage (PyTorch is only needed here, never by ferrite):

    python benches/pytorch_reference.py --threads 2

With --conv-layers it prints instead the per-layer table of `ferrite bench
--conv-layers`: every distinct convolution of the CIFAR ResNet-8/20/18 and
torchvision's ResNet-18/50 at batch 32, forward, input gradient and weight
gradient each timed on its own (`aten.convolution_backward` with one output
selected), with the backend PyTorch picks; --json writes the rows that
`benches/compare_conv.py` joins with ferrite's:

    python benches/pytorch_reference.py --threads 2 --conv-layers --json > torch.json

Run it alternating with `ferrite bench` on a quiet machine: shared
machines drift by 10-20 % between hours.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


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
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet18(nn.Module):
    """torchvision's resnet18 with a 3x3 stride-1 stem and no max-pool,
    as ferrite's `resnet18_cifar` (11.2 M parameters)."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def conv_rows(batch, repeats):
    rows = []
    for cin, cout, hw in [(64, 64, 32), (128, 128, 16), (256, 256, 8), (3, 64, 32)]:
        x = torch.randn(batch, cin, hw, hw)
        w = torch.randn(cout, cin, 3, 3, requires_grad=True)
        flops = 2.0 * batch * cout * hw * hw * cin * 9

        def fwd():
            with torch.no_grad():
                F.conv2d(x, w, padding=1)

        xg = x.clone().requires_grad_(True)

        def fwd_bwd():
            y = F.conv2d(xg, w, padding=1)
            y.backward(torch.ones_like(y))
            xg.grad = None
            w.grad = None

        t_f = median_ms(fwd, repeats)
        t_fb = median_ms(fwd_bwd, repeats)
        rows.append((f"{batch}x{cin}x{hw}x{hw} -> {cout}", t_f, flops / t_f / 1e6,
                     t_fb, 3 * flops / t_fb / 1e6))
    return rows


def resnet_convolutions(model):
    """Every convolution of `model` as (cin, cout, k, stride, pad, hw), in
    network order, as ferrite's `bench::conv_layers::convolutions` lists
    them: CIFAR ResNets take 32x32 inputs, torchvision's 224x224."""
    out_hw = lambda hw, k, s, p: (hw + 2 * p - k) // s + 1
    if model.endswith("_cifar"):
        if model == "resnet18_cifar":
            block, layers, widths, proj = "basic", [2, 2, 2, 2], [64, 128, 256, 512], True
        else:
            n = (int(model[len("resnet"):-len("_cifar")]) - 2) // 6
            block, layers, widths, proj = "basic", [n] * 3, [16, 32, 64], False
        convs, hw = [(3, widths[0], 3, 1, 1, 32)], 32
    else:
        block, layers = {"resnet18": ("basic", [2, 2, 2, 2]),
                         "resnet50": ("bottleneck", [3, 4, 6, 3])}[model]
        widths, proj = [64, 128, 256, 512], True
        convs = [(3, 64, 7, 2, 3, 224)]
        hw = out_hw(out_hw(224, 7, 2, 3), 3, 2, 1)
    exp = 4 if block == "bottleneck" else 1
    inplanes = widths[0]
    for i, (n, planes) in enumerate(zip(layers, widths)):
        for b in range(n):
            s = 2 if b == 0 and i > 0 else 1
            width, nxt = planes * exp, out_hw(hw, 3, s, 1)
            if block == "basic":
                convs += [(inplanes, planes, 3, s, 1, hw), (planes, planes, 3, 1, 1, nxt)]
            else:
                convs += [(inplanes, planes, 1, 1, 0, hw), (planes, planes, 3, s, 1, hw),
                          (planes, width, 1, 1, 0, nxt)]
            if proj and (s != 1 or inplanes != width):
                convs.append((inplanes, width, 1, s, 0, hw))
            inplanes, hw = width, nxt
    return convs


MODELS = ["resnet8_cifar", "resnet20_cifar", "resnet18_cifar", "resnet18", "resnet50"]


def sample_ms(fn, min_runs, budget_s):
    """Sorted times (ms) after one warm-up run: at least `min_runs` runs and
    about `budget_s` seconds, at most 50 runs (as ferrite's bench)."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 50):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)


def conv_layer_rows(batch, model_filter, budget_s, on_row):
    layers = {}
    for m in MODELS:
        if model_filter and model_filter not in m:
            continue
        for conv in resnet_convolutions(m):
            counts = layers.setdefault(conv, {})
            counts[m] = counts.get(m, 0) + 1
    rows = []
    torch.manual_seed(0)
    for (cin, cout, k, s, p, hw), counts in layers.items():
        oh = (hw + 2 * p - k) // s + 1
        x = torch.randn(batch, cin, hw, hw)
        w = torch.randn(cout, cin, k, k)
        dy = torch.randn(batch, cout, oh, oh)
        st, pd, dl = [s, s], [p, p], [1, 1]
        backend = str(torch._C._select_conv_backend(x, w, None, st, pd, dl, False, [0, 0], 1, None))
        backend = backend.split(".")[-1]
        flops = 2.0 * batch * cout * oh * oh * cin * k * k
        shape = f"{batch}x{cin}x{hw}x{hw} -> {cout} k{k} s{s} p{p}"
        models = " ".join(f"{m}\u00d7{c}" for m, c in counts.items())

        def bwd(mask):
            return lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, st, pd, dl, False, [0, 0], 1, mask)

        passes = [("fwd", lambda: F.conv2d(x, w, stride=s, padding=p)),
                  ("bwd_input", bwd([True, False, False])),
                  ("bwd_weight", bwd([False, True, False]))]
        with torch.no_grad():
            for name, fn in passes:
                t = sample_ms(fn, 5, budget_s)
                med = t[len(t) // 2]
                row = {"shape": shape, "pass": name, "min_ms": t[0], "median_ms": med,
                       "max_ms": t[-1], "runs": len(t), "gflops": flops / med / 1e6,
                       "algorithm": backend, "models": models}
                on_row(row)
                rows.append(row)
    return rows


def step_ms(batch, steps):
    torch.manual_seed(0)
    net = CifarResNet18()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.arange(batch) % 10

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return median_ms(step, steps)


def batch_norm_ms(repeats):
    """Training-mode batch norm on 32x64x32x32 (the rows `batch_norm_f32`
    and `batch_norm_fwd_bwd_f32` of `ferrite bench`): forward alone, and
    forward + backward to the input, weight and bias."""
    torch.manual_seed(0)
    x = torch.randn(32, 64, 32, 32, requires_grad=True)
    w = torch.randn(64, requires_grad=True)
    b = torch.randn(64, requires_grad=True)
    dy = torch.randn(32, 64, 32, 32)

    def fwd():
        with torch.no_grad():
            F.batch_norm(x, None, None, w, b, training=True)

    def fwd_bwd():
        F.batch_norm(x, None, None, w, b, training=True).backward(dy)

    return median_ms(fwd, repeats), median_ms(fwd_bwd, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["conv", "batch_norm", "resnet18"], default=None)
    parser.add_argument("--conv-layers", action="store_true",
                        help="the per-layer convolution table instead")
    parser.add_argument("--filter", help="--conv-layers: models whose name contains this")
    parser.add_argument("--batch", type=int, default=32, help="--conv-layers: images per batch")
    parser.add_argument("--quick", action="store_true", help="--conv-layers: shorter runs")
    parser.add_argument("--json", action="store_true", help="--conv-layers: print JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.conv_layers:
        budget = 0.1 if args.quick else 0.4
        if not args.json:
            print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
                  f"CPU capability {torch.backends.cpu.get_cpu_capability()}, batch {args.batch}")
            print("| layer | pass | min | median | max | GFLOP/s | algorithm | models |")
            print("|---|---|---:|---:|---:|---:|---|---|")

        def show(r):
            if not args.json:
                print(f"| {r['shape']} | {r['pass']} | {r['min_ms']:.3f} ms | "
                      f"{r['median_ms']:.3f} ms | {r['max_ms']:.3f} ms | {r['gflops']:.1f} | "
                      f"{r['algorithm']} | {r['models']} |", flush=True)

        rows = conv_layer_rows(args.batch, args.filter, budget, show)
        if args.json:
            print(json.dumps({"impl": f"pytorch {torch.__version__}",
                              "threads": torch.get_num_threads(),
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "batch": args.batch, "rows": rows}, indent=1))
        return
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    if args.only in (None, "conv"):
        print("| conv2d | forward | rate | forward + backward | rate |")
        print("|---|---:|---:|---:|---:|")
        for shape, t_f, r_f, t_fb, r_fb in conv_rows(32, 20):
            print(f"| {shape} | {t_f:.2f} ms | {r_f:.1f} GFLOP/s | {t_fb:.2f} ms | {r_fb:.1f} GFLOP/s |")
    if args.only in (None, "batch_norm"):
        n = 32 * 64 * 32 * 32
        t_f, t_fb = batch_norm_ms(20)
        print("| batch norm 32x64x32x32 | ms | GB/s (least traffic) |")
        print("|---|---:|---:|")
        print(f"| forward | {t_f:.2f} | {8 * n / t_f / 1e6:.1f} |")
        print(f"| forward + backward | {t_fb:.2f} | {20 * n / t_fb / 1e6:.1f} |")
    if args.only in (None, "resnet18"):
        t = step_ms(32, 5)
        print(f"| resnet18_cifar | 32 | {t:.0f} ms | {32 / t * 1e3:.1f} img/s |")


if __name__ == "__main__":
    main()

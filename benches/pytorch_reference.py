"""PyTorch CPU reference for the numbers `ferrite bench` prints.

Times the same work, the same way: conv2d forward and forward + backward
(input and weight gradients) at batch 32, 3x3, padding 1, on the four
ResNet shapes; and the CIFAR ResNet-18 training step (3x3 stem, no
max-pool; forward, cross-entropy, backward, SGD with momentum 0.9 and
weight decay 5e-4) on a random 3x32x32 batch of 32. Medians over repeated
runs after a warm-up, like ferrite.

Usage (PyTorch is only needed here, never by ferrite):

    python benches/pytorch_reference.py --threads 2

Run it alternating with `ferrite bench` on a quiet machine: shared
machines drift by 10-20 % between hours.
"""

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["conv", "resnet18"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    if args.only in (None, "conv"):
        print("| conv2d | forward | rate | forward + backward | rate |")
        print("|---|---:|---:|---:|---:|")
        for shape, t_f, r_f, t_fb, r_fb in conv_rows(32, 20):
            print(f"| {shape} | {t_f:.2f} ms | {r_f:.1f} GFLOP/s | {t_fb:.2f} ms | {r_fb:.1f} GFLOP/s |")
    if args.only in (None, "resnet18"):
        t = step_ms(32, 5)
        print(f"| resnet18_cifar | 32 | {t:.0f} ms | {32 / t * 1e3:.1f} img/s |")


if __name__ == "__main__":
    main()

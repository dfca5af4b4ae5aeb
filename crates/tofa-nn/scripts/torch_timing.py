#!/usr/bin/env python3
"""PyTorch timings for the shapes of `cargo bench -p tofa-nn` (run by hand, not in CI).

    pip install torch --index-url <cpu wheel index>   # or any CPU torch >= 2.0
    RAYON_NUM_THREADS=2 cargo bench -p tofa-nn         # ours
    python3 crates/tofa-nn/scripts/torch_timing.py --threads 2 [--channels-last]
    python3 crates/tofa-nn/scripts/torch_timing.py --threads 2 --lite0   # benches/benchmarks/lite0.rs

Builds the `small` space's maxnet from `spaces/small.toml` with the same block layout as
`tofa_nn::Supernet` (expand 1x1 + BN + act, depthwise kxk + BN + act, SE, project 1x1 + BN,
residual; head conv + BN + act, pool, classifier) and times, at batch 32:
  - depthwise 3x3, 96 channels, 32x32 and 64x64: forward, forward + backward; the same followed
    by training-mode BN and ReLU (what our fused NHWC op computes)
  - stem + one MBConv block + head (16 channels, expand 6, kernel 5): forward + backward
  - a maxnet training step (forward, cross-entropy, backward, SGD nesterov) at 32x32 and 64x64
With `--lite0`, instead: the `lite0` space's maxnet and mid-size subnet (every choice at
`round(0.5 (n - 1))`, as `SubnetConfig::uniform(0.5)`) at 64x64 and 96x96, a training step at
batch 32 and an eval forward (`torch.no_grad()`) at batch 1 and 8, each in NCHW, in
channels-last, and channels-last under `torch.compile` (inductor; the compile is not timed).
"""
import argparse
import pathlib
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent


def act(name):
    return {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "hswish": nn.Hardswish()}[name]


def make_divisible(v, d=8):
    new = max(d, (v + d // 2) // d * d)
    return new + d if new < 0.9 * v else new


class SE(nn.Module):
    def __init__(self, mid):
        super().__init__()
        r = make_divisible(mid // 4)
        self.reduce = nn.Linear(mid, r)
        self.expand = nn.Linear(r, mid)

    def forward(self, x):
        s = x.mean((2, 3))
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s[:, :, None, None]


class Block(nn.Module):
    def __init__(self, inp, out, k, e, stride, se, a):
        super().__init__()
        mid = inp * e
        layers = []
        if e > 1:
            layers += [nn.Conv2d(inp, mid, 1, bias=False), nn.BatchNorm2d(mid), act(a)]
        layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), act(a)]
        if se:
            layers.append(SE(mid))
        layers += [nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.body = nn.Sequential(*layers)
        self.res = stride == 1 and inp == out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.res else y


def maxnet(space, classes=10, pick=max):
    st = space["stem"]
    c = pick(st["widths"])
    layers = [nn.Conv2d(3, c, st.get("kernel", 3), st["stride"], 1, bias=False), nn.BatchNorm2d(c), act(st["act"])]
    for s in space["stages"]:
        out = pick(s["widths"])
        for j in range(pick(s["depths"])):
            layers.append(Block(c, out, pick(s["kernels"]), pick(s["expands"]), s["stride"] if j == 0 else 1, s["se"], s["act"]))
            c = out
    hw = pick(space["head"]["widths"])
    layers += [nn.Conv2d(c, hw, 1, bias=False), nn.BatchNorm2d(hw), act(space["head"]["act"]),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(hw, classes)]
    return nn.Sequential(*layers)


def sgd_step(net, fwd, x, y, weight_decay):
    """A training step closure: forward through `fwd` (the net, or its compiled form),
    cross-entropy, backward, SGD nesterov over `net`'s parameters."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=weight_decay)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fwd(x), y).backward()
        opt.step()

    return step


def timeit(f, reps):
    f()
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1e3


def mid(v):
    """`SubnetConfig::uniform(0.5)`'s choice: index round(0.5 (n - 1)), halves up."""
    return v[int((len(v) - 1) * 0.5 + 0.5)]


def lite0(a):
    space = tomllib.loads((HERE.parent / "spaces" / "lite0.toml").read_text())
    layouts = [("nchw", torch.contiguous_format, False), ("channels_last", torch.channels_last, False),
               ("channels_last+compile", torch.channels_last, True)]
    print("row\tlayout\tms")
    for r in (64, 96):
        for name, pick in (("maxnet", max), ("mid", mid)):
            for layout, fmt, compiled in layouts:
                if a.layout and layout != a.layout:
                    continue
                torch.manual_seed(0)
                net = maxnet(space, 10, pick)
                for m in net.modules():
                    if isinstance(m, nn.Dropout):
                        m.p = 0.2
                net = net.to(memory_format=fmt)
                fwd = torch.compile(net) if compiled else net
                x = torch.randn(32, 3, r, r).to(memory_format=fmt)
                if not a.eval_only:
                    step = sgd_step(net, fwd, x, torch.arange(32) % 10, 1e-5)
                    net.train()
                    print(f"lite0_train_step/{name}_b32_{r}x{r}\t{layout}\t{timeit(step, a.reps):.1f}", flush=True)
                net.eval()
                for b in (1, 8):
                    xb = torch.randn(b, 3, r, r).to(memory_format=fmt)
                    efwd = torch.compile(net) if compiled else net

                    def infer():
                        with torch.no_grad():
                            efwd(xb)

                    print(f"lite0_eval/{name}_b{b}_{r}x{r}\t{layout}\t{timeit(infer, a.reps * 3):.2f}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--lite0", action="store_true")
    p.add_argument("--layout", help="with --lite0: time only this layout (nchw, channels_last, channels_last+compile)")
    p.add_argument("--eval-only", action="store_true", help="with --lite0: time only the eval rows")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.lite0:
        lite0(a)
        return
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    for hw in (32, 64):
        x = torch.randn(32, 96, hw, hw).to(memory_format=fmt).requires_grad_()
        w = torch.randn(96, 1, 3, 3, requires_grad=True)
        print(f"dwconv fwd     b32 c96 {hw}x{hw}: {timeit(lambda: F.conv2d(x, w, None, 1, 1, 1, 96), a.reps):8.2f} ms")
        print(f"dwconv fwd+bwd b32 c96 {hw}x{hw}: {timeit(lambda: F.conv2d(x, w, None, 1, 1, 1, 96).sum().backward(), a.reps):8.2f} ms")
        bn = nn.BatchNorm2d(96)

        def dw_bn_relu():
            return F.relu(bn(F.conv2d(x, w, None, 1, 1, 1, 96)))

        print(f"dw+bn+relu fwd     b32 c96 {hw}x{hw}: {timeit(dw_bn_relu, a.reps):8.2f} ms")
        print(f"dw+bn+relu fwd+bwd b32 c96 {hw}x{hw}: {timeit(lambda: dw_bn_relu().sum().backward(), a.reps):8.2f} ms")
    # benches/benchmarks/block.rs: stem + one MBConv block (16 -> 16, expand 6, kernel 5) + head
    one = {
        "stem": {"widths": [16], "stride": 1, "act": "relu"},
        "stages": [{"widths": [16], "depths": [1], "kernels": [5], "expands": [6], "se": False, "stride": 1, "act": "hswish"}],
        "head": {"widths": [16], "act": "relu"},
    }
    for hw in (32, 64):
        net = maxnet(one).to(memory_format=fmt)
        x = torch.randn(32, 3, hw, hw).to(memory_format=fmt)
        print(f"stem+block+head fwd+bwd b32 {hw}x{hw}: {timeit(lambda: net(x).sum().backward(), a.reps):8.2f} ms")
    space = tomllib.loads((HERE.parent / "spaces" / "small.toml").read_text())
    for hw in (32, 64):
        net = maxnet(space).to(memory_format=fmt)
        x = torch.randn(32, 3, hw, hw).to(memory_format=fmt)
        step = sgd_step(net, net, x, torch.arange(32) % 10, 4e-5)
        print(f"train step small maxnet b32 {hw}x{hw}: {timeit(step, a.reps):8.2f} ms")


if __name__ == "__main__":
    main()

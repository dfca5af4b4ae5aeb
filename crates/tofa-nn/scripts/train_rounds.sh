#!/usr/bin/env bash
# The Lite0 training steps (batch 32, maxnet and mid, 64 and 96 px) in interleaved rounds:
# PyTorch channels-last, PyTorch channels-last + torch.compile, ours (default build), ours
# (`--features avx512-gemm`), ROUNDS times, THREADS threads. For rows whose ratio to PyTorch
# sits near 1.0 in `vs_torch.sh`: the spread over rounds shows how much of it is the machine.
#
#   PY=/path/to/venv/bin/python3 bash crates/tofa-nn/scripts/train_rounds.sh [ROUNDS] [THREADS]
#
# Prints one line per timing, prefixed with the round and the runner; criterion lines give
# its [low mean high] estimate.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY="${PY:-python3}"
ROUNDS="${1:-3}"
THREADS="${2:-2}"
T="${CARGO_TARGET_DIR:-target}"
cargo bench -q -p tofa-nn --bench bench_main --no-run
cargo bench -q -p tofa-nn --bench bench_main --features avx512-gemm --target-dir "$T/avx512" --no-run
for round in $(seq 1 "$ROUNDS"); do
  for lay in channels_last channels_last+compile; do
    "$PY" crates/tofa-nn/scripts/torch_timing.py --threads "$THREADS" --reps 5 --lite0 --layout "$lay" 2>&1 \
      | grep train_step | sed "s/^/r$round torch /"
  done
  for b in default avx512; do
    if [ "$b" = avx512 ]; then f=(--features avx512-gemm); t="$T/avx512"; else f=(); t="$T"; fi
    RAYON_NUM_THREADS=$THREADS cargo bench -q -p tofa-nn --bench bench_main "${f[@]}" --target-dir "$t" \
      -- --warm-up-time 1 --measurement-time 3 lite0_train_step 2>&1 \
      | grep -E "^lite0|time:" | sed "s/^/r$round $b /"
  done
done

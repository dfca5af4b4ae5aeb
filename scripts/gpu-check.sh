#!/usr/bin/env bash
# The GPU figures of issue 13 in one run of under 10 minutes, on a CUDA machine holding the
# binaries of scripts/gpu-build.sh in .gpu/ and a PyTorch with CUDA:
#
#   bash scripts/gpu-check.sh [OUT_DIR]
#
# 1. the GPU, driver and toolkit;
# 2. one TOFA iteration (`full` loss) of the `paper` space at 224 px, 32 labelled + 32
#    unlabelled images, on the GPU through candle (portable backend): seconds per iteration over
#    5 iterations after a warm-up, and the peak GPU memory (nvidia-smi, sampled every 100 ms);
# 3. the same iteration in PyTorch on the same GPU (crates/tofa-train/scripts/torch_tofa_iter.py);
# 4. a short pipeline run on the GPU: `-p quick --device cuda`, one TOFA training of
#    synth-cifar10 (embedded data: the paper's data sets come from the Hugging Face Hub, which
#    such a machine cannot reach), 50 iterations, its accuracy beside the same run on the CPU.
#
# Nothing here was run on a GPU yet (no machine was lent when it was written): see README, GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check-out}}
mkdir -p "$out"
log="$out/gpu-check.log"
exec > >(tee "$log") 2>&1
step() { echo; echo "== $*"; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
nvcc --version | tail -1 || true
[ -x .gpu/iter_time ] && [ -x .gpu/tofa-pipeline ] || { echo "gpu-check: run scripts/gpu-build.sh first (.gpu/ is missing)"; exit 2; }

# peak of nvidia-smi's memory.used (MiB) while "$@" runs
with_peak() {
  local f; f=$(mktemp)
  ( while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >>"$f"; sleep 0.1; done ) &
  local sampler=$!
  "$@"; local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  echo "peak GPU memory (nvidia-smi, whole device): $(sort -n "$f" | tail -1) MiB"
  rm -f "$f"
  return $rc
}

step "candle: one TOFA iteration, paper space at 224 px, 32 + 32, on cuda"
TOFA_DEVICE=cuda TOFA_RUNS=tofa/full with_peak timeout 240 .gpu/iter_time 5 paper@224

step "PyTorch: the same iteration on the same GPU"
with_peak timeout 180 python3 crates/tofa-train/scripts/torch_tofa_iter.py --device cuda --space paper --res 224 --reps 5

step "pipeline on cuda: -p quick, tofa/synth-cifar10/full/s0 at 50 iterations, and on the CPU"
for dev in cuda cpu; do
  timeout 120 .gpu/tofa-pipeline -p quick --device "$dev" --cache-dir "$out/cache-$dev" \
    --results "$out/results-$dev" --reports "$out/reports-$dev" \
    --set tofa_train:train.iterations=50 -v run tofa/synth-cifar10/full/s0 | tail -3
  grep -h "synth-cifar10" "$out/results-$dev/tofa.csv" 2>/dev/null | head -1
done
echo; echo "log: $log"

#!/usr/bin/env bash
# The GPU figures of issue 13 in one run of under 10 minutes, on a CUDA machine holding the
# binaries of scripts/gpu-build.sh in .gpu/ and a PyTorch with CUDA:
#
#   bash scripts/gpu-check.sh [OUT_DIR]
#
# 1. the GPU, driver and toolkit;
# 2. the network on the GPU against the fused CPU ops on the same weights (device_check);
# 3. one TOFA iteration (`full` loss) of the `paper` space at 224 px, 32 labelled + 32
#    unlabelled images, on the GPU through candle (portable backend): seconds per iteration over
#    5 iterations after a warm-up, and the peak GPU memory (nvidia-smi, sampled every 100 ms);
# 4. the same iteration with bf16 products (`TOFA_PRECISION=bf16`, tofa_nn::precision);
# 5. the same iteration in PyTorch on the same GPU (crates/tofa-train/scripts/torch_tofa_iter.py),
#    in f32 and with bf16 autocast (NCHW: channels-last with bf16 did not finish in 45 s);
# 6. the device benchmarks on the GPU: `-p smoke --device cuda run bench/synth-cars`, the
#    latency table with its GPU memory columns (NVML);
# 7. a short pipeline run on the GPU of real transfer, the `lite0` profile (ImageNet
#    EfficientNet-Lite0 fine-tuned on Fashion-MNIST: the `paper` profile's data sets and
#    weights come from the Hugging Face Hub, which such a machine cannot reach), one `full`
#    TOFA training at 100 iterations; its accuracy goes beside the same command on the CPU.
#
# The timeouts sum to 450 s. First run on an H200 on 2026-12-04 (before the depthwise op and
# the fixes it prompted; README, GPU, has what it measured).
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
# binaries carried compressed (scripts/gpu-build.sh writes both forms)
for b in iter_time tofa-pipeline device_check; do
  if [ ! -x ".gpu/$b" ] && [ -f ".gpu/$b.xz" ]; then
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' ".gpu/$b.xz" ".gpu/$b" && chmod +x ".gpu/$b"
  fi
done
[ -x .gpu/iter_time ] && [ -x .gpu/tofa-pipeline ] && [ -x .gpu/device_check ] || { echo "gpu-check: run scripts/gpu-build.sh first (.gpu/ is missing)"; exit 2; }
# cuBLAS, cuRAND, NVRTC and the CUDA runtime: where the loader finds them, else from the
# NVIDIA wheels beside PyTorch (the lent machines have no system-wide toolkit libraries)
if ldd .gpu/iter_time | grep -q "not found"; then
  wheel_libs=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "lib"))))' 2>/dev/null || true)
  [ -n "$wheel_libs" ] || wheel_libs=$(find / -xdev -name 'libcublas.so.1[0-9]' -printf '%h\n' 2>/dev/null | head -1)
  export LD_LIBRARY_PATH="${wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
ldd .gpu/iter_time | grep -E "cuda|cublas|curand|nvrtc|not found"

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

step "the network on cuda against the fused CPU ops, same weights (logits, gradients, BN statistics)"
timeout 45 .gpu/device_check cuda tiny@32 paper@64

step "candle: one TOFA iteration, paper space at 224 px, 32 + 32, on cuda"
TOFA_DEVICE=cuda TOFA_RUNS=tofa/full with_peak timeout 90 .gpu/iter_time 5 paper@224

step "candle: the same iteration with bf16 products"
TOFA_DEVICE=cuda TOFA_PRECISION=bf16 TOFA_RUNS=tofa/full with_peak timeout 60 .gpu/iter_time 5 paper@224

step "PyTorch: the same iteration on the same GPU (f32, then bf16 autocast; NCHW)"
with_peak timeout 40 python3 crates/tofa-train/scripts/torch_tofa_iter.py --device cuda --space paper --res 224 --reps 5
with_peak timeout 40 python3 crates/tofa-train/scripts/torch_tofa_iter.py --device cuda --space paper --res 224 --reps 5 --bf16

step "device benchmarks on cuda: -p smoke, bench/synth-cars (latency; GPU memory through NVML)"
timeout 45 .gpu/tofa-pipeline run -p smoke --device cuda --cache-dir "$out/cache-bench" \
  --results "$out/results-bench" --reports "$out/reports-bench" bench/synth-cars | tail -3
cat "$out/results-bench/latency.csv" 2>/dev/null
find "$out/cache-bench" -name bench.json -exec grep -o '"gpu_memory[^}]*}' {} + | head -4

step "pipeline on cuda: -p lite0 (ImageNet EfficientNet-Lite0 fine-tuned on Fashion-MNIST), tofa/fashion-mnist/full/s0 at ${GPU_CHECK_ITERS:-100} iterations"
# Fashion-MNIST from .gpu/fashion-mnist when carried (its training file may hold only the
# first images, as long as they hold the profile's 600 per class: the split takes the first
# 600 of each class in file order, so the images are the same), else Debian's copy; the
# Lite0 weights from .gpu/weights or weights/ (scripts/fetch-weights.sh).
fashion=/usr/share/datasets/fashion-mnist; [ -d .gpu/fashion-mnist ] && fashion=$PWD/.gpu/fashion-mnist
for w in .gpu/weights weights; do
  [ -f "$w/efficientnet-lite0-57934424.pth" ] && export TOFA_LITE0_PTH=$PWD/$w/efficientnet-lite0-57934424.pth && break
done
timeout 130 .gpu/tofa-pipeline run -p lite0 --device "${GPU_CHECK_DEVICE:-cuda}" \
  --cache-dir "$out/cache-lite0" --results "$out/results-lite0" --reports "$out/reports-lite0" \
  --set "split:data.dir=$fashion" --set "tofa_train:train.iterations=${GPU_CHECK_ITERS:-100}" \
  tofa/fashion-mnist/full/s0 2>&1 | tail -4
cat "$out/results-lite0/tofa.csv" 2>/dev/null
echo; echo "log: $log"

#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs, on a machine with Rust, the CUDA toolkit (nvcc; candle
# 0.11's kernels build with CUDA 12 or 13) and the crates (crates.io or a vendored copy):
#
#   bash scripts/gpu-build.sh            # -> .gpu/{tofa-pipeline,iter_time,device_check}.xz
#
# The device machines lent to this project have the toolkit but no Rust and no network, so the
# binaries are built where Rust is and carried there (`.gpu/` is git-ignored; the `device`
# tool's `carry = [".gpu"]`), compressed with xz (141 MB stripped, 19 MB compressed: the carry
# limit is 64 MiB), which scripts/gpu-check.sh unpacks. Set CUDA_COMPUTE_CAP (e.g. 90 for
# H100/H200) when building on a machine without that GPU: candle's build compiles its kernels
# for that capability. Without a toolkit, scripts/cuda-pip-toolkit.sh makes one from NVIDIA's
# PyPI wheels. The build goes to its own target directory ($GPU_TARGET_DIR, default
# target/gpu), so that it never invalidates the CPU build's.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CUDA_COMPUTE_CAP:=90}"
export CUDA_COMPUTE_CAP
command -v nvcc >/dev/null || { echo "gpu-build: nvcc not on PATH (install the CUDA toolkit)" >&2; exit 2; }
export CARGO_TARGET_DIR=${GPU_TARGET_DIR:-target/gpu}
target=$CARGO_TARGET_DIR
cargo build --release --locked -p tofa-pipeline --features cuda
cargo build --release --locked -p tofa-train --features cuda --example iter_time
cargo build --release --locked -p tofa-nn --features cuda --example device_check
mkdir -p .gpu
cp "$target/release/tofa-pipeline" "$target/release/examples/iter_time" "$target/release/examples/device_check" .gpu/
strip .gpu/tofa-pipeline .gpu/iter_time .gpu/device_check
xz -f -6 -T0 .gpu/tofa-pipeline .gpu/iter_time .gpu/device_check   # scripts/gpu-check.sh unpacks them
ls -la .gpu

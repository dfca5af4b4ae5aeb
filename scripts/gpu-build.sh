#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs, on a machine with Rust, the CUDA toolkit (nvcc; candle
# 0.11's kernels build with CUDA 12 or 13) and the crates (crates.io or a vendored copy):
#
#   bash scripts/gpu-build.sh            # -> .gpu/tofa-pipeline, .gpu/iter_time (stripped)
#
# The device machines lent to this project have the toolkit but no Rust and no network, so the
# binaries are built where Rust is and carried there (`.gpu/` is git-ignored; the `device`
# tool's `carry = [".gpu"]`). Set CUDA_COMPUTE_CAP (e.g. 90 for H100/H200) when building on a
# machine without that GPU: candle's build compiles its kernels for that capability.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CUDA_COMPUTE_CAP:=90}"
export CUDA_COMPUTE_CAP
command -v nvcc >/dev/null || { echo "gpu-build: nvcc not on PATH (install the CUDA toolkit)" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p tofa-pipeline --features cuda
cargo build --release --locked -p tofa-train --features cuda --example iter_time
mkdir -p .gpu
cp "$target/release/tofa-pipeline" "$target/release/examples/iter_time" .gpu/
strip .gpu/tofa-pipeline .gpu/iter_time
ls -la .gpu

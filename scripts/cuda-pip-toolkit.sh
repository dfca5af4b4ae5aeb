#!/usr/bin/env bash
# A CUDA 13.0 build toolkit from NVIDIA's PyPI wheels, for building the `cuda` binaries
# (scripts/gpu-build.sh) on a machine with Rust and pip but no CUDA toolkit and no GPU:
#
#   eval "$(bash scripts/cuda-pip-toolkit.sh [DIR])"    # default DIR: $HOME/.cache/cuda13-pip
#   bash scripts/gpu-build.sh
#
# It prints the exports the build needs (PATH with nvcc, CUDA_PATH, CUDA_COMPUTE_CAP and a
# RUSTFLAGS link path). Why each piece:
# - the toolkit is pinned to 13.0 because the PTX that nvcc writes carries its version, and a
#   driver loads only PTX no newer than its own CUDA (the lent H200 machines run driver 580,
#   CUDA 13.0); cudarc also takes its API version from `nvcc --version`;
# - CUDA 13's wheels split the compiler: nvcc, the front-end headers (`crt/`), NVVM (cicc) and
#   CCCL come as separate wheels;
# - candle's `cuda` feature links dynamically against libcuda, libcudart, libcublas(Lt),
#   libcurand and libnvrtc. The wheels hold only the versioned files (`libcublas.so.13`), so
#   the link directory gets unversioned names, and libcuda (the driver, which no wheel holds)
#   gets a stub built from the entry points cudarc declares, with the driver's soname
#   `libcuda.so.1`. At run time the real libraries are found: the driver's libcuda.so.1, and
#   the others from LD_LIBRARY_PATH (scripts/gpu-check.sh points it at PyTorch's wheels).
set -euo pipefail
dir=${1:-$HOME/.cache/cuda13-pip}
cuda=$dir/site/nvidia/cu13
link=$dir/linklib
wheels=(
  "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*"
  "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*"
  "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
)
if [ ! -x "$cuda/bin/nvcc" ] || [ ! -e "$link/libcuda.so" ]; then
  mkdir -p "$dir/wheels" "$dir/site" "$link"
  python3 -m pip download -q --no-deps -d "$dir/wheels" "${wheels[@]}" >&2
  for w in "$dir"/wheels/*.whl; do unzip -q -o "$w" -d "$dir/site"; done
  # the driver stub: every cu* entry point of cudarc's driver bindings, as an empty function
  cudarc=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 1 -name 'cudarc-*' | sort -V | tail -1)
  [ -n "$cudarc" ] || { echo "cuda-pip-toolkit: cudarc's source is missing: run 'cargo fetch' first" >&2; exit 2; }
  grep -ho '^pub unsafe fn cu[A-Za-z0-9_]*' "$cudarc/src/driver/sys/mod.rs" | sed 's/pub unsafe fn //' \
    | sort -u | awk '{print "void " $1 "(void) {}"}' >"$link/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"
  for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
    ln -sf "$cuda/lib/lib$lib" "$link/lib${lib%%.so*}.so"
  done
fi
"$cuda/bin/nvcc" --version | tail -1 >&2
echo "export PATH=$cuda/bin:\$PATH CUDA_PATH=$cuda CUDA_ROOT=$cuda"
echo "export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90} RUSTFLAGS=\"-L native=$link\""

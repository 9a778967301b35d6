#!/bin/sh
# bench/gpu/gpu_check.py on a GPU machine with PyTorch but no package index, from a bundle made by
# `make gpu-bundle`: its wheels go into a folder of their own, put first on PYTHONPATH. Run from the checkout's root.
#     sh bench/gpu/gpu_device.sh OUT_DIR        (BUNDLE=.bundle, SITE=/tmp/sae-serve-site)
set -eu
out=${1:?usage: bench/gpu/gpu_device.sh OUT_DIR}
bundle=${BUNDLE:-.bundle}
site=${SITE:-/tmp/sae-serve-site}
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$bundle"/wheels/*.whl
PYTHONPATH="$site:$(pwd)" PYTHONUNBUFFERED=1
export PYTHONPATH PYTHONUNBUFFERED
exec python3 -m bench.gpu.gpu_check --device cuda --out "$out" --data-dir "$bundle/data" --reference "$bundle/reference"

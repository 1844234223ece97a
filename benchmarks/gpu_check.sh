#!/usr/bin/env bash
# The GPU part of openknn in a few minutes, on a machine with an NVIDIA GPU:
#   1. an environment with faiss's GPU build (faiss-gpu-cu12 in place of faiss-cpu),
#   2. the GPU tests (pytest -m gpu: GPU vs CPU answers, training with _num_gpus=1,
#      openknn serve --gpus 1),
#   3. benchmarks/bench_gpu.py (CPU beside GPU: build time, recall, queries/s, accuracy),
#   4. openknn bench --quick, whose report then has its GPU rows filled.
#
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]          (default: gpu-check/)
#
# Environment:
#   OPENKNN_GPU_PYTHON=/path/to/python  use an environment that already has faiss's GPU build
#                                       and openknn installed (no set-up step)
#   OPENKNN_GPU_WHEELS=DIR              install offline from wheels in DIR (pip --find-links)
#   OPENKNN_GPU_REPORT=0                skip step 4
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"

if [[ -n "${OPENKNN_GPU_PYTHON:-}" ]]; then
    py="$OPENKNN_GPU_PYTHON"
else
    pip_args=()
    if [[ -n "${OPENKNN_GPU_WHEELS:-}" ]]; then
        pip_args=(--no-index --find-links "$OPENKNN_GPU_WHEELS")
    fi
    python3 -m venv .venv-gpu
    py=.venv-gpu/bin/python
    "$py" -m pip install -q "${pip_args[@]}" -e ".[dev]" faiss-gpu-cu12
    # faiss-cpu and faiss-gpu-cu12 both install the module "faiss": keep only the GPU one.
    "$py" -m pip uninstall -q -y faiss-cpu
    "$py" -m pip install -q "${pip_args[@]}" --force-reinstall --no-deps faiss-gpu-cu12
fi

nvidia-smi -L || true
"$py" - <<'PY'
import sys
import faiss
from openknn.core import gpu
print(f"faiss {faiss.__version__}; GPU build: {gpu.gpu_build()}; GPUs visible: {gpu.visible()}")
if gpu.visible() == 0:
    sys.exit("no GPU visible to faiss: install faiss's GPU build and check nvidia-smi")
PY

set -x
"$py" -m pytest -p no:cacheprovider -m gpu tests/gpu -v 2>&1 | tee "$out/pytest-gpu.txt"
"$py" benchmarks/bench_gpu.py 2>&1 | tee "$out/bench_gpu.txt"
if [[ "${OPENKNN_GPU_REPORT:-1}" != 0 ]]; then
    data=${OPENKNN_DATA:-../shared/data}  # the covtype rows and Fashion-MNIST, as in the README
    "$py" -m openknn bench --quick --output "$out/report" \
        --covtype-path "$data/covtype/kaggle-forest-cover-type-prediction_train.csv.gz" \
        --fashion-path "$data/fashion-mnist" 2>&1 | tail -n 40 | tee "$out/bench-quick.txt"
fi

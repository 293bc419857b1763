#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck over the CUDA statistics kernel (needs a GPU).
# Runs the fast GPU parity tests (not the sanitizer test itself) under each tool; any
# reported error fails the script. Usage: benchmarks/sanitize_gpu_stats.sh [pytest -k expr]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
SEL=${1:-"not sanitizer and not grids"}
for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool"
    compute-sanitizer --tool "$tool" --error-exitcode 1 --print-limit 20 \
        "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_gpu.py -k "$SEL"
done

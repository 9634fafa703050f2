#!/usr/bin/env bash
# The one command a session runs when a GPU machine is lent to it (CI has none; the lease is minutes):
#
#     device run: command "bash benchmarks/gpu_run.sh", carry [".whl", ".data"], timeout_s 420
#
# It installs the carried wheels (benchmarks/gpu_wheels.sh makes them) where composer's needs are missing, runs
# composer from this source tree, prints the GPU and the versions, and runs benchmarks/gpu_suite.py (under
# 5 minutes on one GPU), its output also in $OUT/gpu_suite.log. Arguments go to gpu_suite.py; here, without a
# GPU, `bash benchmarks/gpu_run.sh --device cpu --quick` is its smoke test (tests/test_latency.py runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
if ! python3 -c "import pydantic, optuna" 2>/dev/null; then
    [ -d .whl ] || { echo "pydantic / optuna missing and no .whl to install them from (benchmarks/gpu_wheels.sh)" >&2
                     exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Fashion-MNIST carried in .data/fashion-mnist (copy /usr/share/datasets/fashion-mnist there and add ".data" to carry)
[ -d .data/fashion-mnist ] && export COMPOSER_DATA="$PWD/.data"
export COMPOSER_CACHE_DIR=${COMPOSER_CACHE_DIR:-$(mktemp -d)}   # tables from empty, never a stale one
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
fi
python3 -c "import sys, torch, timm, composer; print('python', sys.version.split()[0], 'torch', torch.__version__,
          'timm', timm.__version__, 'composer', composer.__version__, 'from', composer.__file__)"
python3 benchmarks/gpu_suite.py "$@" 2>&1 | tee "$OUT/gpu_suite.log"

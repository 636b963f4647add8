#!/usr/bin/env bash
# One command for a CUDA machine (the lead runs it on the H100): build ssl_bench._C with its CUDA
# kernels, run every kernel test (tests/test_ops_*.py) and the GPU benchmarks, keep the logs.
#   bash benchmark/gpu_check.sh            # logs under $OUT if set, else ./gpu_check_logs
# Needs torch (CUDA build), nvcc, pytest, pytest-benchmark and the package's dependencies in the current
# Python environment; installs this checkout there (editable, no dependencies) with its CUDA kernels.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-gpu_check_logs}"
mkdir -p "$LOGS"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  git rev-parse HEAD 2>/dev/null
} 2>&1 | tee "$LOGS/env.txt"

echo "== build (SSL_BENCH_CUDA=1, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
export SSL_BENCH_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
if ! python -m pip install --no-build-isolation --no-deps -e . >"$LOGS/build.log" 2>&1; then
  tail -40 "$LOGS/build.log"; echo "BUILD FAILED (log: $LOGS/build.log)"; exit 1
fi
python -c "import ssl_bench.ops as o; print('backend:', o.backend()); assert o.has_cuda(), 'built without CUDA'" \
  2>&1 | tee -a "$LOGS/env.txt" || exit 1

status=0
echo "== kernel tests"
python -X faulthandler -m pytest -v -rs -p no:cacheprovider tests/test_ops_*.py --junitxml="$LOGS/tests.xml" 2>&1 | tee "$LOGS/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== GPU benchmarks"
python -m pytest -q -s -rs benchmark/ -k "cuda or gpu" --benchmark-json="$LOGS/bench.json" 2>&1 \
  | tee "$LOGS/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== summary"
grep -hE "^contrastive CUDA|CUDA|passed|failed|error" "$LOGS/tests.log" "$LOGS/bench.log" | tail -40
exit $status

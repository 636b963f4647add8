#!/usr/bin/env bash
# Issue 17 on one lent GPU (sized for an H200, about 8 minutes): build the CUDA kernels, run the CUDA kernel tests
# (the cross-rank contrastive op included), then benchmark/test_bench_speed.py: training throughput against the
# old loop and a bare loop at 32 and 64 px, the backbone's share of the bf16 matrix peak, runs/hour packed
# K = 1, 4, 8 per GPU, fused vs dense cross-rank loss memory at N = 16384, and --compile if time is left.
# Numbers for benchmark/RESULTS.md ("Training speed"); every step has a timeout so the whole fits BUDGET (470 s).
#   bash benchmark/gpu_perf.sh        # logs and JSON under $OUT if set, else ./gpu_perf_logs
# Needs torch (CUDA build), nvcc, pytest, pytest-benchmark and the package's dependencies. The device image
# lacks pydantic: carry its wheels (pydantic, pydantic-core, annotated-types, typing-inspection) in .whl/ as
# /work/.library/device/README.md says; they are installed from there when present.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-gpu_perf_logs}"
mkdir -p "$LOGS"
T0=$(date +%s)
left() { echo $(( ${BUDGET:-470} - ($(date +%s) - T0) )); }  # seconds left of the budget
. benchmark/gpu_env.sh

echo "== build (SSL_BENCH_CUDA=1, sm_90)"
export SSL_BENCH_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
if ! timeout 240 python3 -m pip install --no-build-isolation --no-deps -e . >"$LOGS/build.log" 2>&1; then
  tail -30 "$LOGS/build.log"; echo "BUILD FAILED (log: $LOGS/build.log)"; exit 1
fi
echo "build done after $(( $(date +%s) - T0 )) s"
status=0

echo "== CUDA kernel tests (contrastive, incl. rows x gathered columns)"
timeout 90 python3 -m pytest -q -rs -p no:cacheprovider tests/test_ops_contrastive.py -k "cuda" 2>&1 | tee "$LOGS/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== speed: throughput, peak share, cross-rank memory ($(left) s left)"
timeout $(( $(left) - 200 )) python3 -m pytest -q -s -rs -p no:cacheprovider benchmark/test_bench_speed.py \
  -k "throughput or cross_rank" --benchmark-json="$LOGS/speed.json" 2>&1 | tee "$LOGS/speed.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== packing: runs/hour with --per-gpu 1, 4, 8 ($(left) s left)"
timeout $(( $(left) - 60 )) python3 -m pytest -q -s -rs -p no:cacheprovider benchmark/test_bench_speed.py \
  -k "packing" --benchmark-json="$LOGS/packing.json" 2>&1 | tee "$LOGS/packing.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

if [ "$(left)" -gt 75 ]; then
  echo "== --compile ($(left) s left)"
  timeout $(( $(left) - 5 )) python3 -m pytest -q -s -rs -p no:cacheprovider benchmark/test_bench_speed.py \
    -k "compile" --benchmark-json="$LOGS/compile.json" 2>&1 | tee "$LOGS/compile.log"
fi

echo "== summary ($(( $(date +%s) - T0 )) s)"
grep -h "NVIDIA\|^torch\|^python" "$LOGS/env.txt" | head -3
grep -hE "^(SPEED|PACKING|CROSS-RANK|COMPILE)|passed|failed|error" "$LOGS"/*.log | tail -30
exit $status

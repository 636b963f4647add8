#!/usr/bin/env bash
# Issue 18's GPU sweep on one CUDA machine: the runs of benchmark/claims_grid.toml (every claim of the findings
# report), packed K per GPU, stopped at BUDGET seconds (default 480: the 8 minutes the issue allows). Runs start
# seed by seed, so a sweep cut by the budget leaves whole comparisons; run it again to resume (checkpoints).
#   DATA_ROOT=../shared/data/tiny-imagenet-100 bash benchmark/gpu_sweep.sh
#   PROTOCOL=tinyimagenet-s3l K=4 SEEDS=0,1 BUDGET=3600 DATA_ROOT=... bash benchmark/gpu_sweep.sh
# Writes under $OUT if set, else ./gpu_sweep_logs: env.txt, sweep.log, runs.tar (the result files),
# FINDINGS_gpu.md (`ssl-bench report` of these runs alone). Submit the result files with `ssl-bench submit`.
# The distant stream needs WordNet 3.0's data.noun (/usr/share/wordnet, or SSL_BENCH_WORDNET); the domain stream
# runs under tinyimagenet-cpu-domains, as the grid's table says, whatever PROTOCOL is.
# Precision: fp32 (PRECISION=auto for bf16), so the runs are numerically comparable with the CPU protocol's.
# Needs torch (CUDA build), nvcc and the package's dependencies; pydantic's wheels from .whl/ if present (see
# benchmark/gpu_perf.sh). Not run yet: no GPU was lent to the sessions that wrote it.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-gpu_sweep_logs}"
RUNS="${RUNS:-$LOGS/runs}"
mkdir -p "$LOGS" "$RUNS"
: "${DATA_ROOT:?set DATA_ROOT to the folder holding the images of the protocol (Tiny ImageNet layout)}"
if [ -z "${SSL_BENCH_WORDNET:-}" ] && [ ! -e /usr/share/wordnet/data.noun ]; then  # the grid's distant stream
  echo "no WordNet 3.0: set SSL_BENCH_WORDNET=PATH/data.noun (carry it; apt-get install wordnet-base has it)"; exit 1
fi
T0=$(date +%s)
. benchmark/gpu_env.sh
export SSL_BENCH_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
if ! timeout 240 python3 -m pip install --no-build-isolation --no-deps -e . >"$LOGS/build.log" 2>&1; then
  tail -30 "$LOGS/build.log"; echo "BUILD FAILED (log: $LOGS/build.log)"; exit 1
fi
LEFT=$(( ${BUDGET:-480} - ($(date +%s) - T0) - 30 ))  # 30 s kept for the report and the archive
echo "== sweep: ${PROTOCOL:-tinyimagenet-cpu}, K=${K:-8} per GPU, seeds ${SEEDS:-all}, ${LEFT} s"
SWEEP=(ssl-bench sweep --protocol "${PROTOCOL:-tinyimagenet-cpu}" --data-root "$DATA_ROOT" --grid benchmark/claims_grid.toml
  --seeds "${SEEDS:-all}" --per-gpu "${K:-8}" --device cuda --precision "${PRECISION:-fp32}" --out "$RUNS")
"${SWEEP[@]}" --dry-run | tail -1 | tee "$LOGS/sweep.log"
timeout --kill-after=15 "$LEFT" "${SWEEP[@]}" 2>&1 | grep -v "it/s\]$" | tee -a "$LOGS/sweep.log"
status=${PIPESTATUS[0]}
pkill -f "multiprocessing.spawn" 2>/dev/null; sleep 2  # the pool's workers, when the budget stopped the sweep
"${SWEEP[@]}" --dry-run | tail -1 | tee -a "$LOGS/sweep.log"
ssl-bench report "$RUNS" -o "$LOGS/FINDINGS_gpu.md" >/dev/null 2>&1 || echo "report: no complete comparison yet"
tar -cf "$LOGS/runs.tar" -C "$RUNS" --exclude='.*' .
echo "wall $(( $(date +%s) - T0 )) s; sweep exit $status (124: stopped at the budget)"
exit $status

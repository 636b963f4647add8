#!/usr/bin/env bash
# One lent GPU, as many numbers as it can give, and never a hang or an overrun (issue 35). Replaces gpu_check.sh,
# gpu_perf.sh, gpu_sweep.sh and gpu_zoo.sh. Run on the device machine from the repository root:
#   bash benchmark/gpu_lease.sh                      # BUDGET=480 s by default; STEPS=sync,speed for a subset
#   bash benchmark/gpu_lease.sh --dry-run-on-cpu     # the same script end to end on the CPU, tiny sizes (CI runs it)
# The device-tool call (benchmark/RESULTS.md, "GPU numbers pending"): command `bash benchmark/gpu_lease.sh`,
# carry [".whl"], timeout_s 540. The image has torch 2.11, h5py, pluggy, pybind11, ninja and pytest-benchmark but
# no pydantic: its wheels (pydantic, pydantic-core for cp312 manylinux, annotated-types, typing-inspection,
# typing-extensions) are downloaded here once into .whl/ (ignored by git) with the pip download command of
# /work/.library/device/README.md, and carried. The extension is built there, against the image's torch.
#
# The plan (seconds). Each step's hard timeout is min(its plan, what is left of BUDGET after keeping PACK for the
# end); a step with less than its floor left is skipped, and says so: no timeout is ever 0 or negative. The plan
# sums to 600 s, one command's limit; BUDGET (default 480) trims the last steps, so that a 15-minute lease leaves
# time for a second call.
#   step     plan  floor  what
#   env        20      5  GPU, driver, python, torch, CUDA, git commit
#   wheels     10      5  .whl/*.whl -> /tmp/site (PYTHONPATH): pydantic and its dependencies
#   build     150     60  pip install --no-build-isolation --no-deps -e . with the CUDA kernels (sm_90), image's torch
#   ops        60     20  the CUDA kernel tests: tests/test_ops_*.py -k cuda
#   sync       80     30  train_phase of simclr, byol:mas, dino, mae: phase 1 under set_sync_debug_mode("error")
#   speed      80     30  train_phase vs the old loop and a bare bf16 loop, 32 and 64 px; bf16 peak share; cross-rank
#   packing    90     25  sweep --per-gpu K, K = 1, 4, 8 (smoke): runs/hour
#   sweep     100     30  forgetting protocol: simclr, byol x sequential, joint, replay, mas x 2 seeds, --per-gpu 8
#   compile     -     60  --compile at 32 px, with whatever is left
#   pack       10      -  logs.tar.gz (step logs, sweep result files)
#   total     600
# Output under $OUT (else ./gpu_lease_out), 3 files: results.jsonl (one JSON line per measurement and per step, as
# each ends, so a cut-off run keeps what it finished), lease.log (everything printed), logs.tar.gz (at the end).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run-on-cpu" ] && DRY=1
OUT="${OUT:-gpu_lease_out}"
BUDGET="${BUDGET:-480}"
STEPS="${STEPS:-env,wheels,build,ops,sync,speed,packing,sweep,compile}"
PACK=10
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_lease.XXXXXX")"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
exec > >(tee -a "$OUT/lease.log") 2>&1
T0=$(date +%s)
if [ "$DRY" = 1 ]; then
  PY="${PYTHON:-python}" CPUFLAG="--cpu"
else
  PY="${PYTHON:-python3}" CPUFLAG=""
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} # the carried wheels, installed by the wheels step
fi
export DRY PY CPUFLAG RESULTS WORK PYTHONUNBUFFERED=1

left() { echo $((BUDGET - ($(date +%s) - T0) - PACK)); }
plan() { case "$1" in env) echo 20 ;; wheels) echo 10 ;; build) echo 150 ;; ops) echo 60 ;; sync) echo 80 ;;
  speed) echo 80 ;; packing) echo 90 ;; sweep) echo 100 ;; compile) echo 600 ;; esac; }
floor() { case "$1" in env) echo 5 ;; wheels) echo 5 ;; build) echo 60 ;; ops) echo 20 ;; sync) echo 30 ;;
  speed) echo 30 ;; packing) echo 25 ;; sweep) echo 30 ;; compile) echo 60 ;; esac; }
record() { # step status seconds timeout note
  printf '{"step": "%s", "status": "%s", "seconds": %s, "timeout": %s, "note": "%s"}\n' "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"
}

step_env() {
  date -u
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
}
step_wheels() {
  if [ "$DRY" = 1 ]; then echo "dry run: this environment has its packages; on the device .whl/*.whl -> /tmp/site"; return 0; fi
  ls .whl/*.whl || { echo "no .whl/: carry the wheels (see the top of this script)"; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}
step_build() {
  if [ "$DRY" = 1 ]; then # building here would replace the installed extension: check that it loads instead
    "$PY" -c "import ssl_bench.ops as o; print('dry run, no build; backend:', o.backend())"
    return
  fi
  SSL_BENCH_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
    "$PY" -m pip install --no-build-isolation --no-deps -e . || return 1
  "$PY" -c "import ssl_bench.ops as o; print('backend:', o.backend()); assert o.has_cuda(), 'built without CUDA'"
}
step_ops() {
  "$PY" -X faulthandler -m pytest -q -rs -p no:cacheprovider tests/test_ops_contrastive.py tests/test_ops_fisher.py \
    tests/test_ops_penalty.py tests/test_ops_sharpness.py -k cuda
}
step_lease() { # the Python steps: benchmark/gpu_lease.py STEP, a JSON line per measurement as it ends
  "$PY" benchmark/gpu_lease.py "$STEP" --results "$RESULTS" --work "$WORK/$STEP" --timeout "$STEP_TIMEOUT" $CPUFLAG
}

# run STEP FUNCTION: under a hard timeout derived from the time left (timeout kills the step's whole process
# group); the step's status is recorded as it ends
run() {
  local step="$1" fn="$2" t fl s0 status took
  case ",$STEPS," in *",$step,"*) ;; *) return 0 ;; esac
  t=$(plan "$step")
  fl=$(floor "$step")
  [ "$(left)" -lt "$t" ] && t=$(left)
  if [ "$t" -lt "$fl" ]; then
    echo "== $step: skipped, $(left) s left of the budget (it needs $fl)"
    record "$step" skipped 0 0 "out of time: $(left) s left, it needs $fl"
    return 0
  fi
  echo "== $step (timeout ${t} s, $(left) s left)"
  s0=$(date +%s)
  STEP="$step" STEP_TIMEOUT="$t" timeout --kill-after=5 "$t" bash -c "$(declare -f "$fn"); $fn" 2>&1 | tee "$WORK/$step.log"
  status=${PIPESTATUS[0]}
  took=$(($(date +%s) - s0))
  case $status in
    0) record "$step" ok "$took" "$t" "" ;;
    124 | 137) record "$step" timeout "$took" "$t" "stopped at its timeout" ;;
    *) record "$step" failed "$took" "$t" "exit $status, see lease.log" ;;
  esac
  echo "== $step: exit $status after ${took} s"
}

run env step_env
run wheels step_wheels
run build step_build
run ops step_ops
run sync step_lease
run speed step_lease
run packing step_lease
run sweep step_lease
run compile step_lease

# pack: the step logs and the sweep's result files, one tarball
mkdir -p "$WORK/files"
cp "$WORK"/*.log "$WORK/files/" 2>/dev/null
find "$WORK" -path '*sweep*' -name '*.h5' -exec cp {} "$WORK/files/" \; 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$WORK/files" .
echo "== summary ($(($(date +%s) - T0)) s of BUDGET ${BUDGET} s)"
"$PY" - "$RESULTS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "status" in r and len(r) == 5:  # a step's line (bash)
        print(f"{r['step']:8s} {r['status']:8s} {r['seconds']:4d} s of {r['timeout']:3d} s  {r['note']}")
    else:  # a measurement (benchmark/gpu_lease.py)
        print("   " + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("time", "stderr_tail"))[:240])
EOF
rm -rf "$WORK"
! grep -q '"status": "\(failed\|timeout\)"' "$RESULTS"

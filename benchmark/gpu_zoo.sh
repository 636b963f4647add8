#!/usr/bin/env bash
# Learning check of the ViT methods (MAE, DINO with multi-crop, MoCo v3) and of DINO/SwAV/MoCo v3/NNCLR on a
# ResNet with their recipes, on a CUDA machine. Not run yet: no GPU was lent when it was written (issue 19).
#   bash benchmark/gpu_zoo.sh                                   # generated data (nothing to carry)
#   DATA_ROOT=../shared/data/tiny-imagenet-100 CLASSES=30 bash benchmark/gpu_zoo.sh    # real images
# Logs and JSON under $OUT if set, else ./gpu_zoo_logs. Needs torch (CUDA build) and the package's dependencies
# in the current Python environment; installs this checkout there (editable, no dependencies, no CUDA build:
# the methods need no compiled kernel beyond the CPU extension's fallbacks).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-gpu_zoo_logs}"
STEPS="${STEPS:-2000}"      # 2000 steps of 256 = 57 epochs of 9,000 images (30 classes), 64 of the generated 8,000
BATCH="${BATCH:-256}"
mkdir -p "$LOGS"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  git rev-parse HEAD 2>/dev/null
} 2>&1 | tee "$LOGS/env.txt"
SSL_BENCH_CUDA=0 python -m pip install --no-build-isolation --no-deps -e . >"$LOGS/install.log" 2>&1 \
  || { tail -20 "$LOGS/install.log"; echo "INSTALL FAILED"; exit 1; }

if [ -n "${DATA_ROOT:-}" ]; then
  DATA=(--data-root "$DATA_ROOT" --classes "${CLASSES:-30}")
else
  DATA=(--dataset synthetic)
fi
COMMON=("${DATA[@]}" --device cuda --threads 8 --resolution 32 --steps "$STEPS" --batch-size "$BATCH" --seeds "${SEEDS:-0}")
status=0

echo "== ViT-Small, patch 4 (64 tokens at 32 px): mae, dino (2 + 4 local crops), mocov3; --family vit recipes"
python benchmark/learning_check.py "${COMMON[@]}" --backbone vit_small --backbone-opt patch_size=4 \
  --family vit --methods mae,dino,mocov3 --out "$LOGS/learning_check_gpu_vit.json" 2>&1 \
  | grep -v "step/s\|s/step" | tee "$LOGS/vit.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== ResNet-18 x0.5: dino, swav, mocov3, nnclr with their 's3l' recipes (solo-learn's CIFAR settings)"
python benchmark/learning_check.py "${COMMON[@]}" --width 0.5 --family s3l \
  --methods dino,swav,mocov3,nnclr --out "$LOGS/learning_check_gpu_resnet.json" 2>&1 \
  | grep -v "step/s\|s/step" | tee "$LOGS/resnet.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== summary"
grep -h "^|" "$LOGS/vit.log" "$LOGS/resnet.log"
exit $status

#!/usr/bin/env bash
# The serving and training benchmarks on a GPU machine (one H200), in
# under 8 minutes: JSON files into the folder given as the argument.
#
#   benchmarks/gpu.sh OUT_DIR            # on the GPU machine
#   benchmarks/gpu.sh OUT_DIR --dry-run  # tiny sizes, any machine (CI/CPU)
#
# Steps (each bounded by `timeout`; a failed step is recorded in
# OUT_DIR/steps.txt and the next one still runs):
#   1. serving_cost.json   the grid N = 1,000, 3,000, 10,000 x C = 100, 500,
#                          1,000 x R = 1, 8, float32, breakdown;
#   2. serving_p99.json    hisac and full at N = 10,000, C = 500, R = 1,
#                          200 calls each (target: hisac p99 < 10 ms);
#   3. serving_bf16.json   step 2 with mixed_bfloat16 (bfloat16 matmuls,
#                          float32 softmax in the layers, float32 logits),
#                          through the signatures as in step 2;
#   4. serving_xla.json    step 2 with the model under XLA (jit_compile);
#   5. training.json       N = 1,000 and 10,000, C = 50, batch 32;
#   6. training_bf16.json  step 5 with mixed_bfloat16.
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu.sh OUT_DIR [--dry-run]}
MODE=${2:-}
if [[ -n "$MODE" && "$MODE" != "--dry-run" ]]; then
  echo "unknown option $MODE (expected --dry-run)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
mkdir -p "$OUT"
STEPS="$OUT/steps.txt"
: > "$STEPS"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
START=$SECONDS

if [[ "$MODE" == "--dry-run" ]]; then
  GRID=(--tiny --n=20 --c=4,8 --r=1)
  P99=(--tiny --n=40 --c=8 --r=1 --rounds=2 --calls=2)
  TRAIN=(--tiny --n=20 --methods=hisac,full)
  LIMIT=(300 120 120 120 300 300)
else
  GRID=(--n=1000,3000,10000 --c=100,500,1000 --r=1,8 --rounds=5 --calls=5)
  P99=(--n=10000 --c=500 --r=1 --rounds=10 --calls=20)
  TRAIN=(--n=1000,10000 --rounds=3 --calls=5)
  LIMIT=(160 45 45 55 95 50)
fi

step() {  # step LIMIT NAME COMMAND...
  local limit=$1 name=$2
  shift 2
  local began=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - began))" | tee -a "$STEPS"
}

{ nvidia-smi || echo "no nvidia-smi"; } > "$OUT/nvidia-smi.txt" 2>&1
step "${LIMIT[0]}" serving_cost $PY -m benchmarks.serving_cost "${GRID[@]}" \
  --output="$OUT/serving_cost.json"
step "${LIMIT[1]}" serving_p99 $PY -m benchmarks.serving_cost "${P99[@]}" \
  --methods=hisac,full --no_breakdown --output="$OUT/serving_p99.json"
step "${LIMIT[2]}" serving_bf16 $PY -m benchmarks.serving_cost "${P99[@]}" \
  --methods=hisac,full --no_breakdown --precision=mixed_bfloat16 \
  --output="$OUT/serving_bf16.json"
step "${LIMIT[3]}" serving_xla $PY -m benchmarks.serving_cost "${P99[@]}" \
  --methods=hisac,full --no_breakdown --jit_compile \
  --output="$OUT/serving_xla.json"
step "${LIMIT[4]}" training $PY -m benchmarks.training "${TRAIN[@]}" \
  --output="$OUT/training.json"
step "${LIMIT[5]}" training_bf16 $PY -m benchmarks.training "${TRAIN[@]}" \
  --methods=hisac,full --precision=mixed_bfloat16 \
  --output="$OUT/training_bf16.json"
echo "total seconds=$((SECONDS - START))" | tee -a "$STEPS"

#!/usr/bin/env bash
# The paper's vanilla field on the 4 real clips of bench/gpu_real.sh, for a PSNR-versus-wall-time
# comparison with the fast field (about 3 minutes on an H100): 2048 rays from one frame per
# step, 64 + 128 samples, Adam 5e-4 -> 5e-5 (the paper's configuration, bf16 autocast).
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-2500}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
W=/tmp/minerf-gpu-van; rm -rf $W; mkdir -p $W
minerf -q train --ids $DATA/r4 -o $W/real_vanilla --field vanilla --steps "$STEPS" --val-every 500 \
    --checkpoint-every "$STEPS" --test-frames 3 > "$OUT/real_vanilla.json" || true
cat "$OUT/real_vanilla.json"
cp $W/real_vanilla/metrics.csv "$OUT/real_vanilla_metrics.csv"

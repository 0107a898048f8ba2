#!/usr/bin/env bash
# Issue 5 benchmark on one GPU (one call of the device tool, under 10 minutes on an H100):
# synthetic identities rendered by the project straight into stores (ground-truth tracking),
# then bench/bench_speed.py over RUNS. Real clips (for realN runs) are carried as JPEG stores:
#   minerf repack /tmp/minerf-real/X.h5 -o .gpudata/r4/X.h5 --max-frames 225 --jpeg-quality 90
# Usage: RUNS=fast:syn1,fast:syn4,fast:syn16 CAP=100 FLOPS=1 bash bench/gpu_speed.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata}
OUT=${OUT:-gpu_out}
RUNS=${RUNS:-fast:syn1,fast:syn4,fast:syn16}
CAP=${CAP:-100}
SYN_IDS=${SYN_IDS:-16}
SECONDS_PER_ID=${SECONDS_PER_ID:-6}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
SYN=$(bash bench/synth_stores.sh "$SYN_IDS" "$SECONDS_PER_ID" "$OUT")
FLAG=""
[ "${FLOPS:-0}" = "1" ] && FLAG="--flops"
python3 bench/bench_speed.py --synth "$SYN" --real "$DATA/r4" --runs "$RUNS" --cap-s "$CAP" \
    --out "$OUT/speed" $FLAG ${EXTRA:-} | tee "$OUT/speed.json"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv

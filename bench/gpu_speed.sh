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
W=/tmp/minerf-gpu-speed; mkdir -p $W
if [ ! -f "$W/syn/synth_id$(printf %02d $((SYN_IDS - 1))).h5" ]; then
    t0=$(date +%s)
    minerf -q synth -o $W/syn --ids "$SYN_IDS" --seconds "$SECONDS_PER_ID" --size 512 --store --jobs 0 \
        --jpeg-quality 90 --seed 11 --force > "$OUT/synth.json"
    echo "synth: $SYN_IDS identities x ${SECONDS_PER_ID}s in $(( $(date +%s) - t0 )) s"
fi
FLAG=""
[ "${FLOPS:-0}" = "1" ] && FLAG="--flops"
python3 bench/bench_speed.py --synth $W/syn --real "$DATA/r4" --runs "$RUNS" --cap-s "$CAP" \
    --out "$OUT/speed" $FLAG ${EXTRA:-} | tee "$OUT/speed.json"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv

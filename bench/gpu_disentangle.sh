#!/usr/bin/env bash
# Issue 3's disentanglement check on real clips (the paper's Table 1 comparison), one GPU call
# (about 6 minutes on an H100): the same 4 real identities trained with the multiplicative
# module M and with the concatenation baseline (same seed, steps, rays), then Kristi Noem
# driven by Obama's expressions and Kristi's own held-out frames re-rendered by each run.
# `minerf evaluate` on the CPU then gives ACD(transfer) vs ACD(reconstruction) per module.
# Inputs (carried, git-ignored): $DATA/r4/*.h5 (see bench/gpu_real.sh).
# TRAIN_EXTRA: more train flags for both, e.g. "--latent-dim 0 --mouth-rays 0.3" (the fields then
# have to explain every change over time by the expression: see docs/audio.md's jaw sweep).
#   STEPS=3000 MODULES="m baseline" bash bench/gpu_disentangle.sh
#   STEPS=16000 MODULES=m TRAIN_EXTRA="--latent-dim 0 --mouth-rays 0.3" bash bench/gpu_disentangle.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-3000}
MODULES=${MODULES:-m baseline}
TRAIN_EXTRA=${TRAIN_EXTRA:-}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
W=/tmp/minerf-gpu-dis; rm -rf $W; mkdir -p $W
O=$DATA/r4/styletalk_Obama_clip2_av.h5
K=$DATA/r4/styletalk_KristiNoem_av.h5
for module in $MODULES; do
    minerf -q train --ids $DATA/r4 -o $W/real_$module --module $module --field fast --steps "$STEPS" --rays 4096 \
        --frames-per-step 2 --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10 --val-every "$STEPS" \
        --checkpoint-every "$STEPS" --test-frames 5 $TRAIN_EXTRA > "$OUT/dis_$module.json"
    cat "$OUT/dis_$module.json"
    cp $W/real_$module/metrics.csv "$OUT/dis_${module}_metrics.csv"
    minerf -q transfer $W/real_$module --id styletalk_KristiNoem_av --from $O --frames 0:60 \
        --store "$OUT/dis_${module}_kristi_from_obama.h5" --jpeg-quality 95 > "$OUT/dis_${module}_transfer.json"
    minerf -q transfer $W/real_$module --id styletalk_KristiNoem_av --from $K \
        --store "$OUT/dis_${module}_kristi_rec.h5" --jpeg-quality 95 > "$OUT/dis_${module}_rec.json"
    cat "$OUT/dis_${module}_transfer.json" "$OUT/dis_${module}_rec.json"
done

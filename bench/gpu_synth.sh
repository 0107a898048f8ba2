#!/usr/bin/env bash
# Issue 3 acceptance on synthetic heads (the project's renderer, known ground truth), one GPU
# call (about 7 minutes on an H100): the same 4 identities trained with the multiplicative
# module M and with the concatenation baseline, then identity 01 driven by identity 00's
# expressions and its own held-out frames re-rendered by both runs, for `minerf evaluate`
# (ACD of transfer vs reconstruction, as in the paper's Table 1).
# Inputs (carried, git-ignored): $DATA/syn4/synth_id0{0..3}.h5 made by
#   minerf synth -o syn4 --ids 4 --seconds 8 --size 512 --seed 11
#   minerf prep syn4/idNN.mp4 -o $DATA/syn4/synth_idNN.h5 --jpeg-quality 90 && minerf fit3dmm ...
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-3000}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
W=/tmp/minerf-gpu-synth; rm -rf $W; mkdir -p $W
A=$DATA/syn4/synth_id00.h5
B=$DATA/syn4/synth_id01.h5
for module in m baseline; do
    minerf -q train --ids $DATA/syn4 -o $W/syn_$module --module $module --field fast --steps "$STEPS" --rays 4096 \
        --frames-per-step 2 --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10 --val-every "$STEPS" \
        --checkpoint-every "$STEPS" --test-frames 10 > "$OUT/syn_$module.json"
    cat "$OUT/syn_$module.json"
    minerf -q transfer $W/syn_$module --id synth_id01 --from $A --frames 0:40 --store "$OUT/syn_${module}_b_from_a.h5" --jpeg-quality 95
    minerf -q transfer $W/syn_$module --id synth_id01 --from $B --store "$OUT/syn_${module}_b_rec.h5" --jpeg-quality 95
done
cp $W/syn_m/metrics.csv "$OUT/syn_m_metrics.csv"
cp $W/syn_baseline/metrics.csv "$OUT/syn_baseline_metrics.csv"

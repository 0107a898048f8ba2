#!/usr/bin/env bash
# Issue 3 acceptance, short-video personalization of an unseen real person, one GPU call
# (about 6 minutes on an H100): train on 4 real identities, add feifeili from 75 frames
# (3 s at 25 fps... her clip is 30 fps: 2.5 s), render her with 60 frames of Obama's
# expressions for `minerf evaluate --identity-only` against her real frames.
# Inputs as in bench/gpu_real.sh.
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-4000}
PSTEPS=${PSTEPS:-2500}
PLR=${PLR:-3e-4}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
W=/tmp/minerf-gpu-pers; rm -rf $W; mkdir -p $W
minerf -q train --ids $DATA/r4 -o $W/real_m --field fast --steps "$STEPS" --rays 4096 --frames-per-step 2 \
    --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10 --val-every "$STEPS" --checkpoint-every "$STEPS" --test-frames 3 > "$OUT/real_m4k.json"
cat "$OUT/real_m4k.json"
minerf -q personalize $W/real_m --id feifeili_3s --store $DATA/unseen/feifeili_3s.h5 -o $W/real_p \
    --steps "$PSTEPS" --rays 4096 --lr "$PLR" > "$OUT/personalize.json"
cat "$OUT/personalize.json"
minerf -q transfer $W/real_p --id feifeili_3s --from $DATA/r4/styletalk_Obama_clip2_av.h5 --frames 0:60 \
    --store "$OUT/feifei_from_obama.h5" --jpeg-quality 95
minerf -q transfer $W/real_p --id feifeili_3s --from $DATA/unseen/feifeili_3s.h5 --store "$OUT/feifei_rec.h5" --jpeg-quality 95

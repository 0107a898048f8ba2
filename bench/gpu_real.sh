#!/usr/bin/env bash
# Issue 3 acceptance on real clips, one GPU call (about 8 minutes on an H100):
#   train a fast-field MI-NeRF on 4 real identities, personalize an unseen person from a
#   3 s clip, render expression transfers and reconstructions for `minerf evaluate`.
# Inputs (carried, git-ignored): $DATA/r4/*.h5 (4 tracked stores, JPEG frames, first 225
# frames of each clip: `minerf repack --max-frames 225`), $DATA/unseen/feifeili_3s.h5.
# Outputs in $OUT (or ./gpu_out): JSON summaries, metrics, curve, render stores.
#   STEPS=6000 RAYS=4096 bash bench/gpu_real.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-6000}
RAYS=${RAYS:-4096}
PSTEPS=${PSTEPS:-1500}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
W=/tmp/minerf-gpu; rm -rf $W; mkdir -p $W
minerf -q train --ids $DATA/r4 -o $W/real_m --field fast --steps "$STEPS" --rays "$RAYS" --frames-per-step 2 \
    --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10 --val-every 2000 --checkpoint-every 2000 > "$OUT/real_m.json"
cat "$OUT/real_m.json"
cp $W/real_m/metrics.csv "$OUT/real_m_metrics.csv"
cp $W/real_m/training_curve.png "$OUT/real_m_curve.png"
minerf -q personalize $W/real_m --id feifeili_3s --store $DATA/unseen/feifeili_3s.h5 -o $W/real_p \
    --steps "$PSTEPS" --rays "$RAYS" > "$OUT/personalize.json"
cat "$OUT/personalize.json"
O=$DATA/r4/styletalk_Obama_clip2_av.h5
K=$DATA/r4/styletalk_KristiNoem_av.h5
minerf -q transfer $W/real_p --id feifeili_3s --from $O --frames 0:60 --store "$OUT/feifei_from_obama.h5" --jpeg-quality 95
minerf -q transfer $W/real_m --id styletalk_KristiNoem_av --from $O --frames 0:60 --store "$OUT/kristi_from_obama.h5" --jpeg-quality 95
minerf transfer $W/real_m --id styletalk_KristiNoem_av --from $K --store "$OUT/kristi_rec.h5" --jpeg-quality 95

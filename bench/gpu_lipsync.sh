#!/usr/bin/env bash
# Issue 4 lipsync acceptance, GPU part, one call (about 3 minutes per variant on an H100):
#   for each training variant: train a fast-field MI-NeRF on one real identity, `minerf lipsync`
#   it to a speech wav, and render a jaw sweep (scripts/jaw_sweep.py: every blendshape at the
#   clip's mean but jawOpen, which opens and closes) -- both as render stores (frames +
#   /render/expression asked for; the lipsync one with /audio, the speech).
# The CPU part (mp4 duration, re-tracking jawOpen correlation, sync driving vs other audio):
#   python scripts/eval_lipsync.py --render gpu_out/V_lipsync.h5 --audio WAV --other OTHER.wav --audio-model AM
#   python scripts/eval_lipsync.py --render gpu_out/V_sweep.h5           # the field's jawOpen response alone
#
# Inputs (carried, git-ignored), default $DATA=.gpudata/lipsync:
#   $ID (default $DATA/id.h5)   the identity's tracked store (JPEG frames: `minerf repack --jpeg-quality 90`)
#   $DATA/audio_model/          `minerf encode-audio --fit ... -o $DATA/audio_model` (config.json, weights.pt)
#   $DATA/speech.wav            the driving speech, a plain PCM wav (read without soundfile/ffmpeg)
# VARIANTS: "name:train flags" separated by ';' (default one variant, "base:").
# SWEEP_ONLY=1: no lipsync render (the jaw sweep only).
# Outputs in $OUT (default gpu_out): log.jsonl (every command's JSON), V_lipsync.h5, V_sweep.h5.
#   STEPS=4000 VARIANTS="base:;lat0:--latent-dim 0" bash bench/gpu_lipsync.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata/lipsync}
ID=${ID:-$DATA/id.h5}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-4000}
RAYS=${RAYS:-4096}
VARIANTS=${VARIANTS:-base:}
mkdir -p "$OUT"
for f in "$ID" "$DATA/audio_model/config.json" "$DATA/audio_model/weights.pt" "$DATA/speech.wav"; do
  [ -f "$f" ] || { echo "gpu_lipsync: missing $f" >&2; exit 2; }
done
if [ "${SKIP_SETUP:-0}" != 1 ]; then bash scripts/gpu_setup.sh; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
W=${WORK:-/tmp/minerf-gpu-lipsync}; rm -rf "$W"; mkdir -p "$W"
# the run names the identity after its store's stem
NAME=${NAME:-$(basename "$ID" .h5)}
ID_STORE="$W/$NAME.h5"; cp "$ID" "$ID_STORE"
python3 scripts/jaw_sweep.py "$ID_STORE" -o "$W/sweep.h5" --frames 150 | tee -a "$OUT/log.jsonl"
IFS=';' read -ra VS <<< "$VARIANTS"
for v in "${VS[@]}"; do
  V=${v%%:*}; FLAGS=${v#*:}
  echo "== variant $V: $FLAGS" >&2
  # shellcheck disable=SC2086
  minerf -q train --ids "$ID_STORE" -o "$W/$V" --field fast --steps "$STEPS" --rays "$RAYS" --frames-per-step 2 \
      --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10 --val-every 100000 --checkpoint-every 100000 $FLAGS \
      | sed "s/^{/{\"variant\": \"$V\", /" | tee -a "$OUT/log.jsonl"
  [ "${SWEEP_ONLY:-0}" = 1 ] || minerf -q lipsync "$W/$V" --id "$NAME" --audio "$DATA/speech.wav" --audio-model "$DATA/audio_model" \
      --store "$OUT/${V}_lipsync.h5" --jpeg-quality 95 --force | sed "s/^{/{\"variant\": \"$V\", /" | tee -a "$OUT/log.jsonl"
  minerf -q transfer "$W/$V" --id "$NAME" --from "$W/sweep.h5" --frames 0:150 \
      --store "$OUT/${V}_sweep.h5" --jpeg-quality 95 --force | sed "s/^{/{\"variant\": \"$V\", /" | tee -a "$OUT/log.jsonl"
done
ls -la "$OUT"

#!/usr/bin/env bash
# Issue 4 lipsync acceptance, GPU part, one call (about 4-5 minutes on an H100):
#   train a fast-field MI-NeRF on one real identity, then `minerf lipsync` it to a speech wav,
#   writing the render store (frames + /render/expression asked for + /audio the speech).
# The CPU part (mp4 duration, re-tracking jawOpen correlation, sync driving vs other audio):
#   python scripts/eval_lipsync.py --render gpu_out/lipsync.h5 --audio WAV --other OTHER.wav --audio-model AM
#
# Inputs (carried, git-ignored), default $DATA=.gpudata/lipsync:
#   $DATA/id.h5           the identity's tracked store (JPEG frames: `minerf repack --jpeg-quality 90`)
#   $DATA/audio_model/    `minerf encode-audio --fit ... -o $DATA/audio_model` (config.json, weights.pt)
#   $DATA/speech.wav      the driving speech, a plain PCM wav (read without soundfile/ffmpeg)
# Outputs in $OUT (default gpu_out): train.json, lipsync.json, lipsync.h5 (+ lipsync.mp4 when the
# machine has imageio-ffmpeg and soundfile), the run's metrics.csv.
#   STEPS=4000 bash bench/gpu_lipsync.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA:-.gpudata/lipsync}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-4000}
RAYS=${RAYS:-4096}
mkdir -p "$OUT"
for f in "$DATA/id.h5" "$DATA/audio_model/config.json" "$DATA/audio_model/weights.pt" "$DATA/speech.wav"; do
  [ -f "$f" ] || { echo "gpu_lipsync: missing $f" >&2; exit 2; }
done
if [ "${SKIP_SETUP:-0}" != 1 ]; then bash scripts/gpu_setup.sh; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
W=${WORK:-/tmp/minerf-gpu-lipsync}; rm -rf "$W"; mkdir -p "$W"
# the run names the identity after its store's stem
NAME=${NAME:-id}
ID_STORE="$W/$NAME.h5"; cp "$DATA/id.h5" "$ID_STORE"
TRAIN_EXTRA=${TRAIN_EXTRA:-}
minerf -q train --ids "$ID_STORE" -o "$W/run" --field fast --steps "$STEPS" --rays "$RAYS" --frames-per-step 2 \
    --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10 --val-every 100000 --checkpoint-every 100000 $TRAIN_EXTRA \
    > "$OUT/train.json"
cat "$OUT/train.json"
cp "$W/run/metrics.csv" "$OUT/train_metrics.csv" 2>/dev/null || true
MP4=()
if python3 -c "import imageio_ffmpeg, soundfile" 2>/dev/null; then MP4=(-o "$OUT/lipsync.mp4"); fi
minerf -q lipsync "$W/run" --id "$NAME" --audio "$DATA/speech.wav" --audio-model "$DATA/audio_model" \
    --store "$OUT/lipsync.h5" ${MP4[@]+"${MP4[@]}"} --jpeg-quality 95 --force > "$OUT/lipsync.json"
cat "$OUT/lipsync.json"
ls -la "$OUT"

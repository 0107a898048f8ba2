#!/usr/bin/env bash
# Issue 5 rendering, end to end on one GPU (one device call, ~4 minutes): train the README's
# recipe on one identity for $STEPS steps, then `minerf lipsync` and `minerf transfer` to mp4
# (H.264 + AAC through imageio-ffmpeg), each at the run's marching steps and at 128.
# The JSON of each command (render_fps: model time; total_s: the whole command, mp4 written)
# goes to $OUT/log.jsonl.
# Inputs (carried, git-ignored): $ID a tracked JPEG store, $AM an audio model dir, $SPEECH a
# PCM wav; the GPU image has no ffmpeg and no soundfile: carry their wheels in .whl/
# (imageio-ffmpeg 0.4.9, 27 MB; soundfile, cffi, pycparser for cp312 manylinux:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2010_x86_64 \
#       -d .whl imageio-ffmpeg==0.4.9   # and the same for the other three).
#   ID=.gpudata/r4/styletalk_KristiNoem_av.h5 bash bench/gpu_render_e2e.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
ID=${ID:-.gpudata/r4/styletalk_KristiNoem_av.h5}
AM=${AM:-.gpudata/lipsync/audio_model}
SPEECH=${SPEECH:-.gpudata/lipsync/speech.wav}
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-4000}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # imageio-ffmpeg, soundfile, cffi, pycparser
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
bash scripts/gpu_setup.sh
W=/tmp/minerf-gpu-e2e; rm -rf "$W"; mkdir -p "$W"
NAME=$(basename "$ID" .h5); cp "$ID" "$W/$NAME.h5"
minerf -q train --ids "$W/$NAME.h5" -o "$W/run" --field fast --steps "$STEPS" --rays 4096 --frames-per-step 2 \
    --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10 --latent-dim 0 --mouth-rays 0.3 --mask-loss 0.01 \
    --distortion-loss 0.001 --val-every 100000 --checkpoint-every 100000 | tee -a "$OUT/log.jsonl"
for steps in "" 128; do
  flag=${steps:+--march-steps $steps}
  # shellcheck disable=SC2086
  minerf -q lipsync "$W/run" --id "$NAME" --audio "$SPEECH" --audio-model "$AM" -o "$W/lipsync$steps.mp4" $flag --force \
      | sed "s/^{/{\"march_steps\": \"${steps:-run}\", /" | tee -a "$OUT/log.jsonl"
  # shellcheck disable=SC2086
  minerf -q transfer "$W/run" --id "$NAME" --from "$W/$NAME.h5" --frames 0:200 -o "$W/transfer$steps.mp4" $flag --force \
      | sed "s/^{/{\"march_steps\": \"${steps:-run}\", /" | tee -a "$OUT/log.jsonl"
done
# the first command above compiled the Triton kernels (cached on disk since): once more, warm
minerf -q lipsync "$W/run" --id "$NAME" --audio "$SPEECH" --audio-model "$AM" -o "$W/lipsync.mp4" --force \
    | sed "s/^{/{\"march_steps\": \"run, kernels compiled\", /" | tee -a "$OUT/log.jsonl"
cp "$W/lipsync.mp4" "$OUT/" 2>/dev/null || true

#!/usr/bin/env bash
# Synthetic identities for the GPU benchmarks, made once per machine: IDS identities of SECONDS
# each at 512x512, rendered by `minerf synth --store` (ground-truth tracking, JPEG frames).
# Prints the directory of the stores (one per IDS x SECONDS); the timing goes to stderr.
# Usage: SYN=$(bash bench/synth_stores.sh IDS SECONDS OUT)
set -euo pipefail
IDS=$1; SECONDS_PER_ID=$2; OUT=$3
DIR=/tmp/minerf-gpu-speed/syn_${IDS}x${SECONDS_PER_ID}s
if [ ! -f "$DIR/synth_id$(printf %02d $((IDS - 1))).h5" ]; then
    t0=$(date +%s)
    minerf -q synth -o "$DIR" --ids "$IDS" --seconds "$SECONDS_PER_ID" --size 512 --store --jobs 0 \
        --jpeg-quality 90 --seed 11 --force > "$OUT/synth.json"
    echo "synth: $IDS identities x ${SECONDS_PER_ID}s in $(( $(date +%s) - t0 )) s" >&2
fi
echo "$DIR"

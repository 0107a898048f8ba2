#!/usr/bin/env bash
# The whole pipeline on synthetic talking heads, no footage needed:
#   minerf synth -> minerf prep -> minerf fit3dmm -> minerf info
#
#   examples/synthetic_pipeline.sh OUT_DIR
#
# Writes OUT_DIR/videos/ (rendered clips with audio and their ground truth) and OUT_DIR/stores/
# (one store per clip). stdout: JSON lines (synth's summary, then prep's and fit3dmm's per clip
# from examples/prep_folder.sh, then `minerf info` of each store). Options: MINERF_SYNTH_ARGS
# (appended to "--ids 2 --seconds 3", so e.g. "--ids 1 --seconds 1" overrides them),
# MINERF_PREP_ARGS, MINERF_FIT_ARGS, MINERF_JOBS (parallel clips, default: the number of cores).
set -euo pipefail

if [ $# -ne 1 ]; then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v minerf >/dev/null || { echo "synthetic_pipeline.sh: minerf is not on PATH (activate its venv)" >&2; exit 2; }
mkdir -p "$out"

# 1. Render synthetic talking heads (mp4 with audio + ground truth).
if [ -d "$out/videos" ]; then
    echo "synthetic_pipeline.sh: $out/videos exists: not rendering again" >&2
else
    # shellcheck disable=SC2086  # MINERF_SYNTH_ARGS may hold several options
    minerf -q synth -o "$out/videos" --ids 2 --seconds 3 ${MINERF_SYNTH_ARGS:-}
fi

# 2. + 3. prep and fit3dmm every clip, in parallel (skips clips done already).
"$here/prep_folder.sh" "$out/videos" "$out/stores" "${MINERF_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# 4. What is in the stores.
for store in "$out"/stores/*.h5; do
    minerf -q info "$store"
done

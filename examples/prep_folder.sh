#!/usr/bin/env bash
# Prepare and track every video of a folder, several clips at a time: for each VIDEO_DIR/NAME.EXT
# (mp4, mov, webm, mkv, avi) run `minerf prep` into STORE_DIR/NAME.h5, then `minerf fit3dmm` on it.
#
#   examples/prep_folder.sh VIDEO_DIR STORE_DIR [JOBS]        # JOBS defaults to the number of cores
#   examples/prep_folder.sh talks/ stores/ 4 | jq -r 'select(.command == "fit3dmm") | .store'
#
# stdout: the commands' JSON summaries, one line each (prep's, then fit3dmm's, per clip), tagged
# with "command", "video" and "store" so they can be told apart. stderr: progress and errors.
# A clip whose store already has /tracking is skipped; a store without it gets only fit3dmm.
# Extra options: MINERF_PREP_ARGS (e.g. "--size 256"), MINERF_FIT_ARGS. Exit status 0 when every
# clip succeeded, 1 when some failed (the others are still processed), 2 on bad arguments.
# shellcheck disable=SC2016,SC2317  # one_clip and tag run in the bash that xargs starts
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
video_dir=$1
store_dir=$2
jobs=${3:-$(nproc 2>/dev/null || echo 2)}
[ -d "$video_dir" ] || { echo "prep_folder.sh: $video_dir: not a directory" >&2; exit 2; }
case "$jobs" in ''|*[!0-9]*|0) echo "prep_folder.sh: JOBS must be a positive integer, not '$jobs'" >&2; exit 2 ;; esac
command -v minerf >/dev/null || { echo "prep_folder.sh: minerf is not on PATH (activate its venv)" >&2; exit 2; }
mkdir -p "$store_dir"

# One clip, run by xargs in its own bash; returns non-zero when the clip failed.
one_clip() {
    local store_dir=$1 video=$2 name store
    name=$(basename "$video")
    name=${name%.*}
    store="$store_dir/$name.h5"
    if [ -e "$store" ]; then
        local info
        info=$(minerf -q info "$store") || return 1  # an unreadable store: its error is on stderr
        if python3 -c 'import json, sys; sys.exit("tracking" not in json.loads(sys.argv[1])["nodes"])' "$info"; then
            echo "prep_folder.sh: $store: done already, skipped" >&2
            return 0
        fi
        echo "prep_folder.sh: $store exists without /tracking: running fit3dmm only" >&2
    else
        # shellcheck disable=SC2086  # MINERF_PREP_ARGS may hold several options
        minerf -q prep "$video" -o "$store" ${MINERF_PREP_ARGS:-} | tag prep "$video" "$store" || return 1
    fi
    # shellcheck disable=SC2086
    minerf -q fit3dmm "$store" ${MINERF_FIT_ARGS:-} | tag fit3dmm "$video" "$store" || return 1
}

# Add "command", "video" and "store" to a command's one-line JSON summary.
tag() {
    python3 -c 'import json, sys
for line in sys.stdin:
    if line.strip():
        print(json.dumps({"command": sys.argv[1], "video": sys.argv[2], "store": sys.argv[3], **json.loads(line)}), flush=True)' "$@"
}
export -f one_clip tag

status=0
find "$video_dir" -maxdepth 1 -type f \( -iname '*.mp4' -o -iname '*.mov' -o -iname '*.webm' \
        -o -iname '*.mkv' -o -iname '*.avi' \) -print0 |
    sort -z |
    xargs -0 -r -n 1 -P "$jobs" bash -o pipefail -c 'one_clip "$1" "$2" || { echo "prep_folder.sh: $2: failed" >&2; exit 1; }' _ \
        "$store_dir" || status=1
exit $status

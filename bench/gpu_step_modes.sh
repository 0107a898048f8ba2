#!/usr/bin/env bash
# Training speed under each step mode (packed passes, CUDA graphs) on one real store, through
# `minerf train` itself. For each FIELD:FLAGS run: steps/s between step 300 (after the
# occupancy grid's first update at 256, so --pack has begun) and the end, from RUN/metrics.csv,
# and the summary's packed_share / cuda_graphs / graph_captures.
# Usage: STORE=.gpudata/r4/styletalk_KristiNoem_av.h5 STEPS=800 bash bench/gpu_step_modes.sh
# HIDDEN_T=1e-2: the packed fine pass's transmittance cut (minerf_cli.nerf.packing.HIDDEN_T) for this run.
set -euo pipefail
STORE=${STORE:-.gpudata/r4/styletalk_KristiNoem_av.h5}
STEPS=${STEPS:-800}
OUT=${OUT:-gpu_out}
MODES=${MODES:-"fast: fast:--pack fast:--no-cuda-graphs vanilla: vanilla:--pack vanilla:--no-cuda-graphs"}
mkdir -p "$OUT" /tmp/minerf-modes
bash scripts/gpu_setup.sh
for mode in $MODES; do
    field=${mode%%:*}; flags=${mode#*:}; flags=${flags//,/ }
    run="/tmp/minerf-modes/${field}${flags// /}"
    extra=""
    [ "$field" = fast ] && extra="--rays 4096 --frames-per-step 2 --lr 1e-3 --lr-final 1e-4 --grid-lr-scale 10"
    # shellcheck disable=SC2086
    # (the installed package: from the checkout, minerf_cli.commands is ./commands and not found)
    python3 -c 'import os, sys; sys.path = [q for q in sys.path if q not in ("", ".")]; import minerf_cli.nerf.packing as p; p.HIDDEN_T = float(os.environ.get("HIDDEN_T", p.HIDDEN_T)); from minerf_cli.app import main; sys.argv[0] = "minerf"; sys.exit(main())' \
        -q train --ids "$STORE" -o "$run" --field "$field" --steps "$STEPS" --smooth-after 0 --val-every 100000 \
        --checkpoint-every 100000 --test-frames 2 --force $extra $flags > "$run.json"
    python3 - "$run" "$mode" <<'PY'
import csv, json, os, sys
run, mode = sys.argv[1], sys.argv[2]
rows = [r for r in csv.DictReader(open(f"{run}/metrics.csv")) if r["train_s"]]
a = next(r for r in rows if int(r["step"]) >= 300)
b = rows[-1]
rate = (int(b["step"]) - int(a["step"])) / (float(b["train_s"]) - float(a["train_s"]))
s = json.load(open(f"{run}.json"))
print(json.dumps({"mode": mode, "hidden_t": os.environ.get("HIDDEN_T"), "steps_per_s_after_300": round(rate, 1), "steps_per_s": s.get("steps_per_s"),
                  "packed_share": s.get("packed_share"), "cuda_graphs": s.get("cuda_graphs"),
                  "graph_captures": s.get("graph_captures"), "mean_test_psnr": s.get("mean_test_psnr")}))
PY
done

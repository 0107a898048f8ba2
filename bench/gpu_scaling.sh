#!/usr/bin/env bash
# Identity scaling on one GPU (issue 5: 16 synthetic identities within 4x the time of one to
# 28 dB mean test PSNR). Renders SYN_IDS synthetic identities of SECONDS_PER_ID each into
# stores (ground-truth tracking), then trains the fast field on 1 and on SYN_IDS of them with
# the same settings (FIELD_OPTIONS), each until 28 dB (or its cap), through bench_speed.py.
# Usage: FIELD_OPTIONS="log2_table=21" CAP1=90 CAP16=240 bash bench/gpu_scaling.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
SYN_IDS=${SYN_IDS:-16}
SECONDS_PER_ID=${SECONDS_PER_ID:-12}
CAP1=${CAP1:-90}
CAP16=${CAP16:-240}
RATE=${RATE:-70}  # expected steps/s: the learning-rate schedule spans CAP x RATE steps
EVAL1=${EVAL1:-250}  # steps between test-PSNR checks (the time to 28 dB is read at them)
EVAL16=${EVAL16:-500}
FIELD_OPTIONS=${FIELD_OPTIONS:-}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
SYN=$(bash bench/synth_stores.sh "$SYN_IDS" "$SECONDS_PER_ID" "$OUT")
opts=()
for o in $FIELD_OPTIONS; do opts+=(--field-option "$o"); done
python3 bench/bench_speed.py --synth "$SYN" --runs fast:syn1 --cap-s "$CAP1" --steps $((CAP1 * RATE)) \
    --eval-every "$EVAL1" "${opts[@]}" --out "$OUT/syn1" > "$OUT/syn1.json"
python3 bench/bench_speed.py --synth "$SYN" --runs "fast:syn$SYN_IDS" --cap-s "$CAP16" --steps $((CAP16 * RATE)) \
    --eval-every "$EVAL16" "${opts[@]}" --out "$OUT/syn$SYN_IDS" > "$OUT/syn$SYN_IDS.json"
python3 - "$OUT" "$SYN_IDS" <<'PY'
import json, sys
out, n = sys.argv[1], sys.argv[2]
rows = [json.load(open(f"{out}/syn{k}.json"))["runs"][0] for k in ("1", n)]
for r in rows:
    print(json.dumps({k: r.get(k) for k in ("run", "field_options", "steps", "steps_per_s", "time_to_26db_s",
                                             "time_to_28db_s", "final_test_psnr", "cuda_graphs", "peak_gpu_gb_train")}))
a, b = rows[0].get("time_to_28db_s"), rows[1].get("time_to_28db_s")
print(json.dumps({"ratio_to_28db": None if not (a and b) else round(b / a, 2)}))
PY

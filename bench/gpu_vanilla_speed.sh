#!/usr/bin/env bash
# The vanilla field's speed checks of issue 5 in one GPU call: the CUDA kernel tests, the
# per-layer backward configurations, the step alone (this checkout and, for each directory in
# OLD holding an older minerf_cli, that one on the same card), real training steps/s
# and PSNR (gpu_step_modes.sh), and a profile of the training loop (profile_train.py).
# Usage: OUT=DIR [OLD="DIR ..."] [STEPS=1500] [RUNS=1] [BLOCK_SWEEP=1] [PROFILE=1] [STORE=...] bash bench/gpu_vanilla_speed.sh
set -euo pipefail
OUT=${OUT:-gpu_out}
STORE=${STORE:-.gpudata/r4/styletalk_KristiNoem_av.h5}
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
bash scripts/gpu_setup.sh
python3 -m pytest -q -p no:cacheprovider tests/test_fused_mlp.py tests/test_packing.py tests/test_step_runner.py 2>&1 | tail -3
BLOCKS=64/64/8/3/False
if [ "${BLOCK_SWEEP:-1}" = 1 ]; then
    python3 bench/bench_fused_mlp.py --out "$OUT" > /dev/null
    BLOCKS=$(python3 bench/best_blocks.py "$OUT/fused_mlp.json")
    echo "best blocks: $BLOCKS"
fi
for old in ${OLD:-}; do  # older checkouts' minerf_cli (git archive COMMIT minerf_cli | tar -x -C DIR)
    if [ -d "$old/minerf_cli" ]; then
        echo "step of $old:"
        PYTHONPATH="$old" python3 bench/bench_vanilla_step.py --out "$OUT/old_${old//[^a-zA-Z0-9]/}" --variants paper+graph \
            2>/dev/null | tail -1
    fi
done
python3 bench/bench_vanilla_step.py --out "$OUT/new" --variants paper+graph --profile 2>/dev/null | tail -1
if [ "$BLOCKS" != "64/64/8/3/False" ]; then
    python3 bench/bench_vanilla_step.py --out "$OUT/best" --variants paper+graph --blocks "$BLOCKS" 2>/dev/null | tail -1
fi
for _ in $(seq "${RUNS:-1}"); do  # training runs of the same command (the spread between runs)
    STORE=$STORE STEPS=$STEPS MODES=vanilla: OUT=$OUT bash bench/gpu_step_modes.sh 2>&1 | grep -v "^minerf " | tail -1
done
cp /tmp/minerf-modes/vanilla/metrics.csv "$OUT/vanilla_metrics.csv" 2>/dev/null || true
if [ "$BLOCKS" != "64/64/8/3/False" ]; then  # the per-layer winner in training too
    echo "training with MINERF_LAYER_GRAD_BLOCKS=$BLOCKS"
    MINERF_LAYER_GRAD_BLOCKS=$BLOCKS STORE=$STORE STEPS=$STEPS MODES=vanilla: OUT=$OUT bash bench/gpu_step_modes.sh 2>&1 \
        | grep -v "^minerf " | tail -1
fi
[ "${PROFILE:-1}" = 1 ] || exit 0
python3 bench/profile_train.py --out "$OUT" --from-step 300 --steps 48 -- train --ids "$STORE" -o /tmp/minerf-prof \
    --field vanilla --steps 400 --smooth-after 0 --val-every 100000 --checkpoint-every 100000 --test-frames 1 --force \
    2>/dev/null | tail -1

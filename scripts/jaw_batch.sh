#!/bin/bash
# run jaw_experiments.py variants in parallel (1 thread each); each line of $1: NAME ARGS...
# usage: bash scripts/jaw_batch.sh VARIANTS_FILE LOG [TIMEOUT]
set -u
log=$2; t=${3:-480}
while read -r name rest; do
  [ -z "$name" ] && continue
  OMP_NUM_THREADS=1 timeout "$t" python3 scripts/jaw_experiments.py --name "$name" $rest \
     --cache .gpudata/jawexp/cache.pkl --lm .gpudata/jawexp/lm.pkl --log "$log" > /dev/null 2> "$log.$name.err" &
done < "$1"
wait

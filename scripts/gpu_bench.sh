#!/usr/bin/env bash
# The committed benchmark (results/bench/<gpu>.json) as run on a lent one-GPU machine: for each
# table, the released algorithm and every fast variant timed side by side in one process, then
# the Nottingham epoch (one tune a step vs 8 tunes a step, eager and as step graphs).
set -u
export RTLIB_DATA_MIRROR=$PWD/data_mirror PYTHONUNBUFFERED=1 TQDM_DISABLE=1
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
timeout 560 python3 -m rtlib bench --variants reference fast fast+graphs fast+step-graph \
  fast+compile+step-graph --music-epoch --warmup 5 --repeats 20 --out "$OUT/bench.json" 2>&1 | grep -v -i warn

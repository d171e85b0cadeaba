#!/usr/bin/env bash
# The Table 2 baseline rows (TCN, LSTM, GRU, RNN) of the fast profile on one lent GPU,
# four jobs at a time, through the batch runner; records come back in $OUT/records.tgz.
set -u
export RTLIB_DATA_MIRROR=$PWD/data_mirror PYTHONUNBUFFERED=1 TQDM_DISABLE=1
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --find-links wheels312 papermill ipykernel jupytext nbformat nbclient > "$OUT/pip.log" 2>&1 || tail -3 "$OUT/pip.log"
timeout 500 python3 -m rtlib reproduce --table 2 --models tcn lstm gru rnn --profile fast --seeds 1 \
  --lrs config --gpus 0 --jobs-per-gpu 4 --max-minutes 7 --out runs 2>&1 | tail -n 8
tar czf "$OUT/records.tgz" runs/*/record.json runs/*/log.jsonl runs/*/run.ipynb 2>/dev/null
rm -f "$OUT/pip.log"

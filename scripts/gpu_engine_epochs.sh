#!/usr/bin/env bash
# Epoch times of the training engine itself (fast profile, a few epochs) with and without
# whole-step CUDA graphs, on one GPU: writes $OUT/engine_epochs.json (results/bench/ keeps it).
set -u
export RTLIB_DATA_MIRROR=$PWD/data_mirror PYTHONUNBUFFERED=1 TQDM_DISABLE=1
OUT=${OUT:-/tmp/out}
RUNS=/tmp/engine_runs
for setting in "nottingham 4 none" "nottingham 4 step-graph" \
               "ptb-word 3 reduce-overhead" "ptb-word 3 default+step-graph"; do
  set -- $setting
  timeout 160 python3 -m rtlib train --task $1 --model rtransformer --profile fast --epochs $2 \
    --device cuda --compile $3 --out "$RUNS/$1_$3" 2>&1 | grep -v -i warn | tail -2
done
python3 - "$RUNS" "$OUT/engine_epochs.json" <<'PY'
import json, sys, time
from pathlib import Path
import torch
from rtlib.run_folder import atomic_write_json, git_commit
from rtlib.runtime import device_name
runs = []
for folder in sorted(Path(sys.argv[1]).iterdir()):
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    task, compile_mode = folder.name.split("_", 1)
    runs.append(dict(task=task, model="rtransformer", profile="fast", compile=compile_mode,
                     epoch_s=[round(b["elapsed_s"] - a["elapsed_s"], 3) for a, b in zip([dict(elapsed_s=0.0)] + log, log)],
                     train_loss=[entry["train_loss"] for entry in log],
                     valid_loss=[entry.get("valid_loss") for entry in log]))
atomic_write_json(Path(sys.argv[2]), dict(
    device=device_name(torch.device("cuda")), torch_version=torch.__version__, git_commit=git_commit(),
    date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    note="seconds per epoch including evaluation; the first epoch includes compilation and graph capture",
    runs=runs))
for run in runs:
    print(run["task"], run["compile"], run["epoch_s"], [round(x, 3) for x in run["train_loss"]])
PY

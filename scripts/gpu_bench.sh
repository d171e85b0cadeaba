#!/usr/bin/env bash
# The committed benchmark (results/bench/) as run on a lent one-GPU machine: reference vs fast
# paths per table in one process, the Nottingham epoch, then (time allowing) the seq-MNIST
# fast run again to bring its final weights back for the visualizations.
set -u
export RTLIB_DATA_MIRROR=$PWD/data_mirror PYTHONUNBUFFERED=1 TQDM_DISABLE=1
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
timeout 380 python3 -c "from rtlib.bench import main; main(['--variants', 'reference', 'fast', 'fast+graphs', '--music-epoch', '--warmup', '8', '--repeats', '20', '--out', '$OUT/bench.json'])" 2>&1 | grep -v -i warn
timeout 170 python3 -m rtlib train --task mnist --model rtransformer --profile fast --device cuda \
  --out runs/mnist_rtransformer_fast_lr0.001_seed1111 --results /tmp/records 2>&1 | grep -v -i warn | tail -3
[ -f runs/mnist_rtransformer_fast_lr0.001_seed1111/best.pt ] && tar czf "$OUT/mnist_run.tgz" runs/mnist_rtransformer_fast_lr0.001_seed1111/{best.pt,record.json,log.jsonl} 2>/dev/null
ls -la "$OUT"

#!/usr/bin/env bash
# The fast-profile batch of this repository's committed GPU records, as run on a lent
# 4-GPU machine with no network: installs the notebook tools from carried wheels, runs the
# rtransformer/transformer rows of all four tables plus the Nottingham ablations through
# the batch runner (2-3 jobs per GPU), then packs records and small checkpoints into $OUT.
# Re-issuing it resumes what a time limit cut off.
set -u
export RTLIB_DATA_MIRROR=$PWD/data_mirror PYTHONUNBUFFERED=1 TQDM_DISABLE=1
OUT=${OUT:-/tmp/out}; MIN=${MAX_MINUTES:-7.3}
python3 -m pip install -q --no-index --find-links wheels312 papermill ipykernel jupytext nbformat nbclient > "$OUT/pip.log" 2>&1 || tail -3 "$OUT/pip.log"
nvidia-smi -L
fast="--profile fast --seeds 1 --lrs config --out runs --max-minutes $MIN"
timeout 540 python3 -m rtlib reproduce --table all --models rtransformer transformer $fast \
  --gpus 0,1,2,3 --jobs-per-gpu 2 > "$OUT/main.log" 2>&1 &
timeout 540 python3 -m rtlib reproduce --table 2 --models rtransformer $fast --gpus 0,1,2 \
  --variants clip_before_backward=false norm=post window=2 > "$OUT/ablations.log" 2>&1 &
timeout 540 python3 -m rtlib reproduce --table 2 --models transformer $fast --gpus 3 \
  --variants position=none > "$OUT/ablation_position.log" 2>&1 &
timeout 540 python3 -m rtlib reproduce --table 4 --models rtransformer $fast --gpus 3 \
  --variants norm=post > "$OUT/ablation_word.log" 2>&1 &
wait
tail -n 15 "$OUT"/*.log
# one archive for records, executed notebooks and logs ($OUT brings back 8 files at most)
tar czf "$OUT/records.tgz" runs/*/record.json runs/*/log.jsonl runs/*/run.ipynb "$OUT"/*.log 2>/dev/null
rm -f "$OUT"/*.log
# checkpoints for the visualizations, within the 64 MiB that come back: all but PTB-char,
# and the PTB-char R-Transformer in bf16
mkdir -p /tmp/ck
for d in runs/*; do
  [ -f "$d/best.pt" ] || continue
  mkdir -p "/tmp/ck/$d"; cp "$d/record.json" "/tmp/ck/$d/" 2>/dev/null
  case $d in
    *ptb-char_rtransformer_fast_lr*) python3 -c "import torch,sys; sd=torch.load(sys.argv[1]); torch.save({k: v.bfloat16() for k, v in sd.items()}, sys.argv[2])" "$d/best.pt" "/tmp/ck/$d/best_bf16.pt";;
    *ptb-char*) ;;                         # the PTB-char Transformer stays behind
    *_fast_lr*) cp "$d/best.pt" "/tmp/ck/$d/";;
    *) ;;                                  # and so do the ablations
  esac
done
(cd /tmp/ck && tar cf - runs) | split -b 15M - "$OUT/ckpt.tar.part-"
ls -la "$OUT"

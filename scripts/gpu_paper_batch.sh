#!/usr/bin/env bash
# One batch of the paper-profile sweep on a lent one-GPU machine with no network, in three
# steps of at most 10 minutes each, called back to back while the machine stays warm:
#
#   scripts/gpu_paper_batch.sh start DEADLINE_MIN|auto "RUNNER ARGS" ["RUNNER ARGS" ...]
#   scripts/gpu_paper_batch.sh wait [SECONDS]
#   scripts/gpu_paper_batch.sh finish
#   scripts/gpu_paper_batch.sh stop RUN_ID [RUN_ID ...]
#   scripts/gpu_paper_batch.sh more [RUN_DIR ...]     (after finish, as often as it says)
#   scripts/gpu_paper_batch.sh receive                (before start, one call a carried part)
#
# `start` installs the notebook tools from carried wheels and starts NVIDIA MPS. With
# SHARING_ROUNDS="4:rtransformer 4:rtransformer*2 ..." it first times jobs sharing the GPU
# (`rtlib bench --sharing`, into runs/_logs/sharing.json). Then it starts one
# `python -m rtlib reproduce` per quoted argument set, each in its own process session (so they
# outlive the command), all bound by the same deadline; a job projected to miss it, with weights
# too large to come back, is stopped so that the others get its share. The GPU engine tests run
# beside the runners (which judge no job on the pace it makes meanwhile), before them with
# GPU_TESTS_FIRST=1, or not at all with GPU_TESTS_SKIP=1.
# With START_WAIT_S, `start` goes on as `wait` until the call has run that long or every runner
# has ended (one call fewer to chain). `wait` sleeps, then packs what has landed and, as
# `finish` does, the unfinished runs small enough to carry into a later lease (so does `start`
# with START_WAIT_S: a machine that goes cold before the next call then loses only what has run
# since). `finish` waits for the runners,
# analyses one finished run of each (task, R-Transformer or Transformer) whose committed analyses
# lack the attention maps of 3 examples (its lowest seed at the row's configured lr), packs the records, the logs and, as far as there is room, the run folders of
# unfinished runs small enough to carry back in (CARRY_LIMIT_BYTES), then the analysed runs'
# best weights (for analyses on any machine), and stops MPS. To
# resume those in a later lease, unpack their parts here (`cat checkpoints.tar.part-* | tar xf -`
# puts them in runs/) and name each run folder in that lease's `carry`: its runner finds the
# checkpoint and resumes, and the record lists both sessions. A run folder too large for that
# (a PTB-word baseline's is 150 MB, and its 100 epochs take longer than a lease) travels in
# parts (scripts/transfer.py): `more` sends the folders `finish` left behind, 4 parts of 15 MiB
# a call, until it says none are left; land_batch.py --more joins them here. To resume them,
# `transfer.py split incoming RUN_DIR... --part-bytes 55000000` here, then in the next lease one
# `receive` call a part (carry incoming/manifest.json and that part), chained, before `start`.
# For such a batch set CARRY_LIMIT_BYTES above the folders' size, or the runners stop those
# jobs as soon as they project them late.
# A runner's own arguments come last, so they override these: `--carry-limit-mb 0` in one
# runner's set has it stop any of its jobs projected to miss the deadline, whose checkpoint
# no later lease of the session would resume.
# Every step leaves $OUT/records.tgz and notebooks.tgz, so a lost machine loses at most one
# step's records (batch i's finish found a fresh machine: its records came from `wait`). Logs
# go to runs/_logs: runs/ is ignored by git, so the next call's copy of the working tree keeps
# it (it replaces every file git does not ignore, records copied under results/ included).
# Do not count on runs/ outliving the session, though: a new session's checkout may have none
# (batch h's six checkpoints were lost so; batch ag's came through), so a checkpoint brought
# back is safe only until the session ends: plan each batch so that its runs finish within it.
# The runners run from a frozen copy of the code in runs/_code: a job that started while the
# next call's copy was replacing the tracked files found no notebooks/run.ipynb
# (results/batches/2026-12-01_h200_c.json), and the same race could hit any module it imports.
#
# Never kill a job while others share the GPU: under MPS, two jobs killed by SIGTERM took the
# four other clients down with them ('unspecified launch failure',
# results/batches/2026-12-01_h200_b.json). Jobs stop by themselves at the deadline; `stop`
# asks chosen jobs to checkpoint and exit at their next step (a STOP file in the run folder).
# The machine stays warm only 30 s after a call: `wait` and `finish` refuse to run on a fresh
# machine (no runner was started there), rather than wait for nothing.
set -u
export RTLIB_DATA_MIRROR=$PWD/data_mirror PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export RTLIB_GIT_COMMIT=$(cat gpu_commit.txt 2>/dev/null || echo unknown)
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
OUT=${OUT:-/tmp/out}
ROOT=$PWD
LOGS=runs/_logs
TESTS_RUNNING=$ROOT/$LOGS/gpu_tests.running   # exists while the GPU tests run beside the runners
RUNNERS=$LOGS/runner_pids
CODE=runs/_code
ANALYSED=ANALYSED_HERE
LIVE=runs/_live  # snapshots of unfinished runs to ship (carriable)
# $OUT brings back at most 8 files of 16 MiB each, 64 MiB in all
OUT_FILES=${OUT_FILES:-8} OUT_BYTES=${OUT_BYTES:-67108864} PART_BYTES=${PART_BYTES:-15728640}
# A later lease carries an unfinished run folder back in beside the working tree (5 MB), the
# wheels (5 MB, scripts/gpu_wheels.sh) and the data (19 MB at most), 64 MiB in all: the runners
# stop a job whose weights are over this size once they project that it will miss the deadline
# (rtlib/deadline.py), and `finish` ships no run folder over it
# `start` keeps the batch's limit for its later calls, which may come without it (batch as's
# `finish` left a 46 MB run folder behind under the default)
LIMIT_KEPT=$LOGS/carry_limit_bytes
if [ -z "${CARRY_LIMIT_BYTES:-}" ] && [ "${1:-}" != start ] && [ -s "$LIMIT_KEPT" ]; then
  CARRY_LIMIT_BYTES=$(cat "$LIMIT_KEPT")
fi
CARRY_LIMIT_BYTES=${CARRY_LIMIT_BYTES:-30000000}
WAIT_MAX_S=590  # the longest `wait` that packs within a call's 10 minutes
mkdir -p $LOGS

require_runners() {
  [ -s "$RUNNERS" ] && return
  echo "error: no runners were started on this machine ($RUNNERS is missing): a fresh machine? \
the previous one went cold, and its runs/ with it" >&2
  exit 2
}

# room: the bytes $OUT can still take, in the files it has left, less a margin for tar headers,
# records and logs (1 MB, or a sixteenth of the room).
room() {
  used=$(cat "$OUT"/* 2>/dev/null | wc -c) files=$(ls "$OUT" | wc -l)
  bytes=$((OUT_BYTES - used)) in_files=$(((OUT_FILES - files) * PART_BYTES))
  free=$((bytes < in_files ? bytes : in_files)) margin=$((OUT_BYTES / 16 < 1000000 ? OUT_BYTES / 16 : 1000000))
  echo $((free - margin))
}

# ship NAME BASE WEIGHTS RUN_DIR...: the runs' WEIGHTS files (a glob), record and log, smallest
# run first, as long as they fit in what $OUT has room for, in $OUT/NAME.tar.part-*, with paths
# as they are under BASE (each RUN_DIR is relative to it); names what did not fit.
ship() {
  name=$1 base=$2 weights=$3 limit=$(room); shift 3
  [ $# -gt 0 ] || return 0
  # shellcheck disable=SC2086
  chosen=$(cd "$base" && for d in "$@"; do echo "$(du -cb "$d"/$weights | tail -1 | cut -f1) $d"; done | sort -n | \
    awk -v limit="$limit" '{ total += $1; if (total < limit) print $2; else print $2 > "/dev/stderr" }' \
    2> "$ROOT/$LOGS/left_behind_$name.txt")
  echo "$name left behind: $(cat "$LOGS/left_behind_$name.txt")"
  [ -n "$chosen" ] || return 0
  # shellcheck disable=SC2086
  (cd "$base" && tar cf - $(for d in $chosen; do ls "$d"/$weights "$d"/record.json "$d"/log.jsonl 2>/dev/null; done)) | \
    split -b "$PART_BYTES" - "$OUT/$name.tar.part-"
}

# carriable: the unfinished runs whose weights are small enough to carry into a later lease
# (CARRY_LIMIT_BYTES), each as runs/RUN under $LIVE: a snapshot of hard links (shipped as runs/RUN),
# taken while its checkpoint stayed the same file: a job that saves its next epoch meanwhile
# cannot pair one epoch's checkpoint with another's best weights (the checkpoint names them by
# SHA-256, and a resume settles best.pt and log.jsonl from it). The others go to
# too_large_to_carry.txt.
carriable() {
  rm -rf "$LIVE" "$LOGS/too_large_to_carry.txt"
  for d in runs/*; do
    [ -f "$d/checkpoint.pt" ] && [ ! -f "$d/record.json" ] || continue
    if [ "$(du -cb "$d"/*.pt | tail -1 | cut -f1)" -gt "$CARRY_LIMIT_BYTES" ]; then
      echo "$d" >> "$LOGS/too_large_to_carry.txt"; continue
    fi
    snap=runs/$(basename "$d")
    for _ in 1 2 3; do
      rm -rf "${LIVE:?}/$snap" && mkdir -p "$LIVE/$snap"
      before=$(stat -c %i "$d/checkpoint.pt" 2>/dev/null)
      ln "$d"/*.pt "$LIVE/$snap"/ 2>/dev/null; cp "$d/log.jsonl" "$LIVE/$snap"/ 2>/dev/null
      [ "$(stat -c %i "$d/checkpoint.pt" 2>/dev/null)" = "$before" ] && { echo "$snap"; break; }
    done
  done
}

# ship_unfinished: the small unfinished runs' snapshots (carriable), as $OUT/checkpoints.tar.part-*
ship_unfinished() {
  # shellcheck disable=SC2046
  ship checkpoints "$LIVE" '*.pt' $(carriable)
}

# The first finished paper-profile run (lowest seed, no ablation, at the row's configured lr, not
# a grid point; a second run `.again` too) of each (task, R-Transformer or Transformer) whose
# committed paper-profile analyses keep the attention maps of fewer than 3 examples
# (`rtlib.analysis.wants_analysis`; those made before `kept_maps` keep one): the visualizations
# show 3 a model. A run an earlier `finish` on this machine analysed ($ANALYSED in its folder) is
# not analysed again: the tree's analyses lag until that batch lands (batch am's `finish`, on
# batch al's machine, analysed and shipped al's PTB-word repeat a second time).
unanalysed() {
  local seen=""
  for d in runs/*_paper_lr*_seed*; do
    [ -f "$d/record.json" ] && [ ! -f "$d/$ANALYSED" ] || continue
    key=$(basename "$d"); key=${key%%_paper_*}
    python3 -c "import sys; from rtlib.analysis import wants_analysis; sys.exit(not wants_analysis(*sys.argv[1:]))" \
      "$d" results/analysis 2>/dev/null || continue
    case " $seen " in *" $key "*) continue ;; esac
    seen="$seen $key"
    echo "$d"
  done
}

# Whether process $1 is a runner: a pid from an earlier machine's runs/ may now be another
# process, so its command line must be a runner's.
is_runner() {
  tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline" | grep -q "rtlib reproduce"
}

# Whether a runner of this batch still runs.
runners_alive() {
  for pid in $(cat "$RUNNERS"); do
    is_runner "$pid" && return 0
  done
  return 1
}

# Sleep until the call has run $1 seconds, less once every runner has ended (batch am's `start`
# slept 8.5 device-minutes after its only job had stopped)
sleep_while_runners() {
  until [ "$SECONDS" -ge "$1" ] || ! runners_alive; do sleep 5; done
}

pack() {
  tar czf "$OUT/records.tgz" runs/*/record.json runs/*/log.jsonl runs/*/job.log \
    $CODE/results/analysis $LOGS 2>/dev/null
  tar czf "$OUT/notebooks.tgz" runs/*/run.ipynb 2>/dev/null
  ls runs 2>/dev/null | grep -v '^_' | while read -r run; do
    if [ -f "runs/$run/record.json" ]; then echo "done      $run"
    elif [ -f "runs/$run/log.jsonl" ]; then echo "running   $run  epochs $(wc -l < "runs/$run/log.jsonl")"
    else echo "waiting   $run"; fi
  done
}

case "$1" in
  start)
    deadline=$2; shift 2
    echo "$CARRY_LIMIT_BYTES" > "$LIMIT_KEPT"
    # a batch started on an earlier batch's warm machine packs only its own runners' logs (batch x
    # packed batch w's runner2.log and runner3.log, whose stop lines land_batch reads): so a second
    # `start` on one machine is a second batch; land the first one's fetched files as their own
    # (batch ak landed only the second's, and its first runner's failed line survives in its note)
    rm -f "$RUNNERS" "$LOGS"/runner*.log "$TESTS_RUNNING"
    # A run still training when the last `wait` ends is packed only by `finish`: should that call
    # come late, the machine goes cold with it (batch u's three PTB-char LSTMs, 1-2 epochs short)
    covered=$(( ${START_WAIT_S:-0} + WAIT_MAX_S ))
    # auto: the runners stop a minute before that `wait` ends, so that it packs what they wrote
    [ "$deadline" = auto ] && deadline=$(awk -v c="$covered" 'BEGIN { printf "%.1f", c / 60 - 1 }') && \
      echo "deadline: $deadline minutes (auto: this call and one \`wait\`, less a minute)"
    if awk -v d="$deadline" -v c="$covered" 'BEGIN { exit !(d * 60 > c) }'; then
      echo "warning: the deadline ($deadline min) ends after this call and one \`wait\` (${covered} s): the runs" \
        "that finish after that come back only from \`finish\`, and with the machine if that call is late" >&2
    fi
    # wheels312 holds only what the image lacks (scripts/gpu_wheels.sh), hence --no-deps
    python3 -m pip install -q --no-index --no-deps wheels312/*.whl > $LOGS/pip.log 2>&1 || tail -3 $LOGS/pip.log
    python3 -m pip check >> $LOGS/pip.log 2>&1
    if ! python3 -c "import papermill, nbclient, ipykernel, jupytext" 2>> $LOGS/pip.log; then
      echo "error: the run notebook's tools do not import (runs/_logs/pip.log); no runner started" >&2
      tail -3 $LOGS/pip.log; pack; exit 1
    fi
    # the GPU tests train every table's models: without a data set carried in, they fail in a way
    # that says nothing about the engine (batch h's PTB cases), so check the data first
    if [ "${GPU_TESTS_SKIP:-0}" != 1 ] && \
       ! python3 -m rtlib data --tasks mnist nottingham ptb-char ptb-word > $LOGS/data.log 2>&1; then
      echo "error: the GPU tests need every table's data set: carry data_mirror/mnist, data_mirror/music" \
        "and data_mirror/ptb, or set GPU_TESTS_SKIP=1; no runner started ($(tail -n 1 $LOGS/data.log))" >&2
      pack; exit 1
    fi
    nvidia-smi -L
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && echo "MPS started: $(ls $CUDA_MPS_PIPE_DIRECTORY | tr '\n' ' ')"
    # the engine's GPU cases, then the fused GRU-window kernels and the LocalRNN path that uses them
    # while they run, the runners judge no job on its pace (--hold-judgement-while): batch ar's
    # runner stopped a PTB-word RNN that the tests beside it had slowed for a few minutes
    gpu_tests() {
      touch "$TESTS_RUNNING"
      { timeout 330 python3 -m pytest -q -p no:cacheprovider tests/test_engine_on_gpu.py \
          tests/test_train.py -k "gpu or step_graph or every_cell" "$@" &&
        timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gru_windows.py "$@"; } \
        > $LOGS/gpu_tests.log 2>&1
      status=$?
      rm -f "$TESTS_RUNNING"
      tail -n 15 $LOGS/gpu_tests.log
      return $status
    }
    # GPU_TESTS_FIRST=1 (after a change to the engine): no runner starts unless the tests pass
    if [ "${GPU_TESTS_FIRST:-0}" = 1 ] && ! gpu_tests -x; then
      echo "error: the GPU tests failed (runs/_logs/gpu_tests.log); no runner started" >&2
      echo quit | nvidia-cuda-mps-control
      pack; exit 1
    fi
    # SHARING_ROUNDS="4:rtransformer 4:rtransformer*2 ...": time jobs sharing the GPU first
    if [ -n "${SHARING_ROUNDS:-}" ]; then
      # shellcheck disable=SC2086
      timeout 300 python3 -m rtlib bench --sharing $SHARING_ROUNDS --sharing-seconds 10 \
        --out $LOGS/sharing.json > $LOGS/sharing.log 2>&1; tail -n 12 $LOGS/sharing.log
    fi
    rm -rf "$CODE" && mkdir -p "$CODE/results" "$CODE/data"
    cp -r rtlib notebooks pyproject.toml "$CODE/" && cp -r results/records "$CODE/results/"
    cp data/SHA256SUMS data/README.md "$CODE/data/"
    i=0
    for runner_args in "$@"; do
      i=$((i + 1))
      # shellcheck disable=SC2086
      (cd "$CODE" && exec setsid nohup python3 -m rtlib reproduce --profile paper --gpus 0 \
        --out "$ROOT/runs" --deadline-minutes "$deadline" --carry-limit-mb $((CARRY_LIMIT_BYTES / 1000000)) \
        --hold-judgement-while "$TESTS_RUNNING" $runner_args) \
        > "$LOGS/runner$i.log" 2>&1 < /dev/null &
      echo $! >> "$RUNNERS"
      echo "runner $i: $runner_args"
    done
    # until each runner's subshell has become `rtlib reproduce` (or ended), `runners_alive` would
    # take it for no runner, and START_WAIT_S would end at once
    for pid in $(cat "$RUNNERS"); do
      for _ in $(seq 100); do
        [ -e "/proc/$pid" ] || break
        is_runner "$pid" && break
        sleep 0.1
      done
    done
    # GPU_TESTS_SKIP=1: the engine has not changed since its tests last passed on a GPU
    [ "${GPU_TESTS_FIRST:-0}" = 1 ] || [ "${GPU_TESTS_SKIP:-0}" = 1 ] || gpu_tests
    # START_WAIT_S=580: go on as `wait` until the call has run that long (one call fewer)
    if [ "${START_WAIT_S:-0}" -gt "$SECONDS" ]; then sleep_while_runners "$START_WAIT_S"; tail -n 8 $LOGS/runner*.log; fi
    pack
    if [ "${START_WAIT_S:-0}" -gt 0 ]; then ship_unfinished; fi ;;
  stop)
    require_runners
    shift
    for run in "$@"; do
      if [ -d "runs/$run" ]; then touch "runs/$run/STOP" && echo "asked $run to stop"
      else echo "no run folder runs/$run" >&2; fi
    done
    pack ;;
  wait)
    require_runners
    # sleeps SECONDS (default: as long as a call allows), less once every runner has ended
    sleep_while_runners "${2:-$WAIT_MAX_S}"
    tail -n 8 $LOGS/runner*.log
    pack
    # should the machine go cold before the next call, the small unfinished runs can resume
    # in a later lease (batch o's seq-MNIST LSTM was lost at epoch 14)
    ship_unfinished ;;
  finish)
    require_runners
    # at most 7 minutes, so that analysing and packing fit in the call's 10
    sleep_while_runners 420
    runners_alive && echo "warning: runners still run after 7 minutes; packing what has landed"
    tail -n 40 $LOGS/runner*.log
    finished=$(unanalysed)
    # shellcheck disable=SC2086
    [ -n "$finished" ] && (cd "$CODE" && timeout 150 python3 -m rtlib analyze --device cuda \
      --run $(for d in $finished; do echo "$ROOT/$d"; done)) > $LOGS/analyze.log 2>&1 && \
      for d in $finished; do touch "$d/$ANALYSED"; done
    pack
    # Then, in 15 MiB parts, as far as $OUT has room, smallest runs first: the run folders of
    # unfinished runs small enough to carry into a later lease (their GPU time is lost
    # otherwise; batch f left three behind for a best.pt), then the analysed runs' best weights
    # (the analyses are made above; the weights let the visualizations re-analyse anywhere).
    ship_unfinished
    # shellcheck disable=SC2086
    ship weights . best.pt $(for d in $finished; do [ -f "$d/best.pt" ] && echo "$d"; done)
    echo quit | nvidia-cuda-mps-control
    ls -la "$OUT" ;;
  more)
    require_runners
    shift
    if [ ! -f runs/_outgoing/manifest.json ]; then
      to_send="$*"
      [ -n "$to_send" ] || to_send=$(cat "$LOGS/left_behind_checkpoints.txt" "$LOGS/too_large_to_carry.txt" \
        2>/dev/null | tr '\n' ' ')
      [ -n "${to_send// /}" ] || { echo "no run folder was left behind"; exit 0; }
      # shellcheck disable=SC2086
      python3 scripts/transfer.py split runs/_outgoing $to_send --part-bytes "$PART_BYTES" || exit 2
    fi
    parts=$(((OUT_BYTES - 1000000) / PART_BYTES)); [ "$parts" -lt "$OUT_FILES" ] || parts=$((OUT_FILES - 1))
    python3 scripts/transfer.py next runs/_outgoing "$OUT" --parts "$parts" ;;
  receive)
    mkdir -p runs/_incoming
    [ -d incoming ] && cp incoming/* runs/_incoming/
    python3 scripts/transfer.py join runs/_incoming --into . && rm -rf runs/_incoming ;;
esac

"""Which running job to stop so that the others finish before a batch's deadline.

A lent GPU comes for a fixed stretch. A run that cannot finish within it is worth only its
checkpoint, and only if that checkpoint can leave the machine and be carried back in, to
resume in a later lease. A PTB-char R-Transformer's run folder holds 114 MB of weights
(checkpoint and best, 57 MB each), more than a call can carry in beside the working tree, the
wheels and the data (64 MiB in all). Such a job, projected to miss
the deadline, trains for nothing and slows the jobs that share the GPU with it. In batch e
(results/batches/2026-12-01_h200_e.json), two PTB-char R-Transformers and a seq-MNIST one
shared an H200 at 16.5 and 37 s an epoch, and none of them could finish in 22 minutes.

`late_job` names the job to stop, one at a time; `unstartable`, a job not to start at all.
Stopping a job changes the mix, so the runner measures every job's pace again at the new mix
before it judges again. The runner
sees only its own jobs: another runner's jobs on the same GPU slow its jobs down, but they
are never stopped by it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MEASURED_EPOCHS = 3   # epochs timed at the current mix before a job is judged
# A running job is stopped only when projected to need a tenth more than the time left: its
# first epochs run slower than its steady pace (the PTB-char GRU of batches al and am: 7.3-7.5 s
# an epoch over epochs 2-9, 6.9 from epoch 50 on, alone on the GPU both times), and batch am
# stopped one at epoch 6, projected at 11.5 minutes with 11.5 left, that its steady pace would
# have finished in 10.8.
EARLY_PACE_MARGIN = 0.10


@dataclass(frozen=True)
class Pace:
    run_id: str
    epochs_done: int
    epochs_total: int
    seconds_per_epoch: float | None   # None: fewer than MEASURED_EPOCHS timed at the current mix
    carry_bytes: int                  # what resuming it elsewhere needs: its checkpoint and best weights

    def seconds_needed(self) -> float | None:
        if self.seconds_per_epoch is None:
            return None
        return self.seconds_per_epoch * max(0, self.epochs_total - self.epochs_done)


def epochs_logged(run_dir: Path) -> list[dict]:
    """The run's epoch log (`log.jsonl`, rewritten whole at every checkpoint). A line cut off by
    a kill, in a log older than that rule, is skipped: watching a run must never stop the runner."""
    log = run_dir / "log.jsonl"
    entries = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def carry_bytes(run_dir: Path) -> int:
    """The weights a run folder ships once stopped: its checkpoint and its best weights. Between
    an improvement and the next checkpoint those are staged as ``best.next.pt`` beside the old
    ``best.pt`` (counted once, the larger), which a stopped run has settled."""
    def size(name: str) -> int:
        path = run_dir / name
        return path.stat().st_size if path.exists() else 0
    return size("checkpoint.pt") + max(size("best.pt"), size("best.next.pt"))


def expected_carry_bytes(cfg, data_dir=None) -> int:
    """What `carry_bytes` will count for a run of `cfg` once stopped, before it runs: its
    checkpoint (the configured model's fp32 weights and its optimizer's state) and its best
    weights, at 4 bytes a parameter (tied weights, like a saved storage, count once). What the
    files add is about 1.4 kB of pickle a tensor and the RNG states: a PTB-char R-Transformer's
    ``best.pt`` is 56,873,750 bytes for 14,213,169 parameters, 0.04% more. Needs the task's data
    for its vocabulary; builds the model on PyTorch's meta device, so it allocates nothing."""
    import torch

    from .models import build_model
    from .step import OPTIMIZER_SLOTS
    from .tasks import model_protocol

    shape = model_protocol(cfg, "cpu", data_dir).shape
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build_model(cfg, shape).parameters())
    return 4 * parameters * (2 + OPTIMIZER_SLOTS[cfg.train.optimizer])


def read_pace(run_id: str, run_dir: Path, epochs_total: int, since: int) -> Pace:
    """The job's pace over its last `MEASURED_EPOCHS` epochs, counting only epochs logged after
    its first `since` (those logged before the current mix began, and the epoch it began in).
    Its log's `elapsed_s` is wall time, evaluation included."""
    entries = epochs_logged(run_dir)
    timed = [entry.get("elapsed_s") for entry in entries[since:]]
    rate = None
    if len(timed) > MEASURED_EPOCHS and None not in timed[-1 - MEASURED_EPOCHS:]:
        rate = (timed[-1] - timed[-1 - MEASURED_EPOCHS]) / MEASURED_EPOCHS
    return Pace(run_id, len(entries), epochs_total, rate, carry_bytes(run_dir))


def late_job(paces: list[Pace], seconds_left: float, carry_limit_bytes: int,
             margin: float = EARLY_PACE_MARGIN) -> Pace | None:
    """The job to stop now, or None. Candidates are the jobs projected to need more than
    `seconds_left` (and `margin` of it more) whose weights are over `carry_limit_bytes`: their
    progress cannot leave the machine. Of those, the one with the most time still needed is
    chosen. Nothing is judged while any job's pace at the current mix is unmeasured: a stop
    speeds up the jobs beside it, so their old pace would condemn them too."""
    if any(pace.seconds_per_epoch is None for pace in paces):
        return None
    late = [pace for pace in paces
            if pace.seconds_needed() > seconds_left * (1 + margin) and pace.carry_bytes > carry_limit_bytes]
    return max(late, key=Pace.seconds_needed, default=None)


def unstartable(run_id: str, epochs_total: int, seen: Pace | None, seconds_left: float,
                carry_limit_bytes: int) -> Pace | None:
    """A job not yet started, as a `Pace` at the pace and weight size of `seen` (a job of the
    same task and model timed by this runner), when at that pace it would miss the deadline with
    weights that cannot leave the machine: it would train only to be stopped. Else None."""
    if seen is None or seen.seconds_per_epoch is None:
        return None
    pace = Pace(run_id, 0, epochs_total, seen.seconds_per_epoch, seen.carry_bytes)
    return late_job([pace], seconds_left, carry_limit_bytes, margin=0.0)


def verdict(pace: Pace, seconds_left: float, carry_limit_bytes: int) -> str:
    """Why `pace`'s job is stopped, in one line."""
    return (f"projected to need {pace.seconds_needed() / 60:.1f} more minutes at "
            f"{pace.seconds_per_epoch:.1f} s an epoch ({pace.epochs_done}/{pace.epochs_total} epochs), "
            f"{seconds_left / 60:.1f} left before the deadline, and its {pace.carry_bytes / 1e6:.0f} MB "
            f"of weights cannot leave the machine (limit {carry_limit_bytes / 1e6:.0f} MB)")


def progress(pace: Pace, seconds_left: float) -> str:
    """'RUN: epoch 27/100, 16.5 s an epoch, 20.1 more minutes (13.2 left before the deadline)'."""
    head = f"{pace.run_id}: epoch {pace.epochs_done}/{pace.epochs_total}"
    if pace.seconds_per_epoch is None:
        return f"{head}, pace not measured yet at this mix ({seconds_left / 60:.1f} min left before the deadline)"
    return (f"{head}, {pace.seconds_per_epoch:.1f} s an epoch, {pace.seconds_needed() / 60:.1f} more minutes "
            f"({seconds_left / 60:.1f} left before the deadline)")

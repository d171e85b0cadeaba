"""The runner stops a job that cannot finish before the batch's deadline and cannot leave the
machine either, so that the jobs beside it get its share (rtlib.deadline)."""
import json

import pytest
import torch

from rtlib.configs import run_config
from rtlib.data.fetch import on_hand
from rtlib.deadline import (MEASURED_EPOCHS, Pace, carry_bytes, expected_carry_bytes, late_job, progress, read_pace,
                            unstartable, verdict)
from rtlib.reproduce import expand_jobs
from rtlib.run_folder import STOP_REQUEST
from rtlib.runtime import Runtime
from rtlib.train import train
from test_reproduce import run_fake_jobs


def write_log(run_dir, seconds_per_epoch, epochs, start_s=0.0):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dict(epoch=k + 1, elapsed_s=start_s + seconds_per_epoch * (k + 1))) for k in range(epochs)]
    (run_dir / "log.jsonl").write_text("".join(line + "\n" for line in lines))


def test_pace_counts_only_epochs_after_the_mix_began(tmp_path):
    write_log(tmp_path, 30.0, 5)  # 5 epochs of 30 s at an earlier mix, then 4 of 10 s
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    entries += [dict(epoch=5 + k + 1, elapsed_s=150.0 + 10.0 * (k + 1)) for k in range(4)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    (tmp_path / "checkpoint.pt").write_bytes(b"x" * 1000)
    (tmp_path / "best.pt").write_bytes(b"x" * 500)
    pace = read_pace("run", tmp_path, epochs_total=100, since=5)
    assert pace == Pace("run", 9, 100, 10.0, 1500)
    assert pace.seconds_needed() == 910.0
    assert read_pace("run", tmp_path, epochs_total=100, since=6).seconds_per_epoch is None
    assert read_pace("run", tmp_path / "none", epochs_total=100, since=0) == Pace("run", 0, 100, None, 0)
    with open(tmp_path / "log.jsonl", "a") as log:  # a line a kill cut off, in an old log
        log.write('{"epoch": 10, "elaps')
    assert read_pace("run", tmp_path, epochs_total=100, since=5) == pace


def test_the_late_job_that_cannot_leave_is_the_one_stopped():
    heavy = Pace("ptb-char", 10, 100, 16.0, 57_000_000)      # needs 24 min
    heavier = Pace("ptb-char-2", 5, 100, 16.0, 57_000_000)   # needs 25.3 min
    portable = Pace("mnist", 12, 50, 37.0, 2_000_000)         # needs 23.4 min, but can be carried
    on_time = Pace("ptb-word", 90, 100, 9.0, 57_000_000)
    limit = 31_000_000
    assert late_job([heavy, heavier, portable, on_time], 20 * 60, limit) == heavier
    assert late_job([heavy, portable, on_time], 20 * 60, limit) == heavy
    assert late_job([portable, on_time], 20 * 60, limit) is None
    assert late_job([heavy, portable], 30 * 60, limit) is None  # everyone finishes
    # batch am: 11.5 minutes projected from its first epochs, 11.5 left; it needed 10.8 at its steady pace
    early = Pace("ptb-char-gru", 6, 100, 7.33, 46_000_000)
    assert late_job([early], 11.4 * 60, limit) is None
    assert late_job([early], 11.4 * 60, limit, margin=0.0) == early
    assert late_job([early], 10.0 * 60, limit) == early  # more than a tenth late
    unmeasured = Pace("new", 1, 100, None, 0)
    assert late_job([heavy, unmeasured], 20 * 60, limit) is None  # the mix is not measured yet
    assert "24.0 more minutes at 16.0 s an epoch (10/100 epochs), 20.0 left" in verdict(heavy, 20 * 60, limit)
    assert progress(heavy, 20 * 60) == ("ptb-char: epoch 10/100, 16.0 s an epoch, 24.0 more minutes "
                                        "(20.0 left before the deadline)")
    assert "pace not measured yet" in progress(unmeasured, 20 * 60)


class EpochPerPoll:
    """A job's process that logs one epoch of `seconds_per_epoch` each time it is polled, and
    exits when its epochs are done or at its first poll after a stop request."""

    def __init__(self, run_dir, seconds_per_epoch, epochs_total):
        self.run_dir, self.rate, self.total, self.returncode = run_dir, seconds_per_epoch, epochs_total, None

    def poll(self):
        done = len((self.run_dir / "log.jsonl").read_text().splitlines())
        if (self.run_dir / STOP_REQUEST).exists() or done == self.total:
            self.returncode = 0
            return 0
        with open(self.run_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(dict(epoch=done + 1, elapsed_s=self.rate * (done + 1))) + "\n")
        return None


def paced_runner(monkeypatch, rates, weights, started=None):
    """`start` and `finish` for `run_fake_jobs` whose jobs log an epoch of `rates[run_id]` seconds
    a poll and hold `weights[run_id]` bytes of checkpoint, and the list the runner's events go to."""
    import time

    import rtlib.reproduce as reproduce
    started = [] if started is None else started

    def start(job, slot, params, threads_share=1):
        started.append(job.run_id)
        write_log(job.out_dir, rates[job.run_id], 0)
        if weights.get(job.run_id):
            (job.out_dir / "checkpoint.pt").write_bytes(b"x" * weights[job.run_id])
        return reproduce.Running(job, EpochPerPoll(job.out_dir, rates[job.run_id], job.cfg.train.epochs),
                                 slot[0], time.monotonic(), resumed=False)

    def finish(running):
        stopped = (running.job.out_dir / STOP_REQUEST).exists()
        return reproduce.Outcome(running.job, "remaining" if stopped else "done", "ran", slot=running.slot)

    said = []
    monkeypatch.setattr(reproduce, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(reproduce, "JUDGE_EVERY_S", 0.0)  # the fake jobs log an epoch a poll
    monkeypatch.setattr(reproduce.LiveView, "event", lambda view, text: said.append(text))
    return start, finish, said


def test_the_runner_stops_a_late_job_over_the_carry_limit_and_lets_the_others_run(monkeypatch, tmp_path):
    import time

    heavy, portable = expand_jobs([4], ["rtransformer", "transformer"], "paper", seeds=1, lrs="config", out=tmp_path)
    rates = {heavy.run_id: 60.0, portable.run_id: 1.0}   # a minute an epoch cannot finish 100 in 10
    start, finish, said = paced_runner(monkeypatch, rates, {heavy.run_id: 2_000_000})

    def run(carry_limit_mb):
        for job in (heavy, portable):
            (job.out_dir / STOP_REQUEST).unlink(missing_ok=True)
        return run_fake_jobs(monkeypatch, tmp_path, [heavy, portable], start, finish, jobs_per_gpu=2,
                             deadline=time.monotonic() + 600, carry_limit_mb=carry_limit_mb)

    outcomes = {outcome.job.run_id: outcome for outcome in run(carry_limit_mb=1.0)}
    assert outcomes[heavy.run_id].status == "remaining" and outcomes[portable.run_id].status == "done"
    logged = len((heavy.out_dir / "log.jsonl").read_text().splitlines())
    assert MEASURED_EPOCHS < logged < 10  # judged as soon as both were timed at their mix
    assert not (portable.out_dir / STOP_REQUEST).exists()
    stops = [line for line in said if line.startswith("stop ")]
    assert len(stops) == 1 and heavy.run_id in stops[0] and "cannot leave the machine" in stops[0]
    assert any(line.startswith("pace ") and f"{portable.run_id}: epoch" in line for line in said)
    # under the limit, or with no limit, a late job trains on to the deadline's checkpoint
    for limit in (3.0, None):
        outcomes = {outcome.job.run_id: outcome for outcome in run(carry_limit_mb=limit)}
        assert outcomes[heavy.run_id].status == "done"


def test_the_weights_that_would_ship_count_a_staged_best_once(tmp_path):
    from rtlib.deadline import carry_bytes
    assert carry_bytes(tmp_path) == 0
    (tmp_path / "checkpoint.pt").write_bytes(b"c" * 100)
    assert carry_bytes(tmp_path) == 100  # the first epoch: no best yet
    (tmp_path / "best.pt").write_bytes(b"b" * 40)
    (tmp_path / "best.next.pt").write_bytes(b"n" * 40)
    assert carry_bytes(tmp_path) == 140


def test_a_job_its_task_and_models_pace_says_would_miss_is_not_started():
    seen = Pace("nottingham_lstm_seed1111", 100, 100, 12.0, 14_000_000)  # 100 epochs take 20 min here
    assert unstartable("next", 100, seen, 5 * 60, 0) == Pace("next", 0, 100, 12.0, 14_000_000)
    assert unstartable("next", 100, seen, 25 * 60, 0) is None        # it would finish
    assert unstartable("next", 100, seen, 5 * 60, 30_000_000) is None  # its weights could leave
    assert unstartable("next", 100, None, 5 * 60, 0) is None           # nothing of its kind timed yet


def test_the_runner_skips_the_next_job_of_a_kind_it_timed_too_slow_for_the_time_left(monkeypatch, tmp_path):
    """After a stop, the runner starts no job of the same task and model that would be stopped in
    turn (batch k started seven, each stopped after five epochs); a job of another kind still starts."""
    import time

    first, second = expand_jobs([2], ["lstm"], "paper", seeds=2, lrs="config", out=tmp_path)
    other, = expand_jobs([2], ["tcn"], "paper", seeds=1, lrs="config", out=tmp_path)
    rates = {first.run_id: 60.0, second.run_id: 60.0, other.run_id: 1.0}
    started = []
    start, finish, said = paced_runner(monkeypatch, rates, {run: 1000 for run in rates}, started)
    outcomes = {outcome.job.run_id: outcome for outcome in run_fake_jobs(
        monkeypatch, tmp_path, [first, second, other], start, finish, jobs_per_gpu=1,
        deadline=time.monotonic() + 600, carry_limit_mb=0.0)}
    assert started == [first.run_id, other.run_id]
    assert (outcomes[first.run_id].status, outcomes[second.run_id].how, outcomes[other.run_id].status) == \
        ("remaining", "not started", "done")
    skips = [line for line in said if line.startswith("skip ")]
    assert len(skips) == 1 and second.run_id in skips[0] and "at the pace of its task and model here" in skips[0]


def test_no_job_is_judged_on_paces_made_while_another_process_holds_the_gpu(monkeypatch, tmp_path):
    """Batch ar: the GPU tests beside a PTB-word RNN slowed it from 7.5 to 14.5 s an epoch for a
    few minutes, and the runner stopped a job its own pace would have finished. While the marker
    file exists nothing is judged; once it is gone every job is timed afresh."""
    import time

    import rtlib.reproduce as reproduce
    heavy, = expand_jobs([4], ["rnn"], "paper", seeds=1, lrs="config", out=tmp_path)
    marker = tmp_path / "gpu_tests.running"
    marker.touch()
    polls = []

    class SlowWhileHeld(EpochPerPoll):
        def poll(self):  # a minute an epoch while the marker exists, a second once it is gone
            polls.append(None)
            if len(polls) == 30:
                marker.unlink()
            self.rate = 60.0 if marker.exists() else 1.0
            return super().poll()

    start, finish, said = paced_runner(monkeypatch, {heavy.run_id: 60.0}, {heavy.run_id: 2_000_000})

    def start_slow(job, slot, params, threads_share=1):
        running = start(job, slot, params, threads_share)
        return reproduce.Running(job, SlowWhileHeld(job.out_dir, 60.0, job.cfg.train.epochs), running.slot,
                                 running.started, resumed=False)

    outcomes = run_fake_jobs(monkeypatch, tmp_path, [heavy], start_slow, finish, deadline=time.monotonic() + 600,
                             carry_limit_mb=1.0, hold_judgement_while=marker)
    assert outcomes[0].status == "done" and not any(line.startswith("stop ") for line in said)
    # without the marker, the same minute-long epochs get the job stopped
    marker.touch()
    polls.clear()
    (heavy.out_dir / "log.jsonl").unlink()
    outcomes = run_fake_jobs(monkeypatch, tmp_path, [heavy], start_slow, finish, deadline=time.monotonic() + 600,
                             carry_limit_mb=1.0)
    assert outcomes[0].status == "remaining" and any(line.startswith("stop ") for line in said)


def test_holding_judgement_needs_a_carry_limit(tmp_path, capsys):
    from rtlib.__main__ import main
    code = main(["reproduce", "--cells", "4:rnn:config", "--seeds", "1", "--profile", "paper", "--gpus", "",
                 "--deadline-minutes", "10", "--hold-judgement-while", str(tmp_path / "marker")])
    assert code != 0
    assert "--hold-judgement-while" in capsys.readouterr().err


@pytest.mark.parametrize("task,model", [("mnist", "rtransformer"), ("ptb-char", "rnn"), ("nottingham", "tcn")])
def test_the_expected_carry_is_what_a_stopped_run_leaves(real_data, tmp_path, task, model):
    """Adam (two moments a parameter), plain SGD (none), and TCN's weight norm. The folder adds
    the config, the RNG states and about 1.4 kB of pickle a tensor: in these smoke models that is
    most of it, in the paper's under 0.1%."""
    cfg = run_config(task, model, "smoke", epochs=1)
    train(cfg, tmp_path, Runtime(device="cpu"), data_dir=real_data, log=lambda message: None)
    expected, actual = expected_carry_bytes(cfg, real_data), carry_bytes(tmp_path)
    checkpoint, best = (torch.load(tmp_path / name, weights_only=False) for name in ("checkpoint.pt", "best.pt"))
    # once a storage: tied embedding and decoder weights are saved once; Adam's step counts are a few bytes
    weights = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes()
               for tensor in tensors_in([checkpoint["model"], checkpoint["optimizer"], best])}
    assert sum(weights.values()) == pytest.approx(expected, rel=0.01)
    assert expected <= actual <= expected + 2_000 * len(tensors_in([checkpoint, best])) + 40_000


def tensors_in(item) -> list:
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, dict):
        item = list(item.values())
    return [tensor for part in item for tensor in tensors_in(part)] if isinstance(item, (list, tuple)) else []


def test_data_is_on_hand_only_where_reading_it_downloads_nothing(real_data, tmp_path, monkeypatch):
    assert on_hand("ptb-char")  # the mirror that conftest names
    monkeypatch.delenv("RTLIB_DATA_MIRROR")
    assert not on_hand("ptb-char", tmp_path)
    (tmp_path / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "ptb" / f"ptb.{split}.txt").write_text("cached\n")
    assert on_hand("ptb-char", tmp_path) and on_hand("ptb-word", tmp_path) and not on_hand("mnist", tmp_path)

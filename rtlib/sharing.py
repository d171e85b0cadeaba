"""How many jobs should share one GPU: training steps timed in several processes at once.

The sweep's models are small and leave an H200 mostly idle, so the batches run several jobs
on it under NVIDIA MPS. How many pay depends on the jobs, and a batch's epoch times mix in
evaluation and whatever else shared the GPU. This measures sharing directly. Each *round* is
a set of jobs, written like ``4:rtransformer*3+3:rtransformer`` (three Table 4 and one Table 3
R-Transformer), that run the training step of their table's paper configuration
(`bench.StepRunner`, the engine mode a run would use) side by side for the same stretch of
time. Every job is a process of its own, as in a batch. The processes are started once,
compiled and warmed up, then reused by every round; a process that a round does not name
waits, holding its memory but running nothing.

A job's *share* is its steps a second in the round over its steps a second alone, when a round
ran it alone. A round's *gain* is the sum of its jobs' shares: the work done in the round's time,
counted in jobs run alone. Running the jobs one after another has a gain of 1. The best N is
where the gain stops growing.

`python -m rtlib bench --sharing 4:rtransformer 4:rtransformer*2 4:rtransformer*4` writes
``results/bench/sharing_<gpu>.json``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch

from .bench import StepRunner, synchronize
from .configs import MODELS, TABLE_TASKS, run_config, table_and_model
from .data.fetch import fetch_tasks
from .reproduce import die_with_parent
from .run_folder import atomic_write_json
from .runtime import resolve_compile

Job = tuple[int, str]   # (table, model)
POLL_S = 0.005


def parse_round(text: str) -> list[Job]:
    """'4:rtransformer*2+3:transformer' -> [(4, 'rtransformer'), (4, 'rtransformer'), (3, 'transformer')]."""
    jobs = []
    for part in text.split("+"):
        spec, _, count = part.partition("*")
        job = table_and_model(spec)
        if job is None:
            raise ValueError(f"--sharing {text!r}: {part!r} is not TABLE:MODEL[*COUNT] with a table in "
                             f"{sorted(TABLE_TASKS)} and a model in {list(MODELS)}")
        if count and not (count.isdigit() and int(count) >= 1):
            raise ValueError(f"--sharing {text!r}: the count {count!r} is not a whole number >= 1")
        jobs += [job] * int(count or 1)
    return jobs


def worker_slots(rounds: list[list[Job]]) -> list[Job]:
    """One process for each job any round needs at once: each (table, model) as many times as the
    round that needs it most."""
    most: Counter = Counter()
    for jobs in rounds:
        for job, count in Counter(jobs).items():
            most[job] = max(most[job], count)
    return [job for job, count in sorted(most.items()) for _ in range(count)]


def assign(jobs: list[Job], slots: list[Job]) -> list[int]:
    """The worker indices that run `jobs`: the first free workers of each job's kind."""
    taken: Counter = Counter()
    chosen = []
    for job in jobs:
        matching = [index for index, slot in enumerate(slots) if slot == job]
        chosen.append(matching[taken[job]])
        taken[job] += 1
    return chosen


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(its log is empty)"


def _wait_for(path: Path, processes: list[subprocess.Popen], timeout_s: float) -> dict[str, Any]:
    began = time.monotonic()
    while not path.exists():
        failed = [index for index, process in enumerate(processes) if process.poll() not in (None, 0)]
        if failed:
            log = path.parent / f"worker-{failed[0]}.log"
            raise RuntimeError(f"sharing worker {failed[0]} exited with code {processes[failed[0]].returncode}: "
                               f"{_last_line(log)} (its log: {log})")
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"no {path.name} after {timeout_s:.0f} s (logs in {path.parent})")
        time.sleep(POLL_S)
    return json.loads(path.read_text())


def measure(rounds: list[list[Job]], device: str, seconds: float = 15.0, profile: str = "paper",
            warmup: int = 20, ready_timeout_s: float = 900.0,
            on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every round for `seconds` in its own processes; their steps a second, shares and gains.
    `on_round` gets the result so far after each round (so a cut-off measurement keeps it)."""
    slots = worker_slots(rounds)
    fetch_tasks(sorted({TABLE_TASKS[table] for table, _ in slots}))  # before any worker compiles
    folder = Path(tempfile.mkdtemp(prefix="rtlib-sharing-"))
    processes, logs = [], []
    for index, (table, model) in enumerate(slots):
        logs.append(log := open(folder / f"worker-{index}.log", "w"))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "rtlib.sharing", str(folder), str(index), str(table), model, device,
             profile, str(warmup)], stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None))
    try:
        ready = [_wait_for(folder / f"ready-{index}.json", processes, ready_timeout_s)
                 for index in range(len(slots))]
        measured = []
        for number, jobs in enumerate(rounds):
            workers = assign(jobs, slots)
            atomic_write_json(folder / f"round-{number}.json", dict(workers=workers, seconds=seconds))
            measured.append([_wait_for(folder / f"result-{number}-{index}.json", processes, 600 + 3 * seconds)
                             for index in workers])
            if on_round is not None:
                on_round(_result(profile, seconds, warmup, slots, ready, rounds[:number + 1], measured))
    finally:
        atomic_write_json(folder / "stop.json", {})
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
    return _result(profile, seconds, warmup, slots, ready, rounds, measured)


def _result(profile, seconds, warmup, slots, ready, rounds, measured) -> dict[str, Any]:
    return dict(profile=profile, seconds=seconds, warmup=warmup, workers=len(slots),
                modes=sorted({entry["mode"] for entry in ready}), rounds=_shares(rounds, measured))


def _shares(rounds: list[list[Job]], measured: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    alone = {jobs[0]: results[0]["steps_per_s"] for jobs, results in zip(rounds, measured) if len(jobs) == 1}
    out = []
    for jobs, results in zip(rounds, measured):
        rows = [dict(table=table, model=model, steps_per_s=result["steps_per_s"],
                     share=result["steps_per_s"] / alone[(table, model)] if (table, model) in alone else None)
                for (table, model), result in zip(jobs, results)]
        shares = [row["share"] for row in rows]
        gain = sum(shares) if all(share is not None for share in shares) else None
        out.append(dict(jobs="+".join(f"{table}:{model}" for table, model in jobs), n=len(jobs),
                        gain=gain, per_job=rows))
    return out


def _worker(folder: Path, index: int, table: int, model: str, device_name: str, profile: str,
            warmup: int) -> None:
    device = torch.device(device_name)
    cfg = run_config(TABLE_TASKS[table], model, profile)
    mode = resolve_compile("auto", model, device)
    runner = StepRunner(cfg, device, cfg.train.precision, mode=mode)
    for _ in range(warmup):
        runner.step()
    synchronize(device)
    atomic_write_json(folder / f"ready-{index}.json", dict(mode=mode))
    number = 0
    while not (folder / "stop.json").exists():
        order = folder / f"round-{number}.json"
        if not order.exists():
            time.sleep(POLL_S)
            continue
        task = json.loads(order.read_text())
        if index in task["workers"]:
            steps, seconds = _steps_for(runner, device, task["seconds"])
            atomic_write_json(folder / f"result-{number}-{index}.json",
                              dict(steps=steps, seconds=seconds, steps_per_s=steps / seconds))
        number += 1


def _steps_for(runner, device: torch.device, seconds: float) -> tuple[int, float]:
    """Steps for about `seconds`, after a tenth as long untimed while the round's jobs all start.
    The clock is read after a synchronize every chunk of steps, a chunk being about 0.2 s of them."""
    settle, began, steps = time.monotonic() + seconds / 10, time.monotonic(), 0
    while steps == 0 or time.monotonic() < settle:
        runner.step()
        steps += 1
    synchronize(device)
    chunk = max(1, int(0.2 * steps / (time.monotonic() - began)))
    began, steps = time.monotonic(), 0
    while time.monotonic() - began < seconds:
        for _ in range(chunk):
            runner.step()
        steps += chunk
        synchronize(device)
    return steps, time.monotonic() - began


if __name__ == "__main__":
    folder, index, table, model, device, profile, warmup = sys.argv[1:]
    _worker(Path(folder), int(index), int(table), model, device, profile, int(warmup))

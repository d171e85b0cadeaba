"""Reproduce the paper's tables: the grid of runs and the batch runner behind
``python -m rtlib reproduce``.

Explained in book/run.md (one run) and book/report.md (the tables). Every run of the grid is
one execution of ``notebooks/run.ipynb`` by papermill, in a subprocess of its own (so a job can
be killed and sees only its GPU), writing ``<out>/<run id>/run.ipynb`` beside the run's
``record.json`` and ``checkpoint.pt``. The runner is resumable: re-issue the same command after
a crash or a time limit and finished runs are skipped, interrupted ones resumed. It schedules
jobs on the GPUs of one machine and nothing more; for a cluster, ``--plan`` prints the jobs as
shell commands for an existing scheduler (a Slurm array, GNU parallel).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import pandas as pd

from .configs import ABLATIONS, MODELS, TABLE_TASKS, RunConfig, run_config, table_and_model, with_variant
from .data.fetch import fetch_tasks, on_hand
from .deadline import (Pace, epochs_logged, expected_carry_bytes, late_job, progress, read_pace, unstartable,
                       verdict)
from .models import ATTENTION_MODELS
from .paths import RECORDS_DIR, REPEATS_DIR, REPO, RUNS_DIR
from .run_folder import (AGAIN, JOB_LOCK, STOP_REQUEST, RecordError, copy_record, locked, read_record, run_id,
                         safe_child)
from .tasks import TASKS, above_uniform

RUN_NOTEBOOK = REPO / "notebooks" / "run.ipynb"
FIRST_SEED = 1111
KERNEL = "python3"
# papermill's default, 60 s, was too short for four kernels starting at once under MPS
# (results/batches/2026-12-07_h100_ak.json): the job failed before its first epoch
KERNEL_START_TIMEOUT_S = 300
STRIP_OUTPUT_BYTES = 20_000    # outputs larger than this leave the results/ copy of a notebook
EXIT_FAILED, EXIT_REMAINING, EXIT_INTERRUPTED = 1, 3, 130


# ---------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Job:
    cfg: RunConfig
    run_id: str
    out_dir: Path
    repeat: bool = False  # a second run of a recorded run (`again:`): its record goes apart

    @property
    def name(self) -> str:
        """The job's name in the runner's logs and summaries: its run id, marked when a repeat."""
        return self.run_id + (AGAIN if self.repeat else "")

    def parameters(self, *, results_dir: Path | None, max_minutes: float | None,
                   data_dir: Path | None, device: str = "auto", compile_mode: str = "auto") -> dict[str, Any]:
        """The run notebook's parameters for this job (paths relative to the repo when inside)."""
        train = self.cfg.train
        return dict(task=self.cfg.task, model=self.cfg.model, profile=self.cfg.profile, lr=train.lr,
                    seed=train.seed, variant=self.cfg.variant, max_minutes=max_minutes, device=device,
                    compile_mode=compile_mode, out_dir=_shown(self.out_dir),
                    results_dir=_shown(results_dir), resume=True, data_dir=_shown(data_dir))


def _shown(path: Path | None) -> str | None:
    """A path as the notebook gets it: relative to the repo root (its cwd) when inside it."""
    if path is None:
        return None
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


LR_MODES = ("grid", "config", "sweep")
# the sweep's order: the rows the paper's claims are about (R-Transformer, Transformer) at every
# seed, then the baseline rows, then the lr grid points that no row waits for
SWEEP_PHASES = ("paper's rows", "baseline rows", "grid points")


def _phase(model: str, makes_row: bool) -> int:
    return SWEEP_PHASES.index("grid points" if not makes_row else
                              "paper's rows" if model in ATTENTION_MODELS else "baseline rows")


def expand_jobs(tables: list[int], models: list[str], profile: str, seeds: int, lrs: str = "grid",
                variants: list[str] = ("",), out: Path = RUNS_DIR,
                notes: list[str] | None = None, finished: dict[str, dict] | None = None) -> list[Job]:
    """table's task x models x lr x seeds (1111, 1112, ...) x variants.

    `lrs`: ``grid`` (every lr of the config's grid, every seed), ``config`` (the config's lr) or
    ``sweep``: the config's lr at every seed, the rest of the grid at the first seed, and, once
    that grid is finished (`finished`: run id -> record), the lr chosen on validation at the
    other seeds too. A variant that is not a setting of a model is left out for that model
    (said in `notes`); one that fits none of the models is an error.

    The jobs come in the sweep's order (`SWEEP_PHASES`): the R-Transformer and Transformer rows
    at every seed, then the baseline rows, then the grid points a row does not wait for; each
    phase table by table, so that every batch that lands fills the report's tables first."""
    if seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be >= 1")
    if lrs not in LR_MODES:
        raise ValueError(f"lrs={lrs!r} is not one of {list(LR_MODES)}")
    phased, fits, why = [], dict.fromkeys(variants, False), {}
    for table in tables:
        task = TABLE_TASKS[table]
        for model in models:
            base = run_config(task, model, profile)
            for variant in variants:
                try:
                    with_variant(base, variant)
                except ValueError as error:
                    why.setdefault(variant, str(error))
                    if notes is not None:
                        notes.append(f"left out: {task} {model} variant {variant!r} ({error})")
                    continue
                fits[variant] = True
                all_seeds = range(FIRST_SEED, FIRST_SEED + seeds)
                for lr, lr_seeds, row in _lr_seeds(task, model, profile, variant, lrs, all_seeds,
                                                   finished or {}, notes):
                    phased += [(_phase(model, row), _job(task, model, profile, lr, seed, variant, out))
                               for seed in lr_seeds]
    unfit = [variant for variant, fit in fits.items() if not fit]
    if unfit:
        raise ValueError(f"variant {unfit[0]!r} fits none of the models {list(models)}: {why[unfit[0]]}")
    return [job for _, job in sorted(phased, key=lambda item: item[0])]  # stable: table by table within a phase


@dataclass(frozen=True)
class Again:
    """A `--cells` item 'again:RUN_ID': run a recorded run once more (same settings and seed),
    say for weights that did not come back from the machine that made it."""
    run_id: str


def parse_cell(text: str) -> "tuple[int, str, str | None] | Again":
    """'3:rtransformer' or '2:gru:sweep' -> (table, model, lrs mode or None for --lrs's);
    'again:RUN_ID' -> Again(RUN_ID)."""
    if text.startswith("again:"):
        return Again(text.removeprefix("again:"))
    table, _, rest = text.partition(":")
    model, _, lrs = rest.partition(":")
    cell = table_and_model(f"{table}:{model}")
    if cell is None or (lrs and lrs not in LR_MODES):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not TABLE:MODEL[:LRS] with a table in {sorted(TABLE_TASKS)}, a model in "
            f"{list(MODELS)} and LRS in {list(LR_MODES)}, nor again:RUN_ID")
    return (*cell, lrs or None)


def cell_jobs(cells: list, profile: str, seeds: int, lrs: str, variants: list[str], out: Path,
              notes: list[str], finished: dict[str, dict]) -> list[Job]:
    """`expand_jobs` for each (table, model, lrs) cell in the order given, each cell with its own
    lr mode (default `lrs`), and a repeat for each `Again`: one runner, and so one view of the
    GPU's jobs, for a mixed batch."""
    jobs: dict[str, Job] = {}
    for cell in cells:
        found = ([again_job(cell.run_id, profile, out, finished)] if isinstance(cell, Again) else
                 expand_jobs([cell[0]], [cell[1]], profile, seeds, cell[2] or lrs, variants, out, notes, finished))
        for job in found:
            jobs.setdefault(job.name, job)
    return list(jobs.values())


def again_job(run: str, profile: str, out: Path, finished: dict[str, dict]) -> Job:
    """The job that runs recorded run `run` again, in its own folder (``<run id>.again``);
    ValueError if it has no record, or one of another profile or of settings that changed."""
    record = finished.get(run)
    if record is None:
        raise ValueError(f"again:{run}: no record of {run} to run again (a run without a record runs "
                         "without again:)")
    cfg = RunConfig.from_dict(record["config"])
    if cfg.profile != profile:
        raise ValueError(f"again:{run} is a {cfg.profile!r} run, not of --profile {profile}")
    job = _job(cfg.task, cfg.model, cfg.profile, cfg.train.lr, cfg.train.seed, cfg.variant, out)
    if not job.cfg.is_recorded_as(record["config"]):
        raise ValueError(f"again:{run}: its record was made with other settings (configs.py changed?)")
    return Job(job.cfg, job.run_id, Path(out) / f"{job.run_id}{AGAIN}", repeat=True)


def _job(task: str, model: str, profile: str, lr: float, seed: int, variant: str, out: Path) -> Job:
    cfg = with_variant(run_config(task, model, profile, lr=lr, seed=seed), variant)
    return Job(cfg, run_id(cfg), Path(out) / run_id(cfg))


def _lr_seeds(task, model, profile, variant, lrs, seeds, finished, notes):
    """[(lr, seeds to run at it, whether they make the row)] for one row under the `lrs` mode of
    `expand_jobs`; grid points the row waits for (an lr to choose) count as the row's."""
    train = run_config(task, model, profile).train
    if lrs == "grid":
        return [(lr, seeds, True) for lr in train.lr_grid]
    if lrs == "config" or len(train.lr_grid) == 1 or not TASKS[task].has_validation:
        return [(train.lr, seeds, True)]  # seq-MNIST has no validation split to choose an lr on
    first, rest = seeds[:1], seeds[1:]
    row = f"{task} {model} {variant or 'row'}"
    lrs_first = [train.lr] + [lr for lr in train.lr_grid if lr != train.lr]
    grid = {lr: _job(task, model, profile, lr, first[0], variant, Path()) for lr in lrs_first}
    at_first = [(lr, first, lr == train.lr) for lr in lrs_first]
    waiting = [(lr, first, True) for lr in lrs_first]
    if not rest:
        return at_first
    if all(_is_finished(job, finished) for job in grid.values()):
        records = [finished[job.run_id] for job in grid.values()]
        if all(record.get("status") == "diverged" for record in records):
            if notes is not None:
                notes.append(f"{row}: every lr of the grid diverged at seed {first[0]}; seeds {list(rest)} "
                             "wait for a grid that trains")
            return waiting
        chosen = chosen_lr(records, TASKS[task].higher_is_better)
        if notes is not None and chosen != train.lr:
            notes.append(f"{row}: lr {chosen:g} chosen on validation at seed {first[0]} (config "
                         f"{train.lr:g}); seeds {list(rest)} follow it")
        return at_first + [(chosen, rest, True)]
    config_job = grid[train.lr]
    at_config = finished[config_job.run_id] if _is_finished(config_job, finished) else None
    if failed := _config_lr_failed(at_config, task, train.lr, first[0]):
        if notes is not None:
            notes.append(f"{row}: {failed}; seeds {list(rest)} wait for the rest of the grid")
        return waiting
    if notes is not None:
        notes.append(f"{row}: the lr grid at seed {first[0]} is not finished; seeds {list(rest)} run "
                     f"at the config's lr {train.lr:g} for now")
    return [(train.lr, seeds, True)] + at_first[1:]


def _config_lr_failed(record: dict[str, Any] | None, task: str, lr: float, seed: int) -> str:
    """How the first seed's run at the config's lr failed, so that the other seeds wait for the
    grid: it diverged, or its training loss sat above a uniform guess's (`rtlib.tasks.above_uniform`);
    '' where it did not, or has not run."""
    if record is None:
        return ""
    if record.get("status") == "diverged":
        return f"the config's lr {lr:g} diverged at seed {seed}"
    blown_up = above_uniform(record.get("curve") or [], task)
    return (f"at the config's lr {lr:g}, seed {seed}'s training loss was above a uniform guess's in "
            f"{len(blown_up)} epochs" if blown_up else "")


def _is_finished(job: Job, finished: dict[str, dict[str, Any]]) -> bool:
    record = finished.get(job.run_id)
    return record is not None and job.cfg.is_recorded_as(record.get("config"))


def chosen_lr(records: list[dict[str, Any]], higher_is_better: bool) -> float:
    """The lr of the record with the best validation metric (a diverged run never wins)."""
    def score(record):
        value = record.get("best_valid_metric")
        if value is None or record.get("status", "finished") != "finished" or value != value:
            return float("-inf")
        return value if higher_is_better else -value
    return max(records, key=score)["lr"]


def finished_records(jobs_out: Path, results_dir: Path | None) -> dict[str, dict[str, Any]]:
    """run id -> record of every finished run under `jobs_out` (run folders) and `results_dir`."""
    found: dict[str, dict[str, Any]] = {}
    paths = sorted(path for path in Path(jobs_out).glob("*/record.json")
                   if not path.parent.name.endswith(AGAIN)) if Path(jobs_out).is_dir() else []
    if results_dir is not None and Path(results_dir).is_dir():
        paths += sorted(Path(results_dir).glob("*.json"))
    for path in paths:
        try:
            record = read_record(path)
        except (OSError, RecordError):
            continue  # named when its job comes to run
        if isinstance(record, dict) and "run_id" in record:
            found[record["run_id"]] = record
    return found


def ablation_jobs(profile: str, tables: list[int], out: Path = RUNS_DIR) -> list[Job]:
    """The sweep's ablations (`rtlib.configs.ABLATIONS`) of `tables`, each at its seeds from the
    first: the first seed alone, or the seeds a verdict needs where a claim is tested against it."""
    return [_job(TABLE_TASKS[a.table], a.model, profile, run_config(TABLE_TASKS[a.table], a.model,
                                                                    profile).train.lr,
                 seed, a.variant, out)
            for a in ABLATIONS if a.table in tables for seed in range(FIRST_SEED, FIRST_SEED + a.seeds)]


def _plan_minutes(jobs: list[Job], data_dir: Path | None = None) -> str:
    """'# job-minutes as measured so far ...': each paper-profile job's GPU-minutes at the mean job
    time of its (task, model, variant)'s committed records (or a batch log's pace), to pack a lease
    with. A variant never timed shows its row's time beside 'not timed yet', never as its own:
    a precision or a window can change the pace many times over. A job timed shows its minutes at
    the fastest pace a batch log measured where that is less (`fastest_minutes`), and every job the
    floor of its steps alone where a benchmark timed them (`rtlib.cost.steps_floor`): a pace
    measured in a crowded batch can be several times what the job takes alone. Where its task's
    data is on hand, each job also says how many MB a stopped run leaves to carry into a later
    lease (`rtlib.deadline.expected_carry_bytes`), the size a batch's `CARRY_LIMIT_BYTES` is
    weighed against."""
    from .bench_results import load_bench
    from .cost import fastest_minutes, job_minutes, load_batches, minutes_per_run, steps_floor
    from .results import load_records

    batches = load_batches()
    price = minutes_per_run(load_records(), batches)
    own, row = job_minutes(jobs, price, row_pace=False), job_minutes(jobs, price)
    fastest = job_minutes(jobs, fastest_minutes(batches), row_pace=False)
    known = [m for m in own if not math.isnan(m)]
    lines = [f"# job-minutes as measured so far (GPU shared as in those batches; alone is faster): "
             f"{sum(known):.1f} for {len(known)} of {len(jobs)} jobs"]
    bench, carried = load_bench(), {}
    for job, mine, its_row, quickest in zip(jobs, own, row, fastest):
        floor, notes = steps_floor(job.cfg, bench), []
        if math.isnan(mine):
            if job.cfg.variant and not math.isnan(its_row):
                notes.append(f"the row without `{job.cfg.variant}`: {its_row:.1f}")
        elif quickest < mine - 0.05:
            notes.append(f"at the fastest pace a batch measured: {quickest:.1f}")
        if not math.isnan(floor):  # beside a pace measured in a crowded batch, what alone could be
            notes.append(f"its steps alone, benchmarked: at least {floor:.1f}")
        key = (job.cfg.task, job.cfg.model, job.cfg.variant)
        if key not in carried:
            carried[key] = expected_carry_bytes(job.cfg, data_dir) if on_hand(job.cfg.task, data_dir) else None
        if carried[key] is not None:
            notes.append(f"{carried[key] / 1e6:.0f} MB to carry if stopped")
        shown = ("not timed yet" if math.isnan(mine) else f"{mine:.1f}") + (f" ({'; '.join(notes)})" if notes else "")
        lines.append(f"#   {job.run_id}: {shown}")
    return "\n".join(lines)


def plan_commands(jobs: list[Job], *, results_dir: Path | None, max_minutes: float | None = None,
                  data_dir: Path | None = None, compile_mode: str = "auto",
                  repeats_dir: Path | None = None) -> list[str]:
    """One shell line per job, to be run from the repo root by any scheduler."""
    lines = []
    for job in jobs:
        params = job.parameters(results_dir=repeats_dir if job.repeat else results_dir,
                                max_minutes=max_minutes, data_dir=data_dir, compile_mode=compile_mode)
        args = ["papermill", _shown(RUN_NOTEBOOK), f"{params['out_dir']}/run.ipynb", "-k", KERNEL,
                "--start-timeout", str(KERNEL_START_TIMEOUT_S)]
        for key, value in params.items():
            if value is not None and not (key in ("device", "compile_mode") and value == "auto"):
                args += ["-p", key, str(value)]
        lines.append(f"mkdir -p {shlex.quote(params['out_dir'])} && {shlex.join(args)}")
    return lines


# ---------------------------------------------------------------- notebooks kept in results/

def _collapse_carriage_returns(text: str) -> str:
    """What a terminal shows: each line keeps the text after its last carriage return."""
    lines = []
    for line in text.split("\n"):
        parts = [part for part in line.split("\r") if part]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


def strip_notebook(notebook, max_bytes: int = STRIP_OUTPUT_BYTES):
    """A copy of an executed notebook fit to commit: streams merged (progress bars collapsed
    to their last state), images and outputs over `max_bytes` replaced by a one-line note."""
    import copy

    import nbformat

    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for output in cell.outputs:
            if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                    and merged[-1].name == output.name):
                merged[-1].text += output.text
            else:
                merged.append(output)
        kept = []
        for output in merged:
            if output.output_type == "stream":
                output.text = _collapse_carriage_returns(output.text)
                if not output.text.strip():
                    continue  # a progress bar that cleared itself
            size = len(json.dumps(output))
            has_image = any(key.startswith("image/") for key in output.get("data", {}))
            if has_image or size > max_bytes:
                what = "image" if has_image else f"output of {size // 1000} kB"
                output = nbformat.v4.new_output(
                    "stream", name="stdout",
                    text=f"[{what} removed from this copy; the full notebook is in the run folder]\n")
            kept.append(output)
        cell.outputs = kept
    return notebook


def notebooks_dir_for(results_dir: Path) -> Path:
    """results/records/<profile> -> results/notebooks/<profile> (else a sibling 'notebooks')."""
    results_dir = Path(results_dir)
    if results_dir.parent.name == "records":
        return results_dir.parent.parent / "notebooks" / results_dir.name
    return results_dir.parent / "notebooks" / results_dir.name


# ---------------------------------------------------------------- running the jobs

@dataclass
class Outcome:
    job: Job
    status: str                   # "done" | "failed" | "remaining"
    how: str = ""                 # "skipped" (finished before), "ran", "resumed", "interrupted", ...
    error: str = ""
    wall_minutes: float = 0.0     # this session
    record: dict[str, Any] | None = None
    slot: str = ""


@dataclass
class Running:
    job: Job
    process: subprocess.Popen
    slot: str
    started: float
    resumed: bool
    log: Any = field(repr=False, default=None)


def _read_record(job: Job, results_dir: Path | None = None) -> dict[str, Any] | None:
    """The job's record from its run folder, else its copy in `results_dir` (say, committed
    records of a run made on another machine); RecordError naming a damaged one."""
    for path in [job.out_dir / "record.json"] + ([results_dir / f"{job.run_id}.json"] if results_dir else []):
        if path.exists():
            return read_record(path)
    return None


def _finished_before(job: Job, results_dir: Path | None = None) -> Outcome | None:
    try:
        record = _read_record(job, results_dir)
    except RecordError as error:  # this job fails, the others run
        return Outcome(job, "failed", "damaged record", error=str(error))
    if record is None:
        return None
    if not job.cfg.is_recorded_as(record.get("config")):
        return Outcome(job, "failed", "stale", error=(
            f"ConfigMismatchError: the record of {job.run_id} was made with other settings "
            "(configs.py changed?); move it away to rerun it"))
    return Outcome(job, "done", "skipped", record=record)


def _keep_results(outcome: Outcome, results_dir: Path | None, notebooks_dir: Path | None,
                  view: "LiveView") -> None:
    """Copy a finished run's record and a stripped copy of its notebook into results/."""
    if outcome.status != "done" or results_dir is None:
        return
    try:
        copy_results(outcome.record, outcome.job.out_dir, results_dir, notebooks_dir)
    except (OSError, ValueError) as error:  # the run is done; only its copy is missing
        view.event(f"warning: could not copy {outcome.job.run_id} to {results_dir}: {error}")


def copy_results(record: dict[str, Any], run_dir: Path, results_dir: Path, notebooks_dir: Path | None) -> None:
    """A finished run's record into `results_dir` and its executed notebook (``run_dir/run.ipynb``),
    stripped, into `notebooks_dir`, both named by its run id."""
    import nbformat

    copy_record(record, results_dir, record["run_id"])
    executed = run_dir / "run.ipynb"
    if notebooks_dir is not None and executed.exists():
        notebooks_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(strip_notebook(nbformat.read(executed, as_version=4)),
                       safe_child(notebooks_dir, f"{record['run_id']}.ipynb"))


def _claim_all(jobs: list[Job]) -> contextlib.ExitStack:
    """Lock every job's folder for the runner's life, so that a second runner on any of them
    stops at once (FolderInUseError naming this process) instead of writing beside this one."""
    claims = contextlib.ExitStack()
    try:
        for job in jobs:
            claims.enter_context(locked(job.out_dir, JOB_LOCK))
    except BaseException:
        claims.close()
        raise
    return claims


# A job's process: papermill only (it needs no torch); the kernel it starts imports rtlib.
JOB_SCRIPT = """import json, sys, papermill
spec = json.loads(sys.argv[1])
papermill.execute_notebook(spec["input"], spec["output"], parameters=spec["parameters"],
                           kernel_name=spec["kernel"], cwd=spec["cwd"], progress_bar=False,
                           log_output=True, start_timeout=spec["start_timeout"])
"""


def _start(job: Job, slot: tuple[str, int | None], params: dict[str, Any], threads_share: int = 1) -> Running:
    """Start one job's process (its own process group) on `slot` = (label, GPU index or None)."""
    label, gpu = slot
    job.out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="" if gpu is None else str(gpu),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.setdefault("TQDM_MININTERVAL", "10")  # keeps the executed notebook small on long runs
    # CPU threads per job: spinning OpenMP threads that outnumber the free cores slow tiny
    # models several-fold (the kernel and papermill run beside them)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // (2 * threads_share))))
    env.pop("RTLIB_SMOKE", None)  # the runner already applied it to the profile
    spec = dict(input=str(RUN_NOTEBOOK), output=str(job.out_dir / "run.ipynb"), parameters=params,
                kernel=KERNEL, cwd=str(REPO), start_timeout=KERNEL_START_TIMEOUT_S)
    (job.out_dir / "run.ipynb").unlink(missing_ok=True)  # an old one would hold an old error
    log = open(job.out_dir / "job.log", "a")
    process = subprocess.Popen([sys.executable, "-c", JOB_SCRIPT, json.dumps(spec)], cwd=REPO,
                               env=env, stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
    return Running(job, process, label, time.monotonic(), (job.out_dir / "checkpoint.pt").exists(), log)


def die_with_parent() -> None:
    """In a job's process (Linux): get SIGTERM when the runner dies, even by SIGKILL. The
    kernel follows its papermill process on its own (ipykernel's parent poller)."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_line(job: Job, returncode: int) -> str:
    """The exception the notebook raised ("ValueError: ..."), else the job log's last line."""
    import nbformat

    try:
        executed = nbformat.read(job.out_dir / "run.ipynb", as_version=4)
        errors = [output for cell in executed.cells if cell.cell_type == "code"
                  for output in cell.get("outputs", []) if output.output_type == "error"]
        if errors:
            return _one_line(f"{errors[-1].ename}: {errors[-1].evalue}")
    except (OSError, ValueError):
        pass  # papermill failed before writing the notebook
    log = job.out_dir / "job.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    tail = [line for line in lines if line.strip()]
    return f"exit code {returncode}" + (f": {_one_line(tail[-1])}" if tail else "")


def _finish(running: Running) -> Outcome:
    running.log.close()
    job, returncode = running.job, running.process.returncode
    minutes = (time.monotonic() - running.started) / 60
    how = "resumed" if running.resumed else "ran"
    try:
        record = _read_record(job)
    except RecordError as error:
        return Outcome(job, "failed", how, error=str(error), wall_minutes=minutes, slot=running.slot)
    if record is not None and record.get("status") == "diverged":  # a result too, never a gap
        return Outcome(job, "done", "diverged", wall_minutes=minutes, record=record, slot=running.slot)
    if returncode == 0 and record is not None:
        return Outcome(job, "done", how, wall_minutes=minutes, record=record, slot=running.slot)
    if returncode == 0 and (job.out_dir / "checkpoint.pt").exists():
        return Outcome(job, "remaining", "stopped, checkpointed", wall_minutes=minutes, slot=running.slot)
    if returncode == 0:
        return Outcome(job, "failed", how, error="the notebook ran but left no record.json nor checkpoint.pt",
                       wall_minutes=minutes, slot=running.slot)
    return Outcome(job, "failed", how, error=_error_line(job, returncode), wall_minutes=minutes,
                   slot=running.slot)


def _stop(running: Running, grace_s: float = 60.0) -> Outcome:
    """Stop a job: ask it to checkpoint and exit at its next step (`STOP_REQUEST`), and end its
    process only if it has not within `grace_s` (under MPS a killed process can take the other
    jobs on its GPU down with it). Its checkpoint keeps it resumable."""
    (running.job.out_dir / STOP_REQUEST).touch()
    try:
        running.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        running.process.terminate()
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()
    running.log.close()
    return Outcome(running.job, "remaining", "interrupted",
                   wall_minutes=(time.monotonic() - running.started) / 60, slot=running.slot)


class LiveView:
    """One line per running job with its elapsed time and epoch, redrawn in place on a
    terminal; plain lines when a job starts or ends otherwise."""

    def __init__(self, stream: TextIO, total: int):
        self.stream, self.total, self.tty, self.drawn = stream, total, stream.isatty(), 0

    def event(self, text: str) -> None:
        self._erase()
        print(text, file=self.stream, flush=True)

    def tick(self, running: list[Running], counts: dict[str, int]) -> None:
        if not self.tty:
            return
        self._erase()
        lines = [f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
                 f"{len(running)} running, {counts.get('pending', 0)} pending of {self.total}"]
        for item in running:
            elapsed = int(time.monotonic() - item.started)
            log = item.job.out_dir / "log.jsonl"
            epochs = len(log.read_text().splitlines()) if log.exists() else 0
            lines.append(f"  [{item.slot}] {item.job.name}  {elapsed // 60}m{elapsed % 60:02d}s  "
                         f"epoch {epochs}/{item.job.cfg.train.epochs}{'  (resumed)' if item.resumed else ''}")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.drawn = len(lines)

    def _erase(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0


def run_jobs(jobs: list[Job], *, results_dir: Path | None = None, notebooks_dir: Path | None = None,
             repeats_dir: Path | None = None, gpus: list[int] = (), jobs_per_gpu: int = 1, max_minutes: float | None = None,
             deadline_minutes: float | None = None, data_dir: Path | None = None,
             compile_mode: str = "auto", carry_limit_mb: float | None = None,
             hold_judgement_while: Path | None = None,
             stream: TextIO | None = None, poll_s: float = 0.5) -> list[Outcome]:
    """Run every job not finished yet, `jobs_per_gpu` at a time on each GPU (one at a time on
    the CPU when `gpus` is empty); a failing job does not stop the others. Ctrl-C stops the
    running jobs, which stay resumable. With several jobs a GPU, NVIDIA MPS runs them side by
    side where its control daemon can be started (`mps_daemon`).

    `deadline_minutes` bounds the whole batch (say, a lease on a machine): every job gets at
    most what is left of it as its `max_minutes`, so each stops with a fresh checkpoint in
    time, and no job starts in its last minute. With `carry_limit_mb` as well, a job projected
    to miss the deadline whose weights are over that size (they cannot leave the machine) is
    stopped early, so the jobs beside it get its share of the GPU (`rtlib.deadline`). While the
    file `hold_judgement_while` exists, another process shares the GPU for a while (the batch's
    GPU tests): no job is judged on the paces it makes meanwhile (`_Pacing`).

    A repeat (`Job.repeat`) keeps its record and notebook in `repeats_dir` (and the notebooks
    folder beside it) instead of `results_dir`: a second run never replaces the first."""
    view = LiveView(stream or sys.stdout, len(jobs))
    with mps_daemon(enabled=bool(gpus) and jobs_per_gpu > 1, log=view.event):
        deadline = None if deadline_minutes is None else time.monotonic() + 60 * deadline_minutes
        return _run_jobs(jobs, results_dir=results_dir, notebooks_dir=notebooks_dir,
                         repeats_dir=repeats_dir, gpus=gpus,
                         jobs_per_gpu=jobs_per_gpu, max_minutes=max_minutes, deadline=deadline,
                         data_dir=data_dir, compile_mode=compile_mode, view=view, poll_s=poll_s,
                         carry_limit_mb=carry_limit_mb, hold_judgement_while=hold_judgement_while)


@contextlib.contextmanager
def mps_daemon(enabled: bool, log: Callable[[str], None] = print):
    """Start an NVIDIA MPS control daemon of our own for the jobs started inside (they inherit
    its pipe folder through the environment), and quit it after. Without the daemon's binary,
    or when it cannot start, the jobs share the GPU by time-slicing, as without MPS."""
    binary = shutil.which("nvidia-cuda-mps-control")
    running = os.environ.get("CUDA_MPS_PIPE_DIRECTORY")
    if enabled and running and Path(running).is_dir() and any(Path(running).iterdir()):
        log(f"MPS: using the control daemon already running (pipe folder {running})")
        yield True
        return
    if not enabled or binary is None:
        if enabled:
            log("MPS: nvidia-cuda-mps-control not found; jobs share each GPU by time-slicing")
        yield False
        return
    root = Path(tempfile.mkdtemp(prefix="rtlib-mps-"))
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(root / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(root / "log")}
    for folder in env.values():
        Path(folder).mkdir()
    started = subprocess.run([binary, "-d"], env={**os.environ, **env}, capture_output=True, text=True)
    if started.returncode != 0:
        log(f"MPS: the control daemon did not start ({_one_line(started.stderr) or started.returncode}); "
            "jobs share each GPU by time-slicing")
        yield False
        return
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    log(f"MPS: control daemon started (pipe folder {env['CUDA_MPS_PIPE_DIRECTORY']})")
    try:
        yield True
    finally:
        subprocess.run([binary], input="quit\n", env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=60)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        log("MPS: control daemon stopped")


# A job that fails with one of these most likely failed for a cause outside its own settings:
# a GPU fault from a neighbour (under MPS one client's crash takes the others down with it,
# "unspecified launch failure"), or a Jupyter kernel that died or did not answer before it started
# (seen with five, and four, jobs starting at once under MPS: batches y and ak).
TRANSIENT_FAULTS = ("CUDA error:", "AcceleratorError", "Kernel died before replying to kernel_info",
                    "Kernel didn't respond in")
TRANSIENT_FAULT_RETRIES = 1
PROGRESS_EVERY_S = 120.0   # how often a runner with a deadline says how its jobs pace
JUDGE_EVERY_S = 5.0        # how often it reads its jobs' logs (an epoch takes seconds at least)


def _retry_after_transient_fault(outcome: "Outcome", retries: Counter) -> bool:
    """Whether a failed job goes back to the queue (it resumes from its last checkpoint, if any)."""
    if outcome.status != "failed" or not any(fault in outcome.error for fault in TRANSIENT_FAULTS):
        return False
    retries[outcome.job.name] += 1
    return retries[outcome.job.name] <= TRANSIENT_FAULT_RETRIES


def _job_minutes(max_minutes: float | None, deadline: float | None) -> float | None:
    """A new job's time budget: `max_minutes`, cut to what is left before `deadline`."""
    if deadline is None:
        return max_minutes
    left = (deadline - time.monotonic()) / 60
    return left if max_minutes is None else min(max_minutes, left)


def _run_jobs(jobs: list[Job], *, results_dir, notebooks_dir, gpus, jobs_per_gpu, max_minutes, deadline,
              data_dir, compile_mode, view: "LiveView", poll_s: float, carry_limit_mb: float | None = None,
              repeats_dir: Path | None = None, hold_judgement_while: Path | None = None) -> list[Outcome]:
    if not RUN_NOTEBOOK.exists():
        raise FileNotFoundError(f"{RUN_NOTEBOOK} is missing: run `jupytext --sync book/run.md` first")
    slots = [(f"gpu{gpu}" + (f"/{k + 1}" if jobs_per_gpu > 1 else ""), gpu)
             for gpu in gpus for k in range(jobs_per_gpu)] or [("cpu", None)]
    def kept_in(job: Job) -> tuple[Path | None, Path | None]:
        if not job.repeat:
            return results_dir, notebooks_dir
        return repeats_dir, (notebooks_dir_for(repeats_dir) if repeats_dir else None)

    outcomes: dict[str, Outcome] = {}
    pending: deque[Job] = deque()
    for job in jobs:
        before = _finished_before(job, kept_in(job)[0])
        if before is None:
            pending.append(job)
        else:
            outcomes[job.name] = before
            _keep_results(before, *kept_in(job), view)
    view.event(f"{len(jobs)} jobs: {len(outcomes)} finished before, {len(pending)} to run on "
               f"{'GPU ' + ','.join(map(str, gpus)) if gpus else 'CPU'}")
    running: dict[tuple[str, int | None], Running] = {}
    retries: Counter = Counter()
    pacing = _Pacing(deadline, carry_limit_mb, hold_judgement_while)
    claims = _claim_all(list(pending))
    handlers = _interrupt_on((signal.SIGTERM, signal.SIGHUP))
    try:
        while pending or running:
            budget = _job_minutes(max_minutes, deadline)
            if deadline is not None and deadline - time.monotonic() < 60 and pending:
                view.event(f"deadline: {len(pending)} jobs not started (less than a minute left)")
                while pending:
                    job = pending.popleft()
                    outcomes[job.name] = Outcome(job, "remaining", "not started")
            for slot in slots:
                if slot not in running:
                    _skip_unstartable(pending, slot[0], pacing, outcomes, view)
                if slot not in running and pending:
                    job = pending.popleft()
                    params = job.parameters(results_dir=kept_in(job)[0], max_minutes=budget,
                                            data_dir=data_dir, device="cpu" if slot[1] is None else "auto",
                                            compile_mode=compile_mode)
                    running[slot] = _start(job, slot, params, threads_share=len(slots))
                    view.event(f"start  [{running[slot].slot}] {job.name}"
                               f"{' (resuming)' if running[slot].resumed else ''}")
            for slot, item in list(running.items()):
                if item.process.poll() is not None:
                    outcome = _finish(running.pop(slot))
                    if _retry_after_transient_fault(outcome, retries):
                        pending.appendleft(item.job)
                        view.event(f"retry  [{outcome.slot}] {item.job.name} after a transient fault, from its "
                                   f"last checkpoint if any: {outcome.error[:120]}")
                        continue
                    outcomes[item.job.name] = outcome
                    _keep_results(outcome, *kept_in(item.job), view)
                    view.event(f"{outcome.status:<6} [{outcome.slot}] {item.job.name} "
                               f"{outcome.wall_minutes:.1f} min"
                               f"{': ' + outcome.error if outcome.error else ''}")
            pacing.watch(running.values(), view)
            counts = Counter(outcome.status for outcome in outcomes.values())
            view.tick(list(running.values()), {**counts, "pending": len(pending)})
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        view.event("interrupted: asking the running jobs to checkpoint and stop (their checkpoints keep them "
                   "resumable)")
        for item in running.values():
            (item.job.out_dir / STOP_REQUEST).touch()
        for slot, item in list(running.items()):
            outcomes[item.job.name] = _stop(running.pop(slot))
        for job in pending:
            outcomes[job.name] = Outcome(job, "remaining", "not started")
        raise KeyboardInterruptWithOutcomes([outcomes[job.name] for job in jobs])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        claims.close()
    return [outcomes[job.name] for job in jobs]


def _skip_unstartable(pending: deque, slot: str, pacing: "_Pacing", outcomes: dict, view: "LiveView") -> None:
    """Mark the jobs at the head of `pending` that `pacing` says would miss the deadline as not
    started, until one would not."""
    while pending and (why := pacing.would_miss(pending[0])):
        job = pending.popleft()
        outcomes[job.name] = Outcome(job, "remaining", "not started", slot=slot)
        view.event(f"skip   [{slot}] {job.name}: {why}")


class _Pacing:
    """The runner's side of `rtlib.deadline`: which epochs of each running job were timed at
    the current mix, which jobs were already asked to stop, and when to say how they pace.

    While the file `hold_while` exists, a process outside the runner shares the GPU for a while:
    its paces are shown but judge nothing, neither a stop nor a skip, and once the file is gone
    every job is timed afresh. In batch ar (results/batches/2026-12-07_h100_ar.json) the GPU
    tests beside a PTB-word RNN took it from 7.5 to 14.5 s an epoch for a few minutes, and the
    runner stopped a job that at its own pace would have finished."""

    def __init__(self, deadline: float | None, carry_limit_mb: float | None, hold_while: Path | None = None):
        self.deadline, self.carry_limit_mb, self.hold_while = deadline, carry_limit_mb, hold_while
        self.mix: frozenset[str] = frozenset()
        self.since: dict[str, int] = {}
        self.asked: set[str] = set()
        self.next_progress = time.monotonic() + PROGRESS_EVERY_S
        self.next_judgement = 0.0
        self.seen: dict[tuple[str, str], Pace] = {}  # (task, model) -> its last measured pace

    def would_miss(self, job: Job) -> str | None:
        """Why `job` should not start (`rtlib.deadline.unstartable`), or None."""
        if self.deadline is None or self.carry_limit_mb is None:
            return None
        seconds_left, limit = self.deadline - time.monotonic(), int(self.carry_limit_mb * 1e6)
        late = unstartable(job.name, job.cfg.train.epochs, self.seen.get((job.cfg.task, job.cfg.model)),
                           seconds_left, limit)
        return None if late is None else (f"not started: at the pace of its task and model here, "
                                          f"{verdict(late, seconds_left, limit)}")

    def watch(self, running: Iterable[Running], view: "LiveView") -> None:
        """With a deadline: every `PROGRESS_EVERY_S` a line per job on its pace, and with a carry
        limit, the late job to stop (`rtlib.deadline.late_job`)."""
        if self.deadline is None or time.monotonic() < self.next_judgement:
            return
        self.next_judgement = time.monotonic() + JUDGE_EVERY_S
        running = [item for item in running if item.job.name not in self.asked]
        held = self.hold_while is not None and self.hold_while.exists()
        mix = frozenset(item.job.name for item in running) | ({f"while {self.hold_while}"} if held else set())
        if mix != self.mix:  # a job started or ended: time every job again, from its next epoch
            self.mix = mix
            self.since = {item.job.name: len(epochs_logged(item.job.out_dir)) + 1 for item in running}
        paces = [read_pace(item.job.name, item.job.out_dir, item.job.cfg.train.epochs,
                           self.since[item.job.name]) for item in running]
        if not held:
            self.seen.update({(item.job.cfg.task, item.job.cfg.model): pace for item, pace in zip(running, paces)
                              if pace.seconds_per_epoch is not None})
        seconds_left = self.deadline - time.monotonic()
        if running and time.monotonic() >= self.next_progress:
            self.next_progress = time.monotonic() + PROGRESS_EVERY_S
            for item, pace in zip(running, paces):
                view.event(f"pace   [{item.slot}] {progress(pace, seconds_left)}")
        if self.carry_limit_mb is None or held:
            return
        limit = int(self.carry_limit_mb * 1e6)
        late = late_job(paces, seconds_left, limit)
        if late is None:
            return
        item = next(item for item in running if item.job.name == late.run_id)
        (item.job.out_dir / STOP_REQUEST).touch()
        self.asked.add(late.run_id)
        view.event(f"stop   [{item.slot}] {late.run_id}: {verdict(late, seconds_left, limit)}")


def _interrupt_on(signals) -> dict:
    """Make `signals` (a scheduler's SIGTERM, a closed terminal's SIGHUP) act as Ctrl-C, so the
    runner stops its jobs before it goes. Returns the handlers to restore."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    try:
        return {sig: signal.signal(sig, interrupt) for sig in signals}
    except ValueError:  # not the main thread: leave the handlers alone
        return {}


class KeyboardInterruptWithOutcomes(KeyboardInterrupt):
    def __init__(self, outcomes: list[Outcome]):
        super().__init__("interrupted")
        self.outcomes = outcomes


def summary_table(outcomes: list[Outcome]) -> pd.DataFrame:
    """One row per job: status, how, minutes this session, GPU-minutes of the run, test metric, error."""
    rows = []
    for outcome in outcomes:
        record = outcome.record or {}
        rows.append(dict(status=outcome.status, run_id=outcome.job.name, how=outcome.how,
                         minutes=round(outcome.wall_minutes, 2),
                         gpu_minutes=round(record["gpu_minutes"], 2) if record else None,
                         test_metric=round(record["test_metric"], 4)
                         if record.get("test_metric") is not None else None,
                         error=outcome.error))
    columns = ["status", "run_id", "how", "minutes", "gpu_minutes", "test_metric", "error"]
    return pd.DataFrame(rows, columns=columns)


def format_summary(outcomes: list[Outcome]) -> str:
    table = summary_table(outcomes)
    counts = table["status"].value_counts()
    skipped = int((table["how"] == "skipped").sum())
    gpu = sum((o.record or {}).get("gpu_minutes", 0.0) for o in outcomes)
    text = table.astype(object).where(table.notna(), "").astype(str)
    widths = {column: max([len(column), *text[column].map(len)]) for column in text}
    lines = ["  ".join(column.ljust(widths[column]) for column in text)]
    lines += ["  ".join(value.ljust(widths[column]) for column, value in row.items()).rstrip()
              for _, row in text.iterrows()]
    body = "\n".join(lines) if len(table) else "(no jobs)"
    return (f"{body}\nsummary: {counts.get('done', 0)} done ({skipped} finished before), "
            f"{counts.get('failed', 0)} failed, {counts.get('remaining', 0)} remaining; "
            f"{gpu:.1f} GPU-minutes in the finished records")


def exit_code(outcomes: list[Outcome]) -> int:
    """0: all done; 1: a job failed; 3: none failed but some remain (re-issue the command)."""
    statuses = {outcome.status for outcome in outcomes}
    return EXIT_FAILED if "failed" in statuses else EXIT_REMAINING if "remaining" in statuses else 0


# ---------------------------------------------------------------- the command line

def default_gpus() -> list[int]:
    import torch
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def parse_gpus(text: str) -> list[int]:
    """'0,1,3' -> [0, 1, 3]; '' -> [] (the CPU)."""
    import argparse
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        gpus = [-1]
    if any(gpu < 0 for gpu in gpus):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of GPU indices "
                                         "such as 0,1,2,3 ('' for the CPU)")
    return gpus


def positive_int(text: str) -> int:
    import argparse
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return int(text)


def non_negative_float(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def run_reproduce(args, stream: TextIO | None = None) -> int:
    """`python -m rtlib reproduce` (arguments as `rtlib.__main__` parses them)."""
    stream = stream or sys.stdout
    profile = args.profile
    if os.environ.get("RTLIB_SMOKE") == "1" and profile != "smoke":
        print(f"RTLIB_SMOKE=1: profile {profile!r} -> 'smoke'", file=stream)
        profile = "smoke"
    if args.table is None and args.cells is None:
        raise ValueError("no jobs named: give --table (with --models) or --cells")
    if args.table is not None and args.cells is not None:
        raise ValueError(f"--table {' '.join(args.table)} and --cells together: give one of them")
    if args.cells and args.ablations:
        raise ValueError("--ablations runs whole tables: give --table, not --cells")
    tables = [] if args.table is None else (
        list(TABLE_TASKS) if "all" in args.table else list(dict.fromkeys(int(t) for t in args.table)))
    # absolute paths: the jobs run from the repo root, whatever the caller's folder
    out = Path(args.out).resolve() if args.out else RUNS_DIR
    results_dir = Path(args.results).resolve() if args.results else RECORDS_DIR / profile
    notebooks_dir = Path(args.notebooks).resolve() if args.notebooks else notebooks_dir_for(results_dir)
    repeats_dir = Path(args.repeats).resolve() if args.repeats else REPEATS_DIR / profile
    notes: list[str] = []
    finished = finished_records(out, results_dir)
    if args.ablations:
        jobs = ablation_jobs(profile, tables, out)
    elif args.cells:
        jobs = cell_jobs(args.cells, profile, args.seeds, args.lrs, args.variants or [""], out, notes, finished)
    else:
        jobs = expand_jobs(tables, args.models or list(MODELS), profile, args.seeds, args.lrs,
                           args.variants or [""], out, notes, finished)
    data_dir = Path(args.data_dir).resolve() if args.data_dir else None
    to_run = [job for job in jobs if (_finished_before(job, repeats_dir) is None if job.repeat
                                      else not _is_finished(job, finished))]
    if args.plan:  # what is still missing, as shell lines
        print(f"# {len(to_run)} of {len(jobs)} jobs have no record yet", file=stream)
        for job in to_run:
            if job.run_id in finished and not job.repeat:
                print(f"# {job.run_id}: its record was made with other settings (stale)", file=stream)
        for note in notes:
            print(f"# {note}", file=stream)
        if profile == "paper" and to_run:
            print(_plan_minutes(to_run, data_dir), file=stream)
        for line in plan_commands(to_run, results_dir=results_dir, max_minutes=args.max_minutes,
                                  data_dir=data_dir, compile_mode=args.compile, repeats_dir=repeats_dir):
            print(line, file=stream)
        return 0
    for note in notes:
        print(note, file=stream)
    gpus = args.gpus if args.gpus is not None else default_gpus()
    available = default_gpus()
    missing = sorted(set(gpus) - set(available))
    if missing:
        raise ValueError(f"--gpus {','.join(map(str, gpus))}: GPU {missing[0]} is not on this machine, "
                         f"which has {f'GPUs {available}' if available else 'no GPU'} ('' runs on the CPU)")
    if args.carry_limit_mb is not None and args.deadline_minutes is None:
        raise ValueError(f"--carry-limit-mb {args.carry_limit_mb:g} needs --deadline-minutes: a job is "
                         "stopped early only when it is projected to miss the batch's deadline")
    if args.hold_judgement_while is not None and args.carry_limit_mb is None:
        raise ValueError(f"--hold-judgement-while {args.hold_judgement_while} needs --carry-limit-mb: "
                         "without it no job is judged late")
    fetch_tasks(sorted({job.cfg.task for job in to_run}), data_dir)  # a missing data set stops us now
    try:
        outcomes = run_jobs(jobs, results_dir=results_dir, notebooks_dir=notebooks_dir,
                            repeats_dir=repeats_dir, gpus=gpus,
                            jobs_per_gpu=args.jobs_per_gpu, max_minutes=args.max_minutes,
                            deadline_minutes=args.deadline_minutes, data_dir=data_dir,
                            compile_mode=args.compile, carry_limit_mb=args.carry_limit_mb,
                            hold_judgement_while=args.hold_judgement_while, stream=stream)
    except KeyboardInterruptWithOutcomes as interrupted:
        print(format_summary(interrupted.outcomes), file=stream)
        return EXIT_INTERRUPTED
    print(format_summary(outcomes), file=stream)
    return exit_code(outcomes)

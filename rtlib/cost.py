"""What the paper-profile sweep cost and what is left, in GPU-minutes: the GPU batch logs
(``results/batches/``), the runs they left unfinished, the benchmarks' step times
(``results/bench/``) and what the released scripts' engine would take for the same runs.

The report's *Cost* section reads it (`rtlib.report`), and so does the sweep's planner
(`rtlib.reproduce --plan`), which packs a lease with each job's measured minutes.
"""
from __future__ import annotations

import collections
import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bench_results import bench_model
from .configs import MODELS, NO_RELEASED_CODE, TABLE_TASKS, run_config
from .paths import BATCHES_DIR, REPEATS_DIR, SUPERSEDED_DIR
from .results import (EVIDENCE_PROFILE, HTMLTable, done_runs, evidence, join_words, load_records, model_name, plural,
                      variant_name)
from .run_folder import run_id_fields, variant_slug
from .runtime import padded_width
from .tables import paper_protocol
from .tasks import TASKS


def batch_order(path: Path) -> tuple[str, int, str]:
    """A batch log's place in time: its name is DATE_GPU[_LETTERS], and the letters run a, b, ...,
    z, aa, ab, ... across days (2026-12-06_h100_z came before 2026-12-06_h100_aa)."""
    date, *rest = path.stem.split("_")
    letters = rest[1] if len(rest) > 1 else ""
    return date, len(letters), letters


def load_batches(folder: str | Path = BATCHES_DIR) -> list[dict[str, Any]]:
    """The GPU batch logs, in the order they ran: what each batch ran, for how long, and what it lost."""
    return [json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"), key=batch_order)]


def batch_line(batch: dict[str, Any], records: pd.DataFrame | None = None) -> str:
    """One batch log in a sentence: when, at which commit, how long, what finished (and what of
    it diverged), what was lost and why, how the jobs shared the GPU. With `records`, a run that a
    later call resumed from this batch's checkpoint counts as resumed, not as lost."""
    lost, kept = unfinished_lost([batch], records), unfinished_waiting([batch], records)
    resumed = len(unfinished_runs([batch])) - len(lost) - len(kept)
    reasons = collections.Counter(run["why"] for run in lost).most_common()
    not_started = batch.get("not_started", [])
    broke = sum(run.get("status") == "diverged" for run in batch["finished"])
    counts = (f"{plural(len(batch['finished']) - broke, 'run')} finished, "
              + (f"{broke} diverged, " if broke else "") +
              f"{len(not_started) if isinstance(not_started, list) else not_started} not started, "
              + (f"{len(kept)} stopped with a checkpoint brought back to resume, " if kept else "")
              + (f"{resumed} stopped and resumed later from its checkpoint, " if resumed else "") +
              f"{len(lost)} lost" + (": " + "; ".join(f"{n} {why}" for why, n in reasons) if lost else ""))
    device = batch["device"]
    if device.startswith("not recorded"):  # no record came back to name the GPU
        device = "a lent GPU that no record came back to name"
    return (f"Batch of {batch['date']} at commit {batch['git_commit']} on {device}, "
            f"{batch['deadline_minutes']:g}-minute deadline, machine held "
            f"{batch.get('machine_held_minutes', float('nan')):.1f} minutes: {counts}. "
            f"Sharing: {batch.get('sharing', 'not recorded')}.")


@functools.lru_cache(maxsize=None)
def train_steps(task: str, model: str, data_dir: str | None = None) -> int:
    """Training steps in one epoch of the paper profile."""
    from .data import load_mnist, load_music, load_ptb

    train = run_config(task, model, "paper").train
    kind = TASKS[task].kind
    if kind == "classify":
        return math.ceil(len(load_mnist("train", data_dir)[1]) / train.batch_size)
    if kind == "music":
        return math.ceil(sum(len(t) > 1 for t in load_music(task, "train", data_dir)) / train.batch_size)
    corpus = load_ptb("char" if task == "ptb-char" else "word", data_dir)
    return len(paper_protocol(task, model, data_dir=data_dir).window_starts(len(corpus.train) // train.batch_size))


def reference_ms(bench: list[dict], device: str) -> dict[tuple[int, str], float]:
    """(table, model) -> ms a training step of the released scripts' engine (the bench's
    `reference` variant: `rtlib.bench.released_variant`) took on `device`, over every benchmark
    of that device; a row timed by several, the latest benchmark's (by its date). An entry
    without a model is the R-Transformer's, from before the bench timed the others; the
    Transformer has no reference (`rtlib.configs.NO_RELEASED_CODE`)."""
    ms = {}
    for data, entry, variant, median_ms in _step_timings(sorted(bench, key=lambda data: data.get("date", ""))):
        if data.get("device") == device and variant == "reference":
            ms[entry["table"], bench_model(entry)] = median_ms
    return ms


def _step_timings(bench: list[dict]):
    """(benchmark, entry, engine mode, median ms a step) for every mode a benchmark timed."""
    for data in bench:
        tables = data.get("tables")
        for entry in tables if isinstance(tables, list) else []:
            for variant, timing in entry.get("variants", {}).items():
                if "median_ms" in timing:
                    yield data, entry, variant, timing["median_ms"]


def reference_spread(bench: list[dict]) -> dict[str, Any] | None:
    """Across rows whose released-engine step the bench timed more than once on one GPU model
    (on different hosts, or days): the largest ratio of the slowest timing to the fastest, with
    its `device`, `table`, `model`, the number of `rows` timed more than once, and `fast_ratio`,
    the largest such ratio of any other engine mode timed as often on those rows; None where no
    row was timed twice."""
    timings = collections.defaultdict(lambda: collections.defaultdict(list))
    for data, entry, variant, median_ms in _step_timings(bench):
        timings[data.get("device"), entry["table"], bench_model(entry)][variant].append(median_ms)

    def ratio(ms: list[float]) -> float:
        return max(ms) / min(ms)
    repeated = {key: modes for key, modes in timings.items() if len(modes.get("reference", [])) > 1}
    if not repeated:
        return None
    (device, table, model), modes = max(repeated.items(), key=lambda item: ratio(item[1]["reference"]))
    fast = [ratio(ms) for modes in repeated.values() for variant, ms in modes.items()
            if variant != "reference" and len(ms) > 1]
    return dict(device=device, table=table, model=model, ratio=ratio(modes["reference"]), rows=len(repeated),
                fast_ratio=max(fast) if fast else math.nan)


def released_prices(records: pd.DataFrame, bench: list[dict], data_dir: str | None = None) -> pd.DataFrame:
    """One row per table x model with finished paper-profile runs: its `runs`; the `priced` ones,
    those whose row the bench timed (`reference_ms`) on the GPU that ran them; what the released
    scripts' engine would take for their training steps (`released_minutes`, no evaluation) and
    their own GPU-minutes (`our_minutes`); and why the others are not priced (`unpriced_why`,
    '' where none is left: 'no released code', or 'not benchmarked on' the GPUs that ran them)."""
    done = evidence(records)
    devices = sorted(set(done["device"])) if len(done) else []
    ms = {device: reference_ms(bench, device) for device in devices}
    rows = []
    for table, task in TABLE_TASKS.items():
        for model in MODELS:
            runs = done[(done["task"] == task) & (done["model"] == model)] if len(done) else done
            if not len(runs):
                continue
            timed = runs["device"].map(lambda device: (table, model) in ms[device])
            priced, left = runs[timed], runs[~timed]
            released = sum(run.epochs_run * train_steps(task, model, data_dir) * ms[run.device][table, model] / 60_000
                           for run in priced.itertuples()) if len(priced) else math.nan
            if not len(left):
                why = ""
            elif model in NO_RELEASED_CODE:
                why = "no released code"
            else:
                why = f"not benchmarked on {join_words(sorted(set(left['device'])))}"
            rows.append(dict(table=table, task=task, model=model, runs=len(runs), priced=len(priced),
                             released_minutes=float(released), our_minutes=float(priced["gpu_minutes"].sum()),
                             unpriced=len(left), unpriced_why=why))
    columns = ["table", "task", "model", "runs", "priced", "released_minutes", "our_minutes", "unpriced", "unpriced_why"]
    return pd.DataFrame(rows, columns=columns)


def _rows_text(prices: pd.DataFrame, runs: str, tables: bool = True) -> str:
    """'R-Transformer on Tables 1, 2 and 4, TCN on Table 1' (without `tables`: 'R-Transformer,
    TCN'): the rows of `prices` with `runs` > 0."""
    rows = prices[prices[runs] > 0]
    named = []
    for model in dict.fromkeys(rows["model"]):
        numbers = [str(table) for table in rows[rows["model"] == model]["table"]]
        named.append(model_name(model) + (f" on Table{'s' if len(numbers) > 1 else ''} {join_words(numbers)}"
                                          if tables else ""))
    return ", ".join(named)


def unpriced_text(prices: pd.DataFrame, tables: bool = True) -> str:
    """'Transformer on Tables 1 and 2 (no released code); TCN on Table 1 (not benchmarked on
    NVIDIA H200)': the rows with runs left unpriced, by reason; '' where every run is priced."""
    left = prices[prices["unpriced"] > 0]
    return "; ".join(f"{_rows_text(rows, 'unpriced', tables)} ({why})"
                     for why, rows in left.groupby("unpriced_why", sort=False))


def released_comparison(records: pd.DataFrame, bench: list[dict], data_dir: str | None = None) -> str:
    """Markdown: what the released scripts' engine would take for the finished paper-profile runs
    it can be timed on, against ours for the same runs, and which rows are not priced and why."""
    prices = released_prices(records, bench, data_dir)
    if not len(prices):
        return "**Released code.** No paper-profile run has finished yet."
    priced, left = prices[prices["priced"] > 0], unpriced_text(prices)
    not_priced = f" Not priced: {left}." if left else " Every finished run is priced."
    if not len(priced):
        return f"**Released code.** No finished paper-profile run can be timed at the released code's speed yet.{not_priced}"
    released, ours = priced["released_minutes"].sum(), priced["our_minutes"].sum()
    spread = reference_spread(bench)
    caveat = ""
    if spread and spread["ratio"] >= 1.1:
        caveat = (f" These minutes are good to a factor of {spread['ratio']:.1f}: the released engine's step of one row, "
                  f"timed by two benchmarks on the same GPU model (two leases: two hosts), differed that much ({model_name(spread['model'])}, Table "
                  f"{spread['table']}, {spread['device']}, the widest of {plural(spread['rows'], 'row')} timed more "
                  "than once; the latest timing prices)")
        if np.isfinite(spread["fast_ratio"]):
            caveat += (f", while our fastest mode on the same rows differed by at most {spread['fast_ratio']:.2f}×, "
                       "which points at the host's CPU, from which the eager engine launches every kernel, "
                       "not at the GPU")
        caveat += "."
    recurrent = [model_name(m) for m in ("rnn", "gru", "lstm") if m in set(priced["model"])]
    stand_in = (f" (for the {join_words(recurrent)} rows, which have no released code, the plain PyTorch "
                "engine the TCN suite runs its models with)" if recurrent else "")
    return (f"**Released code.** The released code{stand_in} would take {released:.1f} GPU-minutes for the "
            f"{plural(int(priced['priced'].sum()), 'run')} it can be timed on (rows: {_rows_text(priced, 'priced')}), "
            f"against our {ours:.1f} for the same runs: {released / ours:.1f} times ours, for its training steps "
            "alone against our whole runs, evaluation included." + caveat + not_priced)


def unfinished_runs(batches: list[dict], records: pd.DataFrame | None = None) -> list[dict]:
    """Every run a batch left without a record, each with `why`; a run left twice from scratch
    is listed twice. A run whose checkpoint came back and that a later batch left again further
    on is listed once, as that batch left it: its log's minutes count from the run's first epoch
    (batches af and ag left the Table 4 grid point lr 3 at epochs 18 and 35). With `records`, a
    run whose checkpoint a later session resumed from is left out: its record's GPU-minutes hold
    that batch's time too."""
    resumed = set()
    if records is not None and len(records):
        resumed = {(row.run_id, session["from_epoch"]) for row in records.itertuples()
                   if isinstance(row.sessions, list) for session in row.sessions}
    left = [{"why": "stopped at the batch's deadline", **run} for batch in batches
            for run in batch.get("stopped_at_the_deadline", [])] + \
           [run for batch in batches for run in batch.get("lost_runs", [])]

    def carried_further(run: dict) -> bool:
        return run.get("checkpoint") == "brought back" and any(
            other["run_id"] == run["run_id"] and other.get("epochs", -1) > run.get("epochs", -1) for other in left)

    return [run for run in left
            if (run["run_id"], run.get("epochs", -1) + 1) not in resumed and not carried_further(run)]


def unfinished_lost(batches: list[dict], records: pd.DataFrame | None = None) -> list[dict]:
    """The unfinished runs whose work is gone: no checkpoint of theirs came back."""
    return [run for run in unfinished_runs(batches, records) if run.get("checkpoint") != "brought back"]


def unfinished_waiting(batches: list[dict], records: pd.DataFrame | None = None) -> list[dict]:
    """The unfinished runs whose checkpoint came back and waits for a later lease to resume it."""
    return [run for run in unfinished_runs(batches, records) if run.get("checkpoint") == "brought back"]


def waiting_text(waiting: list[dict]) -> str:
    one = len(waiting) == 1
    return (f"{plural(len(waiting), 'run')} {'waits' if one else 'wait'} to resume from "
            f"{'its checkpoint' if one else 'their checkpoints'}, brought back "
            f"({sum(run['job_minutes'] for run in waiting):.1f} GPU-minutes so far)")


def paper_records(folder: str | Path) -> pd.DataFrame:
    return load_records(folder, profiles=[EVIDENCE_PROFILE]) if Path(folder).is_dir() else pd.DataFrame()


def superseded_records(folder: str | Path = SUPERSEDED_DIR) -> pd.DataFrame:
    """The paper-profile runs, first runs and repeats, made with settings that configs.py no
    longer gives their run id (results/superseded/README.md says why): no table reads them, the
    cost counts them."""
    parts = [found.assign(made_again=again) for found, again in
             ((paper_records(Path(folder) / "records"), False),
              (paper_records(Path(folder) / "repeats" / "records"), True)) if len(found)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def ablation_records(records: pd.DataFrame) -> pd.DataFrame:
    """The paper-profile runs of an ablation (a variant) that ended, finished or diverged."""
    ended = done_runs(records)
    return ended[ended["variant"] != ""] if len(ended) else ended


def spent_by_table(records: pd.DataFrame, batches: list[dict], bench: list[dict], data_dir: str | None = None,
         repeats_dir: str | Path = REPEATS_DIR, superseded_dir: str | Path = SUPERSEDED_DIR) -> pd.DataFrame:
    """Per table and in all: paper-profile runs finished and their GPU-minutes (each job's own
    wall time; jobs that shared a GPU each count in full), runs stopped at a batch's deadline and
    lost, runs made a second time (for their weights), runs superseded by a change of settings,
    ablation runs, and what the released scripts' engine would take for the finished runs it can
    be timed on (`released_prices`: `priced_runs`, `released_minutes`, our `priced_minutes` for the
    same runs; `released_minutes` NaN where no run is priced), and the runs left unpriced."""
    done, ablated = evidence(records), ablation_records(records)
    lost, waiting = unfinished_lost(batches, records), unfinished_waiting(batches, records)
    again, replaced = paper_records(repeats_dir), superseded_records(superseded_dir)
    prices = released_prices(records, bench, data_dir)
    rows = []
    for table, task in TABLE_TASKS.items():
        runs = done[done["task"] == task] if len(done) else done
        varied = ablated[ablated["task"] == task] if len(ablated) else ablated
        priced = prices[(prices["table"] == table) & (prices["priced"] > 0)]
        gone = [run["job_minutes"] for run in lost if run["run_id"].startswith(f"{task}_")]
        kept = [run["job_minutes"] for run in waiting if run["run_id"].startswith(f"{task}_")]
        rows.append(dict(table=table, task=task, runs=len(runs), gpu_minutes=float(runs["gpu_minutes"].sum()),
                         priced_runs=int(priced["priced"].sum()), priced_minutes=float(priced["our_minutes"].sum()),
                         released_minutes=float(priced["released_minutes"].sum()) if len(priced) else math.nan,
                         unpriced_runs=int(prices[prices["table"] == table]["unpriced"].sum()),
                         lost_runs=len(gone), lost_minutes=float(sum(gone)),
                         waiting_runs=len(kept), waiting_minutes=float(sum(kept)),
                         repeat_minutes=float(again[again["task"] == task]["gpu_minutes"].sum()) if len(again) else 0.0,
                         superseded_runs=int((replaced["task"] == task).sum()) if len(replaced) else 0,
                         superseded_minutes=float(replaced[replaced["task"] == task]["gpu_minutes"].sum())
                         if len(replaced) else 0.0,
                         ablation_runs=len(varied), ablation_minutes=float(varied["gpu_minutes"].sum()) if len(varied) else 0.0))
    frame = pd.DataFrame(rows)
    total = frame.drop(columns=["task"]).sum(numeric_only=True, min_count=1)
    return pd.concat([frame, pd.DataFrame([{**total, "table": "all", "task": ""}])], ignore_index=True)


def fastest_minutes(batches: list[dict]) -> dict[tuple[str, str, str], float]:
    """(task, model, variant as the run id spells it) -> GPU-minutes of one paper-profile run at
    the fastest steady pace (seconds an epoch) any batch log measured for it: what a lease can
    hope for with the GPU as lightly shared as then, evaluation included."""
    fastest: dict[tuple[str, str, str], float] = {}
    for key, run, epochs in _batch_runs(batches):
        if run.get("seconds_per_epoch") is not None:
            fastest[key] = min(run["seconds_per_epoch"] * epochs / 60, fastest.get(key, math.inf))
    return fastest


def _batch_runs(batches: list[dict]):
    """(task, model, variant as the run id spells it), the batch log's entry and the paper
    profile's epochs, for every run a batch log lists as finished or left unfinished, in order."""
    for batch in batches:
        for run in batch.get("finished", []) + unfinished_runs([batch]):
            fields = run_id_fields(run["run_id"])
            key = fields["task"], fields["model"], fields["variant"]
            yield key, run, run_config(key[0], key[1], "paper").train.epochs


def minutes_per_run(records: pd.DataFrame, batches: list[dict]) -> dict[tuple[str, str, str], float]:
    """(task, model, variant as the run id spells it) -> GPU-minutes of one paper-profile run:
    the mean job time of its finished records, else seconds per epoch x epochs from a batch log
    that ran it part of the way, else, for a run stopped within its epochs before any was timed,
    its job minutes per epoch logged x epochs (compilation included, so an overestimate). A
    variant is priced by its own runs only: fp32 on seq-MNIST took 6 minutes for an epoch that
    bf16 trains in half a minute (results/batches/2026-12-06_h100_ab.json)."""
    first_epochs, paces = _batch_prices(batches)
    price = {**first_epochs, **paces}
    price.update(_record_prices(records))
    return price


def _batch_prices(batches: list[dict]) -> tuple[dict, dict]:
    """(prices from the logged minutes of runs stopped before any epoch was timed, prices from
    their timed seconds per epoch), by (task, model, variant slug)."""
    first_epochs, paces = {}, {}
    for key, run, epochs in _batch_runs(batches):
        if run.get("seconds_per_epoch") is not None:
            paces[key] = run["seconds_per_epoch"] * epochs / 60
        elif run.get("epochs") and run.get("job_minutes"):
            first_epochs[key] = run["job_minutes"] / run["epochs"] * epochs
    return first_epochs, paces


def _record_prices(records: pd.DataFrame) -> dict:
    done = evidence(records, variant=None)
    if not len(done):
        return {}
    done = done.assign(slug=done["variant"].map(variant_slug))
    return done.groupby(["task", "model", "slug"])["gpu_minutes"].mean().to_dict()


def rough_prices(records: pd.DataFrame, batches: list[dict]) -> set[tuple[str, str, str]]:
    """The keys `minutes_per_run` prices only from epochs that included compiling the step: an
    overestimate (Table 1's fp32 ablation: 6 minutes for its first epoch, 300 for the run at
    that pace, where its steps alone take 61)."""
    first_epochs, paces = _batch_prices(batches)
    return set(first_epochs) - set(paces) - set(_record_prices(records))


def step_timing(bench: list[dict], task: str, model: str, precision: str | None = None) -> dict[str, Any] | None:
    """The `bench --engine-modes` cell of (task, model) in `precision` (default: the row's own),
    with its file's ``device``, as the engine runs the row (`runs_as_configured`); None where
    the bench has none."""
    return next(_engine_cells(bench, task, model, precision), None)


def _engine_cells(bench: list[dict], task: str, model: str, precision: str | None):
    cfg = run_config(task, model, EVIDENCE_PROFILE)
    row = cfg.train.precision
    for data in bench:
        for entry in data.get("cells", []) if isinstance(data.get("cells"), list) else []:
            if ((entry.get("task"), entry.get("model")) == (task, model) and entry.get("fastest_correct")
                    and entry.get("precision", row) == (precision or row)  # cells without one timed the row's
                    and runs_as_configured(cfg, entry.get("model_variant", ""))):
                yield entry | {"device": data.get("device", "an unnamed GPU")}


def runs_as_configured(cfg, model_variant: str) -> bool:
    """Whether a bench cell's model variant computes what the engine runs for `cfg`'s row: none,
    or the hidden width the engine widens the row to on a GPU (`rtlib.padding`), which computes
    the same function."""
    if not model_variant:
        return True
    width = padded_width(cfg.model, getattr(cfg.backbone, "hidden_size", None))
    return width is not None and model_variant == f"hidden_size={width}"


def fastest_step_ms(bench: list[dict], task: str, model: str, precision: str | None = None) -> float:
    """The fastest training step any benchmark timed for (task, model) in `precision` (default:
    the row's), on any GPU: the step bench's (`bench --models ... --variants fastest`, steps alone)
    or an `--engine-modes` cell's (100-step epochs, whose checkpoint and small evaluation weigh
    more than in a real epoch); NaN where none did."""
    row = run_config(task, model, EVIDENCE_PROFILE).train.precision
    table = TASKS[task].table
    times = [entry["modes"][entry["fastest_correct"]]["ms_per_step"] for entry in _engine_cells(bench, task, model, precision)]
    for data in bench:
        for entry in data.get("tables", []) if isinstance(data.get("tables"), list) else []:
            if (entry.get("table"), bench_model(entry)) == (table, model) and entry.get("precision", row) == (precision or row):
                times += [timing["median_ms"] for variant, timing in entry["variants"].items()
                          if variant != "reference" and "median_ms" in timing]  # not one that failed
    return min(times, default=math.nan)


def step_minutes(bench: list[dict], task: str, model: str, data_dir: str | None = None,
                 precision: str | None = None) -> float:
    """Minutes of one paper-profile run's training steps alone (no evaluation, no other job on
    the GPU) at the fastest step a benchmark timed (`fastest_step_ms`), in `precision` (default:
    the row's): a floor under the run's job time; NaN where no benchmark timed one."""
    return steps_minutes(fastest_step_ms(bench, task, model, precision), task, model, data_dir)


LEASE_MINUTES = 30.0  # the longest a lent GPU machine is held (also a session's device-minutes)


def steps_floor(cfg, bench: list[dict], data_dir: str | None = None) -> float:
    """The minutes of a paper-profile run of `cfg`'s training steps alone at the fastest step a
    benchmark timed for its row in its precision (an ablation of the precision alone has its
    own): a floor under its job time. NaN for other variants, which change the computation, and
    where no benchmark or no data is at hand."""
    from .data.fetch import DataNotFoundError

    if cfg.variant and not _precision_variant(cfg):
        return math.nan
    try:
        return step_minutes(list(bench), cfg.task, cfg.model, data_dir, precision=cfg.train.precision)
    except DataNotFoundError:  # the steps of an epoch are counted on the data
        return math.nan


def steps_minutes(ms_per_step: float, task: str, model: str, data_dir: str | None = None) -> float:
    """Minutes of a paper-profile run's training steps at `ms_per_step`."""
    epochs = run_config(task, model, EVIDENCE_PROFILE).train.epochs
    return ms_per_step * train_steps(task, model, data_dir) * epochs / 60_000


def job_minutes(jobs, price: dict[tuple[str, str, str], float] | None = None, *,
                row_pace: bool = True) -> list[float]:
    """Each paper-profile job's GPU-minutes at the job times measured so far for its (task, model,
    variant) (`minutes_per_run` over the committed records and batch logs); with `row_pace`, a
    variant never timed at its row's time without the variant. NaN where neither is measured."""
    if price is None:
        price = minutes_per_run(load_records(), load_batches())

    def minutes(cfg) -> float:
        own = price.get((cfg.task, cfg.model, variant_slug(cfg.variant)), math.nan)
        return price.get((cfg.task, cfg.model, ""), math.nan) if math.isnan(own) and row_pace else own
    return [minutes(job.cfg) for job in jobs]


def remaining(records: pd.DataFrame, batches: list[dict] = (), bench: list[dict] = (),
              data_dir: str | None = None) -> pd.DataFrame:
    """The paper-profile sweep of `python -m rtlib reproduce --table all --seeds 3 --lrs sweep`
    plus `--ablations`, per table: runs planned, finished, left, and the GPU-minutes left at the
    job times measured so far for the same (task, model). Runs of models never run are
    `unpriced`; with `bench`, those it times get `floor_minutes` (`steps_floor`) instead. A
    variant is priced by its own runs, else by that floor (a precision alone), else at its row's
    job time: an fp32 ablation is never priced at its bf16 row's pace (Table 3's: 18.5 minutes,
    where its steps alone take 78)."""
    jobs, left = _sweep_jobs(records)
    price = minutes_per_run(records, list(batches))
    if bench:  # a run priced only by compiling epochs is priced at its benchmarked floor instead
        rough = rough_prices(records, list(batches))
        price = {key: minutes for key, minutes in price.items() if key not in rough}
    rows = []
    for table, task in TABLE_TASKS.items():
        mine = [job for job in jobs if job.cfg.task == task]
        its_left = [job for job in left if job.cfg.task == task]
        estimate, floor = _left_minutes(its_left, price, bench, data_dir)
        rows.append(dict(table=table, task=task, planned=len(mine), finished=len(mine) - len(its_left),
                         left=len(its_left), minutes_left=float(np.nansum(estimate)),
                         floored=int(np.isfinite(floor).sum()), floor_minutes=float(np.nansum(floor)),
                         unpriced=int((np.isnan(estimate) & np.isnan(floor)).sum())))
    return pd.DataFrame(rows)


def _sweep_jobs(records: pd.DataFrame) -> tuple[list, list]:
    """(every job of the paper-profile sweep and its ablations, those without a record yet)."""
    from .reproduce import ablation_jobs, expand_jobs

    tables = list(TABLE_TASKS)
    finished = {row.run_id: dict(config=row.config, best_valid_metric=row.best_valid_metric,
                                 status=row.status, lr=row.lr) for row in done_runs(records).itertuples()}
    jobs = expand_jobs(tables, list(MODELS), EVIDENCE_PROFILE, 3, "sweep", finished=finished)
    jobs += ablation_jobs(EVIDENCE_PROFILE, tables)
    return jobs, [job for job in jobs if not job.cfg.is_recorded_as(finished.get(job.run_id, {}).get("config"))]


def beyond_a_lease(records: pd.DataFrame, bench: list[dict], data_dir: str | None = None) -> list[tuple[Any, float]]:
    """(job, minutes) of each run left whose training steps alone (`steps_floor`) take longer
    than a lent machine is held (`LEASE_MINUTES`): it can finish only from checkpoints carried
    across leases."""
    floors = [(job, steps_floor(job.cfg, bench, data_dir)) for job in _sweep_jobs(records)[1]]
    return [(job, minutes) for job, minutes in floors if minutes > LEASE_MINUTES]


def job_words(job) -> str:
    """Words for a job: "Table 1's R-Transformer in fp32 (an ablation), seed 1111"."""
    variant = f" in {variant_name(job.cfg.variant)} (an ablation)" if job.cfg.variant else ""
    return f"Table {TASKS[job.cfg.task].table}'s {model_name(job.cfg.model)}{variant}, seed {job.cfg.train.seed}"


def _left_minutes(jobs, price: dict, bench: list[dict], data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, floor) of each job's GPU-minutes, NaN where it has none (`remaining`)."""
    own, row = job_minutes(jobs, price, row_pace=False), job_minutes(jobs, price)
    floor = [math.nan if not math.isnan(mine) or not bench else steps_floor(job.cfg, bench, data_dir)
             for job, mine in zip(jobs, own)]
    estimate = [mine if not math.isnan(mine) else its_row if math.isnan(low) and not _precision_variant(job.cfg)
                else math.nan for job, mine, its_row, low in zip(jobs, own, row, floor)]
    return np.array(estimate), np.array(floor)


def _precision_variant(cfg) -> bool:
    return bool(cfg.variant) and {item.partition("=")[0] for item in cfg.variant.split(",")} == {"precision"}


def cost_table(records, batches, bench, data_dir=None) -> HTMLTable:
    spent, left = spent_by_table(records, batches, bench, data_dir), remaining(records, batches, bench, data_dir)
    left = pd.concat([left, pd.DataFrame([{**left.sum(numeric_only=True), "table": "all"}])], ignore_index=True)
    merged = spent.merge(left, on="table", how="left")

    prices = released_prices(records, bench, data_dir)

    def minutes(value):
        return "–" if not np.isfinite(value) else f"{value:.1f}"

    def released(row) -> str:
        rows = prices if row.table == "all" else prices[prices["table"] == row.table]
        if not row.runs:
            return "–"
        if row.priced_runs:
            return f"{row.released_minutes:.1f} for {plural(int(row.priced_runs), 'run')}"
        return "no released code" if set(rows["unpriced_why"]) == {"no released code"} else "not benchmarked"

    def unpriced(row) -> str:
        rows = prices if row.table == "all" else prices[prices["table"] == row.table]
        return f"{int(row.unpriced_runs)}: {unpriced_text(rows, tables=False)}" if row.unpriced_runs else "none"

    out = [{"table": row.table, "paper-profile runs": int(row.runs), "GPU-minutes": minutes(row.gpu_minutes),
            "released code, the runs it can be timed on (GPU-minutes)": released(row),
            "ours, the same runs (GPU-minutes)": minutes(row.priced_minutes) if row.priced_runs else "–",
            "runs not priced: rows and why": unpriced(row),
            "runs lost (GPU-minutes)": f"{int(row.lost_runs)} ({row.lost_minutes:.1f})",
            "runs waiting to resume (GPU-minutes so far)": f"{int(row.waiting_runs)} ({row.waiting_minutes:.1f})",
            "second runs, for weights (GPU-minutes)": minutes(row.repeat_minutes),
            "runs superseded by a change of settings (GPU-minutes)":
                f"{int(row.superseded_runs)} ({row.superseded_minutes:.1f})",
            "ablation runs (GPU-minutes)": f"{int(row.ablation_runs)} ({row.ablation_minutes:.1f})",
            "runs left of the sweep": f"{int(row.left)} of {int(row.planned)}",
            "GPU-minutes left (estimate)": (minutes(row.minutes_left)
                                            + (f" + at least {row.floor_minutes:.1f} for {plural(int(row.floored), 'run')} "
                                               "without a measured pace (training steps alone)" if row.floored else "")
                                            + (f" + {plural(int(row.unpriced), 'run')} unpriced" if row.unpriced else ""))}
           for row in merged.itertuples()]
    # one column a table, one row a quantity: 13 columns did not fit the page
    by_table = pd.DataFrame(out).set_index("table").T
    by_table.columns = [f"Table {table}" if table != "all" else "all tables" for table in by_table.columns]
    return HTMLTable(by_table.rename_axis("what").reset_index(), None)



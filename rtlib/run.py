"""One run, as ``python -m rtlib train`` and the run notebook (book/run.md) make it: its
parameters checked (`prepare_run`), the run trained under a `Runtime` of them (`run_one`), its
curves drawn after every epoch and its result set beside the paper's.
"""
from __future__ import annotations

import ast
import io
import warnings
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .configs import RunConfig, run_config, with_variant
from .paths import RUNS_DIR
from .results import QUALIFIER, fmt, verdict
from .run_folder import run_id, safe_child
from .runtime import Runtime, resolve_device
from .tasks import TASKS, check_sequence_lengths, metric_label
from .train import Callback, train

DEVICES = ("auto", "cpu", "cuda")


def prepare_run(task: str, model: str, profile: str = "smoke", *, lr: float | None = None,
                seed: int | None = None, epochs: int | None = None, variant: str = "",
                device: str = "auto", max_minutes: float | None = None,
                out_dir: str | Path | None = None) -> tuple[RunConfig, Path]:
    """Check the run notebook's parameters and return (config, run folder).

    A bad value raises ValueError at once, naming the value and the allowed ones (before any
    data is read, model built or folder made). `out_dir` defaults to ``runs/<run id>``.
    """
    if max_minutes is not None and not (isinstance(max_minutes, (int, float)) and max_minutes >= 0):
        raise ValueError(f"max_minutes={max_minutes!r} must be a number >= 0 (or None: no limit)")
    if not (device in DEVICES or str(device).startswith("cuda:") and str(device)[5:].isdigit()):
        raise ValueError(f"device={device!r} is not one of {list(DEVICES)} or 'cuda:N'")
    if out_dir is not None and not str(out_dir).strip():
        raise ValueError(f"out_dir={out_dir!r} is empty: give a folder, or None for runs/<run id>")
    resolve_device(device)  # cuda asked for where there is none
    cfg = with_variant(run_config(task, model, profile, lr=lr, seed=seed, epochs=epochs), variant or "")
    check_sequence_lengths(cfg)
    # tqdm falls back to its text bar in a kernel without ipywidgets; the warning is noise
    warnings.filterwarnings("ignore", message="IProgress not found")
    return cfg, Path(out_dir) if out_dir is not None else safe_child(RUNS_DIR, run_id(cfg))


def run_one(cfg: RunConfig, out_dir: str | Path, *, device: str = "auto", compile_mode: str = "auto",
            max_minutes: float | None = None, progress: bool | None = None, data_dir: str | Path | None = None,
            resume: bool = False, results_dir: str | Path | None = None,
            callbacks: list[Callback | Callable[[dict], None]] = (),
            log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train a prepared run (`rtlib.train.train`) with the engine settings as the CLI and the run
    notebook name them; the record, or None when `max_minutes` ran out first."""
    runtime = Runtime(device=device, compile=compile_mode, max_minutes=max_minutes, progress=progress)
    return train(cfg, out_dir, runtime, data_dir=data_dir, resume=resume, results_dir=results_dir,
                 callbacks=callbacks, log=log)


# the parameters cell of the run notebook (book/run.md), in its order
NOTEBOOK_PARAMETERS = ("task", "model", "profile", "lr", "seed", "epochs", "variant", "max_minutes",
                       "device", "compile_mode", "out_dir", "results_dir", "resume", "data_dir")


def reject_unknown_parameters() -> None:
    """In a notebook executed by papermill: ValueError for an injected parameter (``-p name
    value``) that the run notebook does not have, which papermill would only warn about."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    for source in shell.user_ns.get("In", []) if shell is not None else []:
        if source.startswith("# Parameters\n"):  # the cell papermill injects
            names = [target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
                     for target in node.targets if isinstance(target, ast.Name)]
            unknown = [name for name in names if name not in NOTEBOOK_PARAMETERS]
            if unknown:
                raise ValueError(f"unknown parameter {unknown[0]!r}; the run notebook's parameters: "
                                 f"{list(NOTEBOOK_PARAMETERS)}")


def curve_figure(entries: list[dict[str, Any]], metric: str, title: str = ""):
    """Loss (train, valid) and metric per epoch, side by side, from `train`'s epoch entries."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 2.8), layout="constrained")
    loss_ax, metric_ax = figure.subplots(1, 2)
    epochs = [entry["epoch"] for entry in entries]
    for key, label in [("train_loss", "train"), ("valid_loss", "valid"), ("test_loss", "test")]:
        if any(key in entry for entry in entries):
            loss_ax.plot(epochs, [entry.get(key) for entry in entries], marker="o", label=label)
    for key, label in [("valid_metric", "valid"), ("test_metric", "test")]:
        if any(key in entry for entry in entries):
            metric_ax.plot(epochs, [entry.get(key) for entry in entries], marker="o", label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title=title)
    metric_ax.set(xlabel="epoch", ylabel=metric_label(metric, ""))
    for ax in (loss_ax, metric_ax):
        ax.legend()
    return figure


def live_curve_callback(cfg: RunConfig) -> Callable[[dict[str, Any]], None]:
    """A `train` callback that redraws the learning curves after every epoch, in place (one
    IPython display handle). Outside a notebook it does nothing: `train` prints each epoch."""
    entries: list[dict[str, Any]] = []
    handle = []

    def redraw(entry: dict[str, Any]) -> None:
        entries.append(entry)
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:
            return
        if get_ipython() is None:
            return
        png = io.BytesIO()
        figure = curve_figure(entries, TASKS[cfg.task].metric, f"{cfg.task} / {cfg.model}")
        figure.savefig(png, format="png", dpi=80)
        image = Image(data=png.getvalue(), format="png")
        if handle:
            handle[0].update(image)
        else:
            handle.append(display(image, display_id=True))
    return redraw


def paper_comparison(record: dict[str, Any] | None, cfg: RunConfig) -> pd.DataFrame:
    """The run's final test metric beside the paper's number, as one short table."""
    task = TASKS[cfg.task]
    paper = task.paper.get(cfg.model, float("nan"))
    if record is None:
        ours, outcome = float("nan"), ("stopped (max_minutes or a STOP file), checkpointed: run again "
                                       "(resume=True) to continue")
    elif cfg.profile == "smoke":
        ours, outcome = record["test_metric"], "smoke run (no verdict)"
    else:
        ours = record["test_metric"]
        outcome = verdict(cfg.task, ours, paper, 1)
        outcome += f"; {QUALIFIER[cfg.profile]}" if QUALIFIER.get(cfg.profile) else ""
    return pd.DataFrame([dict(task=cfg.task, model=cfg.model, profile=cfg.profile, metric=task.metric,
                              ours=ours, paper=paper, paper_copied=cfg.model in task.copied,
                              delta=ours - paper, verdict=outcome)]).set_index(["task", "model"])


def result_text(record: dict[str, Any]) -> str:
    """A run's test metric as a chapter prints it, with the epoch whose weights gave it:
    'test NLL (nats per step): 37.40, from the best validation epoch (2 of 2)'."""
    label = metric_label(record["metric"])
    if record.get("test_metric") is None:
        return f"{label}: none ({record.get('status') or 'not recorded'})"
    value = fmt(record["test_metric"], record["task"])
    return f"{label}: {value}, from the {record['selection']}" if record.get("selection") else f"{label}: {value}"

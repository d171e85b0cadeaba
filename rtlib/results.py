"""Run records -> the report's tables: paper vs ours, learning curves, ablations, summary.

Explained in book/report.md. A *record* is the JSON that `rtlib.train.train` writes at the
end of a run (``record.json``, copied to ``results/records/<profile>/<run id>.json``). Every
function here reads records and never trains; the book's chapters call them by name.

Choices made here, in one place:

- the learning rate of a row is chosen on the *validation* metric (mean over seeds), never on
  test; seq-MNIST has no validation split, so its rows keep the config's lr (`select_lr`);
- a row is "reproduced" when |ours - paper| is within `TOLERANCE` of its metric;
- where a row was run under several profiles, `paper` is preferred to `fast` (a short run).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .configs import PROFILES, TABLE_TASKS, run_config
from .tasks import TASKS

RECORDS_DIR = Path(__file__).resolve().parents[1] / "results" / "records"
PAPER_ORDER = ("rnn", "gru", "lstm", "tcn", "transformer", "rtransformer")  # the paper's rows
PROFILE_PREFERENCE = ("paper", "fast", "smoke")  # best evidence first
COLUMNS = ("run_id", "task", "table", "model", "profile", "variant", "seed", "lr", "metric",
           "higher_is_better", "best_valid_loss", "best_valid_metric", "test_metric", "epochs_run",
           "wall_time_s", "gpu_minutes", "device", "paper_value", "paper_value_copied_from_bai",
           "num_parameters", "git_commit", "curve", "changes", "finished_at", "path")
NUMERIC = ("seed", "lr", "best_valid_loss", "best_valid_metric", "test_metric", "epochs_run",
           "wall_time_s", "gpu_minutes", "paper_value", "num_parameters")
GROUP = ["task", "model", "profile", "variant"]  # one row of a table: the seeds x lrs of it
QUANTITIES = ("train_loss", "valid_loss", "valid_metric", "test_metric")


@dataclass(frozen=True)
class Tolerance:
    absolute: float = 0.0   # in the metric's unit
    relative: float = 0.0   # as a fraction of the paper's number
    why: str = ""

    def of(self, paper: float) -> float:
        return self.absolute + self.relative * abs(paper)


# How far from the paper's number a mean over seeds may be and still count as reproduced.
TOLERANCE: dict[str, Tolerance] = {
    "accuracy": Tolerance(absolute=0.5, why="0.5 points: about twice the seed-to-seed spread "
                                            "of seq-MNIST test accuracy"),
    "nll": Tolerance(absolute=0.05, why="0.05 nats: music NLL moves by a few hundredths between "
                                        "seeds; the paper prints two decimals"),
    "bpc": Tolerance(absolute=0.02, why="0.02 bpc: PTB-char bpc moves by ~0.01 between seeds; "
                                        "the paper prints two decimals"),
    "perplexity": Tolerance(relative=0.03, why="3%: perplexity is exp(loss), so 3% is a loss "
                                               "difference of 0.03 nats whatever its size"),
}

def tolerance_table() -> pd.DataFrame:
    """`TOLERANCE` as a table: metric, absolute, relative, why."""
    return pd.DataFrame([dict(metric=metric, absolute=t.absolute, relative=t.relative, why=t.why)
                         for metric, t in TOLERANCE.items()]).set_index("metric")


QUALIFIER = {"paper": "", "fast": "short run (fast profile)", "smoke": "smoke run: not a result"}


def _empty() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in COLUMNS})


def load_records(*folders: str | Path, profiles: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """One row per run record found (recursively) under `folders` (default `RECORDS_DIR`).

    Smoke records are left out unless `profiles` names "smoke"; a run id found twice (say in
    ``runs/`` and ``results/records/``) keeps its most recently finished record.
    """
    rows = []
    for folder in folders or (RECORDS_DIR,):
        for path in sorted(Path(folder).rglob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(data, dict) or "run_id" not in data or "record_version" not in data:
                continue  # not a run record (a summary, a notebook)
            rows.append({**{column: data.get(column) for column in COLUMNS}, "path": str(path)})
    if not rows:
        return _empty()
    records = pd.DataFrame(rows, columns=list(COLUMNS))
    if profiles is None:
        records = records[records["profile"] != "smoke"]
    else:
        records = records[records["profile"].isin(list(profiles))]
    if records.empty:
        return _empty()
    records = (records.assign(finished_at=records["finished_at"].fillna(""))
               .sort_values("finished_at").drop_duplicates("run_id", keep="last"))
    for column in NUMERIC:
        records[column] = pd.to_numeric(records[column], errors="coerce")
    records["variant"] = records["variant"].fillna("")
    records["table"] = records["table"].astype("Int64")
    return records.sort_values(["task", "model", "profile", "variant", "lr", "seed"]).reset_index(drop=True)


def select_lr(records: pd.DataFrame) -> pd.DataFrame:
    """Keep, per (task, model, profile, variant), the runs of the lr whose mean validation
    metric over seeds is best. Never chosen on test: where there is no validation split
    (seq-MNIST), the config's lr is kept. Column ``lr_selection`` says which rule applied."""
    if records.empty:
        return records.assign(lr_selection=pd.Series(dtype=object))
    kept = []
    for (task, model, profile, variant), group in records.groupby(GROUP, sort=False, dropna=False):
        means = group.groupby("lr")["best_valid_metric"].mean()
        lrs = ", ".join(f"{lr:g}" for lr in sorted(group["lr"].unique()))
        if means.notna().any():
            best = means.idxmax() if TASKS[task].higher_is_better else means.idxmin()
            note = f"best mean validation {TASKS[task].metric} among lr {{{lrs}}}"
        else:
            default = run_config(task, model, profile if profile in PROFILES else "paper").train.lr
            run_lrs = np.array(sorted(group["lr"].unique()))
            best = run_lrs[np.argmin(np.abs(np.log(run_lrs) - math.log(default)))]
            note = (f"config lr {default:g} kept: no validation split to choose on (never on test)"
                    if np.isclose(best, default) else
                    f"config lr {default:g} not run; nearest run lr {best:g} kept (no validation split)")
        kept.append(group[np.isclose(group["lr"], best)].assign(lr_selection=note))
    return pd.concat(kept).reset_index(drop=True)


def verdict(task: str, ours: float, paper: float | None, n: int) -> str:
    """'reproduced' when |ours - paper| is within the metric's `TOLERANCE`."""
    if n == 0:
        return "not run"
    if paper is None or pd.isna(paper):
        return "no paper number"
    tolerance = TOLERANCE[TASKS[task].metric].of(paper)
    return "reproduced" if abs(ours - paper) <= tolerance + 1e-12 else "not reproduced"


def _preferred_profile(profiles) -> str | None:
    present = list(profiles)
    for profile in PROFILE_PREFERENCE:
        if profile in present:
            return profile
    return present[0] if present else None


def paper_vs_ours(records: pd.DataFrame, task: str, profile: str | None = None,
                  variant: str = "") -> pd.DataFrame:
    """The paper's table for `task` beside ours: one row per model in the paper's order.

    ``ours_*`` are over the seeds of the lr chosen on validation; ``gpu_minutes`` sums every
    run of the row (all lrs and seeds: the cost of the search). With `profile` None, a model
    run under several profiles shows its `paper` runs, else its `fast` ones (see ``profile``
    and ``qualifier``).
    """
    info = TASKS[task]
    rows = records[(records["task"] == task) & (records["variant"] == variant)] if len(records) else records
    if profile is not None and len(rows):
        rows = rows[rows["profile"] == profile]
    chosen = select_lr(rows)
    table = []
    for model in PAPER_ORDER:
        paper = info.paper.get(model, np.nan)
        runs = rows[rows["model"] == model] if len(rows) else rows
        shown = _preferred_profile(runs["profile"].unique()) if len(runs) else None
        mine = chosen[(chosen["model"] == model) & (chosen["profile"] == shown)] if shown else chosen.iloc[:0]
        n = len(mine)
        ours = mine["test_metric"].mean() if n else np.nan
        table.append(dict(
            model=model, paper=paper, paper_copied=model in info.copied,
            ours_mean=ours, ours_std=mine["test_metric"].std(ddof=1) if n > 1 else np.nan, n=n,
            lr=mine["lr"].iloc[0] if n else np.nan, delta=ours - paper if n else np.nan,
            gpu_minutes=float(runs[runs["profile"] == shown]["gpu_minutes"].sum()) if n else 0.0,
            epochs=mine["epochs_run"].max() if n else np.nan,
            verdict="smoke run (no verdict)" if n and shown == "smoke" else verdict(task, ours, paper, n),
            profile=shown or "",
            qualifier=QUALIFIER.get(shown, "") if n else "",
            tolerance=TOLERANCE[info.metric].of(paper) if not pd.isna(paper) else np.nan,
            lr_selection=mine["lr_selection"].iloc[0] if n else ""))
    return pd.DataFrame(table)


def learning_curves(records: pd.DataFrame, task: str) -> pd.DataFrame:
    """Long format: one row per (run, epoch, quantity) for `task`'s records."""
    columns = ["run_id", "model", "profile", "variant", "lr", "seed", "epoch", "quantity", "value"]
    rows = []
    for record in records[records["task"] == task].itertuples() if len(records) else ():
        for entry in record.curve or ():
            for quantity in QUANTITIES:
                if entry.get(quantity) is not None:
                    rows.append((record.run_id, record.model, record.profile, record.variant,
                                 record.lr, record.seed, entry["epoch"], quantity, entry[quantity]))
    return pd.DataFrame(rows, columns=columns)


def plot_learning_curves(records: pd.DataFrame, task: str, ax=None, quantity: str | None = None):
    """The validation metric per epoch (test metric for seq-MNIST, which has no validation),
    mean and spread over seeds of each model's chosen lr; no-variant runs only."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    info = TASKS[task]
    rows = records[(records["task"] == task) & (records["variant"] == "")] if len(records) else records
    curves = learning_curves(select_lr(rows), task)
    if quantity is None:  # seq-MNIST has no validation split: its curve is the test metric
        quantity = "test_metric" if info.kind == "classify" else "valid_metric"
    curves = curves[curves["quantity"] == quantity]
    if len(curves):
        order = [model for model in PAPER_ORDER if model in set(curves["model"])]
        sns.lineplot(data=curves, x="epoch", y="value", hue="model", hue_order=order,
                     style="profile" if curves["profile"].nunique() > 1 else None,
                     errorbar="sd", marker="o", ax=ax)
        if info.metric == "perplexity":
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no records yet", ha="center", va="center", transform=ax.transAxes)
    split = "validation" if quantity.startswith("valid") else quantity.split("_")[0]
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{split} {info.metric if quantity.endswith('metric') else 'loss'}")
    ax.set_title(f"Table {info.table}: {task}" if info.table else task)
    return ax


def ablations(records: pd.DataFrame, task: str) -> pd.DataFrame:
    """Each ablation (non-empty variant) of `task` beside the matching no-variant row
    (same model and profile); each side over the seeds of its lr chosen on validation."""
    columns = ["model", "profile", "variant", "n", "lr", "ours", "baseline", "baseline_n",
               "baseline_lr", "delta", "metric"]
    rows = records[records["task"] == task] if len(records) else records
    if not len(rows) or not (rows["variant"] != "").any():
        return pd.DataFrame(columns=columns)
    chosen = select_lr(rows)
    out = []
    for (model, profile, variant), group in chosen[chosen["variant"] != ""].groupby(
            ["model", "profile", "variant"], sort=True):
        base = chosen[(chosen["model"] == model) & (chosen["profile"] == profile) & (chosen["variant"] == "")]
        ours, baseline = group["test_metric"].mean(), base["test_metric"].mean() if len(base) else np.nan
        out.append(dict(model=model, profile=profile, variant=variant, n=len(group), lr=group["lr"].iloc[0],
                        ours=ours, baseline=baseline, baseline_n=len(base),
                        baseline_lr=base["lr"].iloc[0] if len(base) else np.nan,
                        delta=ours - baseline, metric=TASKS[task].metric))
    return pd.DataFrame(out, columns=columns)


def summary(records: pd.DataFrame) -> pd.DataFrame:
    """Results at a glance: one row per (table, model) over Tables 1-4."""
    parts = [paper_vs_ours(records, task).assign(table=table, task=task, metric=TASKS[task].metric)
             for table, task in TABLE_TASKS.items()]
    columns = ["table", "task", "metric", "model", "paper", "paper_copied", "ours_mean", "ours_std",
               "n", "delta", "verdict", "profile", "qualifier", "gpu_minutes"]
    return pd.concat(parts)[columns].reset_index(drop=True)


def run_settings(records: pd.DataFrame, task: str) -> pd.DataFrame:
    """How the runs of `task` were made: profile, its listed changes from the paper's
    settings, lrs, seeds, epochs, devices and commits, per (model, profile, variant)."""
    columns = ["model", "profile", "variant", "runs", "lrs", "seeds", "epochs", "gpu_minutes",
               "devices", "commits", "changes"]
    rows = records[records["task"] == task] if len(records) else records
    out = []
    groups = rows.groupby(["model", "profile", "variant"]) if len(rows) else ()
    for (model, profile, variant), group in groups:
        changes = dict.fromkeys(change for listed in group["changes"] for change in (listed or ()))
        out.append(dict(model=model, profile=profile, variant=variant, runs=len(group),
                        lrs=", ".join(f"{lr:g}" for lr in sorted(group["lr"].unique())),
                        seeds=", ".join(str(int(s)) for s in sorted(group["seed"].unique())),
                        epochs=", ".join(str(int(e)) for e in sorted(group["epochs_run"].unique())),
                        gpu_minutes=float(group["gpu_minutes"].sum()),
                        devices="; ".join(sorted(set(group["device"].dropna()))),
                        commits=", ".join(sorted({str(c)[:10] for c in group["git_commit"].dropna()})),
                        changes="; ".join(changes) or "none: the paper's settings"))
    frame = pd.DataFrame(out, columns=columns)
    order = {model: i for i, model in enumerate(PAPER_ORDER)}
    return frame.sort_values(["model"], key=lambda s: s.map(order)).reset_index(drop=True)


def status_note(records: pd.DataFrame, task: str) -> str:
    """One Markdown paragraph: what has been run for `task`, or plainly that nothing has."""
    info = TASKS[task]
    rows = records[records["task"] == task] if len(records) else records
    command = (f"`python -m rtlib reproduce --table {info.table} --profile fast --seeds 3`"
               if info.table else "`python -m rtlib train ...`")
    if not len(rows):
        return (f"**No records for {task} yet.** Every row below says *not run*; the paper's "
                f"numbers are shown alone. Regenerate with {command}.")
    counts = rows.groupby("profile").size()
    runs = ", ".join(f"{n} {profile}-profile" for profile, n in counts.items())
    return (f"{len(rows)} runs ({runs}), {rows['gpu_minutes'].sum():.1f} GPU-minutes in all, "
            f"{rows['model'].nunique()} of 6 models. Regenerate with {command}.")


def evidence_for_misses(records: pd.DataFrame) -> pd.DataFrame:
    """Each row of Tables 1-4 that was run and not reproduced, with its ablations (or a line
    saying none has been run yet)."""
    columns = ["table", "task", "model", "ours_mean", "paper", "variant", "ablation", "baseline", "delta"]
    out = []
    for row in summary(records).itertuples():
        if row.verdict != "not reproduced":
            continue
        found = ablations(records, row.task)
        found = found[found["model"] == row.model] if len(found) else found
        head = dict(table=row.table, task=row.task, model=row.model, ours_mean=row.ours_mean, paper=row.paper)
        if not len(found):
            out.append({**head, "variant": "(no ablation run yet)", "ablation": np.nan,
                        "baseline": np.nan, "delta": np.nan})
        for ablation in found.itertuples():
            out.append({**head, "variant": ablation.variant, "ablation": ablation.ours,
                        "baseline": ablation.baseline, "delta": ablation.delta})
    return pd.DataFrame(out, columns=columns)



def or_note(frame: pd.DataFrame, note: str):
    """`frame`, or `note` as Markdown where the frame is empty (for the report's cells)."""
    from IPython.display import Markdown
    return frame if len(frame) else Markdown(note)

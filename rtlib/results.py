"""Run records -> cells of the paper's tables, verdicts, tests of the paper's claims.

Explained in book/report.md. A *record* is the JSON that `rtlib.train.train` writes at the
end of a run (``record.json``, copied to ``results/records/<profile>/<run id>.json``). Every
function here reads records and never trains; the book's chapters call them by name, and
`rtlib.report` builds the report's other sections on top of them.

Rules, in one place:

- *evidence* is a finished run at the ``paper`` profile (`EVIDENCE_PROFILE`); ``fast`` and
  ``smoke`` runs are shown apart, labelled, and never counted for or against the paper;
- a *cell* (one model of one table) is the seeds of its lr chosen on the *validation* metric,
  compared over the seeds every lr has; seq-MNIST has no validation split, so its rows keep
  the config's lr (`select_lr`);
- a cell is ``inconclusive`` below `MIN_SEEDS` seeds; from there it is ``reproduced`` when
  |ours - paper| <= max(half a unit of the paper's last printed digit, 2 x the standard error
  of our mean) (`tolerance`), else ``not reproduced``;
- a claim that one model beats another is tested on the difference of the two cells' means,
  with a Welch 95% interval over seeds (`compare`), not cell by cell.
"""
from __future__ import annotations

import collections
import html
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .configs import ABLATIONS, MIN_SEEDS, PROFILES, RUNTIME_KEYS, TABLE_TASKS, run_config, with_variant
from .paths import RECORDS_DIR, REPO
from .tables import model_size
from .tasks import TASKS

PAPER_ORDER = ("rnn", "gru", "lstm", "tcn", "transformer", "rtransformer")  # the paper's rows
MODEL_NAMES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM", "tcn": "TCN", "transformer": "Transformer",
               "rtransformer": "R-Transformer"}
EVIDENCE_PROFILE = "paper"
PAPER_DECIMALS = {"mnist": 1, "nottingham": 2, "ptb-char": 2, "ptb-word": 2}  # as Tables 1-4 print
METRIC_NAMES = {"accuracy": "test accuracy in %", "nll": "NLL", "bpc": "bits per character",
                "perplexity": "perplexity"}
COLUMNS = ("run_id", "record_version", "status", "task", "table", "model", "profile", "variant",
           "seed", "lr", "metric", "higher_is_better", "best_valid_loss", "best_valid_metric",
           "best_epoch", "test_metric", "selections", "epochs_run", "wall_time_s", "gpu_minutes",
           "device", "precision", "engine", "deviations", "torch_version", "paper_value",
           "num_parameters", "git_commit", "config", "curve", "changes", "sessions", "finished_at", "path")
NUMERIC = ("seed", "lr", "best_valid_loss", "best_valid_metric", "best_epoch", "test_metric",
           "epochs_run", "wall_time_s", "gpu_minutes", "paper_value", "num_parameters")
QUALIFIER = {"paper": "", "fast": "short run (fast profile): not evidence",
             "smoke": "smoke run: not a result"}


TASK_NAMES = {"mnist": "seq-MNIST", "pmnist": "permuted MNIST", "nottingham": "Nottingham",
              "jsb": "JSB Chorales", "muse": "MuseData", "piano": "Piano-midi.de", "ptb-char": "PTB-char",
              "ptb-word": "PTB-word"}


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def task_name(task: str) -> str:
    """The data set as the paper names it: 'ptb-char' -> 'PTB-char', 'mnist' -> 'seq-MNIST'."""
    return TASK_NAMES.get(task, task)


# How the book's prose names a variant: whole variants first, then a setting with its value.
_VARIANT_WORDS = {"clip_before_backward=false": "clipping after backward()", "position=none": "no positions"}
_SETTING_WORDS = {"window": "window M={}", "norm": "{}-norm", "precision": "{}"}


def variant_name(variant: str) -> str:
    """An ablation as the book's prose names it: 'precision=fp32' -> 'fp32', 'norm=post' ->
    'post-norm', 'window=2' -> 'window M=2'; another variant as the run id spells it."""
    setting, _, value = variant.partition("=")
    if variant in _VARIANT_WORDS:
        return _VARIANT_WORDS[variant]
    return _SETTING_WORDS[setting].format(value) if setting in _SETTING_WORDS and value else variant


def _empty() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in COLUMNS})


def load_records(*folders: str | Path, profiles: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per run record found (recursively) under `folders` (default `RECORDS_DIR`).

    Reads record versions 1 and 2: a version-1 record (no ``status``, ``precision``,
    ``selections``) is a finished run whose precision was not recorded. Smoke records are left
    out unless `profiles` names "smoke"; a run id found twice keeps its latest record.
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
    wanted = ["paper", "fast"] if profiles is None else list(profiles)
    records = records[records["profile"].isin(wanted)]
    if records.empty:
        return _empty()
    records = (records.assign(finished_at=records["finished_at"].fillna(""))
               .sort_values("finished_at").drop_duplicates("run_id", keep="last"))
    for column in NUMERIC:
        records[column] = pd.to_numeric(records[column], errors="coerce")
    records["status"] = records["status"].fillna("finished")
    records["precision"] = records["precision"].fillna("not recorded")
    records["variant"] = records["variant"].fillna("")
    records["selections"] = [value or {} for value in records["selections"]]
    records["table"] = records["table"].astype("Int64")
    return records.sort_values(["task", "model", "profile", "variant", "lr", "seed"]).reset_index(drop=True)


def diverged(records: pd.DataFrame, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """The paper-profile runs (no variant) that diverged, of `task` and `model` where given."""
    if records.empty:
        return records
    keep = ((records["profile"] == EVIDENCE_PROFILE) & (records["status"] == "diverged")
            & (records["variant"] == ""))
    if task is not None:
        keep &= records["task"] == task
    if model is not None:
        keep &= records["model"] == model
    return records[keep].sort_values(["lr", "seed"])


def done_runs(records: pd.DataFrame) -> pd.DataFrame:
    """The paper-profile runs of every variant that ended: finished or diverged (both results)."""
    if records.empty:
        return records
    return records[(records["profile"] == EVIDENCE_PROFILE) & records["status"].isin(["finished", "diverged"])]


def diverged_in(epochs_run: float) -> int:
    """The epoch in which a diverged run's loss stopped being finite: the one after its last logged."""
    return int(epochs_run) + 1


def diverged_text(runs: pd.DataFrame) -> str:
    """'2 runs diverged (training loss not finite) at lr 0.001: seed 1111 in epoch 11 and seed
    1112 in epoch 24' for the diverged `runs` of one row; '' for none."""
    if runs.empty:
        return ""
    parts = []
    for lr, group in runs.groupby("lr", sort=True):
        seeds = join_words([f"seed {int(run.seed)} in epoch {diverged_in(run.epochs_run)}"
                           for run in group.itertuples()])
        parts.append(f"at lr {lr:g}: {seeds}")
    return (f"{len(runs)} run{' diverged' if len(runs) == 1 else 's diverged'} (training loss not finite) "
            + "; ".join(parts))


def join_words(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'; '' for none."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def evidence(records: pd.DataFrame, variant: str | None = "") -> pd.DataFrame:
    """The records that count for or against the paper: finished, paper profile, `variant`
    (None: every variant, ablations included)."""
    if records.empty:
        return records
    keep = (records["profile"] == EVIDENCE_PROFILE) & (records["status"] == "finished")
    return records[keep if variant is None else keep & (records["variant"] == variant)]


def select_lr(records: pd.DataFrame) -> pd.DataFrame:
    """Keep, per (task, model, profile, variant), the finished runs of the lr whose mean
    validation metric is best over the seeds that every lr of the row has (the sweep runs its
    grid at seed 1111 only). Never chosen on test: where there is no validation split
    (seq-MNIST) the config's lr is kept. Column ``lr_selection`` says which rule applied."""
    finished = records[records["status"] == "finished"] if len(records) else records
    if finished.empty:
        return finished.assign(lr_selection=pd.Series(dtype=object))
    kept = []
    for (task, model, profile, variant), group in finished.groupby(
            ["task", "model", "profile", "variant"], sort=False):
        lrs = sorted(group["lr"].unique())
        listed = ", ".join(f"{lr:g}" for lr in lrs)
        seeds = set.intersection(*(set(group[group["lr"] == lr]["seed"]) for lr in lrs))
        common = group[group["seed"].isin(seeds)] if seeds else group
        means = common.groupby("lr")["best_valid_metric"].mean()
        if len(lrs) == 1:
            best, note = lrs[0], f"lr {lrs[0]:g}, the only one run"
        elif means.notna().any():
            best = means.idxmax() if TASKS[task].higher_is_better else means.idxmin()
            on = f"seeds {', '.join(str(int(s)) for s in sorted(seeds))}" if seeds else "all seeds"
            note = f"best validation {TASKS[task].metric} among lr {{{listed}}} ({on})"
        else:
            default = run_config(task, model, profile if profile in PROFILES else "paper").train.lr
            best = min(lrs, key=lambda lr: abs(math.log(lr) - math.log(default)))
            note = (f"config lr {default:g} kept: no validation split to choose on (never on test)"
                    if np.isclose(best, default) else
                    f"config lr {default:g} not run; nearest run lr {best:g} kept (no validation split)")
        kept.append(group[np.isclose(group["lr"], best)].assign(lr_selection=note))
    return pd.concat(kept).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Cells and their verdicts


def rounding(task: str) -> float:
    """Half a unit of the last digit the paper prints for `task`: how well its number is known."""
    return 0.5 * 10 ** -PAPER_DECIMALS.get(task, 2)


def tolerance(task: str, sem: float | None) -> float:
    """max(the paper's rounding, 2 x the standard error of our mean over seeds)."""
    return max(rounding(task), 2 * sem if sem is not None and np.isfinite(sem) else 0.0)


CELL_VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run")


def verdict(task: str, ours: float, paper: float | None, n: int, sem: float | None = None) -> str:
    """One of `CELL_VERDICTS` for a cell of `n` paper-profile seeds with mean `ours`."""
    if n == 0:
        return "not run"
    if paper is None or pd.isna(paper):
        return "no paper number"
    if n < MIN_SEEDS:
        return "inconclusive"
    return "reproduced" if abs(ours - paper) <= tolerance(task, sem) + 1e-12 else "not reproduced"


def cells(records: pd.DataFrame, variant: str = "", profile: str = EVIDENCE_PROFILE) -> pd.DataFrame:
    """One row per (table, model) of Tables 1-4 in the paper's order: the paper's number and
    ours over the seeds of the lr chosen on validation, at `profile` (only the paper profile is
    evidence: another one's verdicts read "not evidence"). ``diverged`` counts runs that
    produced no number; ``runs`` every run of the cell (all lrs)."""
    if len(records):
        pool = records[(records["profile"] == profile) & (records["variant"] == variant)]
    else:
        pool = records
    chosen = select_lr(pool)
    return pd.DataFrame([_cell(pool, chosen, task, model, variant, profile)
                         for task in TABLE_TASKS.values() for model in PAPER_ORDER])


def _cell(pool: pd.DataFrame, chosen: pd.DataFrame, task: str, model: str, variant: str,
          profile: str) -> dict[str, Any]:
    """One row of `cells`: `pool` holds the runs of `variant` at `profile`, `chosen` those of
    the lr `select_lr` chose."""
    info = TASKS[task]
    runs = pool[(pool["task"] == task) & (pool["model"] == model)] if len(pool) else pool
    mine = chosen[(chosen["task"] == task) & (chosen["model"] == model)] if len(chosen) else chosen
    values = mine.sort_values("seed")["test_metric"].to_numpy(dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    sem = std / math.sqrt(n) if n > 1 else math.nan
    paper = info.paper.get(model, math.nan)
    diverged = int((runs["status"] == "diverged").sum()) if len(runs) else 0
    # a row whose every run so far diverged has a result, though no number: not a gap
    result = "inconclusive" if n == 0 and diverged else verdict(task, mean, paper, n, sem)
    return dict(
        table=info.table, task=task, model=model, variant=variant, profile=profile,
        paper=paper, paper_copied=model in info.copied, n=n, mean=mean, std=std, sem=sem,
        values=tuple(values), seeds=tuple(int(s) for s in mine.sort_values("seed")["seed"]),
        lr=float(mine["lr"].iloc[0]) if n else math.nan,
        lr_selection=mine["lr_selection"].iloc[0] if n else "",
        runs=len(runs), diverged=diverged,
        diverged_lrs=tuple(sorted(float(lr) for lr in runs[runs["status"] == "diverged"]["lr"])) if len(runs) else (),
        delta=mean - paper if n else math.nan,
        tolerance=tolerance(task, sem) if n >= MIN_SEEDS else math.nan,
        verdict=result if profile == EVIDENCE_PROFILE or result == "not run" else "not evidence",
        better=(n > 0 and not pd.isna(paper)
                and ((mean > paper) if info.higher_is_better else (mean < paper))))


def cell(table_cells: pd.DataFrame, task: str, model: str) -> pd.Series:
    return table_cells[(table_cells["task"] == task) & (table_cells["model"] == model)].iloc[0]


def fmt(value: float, task: str, extra: int = 0) -> str:
    """`value` with the paper's digits for `task` (plus `extra`)."""
    return f"{value:.{PAPER_DECIMALS.get(task, 2) + extra}f}"


def signed(value: float, task: str, extra: int = 0) -> str:
    """`fmt` with an explicit sign: '+0.17', '−0.18'."""
    return ("+" if value >= 0 else "−") + fmt(abs(value), task, extra)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def ours_text(row: pd.Series) -> str:
    """'mean ± std (n)' to the paper's digits; 'diverged (k of k runs)' where every run diverged,
    'not run' where there are no runs."""
    if row["n"] == 0:
        return f"diverged ({row['diverged']} of {row['runs']} runs)" if row["diverged"] else "not run"
    if row["n"] == 1:
        return f"{fmt(row['mean'], row['task'])} (n=1)"
    return f"{fmt(row['mean'], row['task'])} ± {fmt(row['std'], row['task'])} (n={row['n']})"


# ---------------------------------------------------------------------------------------------
# Differences of means: the claims that one model beats another


def compare(a: Iterable[float], b: Iterable[float], higher_is_better: bool,
            level: float = 0.95) -> dict[str, float]:
    """How much better `a` is than `b` (positive: `a` better) as the difference of their means,
    with a two-sided Welch interval at `level` (NaN where either side has fewer than 2 seeds)."""
    from scipy import stats

    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    advantage = sign * (a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return dict(advantage=advantage, low=math.nan, high=math.nan, df=math.nan)
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return dict(advantage=advantage, low=advantage, high=advantage, df=math.inf)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return dict(advantage=advantage, low=advantage - half, high=advantage + half, df=df)


CLAIM_VERDICTS = ("supported", "contradicted", "inconclusive", "not tested")


@dataclass(frozen=True)
class Claim:
    key: str
    short: str                   # a few words, for prose
    claim: str                   # the paper's claim, as a table row names it
    where: str                   # where the paper makes it
    test: str                    # how we test it
    kind: str                    # "rank": a beats b; "margin": by the paper's margin
    baselines: tuple[tuple[str, str], ...]  # (model, variant) each compared with the R-Transformer
    tables: tuple[int, ...]
    claimed_only: bool = False   # only where the paper's own numbers have the R-Transformer ahead


_POSITION_TABLES = tuple(sorted({a.table for a in ABLATIONS if a.variant == "position=none"}))
CLAIMS = (
    Claim("transformer", "beats the Transformer", "R-Transformer beats the Transformer on each table", "Tables 1–4, §4",
          "difference of means, 95% interval over seeds", "rank", (("transformer", ""),), (1, 2, 3, 4)),
    Claim("tcn", "beats TCN", "R-Transformer beats TCN", "Tables 1–4, §4.2, §4.3", "difference of means, 95% "
          "interval over seeds", "rank", (("tcn", ""),), (1, 2, 3, 4)),
    Claim("rnns", "beats the recurrent rows", "R-Transformer beats the RNN, GRU and LSTM rows", "Tables 1–4, §6 (Table 4 has "
          "the LSTM ahead: tested only where the paper's numbers claim it)", "difference of means, "
          "95% interval over seeds", "rank", (("rnn", ""), ("gru", ""), ("lstm", "")), (1, 2, 3, 4),
          claimed_only=True),
    Claim("positions", "needs no positions", "No position embeddings needed", "abstract, §3.3, §6", "R-Transformer (no "
          "positions) beats the Transformer both with its positions and without them "
          "(ablation position=none)", "rank", (("transformer", ""), ("transformer", "position=none")),
          _POSITION_TABLES),
    Claim("margins", "by the paper's margin", "By a large margin", "abstract, §4.2, §4.3", "our margin over TCN and the "
          "Transformer is at least the paper's: its 95% interval excludes 0 and does not lie below "
          "the paper's margin", "margin", (("tcn", ""), ("transformer", "")), (1, 2, 3, 4)),
)


def _baseline_label(model: str, variant: str) -> str:
    return model_name(model) + (" without positions" if variant == "position=none" else
                                f" ({variant})" if variant else "")


def _item_verdict(kind: str, n_a: int, n_b: int, test: dict, paper_margin: float) -> tuple[str, str]:
    if n_a == 0 or n_b == 0:
        missing = " and ".join(side for side, n in (("R-Transformer", n_a), ("baseline", n_b)) if n == 0)
        return "not tested", f"no paper-profile runs of the {missing}"
    if min(n_a, n_b) < MIN_SEEDS:
        return "inconclusive", f"{n_a} v {n_b} seeds, fewer than {MIN_SEEDS}"
    low, high = test["low"], test["high"]
    if kind == "margin":
        if high < paper_margin:
            return "contradicted", "our margin's interval lies below the paper's margin"
        if low > 0:
            return "supported", "our margin's interval excludes 0 and reaches the paper's"
        return "inconclusive", "our margin's interval includes 0"
    if low > 0:
        return "supported", "the interval lies above 0"
    if high < 0:
        return "contradicted", "the interval lies below 0"
    return "inconclusive", "the interval includes 0"


def comparisons(records: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (claim, table, baseline): the R-Transformer's cell against the baseline's,
    our advantage with its interval at `level` (the report's: 95%), the paper's advantage, a
    verdict and why."""
    variants = {variant for claim in CLAIMS for _, variant in claim.baselines}
    table_cells = {variant: cells(records, variant) for variant in variants}
    rows = []
    for claim in CLAIMS:
        for table in claim.tables:
            task = TABLE_TASKS[table]
            info = TASKS[task]
            ours = cell(table_cells[""], task, "rtransformer")
            for model, variant in claim.baselines:
                base = cell(table_cells[variant], task, model)
                sign = 1.0 if info.higher_is_better else -1.0
                # the paper ran no ablations: a variant's row has no paper number to compare with
                paper_margin = (sign * (ours["paper"] - base["paper"]) if model in info.paper and not variant
                                else math.nan)
                if claim.claimed_only and not paper_margin > 0:
                    continue
                test = compare(ours["values"], base["values"], info.higher_is_better, level)
                result, why = _item_verdict(claim.kind, ours["n"], base["n"], test, paper_margin)
                rows.append(dict(claim=claim.key, table=table, task=task,
                                 baseline=_baseline_label(model, variant), n_rtransformer=ours["n"],
                                 n_baseline=base["n"], rtransformer=ours_text(ours), other=ours_text(base),
                                 **test, paper_margin=paper_margin, verdict=result, why=why))
    return pd.DataFrame(rows)


def comparison_text(row: pd.Series) -> str:
    """'T2 vs Transformer: +0.63 [-0.01, 1.26], paper +0.97 (3 v 3 seeds)'."""
    task = row["task"]
    head = f"T{row['table']} vs {row['baseline']}"
    if row["verdict"] == "not tested":
        return f"{head}: not tested"
    interval = (f" [{signed(row['low'], task, 1)}, {signed(row['high'], task, 1)}]"
                if np.isfinite(row["low"]) else "")
    paper = f", paper {signed(row['paper_margin'], task)}" if np.isfinite(row["paper_margin"]) else ""
    return (f"{head}: {signed(row['advantage'], task)}{interval}{paper} "
            f"({row['n_rtransformer']} v {row['n_baseline']} seeds)")


def _combine(verdicts: list[str]) -> str:
    if all(v == "not tested" for v in verdicts):
        return "not tested"
    if "contradicted" in verdicts:
        return "contradicted"
    if all(v == "supported" for v in verdicts):
        return "supported"
    return "inconclusive"


def claims(records: pd.DataFrame, level: float = 0.95, found: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims, one row each: a verdict from `CLAIM_VERDICTS`, the evidence (every
    tested comparison as 'R-Transformer's advantage [interval at `level`], the paper's'), and why.
    `found`: `comparisons(records, level)`, where the caller has it already."""
    found = comparisons(records, level) if found is None else found
    rows = []
    for claim in CLAIMS:
        items = found[found["claim"] == claim.key]
        tested = items[items["verdict"] != "not tested"]
        untested = items[items["verdict"] == "not tested"]
        evidence_lines = [comparison_text(row) for _, row in tested.iterrows()]
        if len(untested):
            evidence_lines.append("not tested: " + ", ".join(
                f"T{row.table} vs {row.baseline}" for row in untested.itertuples()))
        why = []
        for result in CLAIM_VERDICTS[:3]:
            chosen = items[items["verdict"] == result]
            if len(chosen):
                by_reason: dict[str, list[str]] = {}
                for row in chosen.itertuples():
                    by_reason.setdefault(row.why, []).append(f"T{row.table} vs {row.baseline}")
                why.append(f"{result}: " + "; ".join(f"{', '.join(labels)} ({reason})"
                                                     for reason, labels in by_reason.items()))
        if len(untested):
            why.append(f"{len(untested)} of {len(items)} comparisons not tested (no paper-profile runs "
                       "of one side or both)")
        rows.append(dict(claim=claim.claim, where=claim.where, test=claim.test,
                         verdict=_combine(list(items["verdict"])), evidence="; ".join(evidence_lines),
                         why="; ".join(why)))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The paper's tables, ours beside theirs


VERDICT_STYLE = {"supported": ("✓", "#d8f0d8"), "reproduced": ("✓", "#d8f0d8"),
                 "contradicted": ("✗", "#f7d4d2"), "not reproduced": ("✗", "#f7d4d2"),
                 "inconclusive": ("?", "#fcefc4"), "not tested": ("–", "#e9e9e9"),
                 "not run": ("–", "#e9e9e9"), "not evidence": ("–", "#e9e9e9")}


class HTMLTable:
    """A table shown as HTML with its columns as given, every cell text (NaN is never shown),
    and the row's verdict as a mark and a colour. Plain text where HTML is not rendered."""

    def __init__(self, frame: pd.DataFrame, verdict_column: str | None = "verdict",
                 html_columns: Iterable[str] = (), note: str = ""):
        self.frame, self.verdict_column = frame, verdict_column
        self.html_columns, self.note = set(html_columns), note

    def _cell(self, column: str, value: Any, escape: bool = True) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "–"
        if column == self.verdict_column and value in VERDICT_STYLE:
            return f"{VERDICT_STYLE[value][0]} {value}"
        if not escape or column in self.html_columns:
            return str(value)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(value)))

    def _repr_html_(self) -> str:
        head = "".join(f'<th style="text-align:left;padding:3px 6px">{html.escape(str(c))}</th>'
                       for c in self.frame.columns)
        body = []
        for _, row in self.frame.iterrows():
            colour = VERDICT_STYLE.get(row.get(self.verdict_column), ("", "transparent"))[1]
            tds = "".join(f'<td style="padding:3px 6px;vertical-align:top">{self._cell(c, row[c])}</td>'
                          for c in self.frame.columns)
            body.append(f'<tr style="background:{colour};color:#111;border-bottom:1px solid #ccc">{tds}</tr>')
        note = f'<p style="font-size:0.85em">{self.note}</p>' if self.note else ""
        return (f'<table style="border-collapse:collapse;font-size:0.88em;margin-bottom:0.4em">'
                f'<thead><tr style="border-bottom:2px solid #888">{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table>{note}')

    def text(self) -> str:
        """The table as aligned plain text (for terminals, logs and the tests)."""
        shown = pd.DataFrame({c: [self._cell(c, v, escape=False) for v in self.frame[c]]
                              for c in self.frame.columns})
        return shown.to_string(index=False)

    def __repr__(self) -> str:
        return self.text()


def claims_table(records: pd.DataFrame, detail: bool = True) -> HTMLTable:
    """`claims` with readable headers; `detail=False` leaves out how each claim is tested."""
    found = claims(records)
    columns = {"claim": "The paper's claim", "where": "where", "verdict": "verdict",
               "evidence": "evidence: R-Transformer's advantage [95% interval] (seeds)", "why": "why"}
    if detail:
        columns = {**columns, "test": "how we test it"}
    return HTMLTable(found[list(columns)].rename(columns=columns), "verdict")


def _diverged_text(row) -> str:
    """'1 run at lr 0.0005 diverged': the cell's diverged runs by lr, saying which is the cell's own
    (the seeds above are all at the lr chosen on validation)."""
    counts = collections.Counter(row["diverged_lrs"])
    return "; ".join(f"{plural(count, 'run')} at {'this' if lr == row['lr'] else 'grid'} lr {lr:g} diverged"
                     for lr, count in sorted(counts.items()))


def paper_table(records: pd.DataFrame, task: str) -> HTMLTable:
    """The paper's table for `task` in its layout (rows = models), ours beside each number:
    'mean ± std (n)' to the paper's digits over paper-profile seeds, ours - paper, the tolerance
    and the verdict. Italic paper numbers are those the paper copied from Bai et al. (2018)."""
    rows = cells(records)
    rows = rows[rows["task"] == task]
    fast = cells(records, profile="fast") if len(records) else rows.iloc[:0]
    out = []
    for _, row in rows.iterrows():
        paper = fmt(row["paper"], task)
        quick = fast[(fast["task"] == task) & (fast["model"] == row["model"])]
        ours = ours_text(row)
        if row["n"] == 0 and not row["diverged"] and len(quick) and quick["n"].iloc[0]:
            ours = "not run (fast profile only)"
        elif row["n"] and row["diverged"]:
            ours += "; " + _diverged_text(row)
        out.append({"model": model_name(row["model"]), "layers / hidden": model_size(task, row["model"]),
                    "paper": f"<i>{paper}</i>" if row["paper_copied"] else paper,
                    "ours": ours, "ours − paper": signed(row["delta"], task, 1) if row["n"] else "–",
                    "tolerance": fmt(row["tolerance"], task, 1) if row["n"] >= MIN_SEEDS else "–",
                    "verdict": row["verdict"]})
    info = TASKS[task]
    note = (f"Table {info.table}, {METRIC_NAMES[info.metric]} ({'higher' if info.higher_is_better else 'lower'}"
            f" is better). Ours: test metric of the epoch chosen on validation (seq-MNIST: the last "
            f"epoch), mean ± std over seeds of the paper profile. <i>Italic</i>: numbers the paper "
            f"copied from Bai et al. (2018). A verdict needs {MIN_SEEDS} seeds; tolerance = max(half "
            f"the paper's last digit, 2 × standard error of our mean).")
    return HTMLTable(pd.DataFrame(out), "verdict", html_columns=["paper"], note=note)


# ---------------------------------------------------------------------------------------------
# Reporting rules side by side


SELECTION_RULES = {"best_valid": "best validation epoch", "last_epoch": "last epoch",
                   "mean_last_3": "mean of the last 3 epochs", "best_test": "best test epoch (optimistic)"}


def reported_rule(task: str) -> str:
    """The rule our records report: the best validation epoch, or the last epoch without one."""
    return "best_valid" if TASKS[task].has_validation else "last_epoch"


def selections(records: pd.DataFrame) -> pd.DataFrame:
    """Per evidence cell, the mean test metric under each reporting rule and how much of the
    gap to the paper the most favourable rule alone would close (``rule_explains``, 0..1)."""
    table_cells = cells(records)
    chosen = select_lr(evidence(records))
    rows = []
    for _, row in table_cells[table_cells["n"] > 0].iterrows():
        task = row["task"]
        runs = chosen[(chosen["task"] == task) & (chosen["model"] == row["model"])]
        by_rule = {rule: [run.selections[rule]["test_metric"] for run in runs.itertuples()
                          if rule in run.selections] for rule in SELECTION_RULES}
        means = {rule: float(np.mean(values)) if len(values) == len(runs) else math.nan
                 for rule, values in by_rule.items()}
        gap = means[reported_rule(task)] - row["paper"]
        smallest = min(abs(value - row["paper"]) for value in means.values() if np.isfinite(value))
        share = max(0.0, (abs(gap) - smallest) / abs(gap)) if abs(gap) > rounding(task) else math.nan
        rows.append(dict(table=row["table"], task=task, model=row["model"], n=row["n"], paper=row["paper"],
                         **means, gap=gap, rule_explains=share))
    return pd.DataFrame(rows, columns=["table", "task", "model", "n", "paper", *SELECTION_RULES,
                                       "gap", "rule_explains"])


def selections_table(records: pd.DataFrame) -> HTMLTable:
    found = selections(records)
    out = []
    for _, row in found.iterrows():
        task = row["task"]
        shown = {label: fmt(row[rule], task, 1) if np.isfinite(row[rule])
                 else "no validation split" if rule == "best_valid" and not TASKS[task].has_validation
                 else "not recorded"
                 for rule, label in SELECTION_RULES.items()}
        out.append({"table": row["table"], "model": model_name(row["model"]), "seeds": row["n"],
                    "paper": fmt(row["paper"], task), **shown,
                    "our gap": signed(row["gap"], task, 1),
                    "share of the gap a rule alone removes": ("no gap" if not np.isfinite(row["rule_explains"])
                                                              else f"{100 * row['rule_explains']:.0f}%")})
    return HTMLTable(pd.DataFrame(out), None)


# ---------------------------------------------------------------------------------------------
# Ablations


def ablations(records: pd.DataFrame, task: str, profile: str = EVIDENCE_PROFILE) -> pd.DataFrame:
    """Each ablation (non-empty variant) of `task` at `profile` beside the same model's row
    without it (`row_at_lr`: the row at the ablation's lr); the ablation over the seeds of its lr
    chosen on validation. ``row_lr``: the lr validation chose for the row itself (NaN unrun)."""
    columns = ["model", "profile", "variant", "n", "lr", "row_lr", "ours", "baseline", "baseline_n", "delta",
               "same_seed_delta", "shared_seeds", "metric"]
    rows = records[(records["task"] == task) & (records["profile"] == profile)] if len(records) else records
    if not len(rows) or not (rows["variant"] != "").any():
        return pd.DataFrame(columns=columns)
    chosen = select_lr(rows)
    out = []
    for (model, variant), group in chosen[chosen["variant"] != ""].groupby(["model", "variant"], sort=True):
        lr = float(group["lr"].iloc[0])
        row_lr = chosen[(chosen["model"] == model) & (chosen["variant"] == "")]["lr"]
        base = row_at_lr(records, task, model, lr, profile)
        ours = group["test_metric"].mean()
        paired, shared = same_seed_change(dict(seeds=tuple(int(s) for s in group["seed"]),
                                               values=tuple(group["test_metric"])), base)
        out.append(dict(model=model, profile=profile, variant=variant, n=len(group), lr=lr,
                        row_lr=float(row_lr.iloc[0]) if len(row_lr) else math.nan, ours=ours,
                        baseline=base["mean"], baseline_n=base["n"], delta=ours - base["mean"],
                        same_seed_delta=paired, shared_seeds=shared, metric=TASKS[task].metric))
    return pd.DataFrame(out, columns=columns)


def row_at_lr(records: pd.DataFrame, task: str, model: str, lr: float,
              profile: str = EVIDENCE_PROFILE) -> pd.Series:
    """The cell of `task`'s `model` row (no variant) over its seeds at `lr` alone, whichever lr
    validation chose for the table: what an ablation that ran at `lr` is read against, so that
    its change is the ablation's and not the learning rate's (the sweep runs ablations at the
    config's lr, and a grid point can win on validation)."""
    if len(records):
        records = records[(records["task"] == task) & (records["model"] == model) & (records["profile"] == profile)
                          & (records["variant"] == "") & np.isclose(records["lr"], lr)]
    return pd.Series(_cell(records, select_lr(records), task, model, "", profile))


def other_lr_note(lr: float, chosen: float) -> str:
    """' at lr 2 (validation chose lr 3 for the table)' where an ablation's row is read at an lr
    that is not the row's chosen one; '' where they agree (or the row has no chosen lr yet)."""
    if math.isnan(chosen) or np.isclose(lr, chosen):
        return ""
    return f" at lr {lr:g} (validation chose lr {chosen:g} for the table)"


def ablation_lr(with_it: pd.Series, task: str, model: str) -> float:
    """The lr an ablation's cell ran at; the config's (where `reproduce` runs every ablation)
    while it has no finished run."""
    return float(with_it["lr"]) if with_it["n"] else run_config(task, model, EVIDENCE_PROFILE).train.lr


def ablation_reading(with_it: Sequence[float], without: Sequence[float], higher_is_better: bool) -> str:
    """What an ablation's seeds say against its row's: with `MIN_SEEDS` a side, the difference of
    means with its 95% interval; with fewer, where its seeds fall among the row's (a pointer)."""
    if not len(with_it):
        return "not run"
    if not len(without):
        return "its row is not run"
    if min(len(with_it), len(without)) >= MIN_SEEDS:
        test = compare(with_it, without, higher_is_better)
        if test["low"] > 0:
            return "better: the 95% interval of the change excludes 0"
        if test["high"] < 0:
            return "worse: the 95% interval of the change excludes 0"
        return "no change shown: the 95% interval of the change includes 0"
    sign = 1.0 if higher_is_better else -1.0  # scores: higher is better
    ours, row = [sign * v for v in with_it], [sign * v for v in without]
    few = f"{plural(len(with_it), 'seed')} against {len(without)}: a pointer, not a verdict"
    if min(ours) > max(row):
        return f"better than every seed of the row ({few})"
    if max(ours) < min(row):
        return f"worse than every seed of the row ({few})"
    return f"within the row's seeds ({few})"


def same_seed_change(with_it, without) -> tuple[float, tuple[int, ...]]:
    """The mean change (with it − without it) over the seeds both sides ran, and those seeds:
    a one-seed ablation against its own seed of the row, not against the row's spread. Each side
    is a cell (`cells`) or anything else with its "seeds" and "values"."""
    shared = sorted(set(with_it["seeds"]) & set(without["seeds"]))
    if not shared:
        return math.nan, ()
    ours, row = dict(zip(with_it["seeds"], with_it["values"])), dict(zip(without["seeds"], without["values"]))
    return float(np.mean([ours[seed] - row[seed] for seed in shared])), tuple(shared)


def ablation_effects(records: pd.DataFrame) -> pd.DataFrame:
    """One row per ablation the sweep plans (`rtlib.configs.ABLATIONS`), in table order: its
    paper-profile seeds (over its lr chosen on validation) beside its row's at the same lr
    (`row_at_lr`), the change of means (with it − without it, in the metric's unit), the change
    at the seeds both ran, and a reading."""
    by_variant = {variant: cells(records, variant) for variant in {"", *(a.variant for a in ABLATIONS)}}
    rows = []
    for ablation in sorted(ABLATIONS, key=lambda a: a.table):
        task = TABLE_TASKS[ablation.table]
        with_it = cell(by_variant[ablation.variant], task, ablation.model)
        lr = ablation_lr(with_it, task, ablation.model)
        without = row_at_lr(records, task, ablation.model, lr)
        chosen = cell(by_variant[""], task, ablation.model)["lr"]
        paired, shared = same_seed_change(with_it, without)
        rows.append(dict(table=ablation.table, task=task, model=ablation.model, variant=ablation.variant,
                         why=ablation.why, planned_seeds=ablation.seeds, n=with_it["n"],
                         with_it=ours_text(with_it), without=ours_text(without) + other_lr_note(lr, chosen),
                         change=with_it["mean"] - without["mean"] if with_it["n"] and without["n"] else math.nan,
                         same_seed_change=paired, shared_seeds=shared,
                         reading=ablation_reading(with_it["values"], without["values"],
                                                  TASKS[task].higher_is_better)))
    return pd.DataFrame(rows)


def ablation_sentence(records: pd.DataFrame, variant: str) -> str:
    """Markdown: what the paper-profile runs of one ablation (`variant`) gave on each table that
    plans it, against its row, with `ablation_reading`'s verdict or pointer; which tables have
    not run it."""
    found = ablation_effects(records)
    found = found[found["variant"] == variant]
    ran = [f"{row.with_it} on {task_name(row.task)} (Table {row.table}, "
           f"{METRIC_NAMES.get(TASKS[row.task].metric, TASKS[row.task].metric)}) against the row's {row.without}"
           + (f", {signed(row.same_seed_change, row.task, 1)} at the same {seeds_text(row.shared_seeds)}"
              if row.shared_seeds else "") + f": {row.reading}"
           for row in found.itertuples() if row.n]
    missing = [f"Table {row.table}" for row in found.itertuples() if not row.n]
    text = (f"Trained at the paper profile, {variant_name(variant)} gives " + "; ".join(ran) + "."
            if ran else f"No paper-profile run of {variant_name(variant)} has finished yet.")
    return text + (f" Not run yet: {join_words(missing)}." if ran and missing else "")


def ablations_table(records: pd.DataFrame) -> HTMLTable:
    """`ablation_effects` with readable headers; the change to one more digit than the paper's."""
    found = ablation_effects(records)
    out = [{"table": f"T{row.table}", "row": model_name(row.model), "ablation": row.why, "run as": f"`{row.variant}`",
            "seeds": f"{row.n} of {row.planned_seeds}", "with it": row.with_it, "without it (the row)": row.without,
            "change": signed(row.change, row.task, 1) if np.isfinite(row.change) else "–",
            "change at the same seeds": (f"{signed(row.same_seed_change, row.task, 1)} ({seeds_text(row.shared_seeds)})"
                                         if row.shared_seeds else "–"),
            "reading": row.reading}
           for row in found.itertuples()]
    note = ("Each value is the test metric of the paper profile, mean ± std (n) over seeds; change = with it − "
            "without it, in the table's unit (accuracy: higher is better; NLL, bpc, perplexity: lower); at the "
            "same seeds, the change is the mean over the seeds both ran, each against its own seed of the row.")
    return HTMLTable(pd.DataFrame(out), None, note=note)


def seeds_text(seeds: Sequence[int]) -> str:
    """'seed 1111' or 'seeds 1111–1113' (consecutive) or 'seeds 1111, 1113'."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    consecutive = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"seeds {seeds[0]}–{seeds[-1]}" if consecutive else f"seeds {', '.join(map(str, seeds))}"


def window_ablations() -> dict[int, list]:
    """The window ablations `configs.ABLATIONS` plans, per table (in table order)."""
    planned: dict[int, list] = {}
    for ablation in ABLATIONS:
        if ablation.variant.startswith("window="):
            planned.setdefault(ablation.table, []).append(ablation)
    return dict(sorted(planned.items()))


def window_points(records: pd.DataFrame) -> pd.DataFrame:
    """The R-Transformer's paper-profile test metric per seed against its window M, for each
    table with a window ablation recorded: the row's own seeds at the released M (at the lr the
    ablations ran, `row_at_lr`), beside the seeds of each `window=M` ablation; `lr` that lr and
    `chosen_lr` the one validation chose for the table's cell (NaN while it has none)."""
    columns = ["table", "task", "window", "released", "seed", "value", "lr", "chosen_lr"]
    found, chosen_cells = [], cells(records)
    for table, planned in window_ablations().items():
        task = TABLE_TASKS[table]
        windows = [(int(a.variant.removeprefix("window=")), cell(cells(records, a.variant), task, "rtransformer"))
                   for a in planned]
        ran = [window_cell for _, window_cell in windows if window_cell["n"]]
        if not ran:
            continue
        lr = ablation_lr(ran[0], task, "rtransformer")
        row, chosen = row_at_lr(records, task, "rtransformer", lr), cell(chosen_cells, task, "rtransformer")["lr"]
        released = run_config(task, "rtransformer", "paper").backbone.window
        found += [(table, task, released, True, seed, value, lr, chosen)
                  for seed, value in zip(row["seeds"], row["values"])]
        found += [(table, task, window, False, seed, value, lr, chosen)
                  for window, window_cell in windows for seed, value in zip(window_cell["seeds"], window_cell["values"])]
    return pd.DataFrame(found, columns=columns)


# ---------------------------------------------------------------------------------------------
# Learning curves


def learning_curves(records: pd.DataFrame, task: str, quantity: str = "test_metric") -> pd.DataFrame:
    """Long format: one row per (run, epoch) of `task`'s records that log `quantity`."""
    columns = ["run_id", "model", "profile", "variant", "lr", "seed", "epoch", "value"]
    rows = [(record.run_id, record.model, record.profile, record.variant, record.lr, record.seed,
             entry["epoch"], entry[quantity])
            for record in (records[records["task"] == task].itertuples() if len(records) else ())
            for entry in record.curve or () if entry.get(quantity) is not None]
    return pd.DataFrame(rows, columns=columns)


def lr_cuts(curve: list[dict[str, Any]]) -> list[int]:
    """The epochs after which the learning rate was cut (the lr an epoch trained at is logged)."""
    return [previous["epoch"] for previous, entry in zip(curve, curve[1:])
            if entry["lr"] < previous["lr"] * (1 - 1e-9)]


# ---------------------------------------------------------------------------------------------
# Which settings and lrs the records ran


UNCOMPARED = ("seed", "lr_grid", *RUNTIME_KEYS)  # not what a run trains with, or the engine's


def settings_drift(records: pd.DataFrame, task: str, profile: str = "fast") -> pd.DataFrame:
    """Where `task`'s records of `profile` were trained with other settings than the profile gives
    today (`run_config` with the record's variant): one row per (setting, recorded value, today's
    value), with the models and the number of records it holds for."""
    columns = ["setting", "recorded", "today", "models", "records"]
    mine = records[(records["task"] == task) & (records["profile"] == profile)] if len(records) else records
    found: dict[tuple[str, str, str], list[str]] = {}
    for record in mine.itertuples():
        today = asdict(with_variant(run_config(task, record.model, profile), record.variant).train)
        for key, value in (record.config or {}).get("train", {}).items():
            if key not in UNCOMPARED and key in today and value != today[key]:
                found.setdefault((key, _setting(value), _setting(today[key])), []).append(record.model)
    return pd.DataFrame([(key, recorded, now, sorted(set(models)), len(models))
                         for (key, recorded, now), models in found.items()], columns=columns)


def _setting(value: Any) -> str:
    """A training setting as a sentence shows it (a schedule by its fields)."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {item}" for key, item in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown_folder(folder: Path) -> str:
    """A records folder as a page names it: from the repository's root where it lies inside."""
    folder = folder.resolve()
    return folder.relative_to(REPO).as_posix() if folder.is_relative_to(REPO) else folder.name


def drift_sentence(records: pd.DataFrame, task: str, profile: str = "fast") -> str:
    """Markdown: how many committed `profile` records `task` has, in which folders, and in which
    settings they differ from the profile's definition today (`settings_drift`)."""
    mine = records[(records["task"] == task) & (records["profile"] == profile)] if len(records) else records
    if mine.empty:
        return f"No `{profile}`-profile record of this table is committed."
    folders = sorted({_shown_folder(Path(path).parent) for path in mine["path"]})
    where = f"{plural(len(mine), f'committed `{profile}`-profile record')} of this table (in " \
            f"{join_words([f'`{folder}/`' for folder in folders])})"
    drift = settings_drift(records, task, profile)
    if drift.empty:
        return f"The {where} were trained with today's settings of the profile."
    models = set(mine["model"])
    parts = [f"`{row.setting}` {row.recorded} (today {row.today}"
             + ("" if set(row.models) == models else f"; {join_words([model_name(m) for m in row.models])}") + ")"
             for row in drift.itertuples()]
    return (f"The {where} come from an earlier definition of the profile and differ from today's in "
            f"{join_words(parts)}. Each record's `changes` lists what it changed against the paper "
            "profile of its day.")


def lr_grid_coverage(records: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per model of `task` with a paper-profile run (no ablation): the paper's lr grid, the lrs
    run (finished or diverged), whether every grid point was run, and whether validation chose
    among several finished lrs (`rtlib.results.select_lr`) or the only one finished was kept."""
    columns = ["model", "grid", "run", "complete", "chosen_on_validation"]
    runs = done_runs(records)
    runs = runs[(runs["task"] == task) & (runs["variant"] == "")] if len(runs) else runs
    rows = []
    for model, mine in runs.groupby("model", sort=False) if len(runs) else ():
        grid = run_config(task, model, "paper").train.lr_grid
        finished = set(mine[mine["status"] == "finished"]["lr"])
        rows.append((model, tuple(grid), tuple(sorted(set(mine["lr"]))), set(grid) <= set(mine["lr"]),
                     len(finished) > 1))
    return pd.DataFrame(rows, columns=columns)


def lr_choice_sentence(records: pd.DataFrame, task: str) -> str:
    """Markdown: for `task`'s rows with paper-profile runs, whose lr validation chose over the
    whole grid, whose over part of it, which ran one lr of a larger grid so far and which have a
    grid of one lr (`lr_grid_coverage`)."""
    coverage = lr_grid_coverage(records, task)
    if coverage.empty:
        return "No row of this table has a paper-profile run yet, so no lr has been chosen."
    if not TASKS[task].has_validation:
        return "This table has no validation split to choose an lr on: every row keeps its configured lr."
    one = coverage["grid"].map(len) == 1
    chosen, complete = coverage["chosen_on_validation"], coverage["complete"]
    lead = "over" if (chosen & complete).any() else "the lr is chosen on validation over"
    groups = [("the lr is chosen on validation over the whole grid for {names}", chosen & complete),
              (lead + " part of the grid for {names}", chosen & ~complete),
              ("{names} {has} run one lr of {its} grid so far, so {its} number comes from that lr, "
               "the rest of the grid untried", ~chosen & ~one),
              ("the grid of {names} holds one lr", ~chosen & one)]
    parts = []
    for words, rows in groups:
        names = list(coverage[rows]["model"])
        if names:
            single = len(names) == 1
            parts.append(words.format(names=join_words([model_name(m) for m in names]),
                                      has="has" if single else "have", its="its" if single else "their"))
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."

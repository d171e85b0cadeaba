"""The reproducibility report's sections, computed from the records (`rtlib.results`), the GPU
batch logs (``results/batches/``) and the benchmarks (``results/bench/``).

Explained in book/report.md; the table chapters use `results_paragraph`; the *Cost* section's
GPU-minutes come from `rtlib.cost`. Nothing here is
typed in: a sentence that names a number computes it, and a section with no records to read
says so. Numbers of the paper itself (its split sizes) sit in `PAPER_SPLITS`, named as such.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bench_results import load_bench
from .configs import ABLATIONS, NO_RELEASED_CODE, OUR_TRAINING, PAPER, TABLE_TASKS, run_config
from .cost import (LEASE_MINUTES, ablation_records, beyond_a_lease, job_words, minutes_per_run, paper_records,
                   step_timing, steps_minutes, superseded_records, unfinished_lost, unfinished_runs, unfinished_waiting,
                   waiting_text)
from .paths import BENCH_DIR, REPEATS_DIR, SUPERSEDED_DIR
from .run_folder import run_id_fields, stacks_eval_windows, variant_slug
from .runtime import COMPILE_MODE_WORDS, PADDED_WIDTH
from .results import (CLAIM_VERDICTS, CLAIMS, EVIDENCE_PROFILE, METRIC_NAMES, MIN_SEEDS, HTMLTable, ablation_effects,
                      ablations, cell, cells, claims, comparison_text, comparisons, diverged, diverged_in, diverged_text, done_runs, evidence, fmt,
                      join_words, lr_cuts, model_name, ours_text, plural, rounding, row_at_lr,
                      seeds_text, other_lr_note, select_lr, selections, signed, task_name, variant_name, window_points)
from .tables import parameter_counts
from .tasks import EVAL_ROWS, TASKS, ClassifyProtocol, above_uniform, uniform_loss

# The paper's split sizes (§4.3), in thousands of characters / words.
PAPER_SPLITS = {"char": dict(train=5059, valid=396, test=446), "word": dict(train=888, valid=70, test=79)}


def _runs(records: pd.DataFrame, task: str, model: str) -> pd.DataFrame:
    chosen = select_lr(evidence(records))
    if chosen.empty:
        return chosen
    return chosen[(chosen["task"] == task) & (chosen["model"] == model)].sort_values("seed")


# ---------------------------------------------------------------------------------------------
# Every gap, from evidence


def _outlier(values: tuple[float, ...], task: str, paper: float) -> int | None:
    """The index of a seed far from all the others (> 5 x their spread) that carries at least
    half of the mean's gap to the paper, or None. Carrying means that the mean without it lies
    nearer the paper's: a far seed on the paper's side of the others narrows the gap instead.
    Needs 3 seeds at least."""
    if len(values) < MIN_SEEDS:
        return None
    values = np.asarray(values)
    index = int(np.argmax(np.abs(values - np.median(values))))
    others = np.delete(values, index)
    spread = max(others.std(ddof=1), rounding(task))
    gap, gap_without = abs(values.mean() - paper), abs(others.mean() - paper)
    pull = abs(values.mean() - others.mean())
    far = abs(values[index] - others.mean()) > 5 * spread
    return index if far and gap_without < gap and pull >= 0.5 * gap else None


AT_CHANCE = 0.98  # a classifier's training loss within 2% of chance (ln of the classes) has learned nothing


@dataclass(frozen=True)
class ChanceTrace:
    """One classification run's training loss against chance."""
    seed: int
    left: int | None    # the first epoch whose loss is below chance; None if none is
    lowest: float
    lowest_epoch: int
    back: bool          # at chance again in its last epoch (where seq-MNIST is read), having left it


def _against_chance(task: str, runs: pd.DataFrame) -> list[ChanceTrace]:
    """For a classification cell, each seed's training loss against chance; [] for other tasks."""
    if TASKS[task].kind != "classify" or runs.empty:
        return []
    chance = AT_CHANCE * math.log(ClassifyProtocol.shape.out_features)
    traces = []
    for run in runs.itertuples():
        losses = [entry["train_loss"] for entry in run.curve]
        below = [epoch for epoch, loss in enumerate(losses, start=1) if loss < chance]
        lowest = int(np.argmin(losses))
        traces.append(ChanceTrace(int(run.seed), below[0] if below else None, losses[lowest], lowest + 1,
                                  bool(below) and losses[-1] >= chance))
    return traces


def _chance_items(traces: list[ChanceTrace]) -> list[str]:
    """Evidence lines for a classification cell whose training loss sat at chance for a while."""
    classes = ClassifyProtocol.shape.out_features
    chance = f"chance (ln {classes} = {math.log(classes):.2f})"
    if traces and all(trace.left is None for trace in traces):
        return [f"training loss at {chance} throughout: lowest "
                f"{min(trace.lowest for trace in traces):.2f} over every seed and epoch"]
    if not any((trace.left or 1) > 1 or trace.back for trace in traces):
        return []
    items = [f"training loss first below {chance} in epoch: "
             + ", ".join(f"{trace.seed} → {trace.left or 'never'}" for trace in traces)]
    back = [trace for trace in traces if trace.back]
    if back:
        items.append("training loss back at chance in the last epoch: " + ", ".join(
            f"seed {trace.seed} (lowest {trace.lowest:.2f} in epoch {trace.lowest_epoch})" for trace in back))
    return items


def _chance_words(traces: list[ChanceTrace], epochs: int) -> str:
    """What the explanation says about a classifier's loss against chance, ending where 'why is
    unexplained' goes on; '' when the loss left chance in the first epoch and stayed below it."""
    if not traces:
        return ""
    if all(trace.left is None for trace in traces):
        return "at every seed the training loss stayed at chance for the whole run, so the model never learned; "
    words = []
    if all((trace.left or epochs + 1) > 1 for trace in traces):
        left = sorted(trace.left for trace in traces if trace.left)
        span = f"{left[0]}" if left[0] == left[-1] else f"{left[0]}–{left[-1]}"
        never = len(traces) - len(left)
        words.append(f"the training loss first fell below chance in epoch {span} of {epochs}"
                     + (f" ({never} of {len(traces)} seeds never)" if never else " at every seed"))
    back = [str(trace.seed) for trace in traces if trace.back]
    if back:
        words.append(f"at {'seed' if len(back) == 1 else 'seeds'} {join_words(back)} it was back at chance in "
                     "the last epoch, where the metric is read")
    return "; ".join(words) + "; " if words else ""


@dataclass(frozen=True)
class AboveUniform:
    """One language-model run whose training loss was above a uniform guess's for a while."""
    seed: int
    first: int                # the first and last epoch whose training loss was above it
    last: int
    lr_first: float           # the lr of epoch `first`
    lr_last: float            # ... and of epoch `last`
    lr_below: float | None    # the lr of the epoch after `last`; None if the run ended above it


def _above_uniform_trace(run) -> AboveUniform | None:
    """When a run (a records row) had its training loss above a uniform guess's; None if never
    (and for the tasks that are not language models)."""
    above = above_uniform(run.curve, run.task)
    if not above:
        return None
    first, last = run.curve[above[0]], run.curve[above[-1]]
    after = run.curve[above[-1] + 1] if above[-1] + 1 < len(run.curve) else None
    return AboveUniform(int(run.seed), first["epoch"], last["epoch"], first["lr"], last["lr"],
                        after["lr"] if after else None)


def _above_uniform(runs: pd.DataFrame) -> list[AboveUniform]:
    """The runs of a cell whose training loss rose above a uniform guess's (`_above_uniform_trace`)."""
    return [trace for run in runs.itertuples() if (trace := _above_uniform_trace(run)) is not None]


def _uniform_level(task: str) -> str:
    """'a uniform guess's (ln 10,000 = 9.21)'."""
    uniform = uniform_loss(task)
    return f"a uniform guess's (ln {round(math.exp(uniform)):,} = {uniform:.2f})"


def _above_uniform_items(task: str, traces: list[AboveUniform]) -> list[str]:
    """The evidence line for a language-model cell whose training loss was above a uniform guess's."""
    if not traces:
        return []
    return [f"training loss above {_uniform_level(task)} in epochs: "
            + ", ".join(f"{t.seed} → {_span(t.first, t.last)}" for t in traces)]


def _span(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}–{last}"


def _lr_path(first: float, last: float) -> str:
    return f"at lr {first:g}" if np.isclose(first, last) else f"while its lr went from {first:g} to {last:g}"


def _above_uniform_words(task: str, traces: list[AboveUniform], epochs: int) -> str:
    """A sentence: when each run's training loss was above a uniform guess's, at which lr, and
    at which lr it fell below; '' for none."""
    if not traces:
        return ""
    parts = []
    for t in traces:
        below = (f", and fell below it in epoch {t.last + 1} at lr {t.lr_below:g}" if t.lr_below is not None
                 else ", and never fell below it")
        parts.append(f"at seed {t.seed} in epochs {_span(t.first, t.last)} of {epochs} {_lr_path(t.lr_first, t.lr_last)}"
                     + below)
    return f"The training loss was above {_uniform_level(task)} " + "; ".join(parts) + "."


LATE_EPOCHS = 3  # a best validation epoch among the schedule's last 3: still improving at its end


def _still_improving(task: str, model: str, runs: pd.DataFrame) -> list[int] | None:
    """The best validation epochs of a cell whose every seed ran the paper's full schedule and had
    its best epoch among the last LATE_EPOCHS (still improving when the schedule ended), else None."""
    epochs = run_config(task, model, EVIDENCE_PROFILE).train.epochs
    if not TASKS[task].has_validation or runs.empty or runs["best_epoch"].isna().any() \
            or (runs["epochs_run"] < epochs).any():
        return None
    best = [int(epoch) for epoch in runs["best_epoch"]]
    return best if min(best) > epochs - LATE_EPOCHS else None


def _untested_causes(task: str, model: str, records: pd.DataFrame) -> list[str]:
    """Candidate causes of a gap not yet tested: the rest of the row's lr grid (which the sweep
    runs only where a validation split can choose), and the ablations of this row."""
    table = TASKS[task].table
    grid = run_config(task, model, "paper").train.lr_grid
    runs = done_runs(records)  # a grid point that diverged was tested too
    runs = runs[runs["variant"] == ""] if len(runs) else runs
    run = set(runs[(runs["task"] == task) & (runs["model"] == model)]["lr"]) if len(runs) else set()
    causes = []
    untried = [lr for lr in grid if lr not in run]
    named = "the lr grid {" + ", ".join(f"{lr:g}" for lr in grid) + "}"
    if len(grid) > 1 and TASKS[task].has_validation and untried:
        causes.append(f"lr {join_words([f'{lr:g}' for lr in untried])} of {named}" if run else named)
    elif len(grid) > 1 and untried:
        causes.append(f"lr {join_words([f'{lr:g}' for lr in untried])} of {named}, which the sweep does not run "
                      "(no validation split to choose an lr on)")
    done = set(ablations(records, task)["variant"]) if len(records) else set()
    causes += [f"the {variant_name(a.variant)} ablation" for a in ABLATIONS if a.table == table and a.model == model
               and a.variant not in done]
    return causes


RELEASED_BEHAVIOUR = {
    ("nottingham", "rtransformer"): "the released music script clips before `backward()`, so its "
    "updates are unclipped; ours replicate that, and the ablation clipping after backward() is the "
    "paper text's clipping",
    ("nottingham", "tcn"): "the TCN suite's music script also clips before `backward()`",
    ("mnist", "rtransformer"): "the released script has no validation split, divides the lr by 10 "
    "every 10 epochs (the paper says on plateau) and reports the last epoch",
}


class GapSources:
    """What the gap evidence of every cell reads from one set of records, each built once: its
    cells, its reporting rules (`selections`) and each task's ablations. A page that explains
    several cells passes one to `gap_evidence`, instead of every cell building them all again."""

    def __init__(self, records: pd.DataFrame, superseded_dir: str | Path = SUPERSEDED_DIR):
        self.records = records
        self.cells = cells(records)
        self.superseded_dir = superseded_dir
        self._ablations: dict[str, pd.DataFrame] = {}

    @functools.cached_property
    def superseded(self) -> pd.DataFrame:
        return superseded_records(self.superseded_dir)

    @functools.cached_property
    def rules(self) -> pd.DataFrame:
        return selections(self.records)

    def ablations(self, task: str) -> pd.DataFrame:
        if task not in self._ablations:
            self._ablations[task] = ablations(self.records, task)
        return self._ablations[task]


def gap_evidence(records: pd.DataFrame, task: str, model: str,
                 sources: GapSources | None = None) -> dict[str, Any]:
    """The evidence about one paper-profile cell's gap to the paper: per-seed values, lr traces,
    best epochs, the share of the paper's schedule run, the lr grid, ablations, released-code
    behaviour, and a one-sentence `explanation` that says "Unexplained" when nothing explains it.
    `sources`, built from the same `records`, saves building its frames again."""
    sources = sources or GapSources(records)
    row = cell(sources.cells, task, model)
    runs = _runs(records, task, model)
    broke = diverged(records, task, model)
    failed = diverged_text(broke) + _divergence_checks(records, broke)
    if row["n"] == 0:
        if failed:
            tried = set(records[(records["task"] == task) & (records["model"] == model) & (records["variant"] == "")
                                & (records["profile"] == EVIDENCE_PROFILE)]["lr"])
            untried = [f"{lr:g}" for lr in run_config(task, model, "paper").train.lr_grid if lr not in tried]
            rest = f"; not run yet: lr {join_words(untried)} of its grid" if untried else ""
            return dict(evidence=[failed], explanation=f"No finished run yet: {failed}{rest}.")
        return dict(evidence=[], explanation="Not run at the paper profile.")
    epochs = run_config(task, model, "paper").train.epochs
    cuts = {int(run.seed): lr_cuts(run.curve) for run in runs.itertuples()}
    items = [
        "seeds: " + ", ".join(f"{int(s)} → {fmt(v, task)}" for s, v in zip(runs["seed"], runs["test_metric"])),
        "lr first cut after epoch: " + ", ".join(f"{seed} → {c[0] if c else 'never'}" for seed, c in cuts.items()),
        f"epochs run of the paper's {epochs}: " + ", ".join(str(int(e)) for e in runs["epochs_run"]),
    ]
    if runs["best_epoch"].notna().any():
        items.append("best validation epoch: " + ", ".join(str(int(e)) for e in runs["best_epoch"]))
    at_config = _at_config_lr(records, row)
    if at_config is not None:
        items.append(f"at {_config_lr_words(task, model)} {at_config['lr']:g} (validation chose lr {row['lr']:g}): "
                     f"{ours_text(at_config)}, {_against_paper(at_config)}")
    found = sources.ablations(task)
    for ablation in found[found["model"] == model].itertuples():
        same = (f", {signed(ablation.same_seed_delta, task, 1)} at the same {seeds_text(ablation.shared_seeds)}"
                if ablation.shared_seeds else "")
        items.append(f"ablation {variant_name(ablation.variant)} ({plural(ablation.n, 'seed')}): "
                     f"{fmt(ablation.ours, task)} against {fmt(ablation.baseline, task)} without it"
                     f"{other_lr_note(ablation.lr, ablation.row_lr)}{same}")
    traces = _against_chance(task, runs)
    items += _chance_items(traces)
    blowups = _above_uniform(runs)
    items += _above_uniform_items(task, blowups)
    source = run_config(task, model, "paper").source
    if OUR_TRAINING in source:
        items.append(f"settings: {source}")
    if (task, model) in RELEASED_BEHAVIOUR:
        items.append("released code: " + RELEASED_BEHAVIOUR[task, model])
    if model == "transformer":
        items.append("no released Transformer baseline: ours has the R-Transformer's sizes and settings, "
                     "sinusoidal positions and no LocalRNN")
    explanation = _explanation(records, row, runs, cuts, found, sources.rules, _chance_words(traces, epochs), at_config,
                               _above_uniform_words(task, blowups, epochs))
    if earlier := _earlier_runs(sources.superseded, task, model):
        items.append(f"superseded runs (earlier settings): {earlier}")
        explanation += (f" Its superseded runs, under settings the row no longer uses ({earlier}), are averaged "
                        "by no table (`results/superseded/`).")
    if failed:
        items.append(failed)
        explanation += f" Besides, {failed}."
    return dict(evidence=items, explanation=explanation)


def _earlier_runs(superseded: pd.DataFrame, task: str, model: str) -> str:
    """'bf16, lr 0.001: seed 1111 diverged in epoch 5 and seed 1113 90.8 after 20 epochs' for
    the row's superseded runs, whose settings differ from the row's now ('' for none)."""
    if superseded.empty:
        return ""
    mine = superseded[(superseded["task"] == task) & (superseded["model"] == model)]
    now = run_config(task, model, "paper").train.precision
    parts = []
    for (precision, lr), runs in mine.groupby(["precision", "lr"]):
        settings = f"{precision}, " if precision != now else ""
        ended = [f"seed {int(run.seed)}{' (made again)' * bool(run.made_again)} {_ended(run, task)}"
                 for run in runs.sort_values(["seed", "made_again"]).itertuples()]
        parts.append(f"{settings}lr {lr:g}: {join_words(ended)}")
    return "; ".join(parts)


def _divergence_checks(records: pd.DataFrame, broke: pd.DataFrame) -> str:
    """'; at the same lr and seed, the fp32 run at seed 1111: 3.25 after 100 epochs' for the
    variant runs (ablations) made at the lr and seed of a diverged run, to see whether it diverges
    again; '' for none."""
    if broke.empty:
        return ""
    pool = records[(records["profile"] == EVIDENCE_PROFILE) & (records["variant"] != "")]
    parts = [f"the {variant_name(check.variant)} run at seed {int(run.seed)}: {_ended(check, run.task)}"
             for run in broke.itertuples() for check in _same_lr_and_seed(pool, run).itertuples()]
    return f"; at the same lr and seed, {'; '.join(parts)}" if parts else ""


def _precision_checks(records: pd.DataFrame, run: pd.Series, first_cut: int | None) -> list[str]:
    """For a seed that carries a gap: whether its runs at another precision (ablation
    `precision=...`, same lr and seed, so the same starting weights) repeat its first lr cut."""
    pool = records[(records["profile"] == EVIDENCE_PROFILE) & records["variant"].str.startswith("precision=")]
    sentences = []
    for check in _same_lr_and_seed(pool, run).itertuples():
        if check.status == "diverged":
            sentences.append(f"At the same lr and seed, the {variant_name(check.variant)} run {_ended(check, run.task)}.")
            continue
        cuts = lr_cuts(check.curve)
        cut = cuts[0] if cuts else None
        same = cut == first_cut
        row_run = (f"had it first cut after epoch {first_cut}" if first_cut is not None else "never had it cut")
        sentences.append(
            f"At the same lr and seed, the {variant_name(check.variant)} run "
            + _first_cut_words(cut)
            + (" as well" if same else f", where the row's run {row_run},")
            + f" and ended at {fmt(check.test_metric, run.task)}"
            + (": this seed's first cut at that epoch is not an effect of the precision."
               if same and cut is not None else "."))
    return sentences


def _at_config_lr(records: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """The row's cell at its config's lr (`row_at_lr`; the released script's where there is one)
    where validation chose another lr for the table and that lr has finished seeds; else None."""
    config_lr = run_config(row["task"], row["model"], "paper").train.lr
    if pd.isna(row["lr"]) or np.isclose(row["lr"], config_lr):
        return None
    found = row_at_lr(records, row["task"], row["model"], config_lr)
    return found if found["n"] else None


def _config_lr_words(task: str, model: str) -> str:
    """Whose lr the row's config holds: 'the released script's lr', 'the R-Transformer script's
    lr' (a row with no released code borrows it), or 'the config's lr' (ours: the paper gives none)."""
    if model in NO_RELEASED_CODE:
        return "the R-Transformer script's lr"
    return "the config's lr" if OUR_TRAINING in run_config(task, model, "paper").source else "the released script's lr"


def _against_paper(found: pd.Series) -> str:
    """'within tolerance of the paper's', 'worse than the paper's, beyond tolerance', or, below the
    seeds a verdict needs, 'better than the paper's so far'."""
    if found["verdict"] == "reproduced":
        return "within tolerance of the paper's"
    direction = "better" if found["better"] else "worse"
    return f"{direction} than the paper's" + (", beyond tolerance" if found["verdict"] == "not reproduced" else " so far")


def _first_cut_words(epoch: int | None) -> str:
    """'had its lr first cut after epoch 24', or 'never had its lr cut' for None."""
    return f"had its lr first cut after epoch {epoch}" if epoch is not None else "never had its lr cut"


def _same_lr_and_seed(pool: pd.DataFrame, run) -> pd.DataFrame:
    """The runs of `pool` with the task, model, lr and seed of `run` (variants of it)."""
    return pool[(pool["task"] == run.task) & (pool["model"] == run.model) & np.isclose(pool["lr"], run.lr)
                & (pool["seed"] == run.seed)]


def _ended(check, task: str) -> str:
    """'diverged in epoch 11' or '3.25 after 100 epochs'."""
    return (f"diverged in epoch {diverged_in(check.epochs_run)}" if check.status == "diverged"
            else f"{fmt(check.test_metric, task)} after {int(check.epochs_run)} epochs")


def _explanation(records, row, runs, cuts, found, rules, chance_words: str, at_config: pd.Series | None,
                 uniform_words: str = "") -> str:
    """`at_config`: the row's seeds at its config's lr where validation chose another (`_at_config_lr`);
    `uniform_words`: when a language model's training loss was above a uniform guess's
    (`_above_uniform_words`), a candidate cause of a gap where ours is worse."""
    task, model, paper = row["task"], row["model"], row["paper"]
    sentences = []
    if row["verdict"] == "inconclusive":
        sentences.append(f"Inconclusive: {plural(row['n'], 'seed')} of the {MIN_SEEDS} a verdict needs; "
                         f"ours − paper = {signed(row['delta'], task, 1)} so far.")
    elif row["verdict"] == "reproduced":
        sentences.append(f"Within tolerance (|{signed(row['delta'], task, 1)}| ≤ {fmt(row['tolerance'], task, 1)}).")
    outlier = _outlier(row["values"], task, paper)
    if outlier is not None:
        seeds = list(cuts)
        odd, rest = seeds[outlier], [s for s in seeds if s != seeds[outlier]]
        others = np.delete(np.asarray(row["values"]), outlier)
        first = {s: (cuts[s][0] if cuts[s] else None) for s in seeds}
        cut = (f"whose lr was first cut after epoch {first[odd]}" if first[odd] is not None
               else "whose lr was never cut")
        sentences.append(
            f"Most of the gap comes from seed {odd} ({fmt(row['values'][outlier], task)} against "
            f"{join_words([fmt(v, task) for v in others])}), {cut} (the others: "
            f"{join_words([str(first[s]) if first[s] is not None else 'never' for s in rest])}); "
            f"without it the mean is {fmt(others.mean(), task)}.")
        sentences += _precision_checks(records, runs.iloc[outlier], first[odd])
    blown_up = bool(uniform_words) and not row["better"]
    if uniform_words:
        causes = _untested_causes(task, model, records) if blown_up else []
        sentences.append(uniform_words[:-1] + (": a candidate cause of the gap" if blown_up else "")
                         + (f"; not yet tested: {join_words(causes)}." if causes else "."))
    if row["verdict"] != "not reproduced":
        return " ".join(sentences)
    near = found[(found["model"] == model) & ((found["ours"] - paper).abs() <= row["tolerance"])]
    rules = rules[(rules["task"] == task) & (rules["model"] == model)]
    direction = "better" if row["better"] else "worse"
    if at_config is not None and at_config["verdict"] == "reproduced":
        sentences.append(f"Ours is {direction} than the paper's by {fmt(abs(row['delta']), task, 1)} at lr "
                         f"{row['lr']:g}, the lr validation chose; at {_config_lr_words(task, model)} {at_config['lr']:g} "
                         f"our seeds give {ours_text(at_config)}, {_against_paper(at_config)}: the gap is the "
                         "choice of lr.")
    elif len(near):
        sentences.append(f"The ablation {variant_name(near['variant'].iloc[0])} gives {fmt(near['ours'].iloc[0], task)} "
                         f"({plural(int(near['n'].iloc[0]), 'seed')}), within tolerance of the paper's.")
    elif len(rules) and rules["rule_explains"].iloc[0] >= 0.5:
        sentences.append(f"The reporting rule alone removes {100 * rules['rule_explains'].iloc[0]:.0f}% of it.")
    elif blown_up:
        sentences.append(f"Ours is worse than the paper's by {fmt(abs(row['delta']), task, 1)}.")
    else:
        causes = _untested_causes(task, model, records)
        late = None if row["better"] else _still_improving(task, model, runs)
        unconverged = ""
        if late:
            first_cuts = [c[0] for c in cuts.values() if c]
            cut = (f", after the lr was first cut at epoch {min(first_cuts)}–{max(first_cuts)}"
                   if len(first_cuts) == len(cuts) else "")
            unconverged = (f", though every seed's best validation epoch is among the schedule's last "
                           f"{LATE_EPOCHS} ({join_words([str(e) for e in late])}): the runs were still "
                           f"improving when it ended{cut} (a candidate cause, untested)")
        sentences.append(f"Ours is {direction} than the paper's by {fmt(abs(row['delta']), task, 1)}: {chance_words}"
                         + ("why is unexplained" if chance_words else "unexplained") + unconverged
                         + (f"; not yet tested: {join_words(causes)}." if causes else "."))
        if at_config is not None:
            sentences.append(f"At {_config_lr_words(task, model)} {at_config['lr']:g}, ours is {ours_text(at_config)}, "
                             f"{_against_paper(at_config)}.")
    return " ".join(sentences)


def gaps_table(records: pd.DataFrame) -> HTMLTable:
    """Every paper-profile cell: ours, the paper's, the verdict, the evidence and its explanation."""
    sources = GapSources(records)
    table_cells = sources.cells
    out = []
    for _, row in table_cells[(table_cells["n"] > 0) | (table_cells["diverged"] > 0)].iterrows():
        found = gap_evidence(records, row["task"], row["model"], sources)
        out.append({"table": row["table"], "model": model_name(row["model"]), "ours": ours_text(row),
                    "paper": fmt(row["paper"], row["task"]), "verdict": row["verdict"],
                    "explanation": found["explanation"],
                    "evidence": "<br>".join(found["evidence"])})
    return HTMLTable(pd.DataFrame(out, columns=["table", "model", "ours", "paper", "verdict", "explanation",
                                                "evidence"]), "verdict", html_columns=["evidence"])


def paper_numbers(task: str) -> str:
    """One sentence with the paper's numbers for `task`: the R-Transformer against TCN and the
    Transformer, and the paper's best row where that is not the R-Transformer."""
    info = TASKS[task]
    paper = info.paper
    best = (max if info.higher_is_better else min)(paper, key=paper.get)
    text = (f"The paper reports {fmt(paper['rtransformer'], task)} for the R-Transformer against "
            f"{fmt(paper['tcn'], task)} for TCN and {fmt(paper['transformer'], task)} for the Transformer "
            f"({METRIC_NAMES[info.metric]}, {'higher' if info.higher_is_better else 'lower'} is better)")
    if best != "rtransformer":
        text += f"; its best row is the {model_name(best)} ({fmt(paper[best], task)}), not the R-Transformer"
    return text + "."


def evidence_rule() -> str:
    """The sentence that opens a table chapter's results: which runs count and how many seeds a
    cell needs for a verdict (from `rtlib.results`, so that the chapters never type it)."""
    return (f"Only runs of the `{EVIDENCE_PROFILE}` profile count here: the released settings and epochs, "
            f"{MIN_SEEDS} seeds a cell for a verdict ({{doc}}`report` gives the rules). The paper's table "
            "with ours beside it:")


def results_paragraph(records: pd.DataFrame, task: str) -> str:
    """A table chapter's closing paragraph (Markdown): each model with paper-profile runs, its
    number, seeds and verdict and the explanation of its gap; the models not run; the
    ablations recorded; fast runs."""
    info = TASKS[task]
    sources = GapSources(records)
    rows = sources.cells[sources.cells["task"] == task]
    lines = []
    for _, row in rows[(rows["n"] > 0) | (rows["diverged"] > 0)].iterrows():
        explanation = gap_evidence(records, task, row["model"], sources)["explanation"]
        if row["n"] == 0:
            lines.append(f"- **{model_name(row['model'])}**: **{row['verdict']}**. {explanation}")
            continue
        seeds = ", ".join(str(s) for s in row["seeds"])
        lines.append(f"- **{model_name(row['model'])}**: {ours_text(row)} over seed{'s' if row['n'] > 1 else ''} "
                     f"{seeds}, against the paper's {fmt(row['paper'], task)}: **{row['verdict']}**. "
                     + explanation)
    missing = [model_name(m) for m in rows[(rows["n"] == 0) & (rows["diverged"] == 0)]["model"]]
    head = (f"**Results at the paper profile** (Table {info.table}, {METRIC_NAMES.get(info.metric, info.metric)}, "
            f"{'higher' if info.higher_is_better else 'lower'} is better):")
    if not lines:
        head = f"**No paper-profile records of Table {info.table} yet**: every row is *not run*."
    tail = [f"Not run at the paper profile: {join_words(missing)}."] if lines and missing else []
    found = ablation_effects(records)
    ablated = found[(found["task"] == task) & (found["n"] > 0)]
    if len(ablated):
        tail.append("Ablations ({doc}`report` reads them): " + "; ".join(
            f"{model_name(row.model)} with {variant_name(row.variant)}: {row.with_it} against {row.without} without it"
            + (f" ({signed(row.same_seed_change, task, 1)} at the same {seeds_text(row.shared_seeds)})"
               if row.shared_seeds else "")
            for row in ablated.itertuples()) + ".")
    quick = records[(records["task"] == task) & (records["profile"] == "fast")] if len(records) else records
    if len(quick):
        tail.append(f"{len(quick)} short fast-profile runs of this table exist; they are quick looks, "
                    "not evidence, and are listed in the report's appendix.")
    return "\n".join([head, "", *lines, "", *tail])


def quick_looks(records: pd.DataFrame) -> HTMLTable:
    """The fast-profile runs: short schedules for a first look, listed so that nothing is hidden,
    never evidence (their changes from the paper profile are in each record)."""
    quick = records[records["profile"] == "fast"] if len(records) else records
    words = {ablation.variant: ablation.why for ablation in ABLATIONS}
    out = [{"table": int(run.table), "model": model_name(run.model), "variant": words.get(run.variant, variant_name(run.variant) or "none"),
            "seed": int(run.seed), "lr": f"{run.lr:g}",
            "epochs": f"{int(run.epochs_run)} of {run_config(run.task, run.model, 'paper').train.epochs}",
            "test metric": fmt(run.test_metric, run.task), "paper": fmt(TASKS[run.task].paper[run.model], run.task),
            "changed": ", ".join(c.split(":")[0].replace("_", " ") for c in run.changes or () if " -> " in c) or "none",
            "record": Path(run.path).parent.name + "/"}
           for run in quick.sort_values(["table", "model", "variant"]).itertuples()]
    return HTMLTable(pd.DataFrame(out), None)


# ---------------------------------------------------------------------------------------------
# Deviations from the released scripts


def _precision_effect(bench: list[dict]) -> str:
    checks = [(data["device"], check) for data in bench if data["file"].startswith("precision_")
              for check in data.get("checks", [])]
    if not checks:
        return "not measured"
    worst = {}
    for device, check in checks:
        worst[check["table"]] = max(worst.get(check["table"], 0.0), check["max_rel_deviation_of_smoothed_loss"])
    devices = sorted({device for device, _ in checks})
    return ("training loss of bf16 vs fp32 over the first 300 steps (smoothed): at most "
            + ", ".join(f"{100 * v:.1f}% apart on Table {t}" for t, v in sorted(worst.items()))
            + f" ({', '.join(devices)}); not measured on Table 2")


def _precision_divergences(records: pd.DataFrame, superseded: pd.DataFrame) -> str:
    """'; whole runs where bf16 diverged: Table 2 LSTM, lr 0.001, seed 1111: bf16 diverged in epochs
    11 and 15, fp32 3.31 after 100 epochs' for every lr and seed whose bf16 runs (committed or
    superseded) diverged and that has an fp32 run of the same settings, then the superseded bf16
    runs that finished beside their fp32 runs; '' for none."""
    frames = [frame for frame in (records, superseded) if len(frame)]
    if not frames:
        return ""
    pool = pd.concat(frames, ignore_index=True)
    paper = pool[pool["profile"] == EVIDENCE_PROFILE]
    fp32 = paper[(paper["precision"] == "fp32") & paper["variant"].isin(["", "precision=fp32"])]
    parts = []
    for (table, model, lr, seed), runs in diverged(paper[paper["precision"] == "bf16"]).groupby(
            ["table", "model", "lr", "seed"]):
        run = runs.iloc[0]
        epochs = join_words([str(diverged_in(e)) for e in sorted(runs["epochs_run"])])
        parts += [f"Table {table} {model_name(model)}, lr {lr:g}, seed {int(seed)}: bf16 diverged in "
                  f"{'epoch' if len(runs) == 1 else 'epochs'} {epochs}, fp32 {_ended(check, run.task)}"
                  for check in _same_lr_and_seed(fp32, run).itertuples()]
    finished = [f"Table {run.table} {model_name(run.model)}, lr {run.lr:g}, seed {int(run.seed)}: bf16 "
                f"{_ended(run, run.task)}, fp32 {_ended(check, run.task)}"
                for run in (done_runs(superseded) if len(superseded) else superseded).itertuples()
                if run.status == "finished" and run.precision == "bf16"
                for check in _same_lr_and_seed(fp32, run).itertuples()]
    return ((f"; whole runs where bf16 diverged: {'; '.join(parts)}" if parts else "")
            + (f"; superseded bf16 runs that finished, beside fp32: {'; '.join(finished)}" if finished else ""))


def _fp32_rows() -> str:
    """'the Table 1 LSTM row and the Table 2 LSTM and RNN rows run in fp32, as released' for the
    rows configs.py sets to fp32 ('' for none)."""
    rows = {table: [model_name(model) for (family, model), row in PAPER.items()
                    if family == task and row.train.precision == "fp32"] for table, task in TABLE_TASKS.items()}
    named = [f"the Table {table} {join_words(names)} row{'s' if len(names) > 1 else ''}"
             for table, names in sorted(rows.items()) if names]
    verb = "runs" if sum(map(len, rows.values())) == 1 else "run"
    return f"{join_words(named)} {verb} in fp32, as released" if named else ""


def _equivalence_effect(bench: list[dict]) -> str:
    errors = {}
    for data in bench:
        tables = data.get("tables", {})
        entries = tables.items() if isinstance(tables, dict) else [(t["table"], t.get("equivalence_fp32")) for t in tables]
        for table, check in entries:
            if isinstance(check, dict) and "grad_rel_error" in check:
                errors[int(table)] = max(errors.get(int(table), 0.0), check["grad_rel_error"])
    if not errors:
        return "not measured"
    return ("in fp32, gradients of the fast path against the released algorithm: relative error "
            + ", ".join(f"{v:.0e} (Table {t})" for t, v in sorted(errors.items())))


def cudnn_error(bench: list[dict]) -> str:
    """Markdown: how far cuDNN's fp32 RNN (the released code's) is from float64 in the equivalence
    benchmarks, the worst table per device ('not measured' without an equivalence file)."""
    worst = []
    for data in bench:
        tables = data.get("tables", {})
        errors = {int(t): c["cudnn_reference_grad_rel_error_vs_float64"] for t, c in tables.items()
                  if isinstance(c, dict) and "cudnn_reference_grad_rel_error_vs_float64" in c} \
            if isinstance(tables, dict) else {}
        if errors:
            table = max(errors, key=errors.get)
            worst.append(f"up to {errors[table]:.1e} (relative error of the gradients, Table {table}) "
                         f"off float64 on the {data.get('device', 'unknown GPU')}")
    return "; ".join(worst) if worst else "not measured"


def _counts(records: pd.DataFrame, column: str, words: dict[str, str] | None = None) -> str:
    values = evidence(records)[column].map(lambda v: v["compile"] if isinstance(v, dict) else v)
    values = values.map(lambda v: words.get(v, v)) if words else values
    return join_words([f"{value} ({plural(count, 'run')})" for value, count in values.value_counts().items()]) \
        or "no runs yet"


@functools.lru_cache(maxsize=None)
def split_sizes(data_dir: str | None = None) -> pd.DataFrame:
    """PTB characters and words per split, ours (with `<eos>`, as the released scripts score)
    and without the `<eos>` markers, beside the paper's counts."""
    from .data import load_ptb

    words = load_ptb("word", data_dir)
    eos = words.vocab.index("<eos>")
    rows = []
    for level, corpus in (("char", load_ptb("char", data_dir)), ("word", words)):
        for split in ("train", "valid", "test"):
            markers = int((getattr(words, split) == eos).sum())
            tokens = len(getattr(corpus, split))
            rows.append(dict(level=level, split=split, ours=tokens, markers=markers,
                             without_eos=tokens - markers * (5 if level == "char" else 1),
                             paper_thousands=PAPER_SPLITS[level][split]))
    return pd.DataFrame(rows)


def _eos_effect(data_dir) -> str:
    sizes = split_sizes(data_dir)
    char = sizes[sizes["level"] == "char"]
    matches = all(abs(row.without_eos / 1000 - row.paper_thousands) < 1 for row in sizes.itertuples())
    return (f"ours count `<eos>` (5 characters a line in PTB-char): train {char['ours'].iloc[0]:,} characters; "
            f"without them {char['without_eos'].iloc[0]:,}, the paper's {char['paper_thousands'].iloc[0]}K. "
            + ("All six of the paper's split sizes are ours without `<eos>`, to the thousand: the paper "
               "counted without them, while its scripts (and ours) score them." if matches else
               "The paper's split sizes do not all match ours without `<eos>`."))


def _widths(records: pd.DataFrame) -> str:
    """Which recurrent rows the engine runs wider on a GPU (`rtlib.runtime.PADDED_WIDTH`), and how
    many paper-profile runs did."""
    widths = evidence(records)["engine"].map(lambda v: v.get("hidden_width") if isinstance(v, dict) else None)
    rows = join_words([f"the {model_name(model)} of {hidden} hidden units runs {width} wide"
                       for (model, hidden), width in PADDED_WIDTH.items()])
    return (f"on a GPU {rows}, the extra units zero (rtlib.padding; each measured faster so: "
            f"results/bench/hidden_width_*); {plural(int(widths.notna().sum()), 'run')} so far, the others as configured")


def _transformer_sizes(records: pd.DataFrame) -> str:
    counts = parameter_counts().pivot(index="table", columns="model", values="parameters")
    return "; ".join(f"Table {t}: {row.transformer:,} vs {row.rtransformer:,} "
                     f"({100 * row.transformer / row.rtransformer:.0f}%)" for t, row in counts.iterrows())


def deviations(records: pd.DataFrame, bench_dir: str | Path = BENCH_DIR, data_dir: str | None = None,
               superseded_dir: str | Path = SUPERSEDED_DIR, batches: list[dict] = ()) -> HTMLTable:
    """Every way our paper-profile runs differ from the released scripts, with its effect and
    whether that effect is measured or argued."""
    bench = load_bench(bench_dir)
    in_fp32 = _fp32_rows()
    versions = join_words(sorted(set(evidence(records)["torch_version"].dropna()))) or "no runs yet"
    fp32 = [f"Table {a.table}: " + _ablation_text(records, a, batches, bench) for a in ABLATIONS
            if a.variant == "precision=fp32"]
    rows = [
        ("precision", "fp32", f"bf16 autocast where the GPU has it: {_counts(records, 'precision')}"
         + (f"; {in_fp32}, because bf16 diverged there" if in_fp32 else ""),
         _precision_effect(bench), "measured (300 steps)"),
        ("precision: the fp32 ablations", "fp32", "the R-Transformer of each table in fp32 at seed 1111",
         "; ".join(fp32), "measured (whole runs)"),
        ("precision: rows moved to fp32", "fp32", in_fp32 or "none",
         _precision_divergences(records, superseded_records(superseded_dir)).removeprefix("; ") or "none",
         "measured (whole runs)"),
        ("engine", "eager PyTorch 1.0", f"{_counts(records, 'engine', COMPILE_MODE_WORDS)}; PyTorch {versions}",
         "the same computation compiled and/or replayed as CUDA graphs; rounding differs", "argued"),
        ("hidden width", "as configured", _widths(records),
         "the same function and gradients: the extra units stay exactly zero (tests/test_padding.py, fp64); "
         "rounding and the dropout draws differ", "tested"),
        ("LocalRNN and attention", "windows copied, one cuDNN GRU/LSTM call per window, explicit masked softmax",
         "input projected once per position, then the window's steps as batched matmuls; fused attention (SDPA)",
         _equivalence_effect(bench), "measured (one step)"),
        ("optimizer", "torch.optim SGD / Adam", "the same, fused CUDA kernel", "the same update rule", "argued"),
        ("seq-MNIST order", "DataLoader(shuffle=True), one RNG stream",
         "a permutation drawn from (seed, epoch), so a resumed run sees the same batches",
         "the same distribution of orders: a different order, as another seed gives", "argued"),
        ("unused modules", "built (and initialised) but never called", "not built",
         "the RNG draws of the initialisation differ: as another seed", "argued"),
        ("seeds", "1111", "1111, 1112, 1113 (n in every table)", "ours measures the seed spread", "counted"),
        ("Transformer baseline", "none released", "R-Transformer blocks without LocalRNN, sinusoidal positions, "
         "the R-Transformer's sizes and training settings",
         "parameters, Transformer vs R-Transformer: " + _transformer_sizes(records), "counted; effect unknown"),
        ("PTB `<eos>`", "scored (TCN suite's data)", "scored", _eos_effect(data_dir), "counted"),
        ("evaluation", "music: one tune at a time; PTB: 1 stream (char), 10 (word), one window a forward",
         "the same batch sizes, tunes in order of length, under the run's precision and engine; PTB: "
         + _eval_stacking(records),
         "the sums are order-independent and the PTB windows independent (no state passes between them): "
         "stacked, the same to fp32 rounding (tests/test_tasks.py); precision as above", "argued; stacking tested"),
    ]
    frame = pd.DataFrame(rows, columns=["what", "released scripts", "our paper-profile runs", "effect", "basis"])
    return HTMLTable(frame, None)


def _eval_stacking(records: pd.DataFrame) -> str:
    """How many PTB runs evaluated one window a forward and how many stacked windows, counted as
    the other rows count (the table's runs, not the ablations)."""
    ptb = evidence(records)
    ptb = ptb[ptb["task"].str.startswith("ptb")]
    stacked = ptb["engine"].map(lambda engine: isinstance(engine, dict) and stacks_eval_windows(engine))
    return (f"one window a forward in {plural(int((~stacked).sum()), 'run')}, up to {EVAL_ROWS} rows of windows a "
            f"forward in {plural(int(stacked.sum()), 'run')}")


def _ablation_text(records: pd.DataFrame, ablation, batches: list[dict] = (), bench: list[dict] = ()) -> str:
    task = TABLE_TASKS[ablation.table]
    found = ablations(records, task)
    found = found[(found["model"] == ablation.model) & (found["variant"] == ablation.variant)]
    if not len(found):
        known = [text for text in (_started_text(records, batches, task, ablation.model, ablation.variant),
                                   _fp32_steps_text(bench, task, ablation)) if text]
        return "not run yet" + (f" ({'; '.join(known)})" if known else "")
    row = found.iloc[0]
    same = (f"; {signed(row['same_seed_delta'], task, 1)} against the row's run of the same "
            f"{seeds_text(row['shared_seeds'])}" if row["shared_seeds"] else "")
    return (f"{fmt(row['ours'], task)} vs {fmt(row['baseline'], task)} for the row{other_lr_note(row['lr'], row['row_lr'])} "
            f"({plural(int(row['n']), 'seed')} vs {int(row['baseline_n'])}{same})")


def _fp32_steps_text(bench: list[dict], task: str, ablation) -> str:
    """'its steps alone, timed in fp32 on <GPU>: <ms> a step (...), <minutes> GPU-minutes ...' for
    an fp32 ablation that `bench --engine-modes --precision fp32` timed; '' for any other."""
    if ablation.variant != "precision=fp32" or (fp32 := step_timing(bench, task, ablation.model, "fp32")) is None:
        return ""
    mode = fp32["fastest_correct"]
    row = step_timing([data for data in bench if data.get("device") == fp32["device"]], task, ablation.model)
    same_mode = row is not None and row["modes"].get(mode, {}).get("works")
    others, ms = [other for other in fp32["modes"] if other != mode], fp32["modes"][mode]["ms_per_step"]
    return (f"its steps alone, timed in fp32 on {fp32['device']}: {ms:.1f} ms a step in the engine mode {mode}"
            + (f", the faster of it and {join_words(others)}" if others else "")
            + (f", bf16 {row['modes'][mode]['ms_per_step']:.1f} ms in that mode" if same_mode else "")
            + f"; {steps_minutes(ms, task, ablation.model):.0f} GPU-minutes of steps for the whole run, "
              "without its evaluations")


def _started_text(records: pd.DataFrame, batches: list[dict], task: str, model: str, variant: str) -> str:
    """'started: 1 of 50 epochs in 6.0 GPU-minutes, about 302 for the whole run at that pace, ...'
    for a run that a batch left unfinished, from its log; '' where none did."""
    key = task, model, variant_slug(variant)
    left = [run for run in unfinished_runs(list(batches), records)
            if tuple(run_id_fields(run["run_id"])[k] for k in ("task", "model", "variant")) == key]
    if not left:
        return ""
    run, total = left[-1], run_config(task, model, EVIDENCE_PROFILE).train.epochs
    whole = minutes_per_run(records, list(batches)).get(key, math.nan)
    untimed = run.get("seconds_per_epoch") is None  # its minutes include compiling: no steady pace
    return (f"started: {run.get('epochs', 0)} of {total} epochs in {run['job_minutes']:.1f} GPU-minutes"
            + (f", about {whole:.0f} for the whole run at that pace" if not math.isnan(whole) else "")
            + (", likely high: the minutes include compiling the step" if untimed and not math.isnan(whole) else ""))


def ablations_summary(records: pd.DataFrame) -> str:
    """How many of the planned ablations have records, and what one seed can and cannot say."""
    found = ablation_effects(records)
    run = found[found["n"] > 0]
    if run.empty:
        return f"None of the {len(found)} planned ablations has a paper-profile record yet."
    below = run[run["n"] < MIN_SEEDS]
    return (f"{len(run)} of the {len(found)} planned ablations have paper-profile records "
            f"({int(found['n'].sum())} of the {int(found['planned_seeds'].sum())} runs planned). "
            + (f"{plural(len(below), 'ablation')} ha{'s' if len(below) == 1 else 've'} fewer than the "
               f"{MIN_SEEDS} seeds a verdict needs: {'it reads' if len(below) == 1 else 'each reads'} only as where "
               "its seeds fall among its row's, a pointer, not a finding." if len(below) else ""))


def window_findings(records: pd.DataFrame) -> str:
    """The R-Transformer's test metric at each window M recorded, per table, the released M's
    seed 1111 beside its mean over seeds (the ablations ran at seed 1111), and the lr they all
    ran at where validation chose another for the table."""
    points = window_points(records)
    lines = []
    for table, rows in points.groupby("table"):
        task = rows["task"].iloc[0]
        released = rows[rows["released"]]
        ablated = rows[~rows["released"]].groupby("window")["value"].agg(["mean", "count"])
        sizes = [f"M = {window} gives {fmt(row['mean'], task)}" + ("" if row["count"] == 1 else
                                                                    f" (mean of {int(row['count'])} seeds)")
                 for window, row in ablated.iterrows()]
        window = run_config(task, "rtransformer", "paper").backbone.window
        if released.empty:
            row_text = f"the released M = {window} has no record yet"
        else:
            first = released.sort_values("seed").iloc[0]
            row_text = f"the released M = {window} gives {fmt(first['value'], task)} at seed {int(first['seed'])}"
            if len(released) > 1:
                row_text += (f" and {fmt(released['value'].mean(), task)} ± {fmt(released['value'].std(), task)} "
                             f"over its {len(released)} seeds")
        lr_note = other_lr_note(rows["lr"].iloc[0], rows["chosen_lr"].iloc[0])
        lines.append(f"On Table {table} ({task_name(task)}, {METRIC_NAMES[TASKS[task].metric]}), {join_words(sizes)}; "
                     f"{row_text}" + (f", all{lr_note}" if lr_note else "") + ".")
    return " ".join(lines)


# ---------------------------------------------------------------------------------------------
# The first screen


def _unused_words(done: pd.DataFrame) -> str:
    """', 18 the cells do not use: 16 lr grid points ..., and 2 runs at seeds after the first ...'
    for the finished runs at an lr validation did not choose ('' for none)."""
    unused = done[~done["run_id"].isin(set(select_lr(done)["run_id"]))]
    if unused.empty:
        return ""
    first = int(done["seed"].min())
    grid, later = unused[unused["seed"] == first], unused[unused["seed"] != first]
    parts = [f"{plural(len(grid), 'lr grid point')} at seed {first}"] if len(grid) else []
    if len(later):
        rows = join_words([f"Table {table} {model_name(model)} lr {lr:g} ({'seed' if len(group) == 1 else 'seeds'} "
                           f"{join_words([str(int(seed)) for seed in sorted(group['seed'])])})"
                           for (table, model, lr), group in later.groupby(["table", "model", "lr"])])
        parts.append(f"{plural(len(later), 'run')} at later seeds, made at the config's lr before the grid "
                     f"at seed {first} had chosen another: {rows}")
    return f", {len(unused)} the cells do not use, at an lr validation did not choose: {join_words(parts)}"


def scope(records: pd.DataFrame, batches: list[dict], repeats_dir: str | Path = REPEATS_DIR,
          superseded_dir: str | Path = SUPERSEDED_DIR) -> str:
    """One paragraph: which cells and seeds count, at which profile, precision and GPU, for how
    many GPU-minutes; the short runs shown apart."""
    done = evidence(records)
    table_cells = cells(records)
    run = table_cells[table_cells["n"] > 0]
    per_table = [f"Table {t}: " + join_words([f"{model_name(r.model)} ×{r.n}" for r in group.itertuples()])
                 for t, group in run.groupby("table")]
    held = sum(batch.get("machine_held_minutes", 0.0) for batch in batches)
    lost = sum(run["job_minutes"] for run in unfinished_lost(batches, records))
    waiting = unfinished_waiting(batches, records)
    again = paper_records(repeats_dir)
    quick = records[records["profile"] == "fast"] if len(records) else records
    broke = diverged(records)
    replaced = superseded_records(superseded_dir)
    ablated = ablation_records(records)
    if done.empty and len(broke):
        text = (f"**Scope.** No paper-profile run has finished yet, so no claim of the paper is tested; "
                f"{plural(len(broke), 'run')} diverged ({broke['gpu_minutes'].sum():.1f} GPU-minutes).")
    elif done.empty:
        text = "**Scope.** No paper-profile runs are recorded yet, so no claim of the paper is tested."
    else:
        used = int(run["n"].sum())
        unused = _unused_words(done)
        parts = [(done["gpu_minutes"].sum(), "for these runs")]
        parts += [(again["gpu_minutes"].sum(), f"for {plural(len(again), 'run')} made a second time with "
                   "their seed ({ref}`How sure <report-summary>`)")] if len(again) else []
        parts += [(broke["gpu_minutes"].sum(), f"for {plural(len(broke), 'run')} that diverged")] if len(broke) else []
        parts += [(ablated["gpu_minutes"].sum(), f"for {plural(len(ablated), 'ablation run')} ({{ref}}`report-ablations`)")] \
            if len(ablated) else []
        parts += [(replaced["gpu_minutes"].sum(), f"for {plural(len(replaced), 'run')} made with settings since "
                   "changed ({ref}`report-deviations`)")] if len(replaced) else []
        parts += [(lost, "for runs that were lost before they finished")] if lost else []
        parts += [(sum(r["job_minutes"] for r in waiting), f"for {plural(len(waiting), 'run')} waiting to resume "
                   "from a checkpoint brought back")] if waiting else []
        machines = (f", on machines held {held:.1f} minutes (jobs share a GPU, so their time adds up to more)"
                    if batches else "")
        text = (f"**Scope.** {plural(len(done), 'paper-profile run')} finished: {used} "
                f"{'makes' if used == 1 else 'make'} {len(run)} of the "
                f"{len(table_cells)} cells ({'; '.join(per_table)}; ×n: seeds){unused}. Precision: {_counts(records, 'precision')}. "
                f"GPU: {join_words(sorted(set(done['device'])))}. **Cost: {sum(m for m, _ in parts):.1f} GPU-minutes "
                f"of job time in all**{machines}: " + ", ".join(f"{m:.1f} {what}" for m, what in parts) + ".")
    if len(quick):
        text += (f" {len(quick)} short fast-profile runs ({quick['gpu_minutes'].sum():.1f} GPU-minutes) "
                 "are shown apart and count for nothing.")
    return text


def how_sure() -> str:
    """The verdict rules in words, from the constants that apply them."""
    return (f"**How sure.** A verdict needs at least {MIN_SEEDS} seeds at the paper profile; below that a "
            "cell or a comparison is *inconclusive*, however close its number. That one model beats "
            "another is tested on the difference of the two means over seeds, with a Welch 95% interval: "
            "*supported* when the interval lies on the side the paper claims, *contradicted* when it lies "
            "on the other side, *inconclusive* when it straddles 0. A claim is supported only when every "
            "comparison it makes is, and contradicted when any one is; *not tested* means that no "
            "comparison of it has runs on both sides. Means are printed to the paper's digits, interval "
            "ends to one digit more, so that an end near 0 shows on which side of 0 it lies. A run whose "
            "training loss stopped being finite is a result without a number: it is named with its lr, "
            "seed and epoch, never averaged, and a row whose every run so far diverged is *inconclusive*.")


def repeats(records: pd.DataFrame, folder: str | Path = REPEATS_DIR) -> pd.DataFrame:
    """Each paper-profile run made a second time with the same settings and seed (for weights
    that did not come back, or to see whether a divergence follows the engine): both runs' test
    metric (None where one diverged), status, epochs run and engine mode, and their difference."""
    again = paper_records(folder)
    pool = done_runs(records)
    first = pool.set_index("run_id") if len(pool) else pd.DataFrame()
    rows = []
    for row in again.itertuples():
        if row.run_id not in first.index:
            continue
        one = first.loc[row.run_id]
        rows.append(dict(table=row.table, task=row.task, model=row.model, seed=int(row.seed), lr=row.lr, device=row.device,
                         first=one["test_metric"], second=row.test_metric,
                         first_status=one["status"], second_status=row.status,
                         first_epochs=one["epochs_run"], second_epochs=row.epochs_run,
                         first_engine=_compile_mode(one["engine"]), second_engine=_compile_mode(row.engine)))
    columns = ["table", "task", "model", "seed", "lr", "device", "first", "second", "first_status", "second_status",
               "first_epochs", "second_epochs", "first_engine", "second_engine"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(difference=pd.to_numeric(frame["second"]) - pd.to_numeric(frame["first"]))


def _at_cell_lr(found: pd.DataFrame, table_cells: pd.DataFrame) -> pd.Series:
    """Which of `repeats`' rows ran at the lr their cell's seeds ran at (a repeat of another grid
    point says nothing of the cell's spread)."""
    cell_lr = table_cells.set_index(["task", "model"])["lr"]
    return pd.Series([cell_lr.get((task, model)) == lr for task, model, lr in zip(found["task"], found["model"], found["lr"])],
                     index=found.index, dtype=bool)


def _compile_mode(engine: Any) -> str:
    return engine.get("compile", "not recorded") if isinstance(engine, dict) else "not recorded"


def _outcome(status: str, metric: float, epochs: float, task: str) -> str:
    return f"diverged in epoch {diverged_in(epochs)}" if status == "diverged" else fmt(metric, task, 2)


def same_seed_twice(records: pd.DataFrame, folder: str | Path = REPEATS_DIR) -> str:
    """What the repeats show: how far one run moves when made again with its seed, beside the
    spread over seeds of its cell; where one of the two diverged, when each did and in which
    engine mode."""
    found = repeats(records, folder)
    if found.empty:
        return ("**Same seed, run twice.** No paper-profile run has been made a second time yet, so how far "
                "a run moves with its seed fixed (GPU rounding: bf16, compiled kernels, atomic adds) is not "
                "measured; the spread over seeds includes that part.")
    table_cells = cells(records)
    at_cell_lr = _at_cell_lr(found, table_cells)
    table_cells = table_cells.set_index(["task", "model"])
    parts = []
    for row in found.itertuples():
        engines = (f" (engine {row.first_engine}, then {row.second_engine})"
                   if row.first_engine != row.second_engine else "")
        outcomes = (f"{_outcome(row.first_status, row.first, row.first_epochs, row.task)} then "
                    f"{_outcome(row.second_status, row.second, row.second_epochs, row.task)}{engines}")
        cell_lr = table_cells["lr"].get((row.task, row.model), math.nan)
        if np.isfinite(row.difference):
            std = table_cells["std"].get((row.task, row.model), math.nan) if at_cell_lr[row.Index] else math.nan
            share = f", {abs(row.difference) / std:.2f} of the cell's std over seeds" if std and np.isfinite(std) else ""
            outcomes += f" ({signed(row.difference, row.task, 2)}{share})"
        if np.isfinite(cell_lr) and not at_cell_lr[row.Index]:
            outcomes += f", at lr {row.lr:g}: the cell's seeds ran at lr {cell_lr:g}"
        parts.append(f"Table {row.table} {model_name(row.model)} seed {row.seed}: {outcomes}")
    return (f"**Same seed, run twice.** {plural(len(found), 'paper-profile run')} made a second time with the "
            f"same settings and seed on {join_words(sorted(set(found['device'])))} (for weights the first run's "
            f"machine kept, or to see whether a divergence follows the engine mode): " + "; ".join(parts)
            + ". The first run's record is the one the tables use.")


STRICTER_LEVEL = 0.99  # the interval the decided comparisons are checked against


def _stricter_words(records: pd.DataFrame) -> str:
    """Which comparisons decided at 95% a 99% interval leaves inconclusive, claim by claim, and
    whether each claim's verdict changes with them."""
    usual, strict = comparisons(records), comparisons(records, STRICTER_LEVEL)
    decided = usual[usual["verdict"].isin(["supported", "contradicted"])]
    if decided.empty:
        return ""
    flipped = decided[strict.loc[decided.index, "verdict"] != decided["verdict"]]
    strict_pct = f"{100 * STRICTER_LEVEL:.0f}%"
    sizes = sorted(set(decided["n_rtransformer"]) | set(decided["n_baseline"]))
    df = sorted({f"{decided['df'].min():.1f}", f"{decided['df'].max():.1f}"}, key=float)
    text = (f"With {'–'.join(str(n) for n in sorted({sizes[0], sizes[-1]}))} seeds a side, the Welch tests "
            f"have {' to '.join(df)} degrees of freedom, so one seed moves an interval's ends far. "
            f"Of the {len(decided)} comparisons decided at 95%, ")
    if flipped.empty:
        return text + f"none would be inconclusive at {strict_pct}."
    before = claims(records, found=usual).set_index("claim")
    after = claims(records, STRICTER_LEVEL, found=strict).set_index("claim")
    per_claim = []
    for claim in CLAIMS:
        mine = flipped[flipped["claim"] == claim.key]
        if len(mine):
            old, new = before.loc[claim.claim, "verdict"], after.loc[claim.claim, "verdict"]
            change = f"the claim {old} at 95%, {new} at {strict_pct}" if old != new else f"the claim stays {old}"
            per_claim.append(f"- “{claim.short}”: {'; '.join(comparison_text(row) for _, row in mine.iterrows())} "
                             f"({change}).")
    return (text + f"{len(flipped)} would be inconclusive at {strict_pct} (intervals below at 95%):\n\n"
            + "\n".join(per_claim))


def _repeat_words(records: pd.DataFrame, repeats_dir: str | Path) -> str:
    """Each judged cell's same-seed repeats against its gap to the paper, and the cells judged
    not reproduced that no repeat checks."""
    table_cells = cells(records)
    judged = table_cells[table_cells["verdict"].isin(["reproduced", "not reproduced"])].set_index(["task", "model"], drop=False)
    found = repeats(records, repeats_dir)
    found = found[np.isfinite(found["difference"]) & _at_cell_lr(found, table_cells)]
    moved = found.groupby(["task", "model"])["difference"].apply(lambda d: d.abs().max())
    moved = moved[moved.index.isin(judged.index)]
    unchecked = [_cell_label(row) for (task, model), row in judged.iterrows()
                 if row["verdict"] == "not reproduced" and (task, model) not in moved.index]
    if moved.empty:
        return ""
    gaps = judged.loc[moved.index, "delta"].abs()
    ratio = (moved / gaps).sort_values()
    closest = ratio.index[-1]
    row = judged.loc[closest]
    close = (f"T{row['table']} {model_name(closest[1])} moved {fmt(moved[closest], closest[0], 1)} against a gap "
             f"of {fmt(gaps[closest], closest[0], 1)}")
    below = int((ratio < 1).sum())
    text = (f"Of the {plural(len(moved), 'judged cell')} with a run made twice with one seed, {below} moved less than "
            f"the cell's gap to the paper (the nearest: {close})"
            + ("" if below == len(moved) else f", {len(moved) - below} as much or more") + ".")
    if unchecked:
        text += (f" No repeat checks {join_words(unchecked)}, judged not reproduced: how far GPU rounding "
                 "moves them is not measured.")
    return text


def close_calls(records: pd.DataFrame, repeats_dir: str | Path = REPEATS_DIR) -> str:
    """How near the verdicts stand to their edges: the comparisons a 99% interval would leave
    undecided, and the judged cells' same-seed repeats against their gaps."""
    parts = [part for part in (_stricter_words(records), _repeat_words(records, repeats_dir)) if part]
    return "**Close calls.** " + "\n\n".join(parts) if parts else ""


def _cell_label(row) -> str:
    return f"T{row['table']} {model_name(row['model'])}"


def headline(records: pd.DataFrame) -> str:
    """Three sentences for the first screen: what the claims come to (named), the comparisons
    that go against the paper, and how many cells hold up. The claims table has the rest."""
    pairs = comparisons(records)
    found = claims(records, found=pairs)
    parts = []
    for verdict in CLAIM_VERDICTS:
        named = [f"“{claim.short}”" for claim, row in zip(CLAIMS, found.itertuples())
                 if row.verdict == verdict]
        if named:
            parts.append(f"{len(named)} {'is' if len(named) == 1 else 'are'} {verdict} ({join_words(named)})")
    behind: dict[str, list[int]] = {}   # the R-Transformer's interval lies below 0
    smaller: dict[str, list[int]] = {}  # ahead, but its interval lies below the paper's margin
    for row in pairs[pairs["verdict"] == "contradicted"].itertuples():
        kind = smaller if row.claim == "margins" and row.advantage > 0 else behind
        name = f"the {row.baseline}" if row.baseline.startswith("Transformer") else row.baseline
        if row.table not in kind.setdefault(name, []):
            kind[name].append(row.table)

    def where(tables: list[int]) -> str:
        return f"{'Table' if len(tables) == 1 else 'Tables'} {join_words([str(t) for t in sorted(tables)])}"
    against = ([f"is behind {name} on {where(tables)}" for name, tables in behind.items()]
               + [f"leads {name} by less than the paper's margin on {where(tables)}" for name, tables in smaller.items()])
    table_cells = cells(records)
    judged = table_cells[table_cells["verdict"].isin(["reproduced", "not reproduced"])]
    held = [_cell_label(r) for _, r in judged[judged["verdict"] == "reproduced"].iterrows()]
    missed = judged[judged["verdict"] == "not reproduced"]
    better = [_cell_label(r) for _, r in missed[missed["better"]].iterrows()]
    worse = [_cell_label(r) for _, r in missed[~missed["better"]].iterrows()]
    few = int((table_cells["verdict"] == "inconclusive").sum())
    unrun = int((table_cells["verdict"] == "not run").sum())
    outside = join_words([f"ours better on {len(better)} ({join_words(better)})"] * bool(better)
                         + [f"worse on {len(worse)} ({join_words(worse)})"] * bool(worse))
    rest = join_words([f"{plural(few, 'cell')} {'has' if few == 1 else 'have'} fewer seeds"] * bool(few)
                      + [f"{unrun} {'is' if unrun == 1 else 'are'} not run"] * bool(unrun))
    return " ".join([
        f"Of the paper's {len(found)} claims, {join_words(parts)}.",
        (f"Against the paper, the R-Transformer {join_words(against)} (95% intervals over seeds: the claims "
         "table below)." if against else f"No comparison at {MIN_SEEDS} seeds a side goes against the paper yet."),
        (f"Of the {len(judged)} cells with {MIN_SEEDS} seeds, {len(held)} "
         f"{'is' if len(held) == 1 else 'are'} within tolerance of the paper's number"
         + (f" ({join_words(held)})" if held else "")
         + (f" and {len(missed)} {'is' if len(missed) == 1 else 'are'} outside it: {outside}" if len(missed) else "")
         if len(judged) else f"No cell has {MIN_SEEDS} seeds yet")
        + (f"; {rest}." if rest else "."),
    ])


def _loss_kind(why: str, count: int) -> str:
    """`count` lost runs' reason as the batch log gives it, without its own numbers: a runner's
    stop names its pace and weights, which the batch logs keep."""
    its, them = ("its", "it") if count == 1 else ("their", "them")
    if why.startswith("stopped by its runner: projected"):
        came_back = (f" ({its} checkpoint{'s' * (count > 1)} came back, but no device time was left to resume {them})"
                     if "checkpoint came back" in why else "")
        return ("stopped by " + its + " runner, projected to miss the deadline with weights too large to leave "
                "the machine" + came_back)
    if why.startswith("failed:") and "Kernel died before replying to kernel_info" in why:
        return f"failed at {its} start, {its} notebook's kernel dead before it replied (runners retry that since)"
    return why


def easy_parts(records: pd.DataFrame) -> str:
    """The report's "what was easy" paragraph (Markdown), its run times read from the records."""
    runs = evidence(records)
    if len(runs):
        per_run = runs.groupby("task")["gpu_minutes"].median()
        timing = ("one run of a cell took a median of " + join_words(
            [f"{per_run[task]:.0f} GPU-minutes on Table {table}" for table, task in TABLE_TASKS.items()
             if task in per_run.index]) + " (the cost table above; one GPU, shared as the batch logs say)")
    else:
        timing = "no paper-profile run has been timed yet"
    return ("**Easy.** The released scripts fix every hyperparameter of the R-Transformer row, the data "
            "sets are public with fixed splits, and the models are small: " + timing + ". The TCN suite, "
            "whose protocols the paper follows, gives the four other rows' data handling and metrics.")


def _blown_up(records: pd.DataFrame) -> list[str]:
    """For every finished paper-profile run (no ablation) whose training loss rose above a uniform
    guess's: "Table 4's RNN at lr 20, seed 1111 (epochs 1–30 of 100, ended at 640.08)"."""
    runs = evidence(records)
    words = []
    for run in runs.itertuples() if len(runs) else ():
        if trace := _above_uniform_trace(run):
            words.append(f"Table {int(run.table)}'s {model_name(run.model)} at lr {run.lr:g}, seed {trace.seed} "
                         f"(epochs {_span(trace.first, trace.last)} of {int(run.epochs_run)}, ended at "
                         f"{fmt(run.test_metric, run.task)})")
    return words


def hard_parts(records: pd.DataFrame, batches: list[dict], bench: list[dict] = ()) -> str:
    """The report's "what was hard" list (Markdown): what holds whatever the records say, and
    what the records, batch logs and step benchmarks show so far."""
    items = [
        "*No Transformer baseline was released.* The paper's Transformer row cannot be re-run as the "
        "authors ran it; ours is written from the paper's description (see the deviations), so a gap "
        "on that row may be a difference of baselines, not of results.",
        "*The paper's text and its code disagree*, and the code is what made the numbers: the music "
        "script's clipping before `backward()` does nothing, the blocks are pre-norm where Eq. 8 is "
        "post-norm, and seq-MNIST divides the lr every 10 epochs where the text says on plateau.",
    ]
    table_cells = cells(records)
    carried = []
    for row in table_cells[table_cells["n"] >= MIN_SEEDS].itertuples():
        runs = _runs(records, row.task, row.model)
        index = _outlier(row.values, row.task, row.paper)
        if index is not None:
            seed = int(runs["seed"].iloc[index])
            first = lr_cuts(runs["curve"].iloc[index])
            carried.append(f"Table {row.table}'s {model_name(row.model)} seed {seed} "
                           f"{_first_cut_words(first[0] if first else None)} and ended at "
                           f"{fmt(row.values[index], row.task)}, "
                           f"its mean {fmt(row.mean, row.task)} with it and "
                           f"{fmt(np.delete(np.asarray(row.values), index).mean(), row.task)} without")
    if carried:
        items.append(f"*One seed can carry a gap.* {'; '.join(carried)}: fewer than {MIN_SEEDS} seeds could not "
                     f"have shown {'it' if len(carried) == 1 else 'either' if len(carried) == 2 else 'any of them'}.")
    if blown := _blown_up(records):
        items.append("*An lr can be too large.* " + "; ".join(blown) + ": the training loss sat above a "
                     "uniform guess's while the plateau schedule cut the lr, and the run never recovered the "
                     "lost epochs. The sweep runs such a row's other seeds only at the lr its grid chooses on "
                     "validation (`rtlib.reproduce`).")
    lost, waiting = unfinished_lost(batches, records), unfinished_waiting(batches, records)
    if lost:
        kinds: dict[str, list[str]] = {}  # the batch logs' words of each kind of loss
        for run in lost:
            kinds.setdefault(_loss_kind(run["why"], 2), []).append(run["why"])
        why = "; ".join(f"{len(words)} {_loss_kind(words[0], len(words))}"
                        for words in sorted(kinds.values(), key=len, reverse=True))
        items.append(f"*GPU time comes in short leases.* {plural(len(lost), 'run')} "
                     + ("was lost before it finished " if len(lost) == 1 else "were lost before they finished ") +
                     f"({sum(run['job_minutes'] for run in lost):.1f} GPU-minutes): {why}. A run must fit "
                     "its lease or come back with a checkpoint it can resume from"
                     + (f"; {waiting_text(waiting)}." if waiting else "."))
    if long_runs := beyond_a_lease(records, list(bench)):
        named = join_words([f"{job_words(job)} ({minutes:.0f}{' GPU-minutes' * (k == 0)})"
                            for k, (job, minutes) in enumerate(long_runs)])
        gone = sum(run.get("checkpoint") == "lost between sessions" for run in lost)
        items.append(f"*Some runs outlast any lease.* The training steps alone, as benchmarked, of {named} "
                     f"take longer than the {LEASE_MINUTES:.0f} minutes a lent machine is held. Such a run "
                     "finishes only by resuming, lease after lease, from checkpoints carried back in, and those "
                     "must outlive the session that made them"
                     + (f": {plural(gone, 'checkpoint')} brought back so far did not." if gone else "."))
    return "\n".join(f"- {item}" for item in items)

"""Toy tasks and small measurements for the chapter "Why a local RNN?" (book/intuition.md).

Every toy is a classification of short token sequences read off the last position, trained on
fresh samples each step (so there is nothing to overfit) and scored on one fixed test set.
All of them run in seconds to a minute on a laptop CPU.

- `order_task`: two events A and B fall inside the last `span` positions before a final query
  token; the label is 1 when A comes first. Only the *order* inside a short window tells the
  classes apart: both classes contain the same tokens.
- `far_order_task`: the order of A and B again, but both lie further back than any window
  reaches from the last position: a LocalRNN stack or a TCN block cannot see them, attention can.
- `retrieval_task`: a marker A is followed by a value token v somewhere far back (more than
  `min_distance` steps before the end); the label is v. Value tokens also appear as noise, so
  the model must find the value that comes *right after* the marker: local order plus a
  long-range look-up.

`make_toy_model` builds the contenders from rtlib's real modules (`RTransformer`,
`Transformer(position=...)`, `TCN`, `LocalRNN`) and `train_toy` trains one; `outcomes`,
`describe`, `verdict`, `versus` and `scoreboard` turn the runs into the chapter's tables and
sentences, so that every claim it makes follows the numbers. For a whole-sequence
GRU, a LocalRNN and a causal convolution, `layer_costs` counts what a forward pass costs on any
machine (sequential steps, FLOPs) and `time_layers` measures its wall time on this one.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Mapping

import pandas as pd
import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .models import TCN, LocalRNN, RTransformer, SequenceClassifier, Transformer
from .models.layers import FeedForward, Sublayer
from .models.tcn import CausalConv1d
from .results import join_words
from .step import make_optimizer, make_step
from .train import seed_all

# ---------------------------------------------------------------------------------------------
# Tasks. A sample is (one-hot features (N, L, vocab), labels (N,)).


@dataclass(frozen=True)
class ToyTask:
    """A toy classification task: `sample(n, generator)` -> (x, y)."""
    name: str
    length: int
    vocab: int
    num_classes: int
    sample: Callable[[int, torch.Generator], tuple[Tensor, Tensor]]
    symbols: str = ""  # one character per token id, for `render`
    settings: Mapping[str, int] = field(default_factory=dict)  # the arguments that made it

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes


def one_hot(tokens: Tensor, vocab: int) -> Tensor:
    return F.one_hot(tokens, vocab).float()


def _two_events(name: str, length: int, start: int, room: int, num_noise: int,
                settings: Mapping[str, int]) -> ToyTask:
    """Noise tokens 0..num_noise-1, then events A = num_noise and B = num_noise + 1 at two distinct
    positions among start..start+room-1, and the query Q = num_noise + 2 last; label 1 when A
    comes first. Both classes hold the same tokens: only their order differs."""
    a, b, query = num_noise, num_noise + 1, num_noise + 2

    def sample(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        tokens = torch.randint(num_noise, (n, length), generator=generator)
        tokens[:, -1] = query
        slots = torch.rand(n, room, generator=generator).argsort(-1)[:, :2] + start
        labels = torch.randint(2, (n,), generator=generator)
        first, second = slots.min(-1).values, slots.max(-1).values
        rows = torch.arange(n)
        tokens[rows, first] = torch.where(labels == 1, a, b)
        tokens[rows, second] = torch.where(labels == 1, b, a)
        return one_hot(tokens, num_noise + 3), labels

    symbols = "abcdefghijklmnopqrstuvwxyz"[:num_noise] + "AB?"
    return ToyTask(name, length, num_noise + 3, 2, sample, symbols, settings)


def order_task(length: int = 24, span: int = 4, num_noise: int = 6) -> ToyTask:
    """Label 1 when event A precedes event B; both sit in the `span` positions before the final
    query token, where the label is read. To see both events from the last position, a window
    must cover the last span + 1 positions."""
    if not 2 <= span < length:
        raise ValueError(f"span={span} must be in 2..length-1={length - 1}")
    return _two_events(f"order(span={span})", length, length - 1 - span, span, num_noise,
                       dict(length=length, span=span, num_noise=num_noise))


def order_ceiling(span: int, seen: int) -> float:
    """Best accuracy on `order_task(span=span)` for a model whose last position sees only the
    last `seen` inputs (the query and seen - 1 slots). If at least one event is seen, the order
    is known (an unseen event is the older one); if neither is, it is a coin flip."""
    visible = min(max(seen - 1, 0), span)
    hidden = span - visible
    both_hidden = hidden * (hidden - 1) / (span * (span - 1))
    return 1.0 - 0.5 * both_hidden


def far_order_task(length: int = 32, min_distance: int = 14, num_noise: int = 6) -> ToyTask:
    """Label 1 when event A precedes event B, both more than `min_distance` steps before the
    final query token (tokens as in `order_task`). A model whose last position sees at most
    `min_distance` inputs before the query can only guess; one that attends over the whole
    sequence can find both events, but must still tell which came first."""
    room = length - 1 - min_distance  # positions 0..room-1 lie more than min_distance back
    if room < 2:
        raise ValueError(f"min_distance={min_distance} leaves no room in length={length}")
    return _two_events(f"far order(distance>{min_distance})", length, 0, room, num_noise,
                       dict(length=length, min_distance=min_distance, num_noise=num_noise))


def retrieval_task(length: int = 32, min_distance: int = 12, num_values: int = 4,
                   num_noise: int = 4) -> ToyTask:
    """Label = the value token right after a marker that lies >= `min_distance` steps back.

    Tokens: noise 0..num_noise-1, values num_noise..num_noise+num_values-1 (also used as noise),
    marker M, query Q (the last position). The marker sits at a uniform position p with
    length - 1 - (p + 1) >= min_distance, its value at p + 1.
    """
    if min_distance + 3 > length:
        raise ValueError(f"min_distance={min_distance} leaves no room in length={length}")
    values = torch.arange(num_noise, num_noise + num_values)
    marker, query = num_noise + num_values, num_noise + num_values + 1
    last_marker = length - 2 - min_distance  # value at last_marker + 1 is min_distance from the end

    def sample(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        tokens = torch.randint(num_noise + num_values, (n, length), generator=generator)
        tokens[:, -1] = query
        position = torch.randint(last_marker + 1, (n,), generator=generator)
        labels = torch.randint(num_values, (n,), generator=generator)
        rows = torch.arange(n)
        tokens[rows, position] = marker
        tokens[rows, position + 1] = values[labels]
        return one_hot(tokens, num_noise + num_values + 2), labels

    symbols = "abcdefghijklmnopqrstuvwxyz"[:num_noise] + "0123456789"[:num_values] + "M?"
    return ToyTask(f"retrieval(distance>={min_distance})", length, num_noise + num_values + 2,
                   num_values, sample, symbols,
                   dict(length=length, min_distance=min_distance, num_values=num_values, num_noise=num_noise))


def decode(x: Tensor) -> list[int]:
    """The token ids of one one-hot sequence (L, vocab)."""
    return x.argmax(-1).tolist()


def render(task: ToyTask, x: Tensor) -> str:
    """One sequence (L, vocab) as a string, one character per token."""
    return "".join(task.symbols[token] for token in decode(x))


# ---------------------------------------------------------------------------------------------
# Models


class LocalRNNStack(nn.Module):
    """R-Transformer blocks with the attention sublayer removed: `levels` x (LocalRNN, FFN).

    Each output sees only the last levels * (window - 1) + 1 inputs, so it is the clean ablation
    "LocalRNN alone".
    """

    def __init__(self, d_model: int, levels: int, window: int, cell: str = "gru"):
        super().__init__()
        self.input_size = self.output_size = d_model
        self.sublayers = nn.ModuleList()
        for _ in range(levels):
            self.sublayers.append(Sublayer(LocalRNN(d_model, window, cell), d_model, 0.0, "pre", "released"))
            self.sublayers.append(Sublayer(FeedForward(d_model, 0.0), d_model, 0.0, "pre", "released"))

    def forward(self, x: Tensor) -> Tensor:
        for sublayer in self.sublayers:
            x = sublayer(x)
        return x


TOY_WIDTH = 32   # d_model of every toy model
TOY_MODELS = ("rtransformer", "local-rnn", "transformer-none", "transformer-sinusoidal", "conv")


def make_toy_model(kind: str, vocab: int, num_classes: int, d_model: int = TOY_WIDTH, levels: int = 2,
                   heads: int = 2, window: int = 5) -> SequenceClassifier:
    """A classifier around one of `TOY_MODELS`, all of width `d_model` and depth `levels`.

    "conv" is one TCN block per level with kernel (window + 1) // 2, so one block's receptive
    field, 2 * (kernel - 1) + 1, is the window (for odd windows).
    """
    if kind == "rtransformer":
        backbone = RTransformer(d_model=d_model, levels=levels, heads=heads, n_local=1,
                                window=window, dropout=0.0)
    elif kind == "local-rnn":
        backbone = LocalRNNStack(d_model, levels, window)
    elif kind.startswith("transformer-"):
        backbone = Transformer(d_model=d_model, levels=levels, heads=heads, dropout=0.0,
                               position=kind.split("-", 1)[1])
    elif kind == "conv":
        backbone = TCN(d_model, [d_model] * levels, kernel_size=conv_kernel(window), dropout=0.0)
    else:
        raise ValueError(f"kind={kind!r} is not one of {list(TOY_MODELS)}")
    return SequenceClassifier(backbone, vocab, num_classes, project_input=True)


def conv_kernel(window: int) -> int:
    """The kernel of the "conv" toy's TCN blocks: one block sees `window` inputs (odd windows)."""
    return max(2, (window + 1) // 2)


def uses_window(kind: str) -> bool:
    """Whether `make_toy_model(kind, window=...)` uses its window: as the LocalRNN's M, or (the
    conv) to set its kernel; a Transformer has none, whatever it was passed."""
    return not kind.startswith("transformer-")


def receptive_field(kind: str, levels: int, window: int, length: int) -> int:
    """How many inputs the last position of `make_toy_model(kind, ...)` can see."""
    if kind == "local-rnn":
        return min(length, levels * (window - 1) + 1)
    if kind == "conv":
        kernel = conv_kernel(window)
        return min(length, 1 + sum(2 * (kernel - 1) * 2 ** level for level in range(levels)))
    return length


# ---------------------------------------------------------------------------------------------
# Training


@contextmanager
def torch_threads(count: int):
    """Run the block with `count` intra-op threads. Toy models are so small that one thread is
    as fast as several, and it keeps their timing steady on a machine shared with other jobs
    (idle threads spinning at barriers can slow small ops down many times over)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xb).argmax(-1) == yb).sum())
                      for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


def classification_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    x, y = batch
    return F.cross_entropy(model(x), y), {}


def eval_schedule(steps: int, first: int = 5, ratio: float = 1.25) -> list[int]:
    """Steps at which `train_toy` measures test accuracy, spaced evenly on a log scale: `first`,
    then each about `ratio` times the one before (rounded to a multiple of `first`), and the last
    step. The toy models learn fastest early, so this reads their steps to 95% apart at a steady
    relative resolution, with fewer evaluations than a fine even spacing would take."""
    points, step = {steps}, float(first)
    while step < steps:
        points.add(min(steps, first * max(1, round(step / first))))
        step *= ratio
    return sorted(points)


def train_toy(task: ToyTask, kind: str, steps: int = 600, batch_size: int = 64, lr: float = 3e-3,
              seed: int = 0, num_test: int = 2000, eval_every: int = 100, eval_at=None, threads: int = 1,
              **model_args) -> dict:
    """Train `make_toy_model(kind, ...)` on fresh samples of `task`; returns a small record.

    The record holds the final test accuracy, the chance level, the receptive field, the number
    of parameters and the learning curve (step, test accuracy) at the steps `eval_at` (for
    instance `eval_schedule(steps)`; default every `eval_every` steps) and at the last step.
    Training uses `threads` intra-op threads (see `torch_threads`).
    """
    eval_at = set(eval_at or range(eval_every, steps + 1, eval_every)) | {steps}
    with torch_threads(threads):
        return _train_toy(task, kind, steps, batch_size, lr, seed, num_test, eval_at, **model_args)


def _train_toy(task, kind, steps, batch_size, lr, seed, num_test, eval_at, **model_args) -> dict:
    seed_all(seed)
    model = make_toy_model(kind, task.vocab, task.num_classes, **model_args)
    test_x, test_y = task.sample(num_test, torch.Generator().manual_seed(10_000 + seed))
    data = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer("adam", model.parameters(), lr, fused=False)
    train_step = make_step(model, classification_loss, optimizer, max_norm=1.0)
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        model.train()
        train_step(task.sample(batch_size, data))
        if step in eval_at:
            curve.append((step, accuracy(model, test_x, test_y)))
    window = model_args.get("window", 5)
    levels = model_args.get("levels", 2)
    return dict(task=task.name, model=kind, window=window, levels=levels, seed=seed, steps=steps,
                accuracy=curve[-1][1], chance=task.chance,
                receptive_field=receptive_field(kind, levels, window, task.length),
                parameters=sum(p.numel() for p in model.parameters()),
                seconds=time.perf_counter() - start, curve=curve, net=model)


SOLVED = 0.95  # the test accuracy at which a toy counts as solved
VERDICTS = {"solved": "solves it", "chance": "stays at chance", "partial": "gets only part of it"}


def outcome(accuracy: float, chance: float) -> str:
    """Where a measured accuracy lies: "solved" (`SOLVED` or more), "chance" (within 5 points of
    chance) or "partial"; `VERDICTS` words it."""
    if accuracy >= SOLVED:
        return "solved"
    if accuracy <= chance + 0.05:
        return "chance"
    return "partial"


def steps_to(curve, level: float = SOLVED) -> int | None:
    """The first evaluated step at which test accuracy reached `level`, or None."""
    return next((step for step, accuracy in curve if accuracy >= level), None)


def model_label(row) -> str:
    from .plots import label

    levels = int(row["levels"])
    return label(row["model"]) + (f" ({levels} layer{'s' if levels > 1 else ''})" if levels != 2 else "")


def outcomes(results: pd.DataFrame, level: float = SOLVED, keys=("model", "levels")) -> pd.DataFrame:
    """One row per model (per `keys`, in the order first run): its label, what its last position
    sees, its parameters, test accuracy as mean and std over seeds (0 for one seed), the seeds
    run, how many reached `level`, at which steps (`hit_steps`, sorted) and on average
    (`mean_step`, NaN where none did), and its `outcome`."""
    chance = results["chance"].iloc[0]
    rows = []
    for _, group in results.groupby(list(keys), sort=False):
        first, mean = group.iloc[0], group["accuracy"].mean()
        hits = sorted(step for step in (steps_to(curve, level) for curve in group["curve"]) if step is not None)
        rows.append({**{key: first[key] for key in keys}, "label": model_label(first),
                     "receptive_field": first["receptive_field"], "parameters": first["parameters"],
                     "mean": mean, "std": group["accuracy"].std(ddof=1) if len(group) > 1 else 0.0,
                     "seeds": len(group), "hits": len(hits), "hit_steps": hits,
                     "mean_step": sum(hits) / len(hits) if hits else math.nan, "outcome": outcome(mean, chance)})
    return pd.DataFrame(rows)


def sooner(first, second) -> bool:
    """Whether every seed of model `first` reached the level before any seed of `second` did
    (rows of `outcomes`): a difference in speed that no seed contradicts."""
    return first.hits == first.seeds and (second.hits == 0 or first.hit_steps[-1] < second.hit_steps[0])


PLURAL_VERDICTS = {"solved": "solve it", "chance": "stay at chance", "partial": "get only part of it"}


def verdict(results: pd.DataFrame, level: float = SOLVED) -> str:
    """Which models solve a toy, which get part of it and which stay at chance, in one sentence;
    "every 2-layer model solves it" when every model of the usual (most common) depth does."""
    rows = outcomes(results, level)
    depth = rows["levels"].mode().iloc[0]
    usual = rows["levels"] == depth
    everyone = (rows[usual]["outcome"] == "solved").all()
    parts = [f"every {depth}-layer model solves it"] if everyone else []
    for key in ("solved", "partial", "chance"):
        chosen = rows[(rows["outcome"] == key) & ~(usual & everyone)]
        if len(chosen):
            parts.append(f"{join_words(list(chosen['label']))} {(VERDICTS if len(chosen) == 1 else PLURAL_VERDICTS)[key]}")
    return "; ".join(parts)


def describe(results: pd.DataFrame, level: float = SOLVED) -> str:
    """What a toy's runs show, in Markdown: its `verdict`, per model its accuracy over seeds and
    the steps at which its seeds reached `level`, and which models got there sooner than which
    on every seed (`sooner`)."""
    rows = outcomes(results, level)
    sentence = verdict(results, level)
    lines = [f"- {r.label}: {100 * r.mean:.1f} ± {100 * r.std:.1f}% over {r.seeds} seed{'s' * (r.seeds > 1)} "
             f"({VERDICTS[r.outcome]}); {r.hits} of {r.seeds} seeds reached {100 * level:.0f}%"
             + (f", at step{'s' * (r.hits > 1)} {join_words([str(step) for step in r.hit_steps])}." if r.hits else ".")
             for r in rows.itertuples()]
    order = [(a.label, [b.label for b in rows.itertuples() if sooner(a, b) and b.hits]) for a in rows.itertuples()]
    faster = "; ".join(f"{a} before {join_words(list(later))}" for a, later in order if later)
    race = (f"Sooner to {100 * level:.0f}% on every seed: {faster}." if faster else
            f"No model reached {100 * level:.0f}% sooner than another on every seed.")
    return "\n".join([f"**{sentence[0].upper() + sentence[1:]}.**", "", *lines, "", race])


def versus(results: pd.DataFrame, model: str, rivals, level: float = SOLVED, levels: int = 2) -> dict:
    """`model` against each of `rivals` (all of depth `levels`) on one toy: `lead`, the points of
    mean accuracy by which it beats its best rival (negative when behind), the labels of the
    rivals it reached `level` `before` on every seed, those it is `behind` (that reached `level`
    before it on every seed, see `sooner`), and `pace`: all of that in words, with the mean steps
    where the seeds overlap."""
    rows = outcomes(results, level).set_index(["model", "levels"])
    own, others = rows.loc[(model, levels)], [rows.loc[(rival, levels)] for rival in rivals]
    before = [other["label"] for other in others if sooner(own, other)]
    behind = [other["label"] for other in others if sooner(other, own)]
    mixed = [other for other in others if other["label"] not in before + behind and other["hits"] and own["hits"]]

    def when(other) -> str:
        return "sooner" if other["mean_step"] < own["mean_step"] else (
            "later" if other["mean_step"] > own["mean_step"] else "as soon")

    pace = ([f"it reached {100 * level:.0f}% before {join_words(list(before))} on every seed"] if before else []) + (
        [f"{join_words(list(behind))} reached {100 * level:.0f}% before it on every seed"] if behind else []) + [
        f"{other['label']} got there {when(other)} on average (step {other['mean_step']:.0f} against "
        f"{own['mean_step']:.0f}) but not on every seed" for other in mixed]
    return dict(lead=100 * (own["mean"] - max(other["mean"] for other in others)), before=before, behind=behind,
                pace="; ".join(pace) or f"no seed order tells it from its rivals at {100 * level:.0f}%")


def scoreboard(tasks: Mapping[str, pd.DataFrame], level: float = SOLVED) -> pd.DataFrame:
    """Every model (rows, in the order first run) on every toy (column groups): mean test
    accuracy over seeds (%) and the mean step at which its seeds reached `level` ("–" where
    none did; how many did where not all), "not run" where a model was not trained on a toy."""
    frames = {}
    for task, results in tasks.items():
        rows = outcomes(results, level).set_index("label")
        steps = [f"{r.mean_step:.0f}" + (f" ({r.hits} of {r.seeds})" if r.hits < r.seeds else "") if r.hits else "–"
                 for r in rows.itertuples()]
        frames[task] = pd.DataFrame({"accuracy (%)": [f"{100 * m:.1f}" for m in rows["mean"]],
                                     f"step to {100 * level:.0f}%": steps}, index=rows.index)
    board = pd.concat(frames, axis=1)
    board.index.name = "model"
    return board.fillna("not run")


def summary_table(results: pd.DataFrame, level: float = SOLVED) -> pd.DataFrame:
    """One row per model (and window, where several were run), indexed by its name (and window M;
    "–" for a model that has no window): what its last position sees, its parameters, test accuracy
    as mean ± std over seeds, and how many seeds reached `level`, at which step on average."""
    windows = results.groupby(["model", "levels"])["window"].nunique().max() > 1
    keys = ("model", "levels", "window") if windows else ("model", "levels")
    rows = outcomes(results, level, keys)
    table = pd.DataFrame([{"model": row.label, **({"window M": row.window if uses_window(row.model) else "–"}
                                                  if windows else {}),
                           "inputs seen from the end": row.receptive_field, "parameters": row.parameters,
                           "test accuracy (%)": f"{100 * row.mean:.1f}"
                           + (f" ± {100 * row.std:.1f}" if row.seeds > 1 else ""),
                           f"seeds reaching {100 * level:.0f}%": f"{row.hits} of {row.seeds}",
                           "mean step it did": f"{row.mean_step:.0f}" if row.hits else "–"}
                          for row in rows.itertuples()])
    return table.set_index(["model", "window M"] if windows else "model")


def compare(task: ToyTask, kinds, seeds=(0,), **train_args) -> pd.DataFrame:
    """`train_toy` for every kind and seed; one row per run (the models are dropped)."""
    rows = []
    for kind in kinds:
        for seed in seeds:
            record = train_toy(task, kind, seed=seed, **train_args)
            record.pop("net")
            rows.append(record)
    return pd.DataFrame(rows)


def window_sweep(task: ToyTask, kinds, windows, seeds=(0,), **train_args) -> pd.DataFrame:
    """Test accuracy of each kind at each LocalRNN window M (one row per run)."""
    frames = [compare(task, kinds, seeds, window=window, **train_args) for window in windows]
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Permutations: what a position-free attention layer cannot tell apart


def permute_prefix(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x (B, L, d) with positions 0..L-2 shuffled (the same shuffle for the whole batch) and the
    last position kept in place."""
    length = x.shape[1]
    order = torch.randperm(length - 1, generator=generator)
    return torch.cat([x[:, order], x[:, -1:]], dim=1)


def last_output_change(module: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> float:
    """Max |module(x)[:, -1] - module(permute_prefix(x))[:, -1]|: 0 when the last position's
    output is blind to the order of what came before it."""
    module.eval()
    with torch.no_grad():
        return float((module(x)[:, -1] - module(permute_prefix(x, generator))[:, -1]).abs().max())


def bidirectional_attention(layer, x: Tensor) -> Tensor:
    """What `CausalSelfAttention` layer computes for x (B, L, d) with its causal mask removed:
    every position attends to every position (used to show permutation equivariance)."""
    batch, length, d = x.shape
    q, k, v = layer.qkv(x).view(batch, length, 3, layer.heads, d // layer.heads).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v)  # no mask
    return layer.out(y.transpose(1, 2).reshape(batch, length, d))


# ---------------------------------------------------------------------------------------------
# Wall time against sequence length


class CausalConv(nn.Module):
    """(B, L, d) -> (B, L, d) through one `CausalConv1d` of kernel `window`, for timing."""

    def __init__(self, d: int, window: int):
        super().__init__()
        self.conv = CausalConv1d(d, d, window, dilation=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


def cost_layers(d: int, window: int) -> dict[str, tuple[nn.Module, Callable[[int], int]]]:
    """The three layers of width d whose cost the chapter compares, each with its number of
    sequential steps as a function of the length: a whole-sequence nn.GRU, a LocalRNN (fast
    path, GRU cell) and a causal Conv1d of kernel `window`."""
    torch.manual_seed(0)
    return {"GRU (whole sequence)": (nn.GRU(d, d, batch_first=True), lambda length: length),
            f"LocalRNN (M={window}, fast)": (LocalRNN(d, window, "gru", "fast"), lambda length: window),
            f"causal Conv1d (k={window})": (CausalConv(d, window), lambda length: 1)}


def layer_costs(length: int = 256, d: int = 64, window: int = 8, batch: int = 8) -> pd.DataFrame:
    """What one forward pass of each of `cost_layers` costs on any machine, at one length: the
    steps it takes one after another and its FLOPs (counted by `FlopCounterMode` on the ops it
    runs), in all and per position. Per position they hardly depend on the length (the LocalRNN
    also projects window - 1 padding positions); `flops_vs_gru` compares with the GRU."""
    x = torch.randn(batch, length, d)
    rows = []
    with torch.no_grad():
        for name, (layer, steps) in cost_layers(d, window).items():
            with FlopCounterMode(display=False) as counter:
                layer(x)
            flops = counter.get_total_flops()
            rows.append(dict(layer=name, length=length, sequential_steps=steps(length), flops=flops,
                             flops_per_position=round(flops / (batch * length))))
    costs = pd.DataFrame(rows)
    return costs.assign(flops_vs_gru=costs["flops"] / costs["flops"].iloc[0])


def time_layers(lengths=(64, 256, 1024, 4096), d: int = 64, window: int = 8, batch: int = 8,
                repeats: int = 5, min_run_time: float = 0.2, threads: int = 1) -> pd.DataFrame:
    """Forward wall time (ms) of each of `cost_layers` on this machine, measured as steadily as a
    shared machine allows: `torch.utils.benchmark`'s blocked autorange (warm-up, then blocks of
    calls for at least `min_run_time` s, median over blocks) on `threads` intra-op threads, done
    `repeats` times. One row per (layer, length): `ms`, the fastest repeat (the least disturbed by
    other load), `ms_max` the slowest, and `spread` their ratio."""
    rows = []
    with torch.no_grad():
        for length in lengths:
            x = torch.randn(batch, length, d)
            for name, (layer, _) in cost_layers(d, window).items():
                timer = benchmark.Timer("layer(x)", globals=dict(layer=layer, x=x), num_threads=threads)
                medians = [1000 * timer.blocked_autorange(min_run_time=min_run_time).median
                           for _ in range(repeats)]
                rows.append(dict(layer=name, length=length, ms=min(medians), ms_max=max(medians),
                                 spread=max(medians) / min(medians), threads=threads))
    return pd.DataFrame(rows)


def sequential_steps(length: int, window: int) -> pd.DataFrame:
    """Steps one layer must take one after another to process a sequence of `length`."""
    return pd.DataFrame([
        dict(layer="RNN over the whole sequence", sequential_steps=length),
        dict(layer="LocalRNN (all windows in parallel)", sequential_steps=window),
        dict(layer="causal convolution", sequential_steps=1),
        dict(layer="causal self-attention", sequential_steps=1),
    ])

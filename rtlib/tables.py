"""The paper's rows as tables: settings, sizes and parameter counts of every table x model.

Read by the model chapter (book/model.md), the table chapters and the report; every number
comes from `rtlib.configs` and from models built by `rtlib.models.build_model`.
"""
from __future__ import annotations

import pandas as pd
from torch import nn

from .configs import FAMILY, FAST, MODELS, PAPER, TABLE_TASKS, Schedule, run_config
from .models import RTransformerConfig, build_model
from .models.config import recorded_settings
from .models.layers import FeedForward, ReleasedLayerNorm
from .tasks import TASKS, Protocol, model_protocol


def model_size(task: str, model: str, profile: str = "paper") -> str:
    """'layers / hidden' of one row's model, as the paper's tables print it."""
    backbone = run_config(task, model, profile).backbone
    if hasattr(backbone, "d_model"):
        return f"{backbone.levels} / {backbone.d_model}"
    if hasattr(backbone, "channels"):
        return f"{len(backbone.channels)} / {backbone.channels[0]}"
    return f"{backbone.num_layers} / {backbone.hidden_size}"


def describe_schedule(schedule: Schedule) -> str:
    """A `rtlib.configs.Schedule` in words: '÷10 every 10 epochs', '÷2 when the validation loss
    ≥ the max of the last 5 (after epoch 5)', 'none'."""
    if schedule.factor == 1:
        return "none"
    divide = f"÷{1 / schedule.factor:g}"
    if schedule.kind == "step":
        return f"{divide} every {schedule.every} epochs"
    compare = ">" if schedule.strict else "≥"
    return (f"{divide} when the validation loss {compare} the max of the last {schedule.window} "
            f"(after epoch {schedule.after})")


def profile_changes(task: str, profile: str = "fast") -> list[str]:
    """What `profile` changes from the paper profile for `task`'s rows, in words."""
    if profile != "fast":
        return []
    changed, why = FAST[FAMILY[task]]
    paper = PAPER[FAMILY[task], "rtransformer"].train
    shown = lambda value: describe_schedule(value) if isinstance(value, Schedule) else f"{value}"
    return [f"{key}: {shown(getattr(paper, key))} → {shown(value)}" for key, value in changed.items()
            if getattr(paper, key) != value] + [f"why: {why}"]


def math_number(value: float) -> str:
    """A number as the prose prints it (MyST math): 2 -> '$2$', 5e-05 -> '$5 \\cdot 10^{-5}$', 0.001 -> '$10^{-3}$'."""
    text = f"{value:e}" if value and abs(value) < 0.01 else f"{value:g}"
    if "e" not in text:
        return f"${text}$"
    mantissa, exponent = text.split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    power = f"10^{{{int(exponent)}}}"
    return f"${power}$" if mantissa == "1" else f"${mantissa} \\cdot {power}$"


OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}


def protocol_facts(task: str, model: str = "rtransformer", profile: str = "paper") -> dict[str, str]:
    """The settings a table chapter's protocol prose quotes, as text, read from `rtlib.configs`
    (so that no number in that prose is typed in): optimizer, lr, lr_grid, clip, schedule, epochs,
    batch, layers, d_model, heads, window and, for the language models, seq_len, scored and
    context (= seq_len - scored)."""
    cfg = run_config(task, model, profile)
    t, b = cfg.train, recorded_settings(cfg.backbone)
    facts = {"optimizer": OPTIMIZER_NAMES.get(t.optimizer, t.optimizer),
             "lr": math_number(t.lr),
             "lr_grid": "$\\{" + ", ".join(math_number(lr).strip("$") for lr in t.lr_grid) + "\\}$",
             "clip": f"norm {t.grad_clip:g}" if t.grad_clip else "none",
             "schedule": describe_schedule(t.schedule), "epochs": str(t.epochs), "batch": str(t.batch_size),
             "max_steps": str(t.max_steps) if t.max_steps else "no limit"}
    for key, field in (("layers", "levels"), ("d_model", "d_model"), ("heads", "heads"), ("window", "window")):
        if b.get(field) is not None:
            facts[key] = str(b[field])
    if t.seq_len:
        facts |= {"seq_len": str(t.seq_len), "scored": str(t.scored), "context": str(t.seq_len - t.scored)}
    return facts


def _grid_words(task: str, grid: tuple[float, ...]) -> str:
    """The lr grid as the sweep uses it: without a validation split to choose on, it is not run."""
    listed = ", ".join(f"{lr:g}" for lr in grid)
    if TASKS[task].has_validation or len(grid) == 1:
        return listed
    return f"not swept ({listed} in the config; no validation split to choose on)"


def config_table(task: str, profile: str = "paper", models=None) -> pd.DataFrame:
    """One row per model (its name as the paper prints it): size and training settings for
    `task` from `rtlib.configs`, under readable headers."""
    from .results import model_name

    rows = []
    for model in models or MODELS:
        cfg = run_config(task, model, profile)
        b, t = recorded_settings(cfg.backbone), cfg.train
        window = b.get("window") or b.get("kernel_size")
        rows.append({"model": model_name(model), "layers / hidden": model_size(task, model, profile),
                     "heads": b.get("heads", "–"), "window / kernel": window or "–",
                     "cell": model_name(b["cell"]) if b.get("cell") else "–", "dropout": b.get("dropout"),
                     "optimizer": OPTIMIZER_NAMES.get(t.optimizer, t.optimizer), "lr": f"{t.lr:g}",
                     "lr grid": _grid_words(task, t.lr_grid),
                     "gradient clip": f"{t.grad_clip:g}" if t.grad_clip else "none", "batch": t.batch_size,
                     "epochs": t.epochs, "lr schedule": describe_schedule(t.schedule)})
    return pd.DataFrame(rows)


def paper_protocol(task: str, model: str, profile: str = "paper", data_dir=None) -> Protocol:
    """The task protocol of one row with tiny data slices: for its model, vocabulary and
    windows, not for training."""
    return model_protocol(run_config(task, model, profile), "cpu", data_dir)


def build_paper_model(task: str, model: str, profile: str = "paper", data_dir=None) -> nn.Module:
    """The model of one row (data are only read for the vocabulary)."""
    protocol = paper_protocol(task, model, profile, data_dir)
    return build_model(protocol.cfg, protocol.shape)


def released_dead_parameters(backbone: RTransformerConfig) -> int:
    """Parameters the released R-Transformer builds but never uses in `forward`: the stack's
    LayerNorm and feed-forward network, and one Linear(d, d) (+ReLU) output layer per LocalRNN."""
    d = backbone.d_model
    dead = [ReleasedLayerNorm(d), FeedForward(d, 0.0)]
    dead += [nn.Linear(d, d) for _ in range(backbone.levels * backbone.n_local)]
    return sum(p.numel() for module in dead for p in module.parameters())


def parameter_counts(models=("rtransformer", "transformer"), data_dir=None) -> pd.DataFrame:
    """Parameters of each table's paper-sized models; for the R-Transformer also the count the
    released code would print (used + dead modules)."""
    rows = []
    for table, task in TABLE_TASKS.items():
        for model in models:
            backbone = run_config(task, model, "paper").backbone
            used = sum(p.numel() for p in build_paper_model(task, model, data_dir=data_dir).parameters())
            dead = released_dead_parameters(backbone) if model == "rtransformer" else 0
            rows.append(dict(table=table, task=task, model=model,
                             size=f"{backbone.levels} / {backbone.d_model}",
                             parameters=used, released_prints=used + dead if dead else None))
    return pd.DataFrame(rows).astype({"released_prints": "Int64"})


PARTS = (("LocalRNN", ".rnn."), ("attention", (".qkv.", ".out.")), ("feed-forward", ".net."),
         ("LayerNorm", ".norm."))


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per component: LocalRNN, attention, feed-forward, LayerNorm, input/output
    (embeddings, encoders, decoders; a tied decoder is counted once)."""
    counts = {name: 0 for name, _ in PARTS} | {"input/output": 0}
    for name, parameter in model.named_parameters():  # shared (tied) tensors appear once
        part = next((part for part, keys in PARTS
                     if any(key in f".{name}" for key in ((keys,) if isinstance(keys, str) else keys))),
                    "input/output")
        counts[part] += parameter.numel()
    return counts


def percent(share: float) -> str:
    """A share in % to whole percents, or to one significant digit below 1% (never a 0% that is not)."""
    value = 100 * share
    return f"{value:.0f}%" if value >= 1 or value == 0 else f"{value:.1g}%"


def breakdown_sentence(breakdown: pd.DataFrame) -> str:
    """Markdown: per table (a column of `parameter_breakdown` counts), which part holds the most
    of a block's parameters and its share, and the input/output layers' share of the model."""
    lines = []
    for column in breakdown.columns:
        counts = breakdown[column]
        blocks = counts.drop(index="input/output")
        top = blocks.idxmax()
        name = {"LocalRNN": "LocalRNN", "feed-forward": "feed-forward network"}.get(top, top)
        others = ", ".join(f"{part} {percent(value / blocks.sum())}" for part, value in blocks.drop(index=top).items())
        lines.append(f"- {column}: the largest part of the blocks is the {name}, with "
                     f"{percent(blocks[top] / blocks.sum())} of their parameters ({others}); the input and "
                     f"output layers hold {percent(counts['input/output'] / counts.sum())} of the model.")
    return "\n".join(lines)

"""Hyperparameters of every table x model row, in one place, with where each comes from.

`run_config(task, model, profile)` is the only way settings reach a run: the CLI, the run
notebook, the batch runner and the report all read this file. Three profiles:

- ``paper``: the released scripts' settings and epochs (``../shared/reference/hyperparameters.md``);
- ``fast``: fewer epochs / larger batches for a limited GPU budget; every change from
  ``paper`` is listed in the config's ``changes`` and lands in the run record;
- ``smoke``: a tiny model, a few steps on a data slice; seconds on a CPU, for CI and nbval.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

TASKS = ("mnist", "pmnist", "nottingham", "jsb", "muse", "piano", "ptb-char", "ptb-word")
MODELS = ("rtransformer", "transformer", "tcn", "rnn", "gru", "lstm")
PROFILES = ("paper", "fast", "smoke")
COMPILE_MODES = ("none", "default", "reduce-overhead", "step-graph", "default+step-graph")
TABLE_TASKS = {1: "mnist", 2: "nottingham", 3: "ptb-char", 4: "ptb-word"}
# Tasks outside the paper's tables reuse the settings of the table of their family.
FAMILY = {"mnist": "mnist", "pmnist": "mnist", "nottingham": "nottingham", "jsb": "nottingham",
          "muse": "nottingham", "piano": "nottingham", "ptb-char": "ptb-char", "ptb-word": "ptb-word"}


@dataclass(frozen=True)
class Schedule:
    """Learning-rate annealing of the released scripts.

    ``step``: lr *= factor every ``every`` epochs. ``plateau``: after epoch ``after`` (1-based),
    lr *= factor when the validation loss is > (``strict``) or >= the max of the previous
    ``window`` epochs' validation losses.
    """
    kind: str = "plateau"
    factor: float = 0.1
    every: int = 10
    after: int = 5
    window: int = 3
    strict: bool = True


@dataclass(frozen=True)
class TrainSettings:
    optimizer: str                    # "adam" | "sgd"
    lr: float
    lr_grid: tuple[float, ...]        # the paper's grid; rows are picked on validation
    grad_clip: float | None           # max gradient norm, None: no clipping
    batch_size: int                   # images / tunes / streams per step
    eval_batch_size: int
    epochs: int
    schedule: Schedule
    seq_len: int | None = None        # language models: window length ...
    scored: int | None = None         # ... and the positions of it that are scored
    clip_before_backward: bool = False  # reproduces the released music script's bug (ablation)
    train_limit: int | None = None    # smoke: examples / tunes / tokens per stream kept
    eval_limit: int | None = None
    max_steps: int | None = None      # smoke: cap on steps per epoch
    precision: str = "auto"           # "auto" (bf16/fp16 on GPU, fp32 on CPU), "fp32", "bf16", "fp16"
    compile: str = "none"             # GPU only: "none", "default" (fusion), "reduce-overhead"
                                      # (fusion + CUDA graphs of forward and backward), "step-graph"
                                      # (the whole step as one CUDA graph a batch shape) or
                                      # "default+step-graph" (both)
    seed: int = 1111


@dataclass(frozen=True)
class RunConfig:
    task: str
    model: str
    profile: str
    backbone: dict[str, Any]          # keyword arguments of the backbone class
    head: dict[str, Any]              # keyword arguments of the task head
    train: TrainSettings
    source: str                       # where the paper settings come from
    changes: tuple[str, ...] = ()     # every change from the paper profile, in words
    variant: str = ""                 # ablation tag, "" for the row as configured

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists), as run records and checkpoints store it."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        train = dict(data["train"])
        train["schedule"] = Schedule(**train["schedule"])
        train["lr_grid"] = tuple(train["lr_grid"])
        return cls(**{**data, "train": TrainSettings(**train), "changes": tuple(data["changes"])})


HYPER = "../shared/reference/hyperparameters.md"
RELEASED = f"R-Transformer released scripts ({HYPER})"
TCN_SUITE = f"TCN suite defaults, Bai et al. 2018 ({HYPER})"
OURS = ("not given by the paper (row copied from Bai et al. 2018): sized to the matching "
        "row's parameter count as Bai et al. did; optimizer and lr grid are our choice")

MNIST_STEP = Schedule(kind="step", factor=0.1, every=10)
MUSIC_PLATEAU = Schedule(factor=0.1, after=10, window=3, strict=True)
CHAR_PLATEAU = Schedule(factor=0.1, after=5, window=3, strict=True)
WORD_PLATEAU = Schedule(factor=0.5, after=5, window=5, strict=False)
NO_DECAY = Schedule(kind="step", factor=1.0, every=1)


def _attention(d_model, levels, heads, dropout, **extra):
    return dict(d_model=d_model, levels=levels, heads=heads, dropout=dropout, **extra)


# (family, model) -> (backbone, head, train, source). Backbone keys follow the model class.
PAPER: dict[tuple[str, str], tuple[dict, dict, TrainSettings, str]] = {}


def _add_rnn_rows(family: str, hidden_sizes: dict[str, int], num_layers: int, dropout: float,
                  head: dict[str, Any], train: TrainSettings, lstm_table: int | None = None) -> None:
    """The RNN/GRU/LSTM rows the paper copied from Bai et al.: sizes matched to one parameter
    count; `lstm_table` names the table that gives the LSTM's size, where one does."""
    for cell, hidden in hidden_sizes.items():
        given = f"LSTM size from the paper (Table {lstm_table}); " if cell == "lstm" and lstm_table else ""
        PAPER[family, cell] = (dict(hidden_size=hidden, num_layers=num_layers, dropout=dropout),
                               dict(head), train, given + OURS)

_mnist_train = TrainSettings("adam", 1e-3, (1e-3,), None, 32, 32, 50, MNIST_STEP)
PAPER["mnist", "rtransformer"] = (
    _attention(32, 8, 2, 0.05, n_local=2, window=7, cell="gru"), {}, _mnist_train, RELEASED)
PAPER["mnist", "transformer"] = (_attention(32, 8, 2, 0.05), {}, _mnist_train, RELEASED)
PAPER["mnist", "tcn"] = (dict(channels=[25] * 8, kernel_size=7, dropout=0.05), {},
                         TrainSettings("adam", 2e-3, (2e-3,), None, 64, 64, 20, NO_DECAY), TCN_SUITE)
_add_rnn_rows("mnist", dict(lstm=130, gru=150, rnn=260), 1, 0.0, {},
              TrainSettings("adam", 1e-3, (1e-4, 1e-3, 2e-3), 1.0, 64, 64, 20, NO_DECAY), lstm_table=1)

# The released music script is SGD lr 5e-5 on the per-tune *summed* NLL, one tune a step.
_music_train = TrainSettings("sgd", 5e-5, (5e-4, 5e-5, 5e-6), 0.15, 1, 1, 100, MUSIC_PLATEAU)
PAPER["nottingham", "rtransformer"] = (
    _attention(160, 3, 4, 0.1, n_local=1, window=6, cell="gru"), {}, _music_train, RELEASED)
PAPER["nottingham", "transformer"] = (_attention(160, 3, 4, 0.1), {}, _music_train, RELEASED)
PAPER["nottingham", "tcn"] = (dict(channels=[150] * 4, kernel_size=5, dropout=0.25), {},
                              TrainSettings("adam", 1e-3, (1e-3,), 0.2, 1, 1, 100, MUSIC_PLATEAU),
                              TCN_SUITE)
_add_rnn_rows("nottingham", dict(lstm=252, gru=294, rnn=514), 2, 0.1, {},
              TrainSettings("adam", 1e-3, (1e-4, 1e-3), 0.2, 1, 1, 100, MUSIC_PLATEAU))

_char_train = TrainSettings("sgd", 2.0, (1.0, 2.0, 3.0), 0.15, 16, 1, 100, CHAR_PLATEAU,
                            seq_len=400, scored=320)
_char_head = dict(emb_dropout=0.15, tied=True, init="uniform", init_scale=0.1)
PAPER["ptb-char", "rtransformer"] = (
    _attention(512, 3, 8, 0.15, n_local=1, window=7, cell="gru"), _char_head, _char_train, RELEASED)
PAPER["ptb-char", "transformer"] = (_attention(512, 3, 8, 0.15), _char_head, _char_train, RELEASED)
PAPER["ptb-char", "tcn"] = (
    dict(input_size=100, channels=[450, 450, 100], kernel_size=3, dropout=0.1),
    dict(emb_dropout=0.1, tied=True, init="normal", init_scale=0.01),
    TrainSettings("sgd", 4.0, (4.0,), 0.15, 32, 1, 100, CHAR_PLATEAU, seq_len=400, scored=320),
    TCN_SUITE)
_add_rnn_rows("ptb-char", dict(lstm=600, gru=692, rnn=1198), 2, 0.1,
              dict(emb_dropout=0.1, tied=True, init="uniform", init_scale=0.1),
              TrainSettings("sgd", 4.0, (1.0, 4.0, 20.0), 0.15, 32, 1, 100, CHAR_PLATEAU,
                            seq_len=400, scored=320), lstm_table=3)

_word_train = TrainSettings("sgd", 2.0, (1.0, 2.0, 3.0), 0.35, 16, 10, 100, WORD_PLATEAU,
                            seq_len=80, scored=40)
_word_head = dict(emb_dropout=0.15, tied=True, init="normal", init_scale=0.01)
PAPER["ptb-word", "rtransformer"] = (
    _attention(128, 3, 8, 0.35, n_local=1, window=9, cell="lstm"), _word_head, _word_train, RELEASED)
PAPER["ptb-word", "transformer"] = (_attention(128, 3, 8, 0.35), _word_head, _word_train, RELEASED)
PAPER["ptb-word", "tcn"] = (
    dict(input_size=600, channels=[600] * 4, kernel_size=3, dropout=0.45),
    dict(emb_dropout=0.25, tied=True, init="normal", init_scale=0.01),
    TrainSettings("sgd", 4.0, (4.0,), 0.35, 16, 10, 100, WORD_PLATEAU, seq_len=80, scored=40),
    TCN_SUITE)
_add_rnn_rows("ptb-word", dict(lstm=700, gru=780, rnn=1122), 3, 0.35,
              dict(emb_dropout=0.25, tied=True, init="uniform", init_scale=0.1),
              TrainSettings("sgd", 20.0, (4.0, 20.0), 0.25, 16, 10, 100, WORD_PLATEAU,
                            seq_len=80, scored=40), lstm_table=4)

# fast profile: (family) -> (train changes, why). The same for every model of a table; each
# changed field is listed in the config's `changes` as "field: paper -> fast".
FAST: dict[str, tuple[dict[str, Any], str]] = {
    "mnist": (dict(batch_size=120, eval_batch_size=500, epochs=12, compile="reduce-overhead",
                   schedule=Schedule(kind="step", factor=0.1, every=5)),
              "batches of 120 (60,000 = 500 x 120: one compiled shape), 12 epochs instead of 50, "
              "lr /10 every 5 epochs instead of 10; compiled with CUDA graphs"),
    "nottingham": (dict(batch_size=8, eval_batch_size=16, lr=5e-6, clip_before_backward=True),
                   "8 tunes of similar length a step (padded + masked; the loss stays summed as "
                   "released, so the gradient is ~8x one tune's: lr 5e-6, the grid's lowest, moves "
                   "the weights about as far per epoch as 5e-5 with one tune a step, and 1e-5 "
                   "diverged on CPU); gradient clipping as the released script really does it "
                   "(before backward: a no-op)"),
    "ptb-char": (dict(batch_size=32, eval_batch_size=8, epochs=30, compile="reduce-overhead"),
                 "32 streams a step instead of 16, 30 epochs instead of 100; compiled with CUDA graphs"),
    "ptb-word": (dict(eval_batch_size=10, epochs=30, compile="reduce-overhead"),
                 "30 epochs instead of 100; compiled with CUDA graphs"),
}

# smoke profile: tiny models, few steps, data slices.
SMOKE_ATTENTION = dict(d_model=16, levels=2, heads=2)
SMOKE_TRAIN = dict(epochs=2, max_steps=3, train_limit=256, eval_limit=64, batch_size=4,
                   eval_batch_size=8, precision="fp32")


def _smoke_backbone(model: str, backbone: dict[str, Any]) -> dict[str, Any]:
    if model in ("rtransformer", "transformer"):
        return {**backbone, **SMOKE_ATTENTION, **({"n_local": 1} if "n_local" in backbone else {})}
    if model == "tcn":
        small = {**backbone, "channels": [8] * (len(backbone["channels"]) - 1) + [8]}
        return {**small, "input_size": 8} if "input_size" in backbone else small
    return {**backbone, "hidden_size": 16, "num_layers": min(backbone["num_layers"], 2)}


def run_config(task: str, model: str, profile: str = "smoke", **train_overrides: Any) -> RunConfig:
    """The settings of one run; `train_overrides` (lr=..., epochs=..., seed=...) replace train
    fields, except those given as None (not set on the command line)."""
    check_choice("task", task, TASKS)
    check_choice("model", model, MODELS)
    check_choice("profile", profile, PROFILES)
    family = FAMILY[task]
    backbone, head, train, source = PAPER[family, model]
    changes: list[str] = []
    if task != family:
        changes.append(f"task {task} is not in the paper: {family}'s settings")
    if profile == "fast":
        fast_train, why = FAST[family]
        if train.optimizer != "sgd":  # Adam is invariant to the loss scale: the SGD lr rescaling
            fast_train = {k: v for k, v in fast_train.items() if k != "lr"}  # is not for it
        changes += [f"{key}: {getattr(train, key)} -> {value}" for key, value in fast_train.items()
                    if getattr(train, key) != value]
        changes.append(f"why: {why}")
        train = replace(train, **fast_train)
    elif profile == "smoke":
        backbone = _smoke_backbone(model, backbone)
        train = replace(train, **SMOKE_TRAIN,
                        **({"seq_len": 24, "scored": 12} if train.seq_len else {}))
        changes.append("smoke: tiny model, 2 epochs of 3 steps on a data slice")
    given = {key: value for key, value in train_overrides.items() if value is not None}
    train = replace(train, **validated_train_overrides(given))
    return RunConfig(task, model, profile, dict(backbone), dict(head), train, source, tuple(changes))


def validated_train_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    allowed = {f.name for f in fields(TrainSettings)}
    for key, value in overrides.items():
        if key not in allowed:
            raise ValueError(f"unknown training setting {key!r}; allowed: {sorted(allowed)}")
        if key in ("lr", "batch_size", "eval_batch_size", "epochs") and not value > 0:
            raise ValueError(f"{key}={value!r} must be > 0")
    if "compile" in overrides:
        check_choice("compile", overrides["compile"], COMPILE_MODES)
    if "precision" in overrides:
        check_choice("precision", overrides["precision"], ("auto", "fp32", "bf16", "fp16"))
    return overrides


def with_variant(cfg: RunConfig, variant: str) -> RunConfig:
    """Apply an ablation given as 'key=value,key=value' to backbone, head or train settings."""
    if not variant:
        return cfg
    sections: dict[str, dict[str, Any]] = {"backbone": dict(cfg.backbone), "head": dict(cfg.head), "train": {}}
    allowed = {"backbone": set(cfg.backbone) | set(_backbone_defaults(cfg.model)),
               "head": set(cfg.head), "train": {f.name for f in fields(TrainSettings)}}
    for item in variant.split(","):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"variant item {item!r} is not key=value")
        section = next((name for name, keys in allowed.items() if key in keys), None)
        if section is None:
            raise ValueError(f"variant key {key!r} is not a setting of {cfg.model}; allowed: "
                             f"{sorted(set().union(*allowed.values()))}")
        current = {**_backbone_defaults(cfg.model), **cfg.backbone, **cfg.head, **vars(cfg.train)}.get(key)
        sections[section][key] = raw if isinstance(current, str) else _parse_value(raw)
    train = replace(cfg.train, **validated_train_overrides(sections["train"]))
    return replace(cfg, backbone=sections["backbone"], head=sections["head"], train=train,
                   variant=variant, changes=cfg.changes + (f"ablation: {variant}",))


def _backbone_defaults(model: str) -> dict[str, Any]:
    """Every setting of the attention backbones, with its default (for ablations)."""
    from .models import RTransformerConfig, TransformerConfig
    config = {"rtransformer": RTransformerConfig, "transformer": TransformerConfig}.get(model)
    return asdict(config()) if config else {}




def _parse_value(raw: str) -> Any:
    """'3' -> 3, '0.1' -> 0.1, 'true'/'false' -> bool, 'none' -> None (settings that aren't strings)."""
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(raw.lower(), raw)


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {list(allowed)}")

"""What a trained model looks at: attention maps, attention distances, LocalRNN window saliency.

Explained in the book's chapter "Inside trained models" (book/visualizations.md).

- `attention_maps(model, x)`: the softmax weights (layers, B, heads, L, L) of every
  `CausalSelfAttention` in the model. Forward pre-hooks capture what each attention layer
  receives (after its LayerNorm), then `CausalSelfAttention.weights` recomputes the weights.
- `mean_attention_distance(maps)`: sum_j w_ij (i - j), averaged over queries i: how far back a
  head looks, in steps.
- `window_saliency(model, x)`: for every `LocalRNN`, how much its output at t depends on each
  offset t - k of its window (k = 0 the position itself, k = M - 1 the oldest input), by
  gradient (Jacobian norms, estimated with random probes) or by occlusion (zeroing one offset
  of every window).
- `analyze_run(run_dir)`: loads a finished (or checkpointed) run, picks real test examples
  (the first test digits, the first test tunes, the first stretches of test text) and writes a
  small JSON (well under 1 MB) that the book plots: ``python -m rtlib analyze --run DIR``. The
  first `MAP_EXAMPLES` examples keep their attention maps, so a figure can show several.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cli import OneLineParser
from .configs import RunConfig, run_config
from .models import ATTENTION_MODELS, build_model
from .models.config import recorded_settings
from .models.layers import CausalSelfAttention
from .models.local_rnn import LocalRNN
from .paths import ANALYSIS_DIR

MAX_TOKENS = 64        # language-model and music excerpts: full maps of this many positions
SIGNIFICANT = 4        # attention weights and saliencies are stored with 4 significant digits
MAP_EXAMPLES = 3       # examples of an analysis that keep their attention maps, the first included


# ---------------------------------------------------------------------------------------------
# Capturing what each layer receives


def modules_of(model: nn.Module, kind: type) -> list[nn.Module]:
    """The submodules of type `kind`, in the order the forward pass meets them."""
    return [module for module in model.modules() if isinstance(module, kind)]


def layer_inputs(model: nn.Module, x: Any, kind: type) -> list[Tensor]:
    """Run `model(x)` once (no gradients) and return the input each `kind` module received."""
    captured: list[Tensor] = []
    hooks = [module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
             for module in modules_of(model, kind)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def attention_maps(model: nn.Module, x: Any) -> Tensor:
    """Attention weights (layers, B, heads, L, L) of every causal attention layer for input x.

    Rows sum to 1 and are zero above the diagonal (no query sees the future). The model is put
    in eval mode (no dropout on the weights).
    """
    model.eval()
    layers = modules_of(model, CausalSelfAttention)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no CausalSelfAttention layer")
    inputs = layer_inputs(model, x, CausalSelfAttention)
    with torch.no_grad():
        return torch.stack([layer.weights(inp) for layer, inp in zip(layers, inputs)])


def mean_attention_distance(maps: Tensor) -> Tensor:
    """(layers, heads): sum_j w_ij * (i - j), averaged over queries i and the batch."""
    length = maps.shape[-1]
    steps = torch.arange(length, dtype=maps.dtype, device=maps.device)
    distance = (steps[:, None] - steps[None, :]).clamp_min(0)  # (L, L), i - j for j <= i
    return (maps * distance).sum(-1).mean(dim=(1, 3))


def normalized_entropy(maps: Tensor) -> Tensor:
    """(layers, heads): the entropy of each query's weights over the positions it may see,
    divided by the log of their number (1: uniform attention, 0: all on one position), averaged
    over queries that see at least 2 positions. `maps` is (layers, heads, queries, L); a query
    row r of a full map sees r + 1 positions, a single row (queries = 1) sees all L."""
    layers, heads, queries, length = maps.shape
    p = maps.clamp_min(0)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)  # (layers, heads, queries)
    if queries == length:  # row r sees r + 1 positions; the first row sees one and is left out
        entropy, seen = entropy[..., 1:], torch.arange(2, length + 1, dtype=maps.dtype, device=maps.device)
    else:
        seen = torch.full((1,), float(length), dtype=maps.dtype, device=maps.device)
    return (entropy / seen.log()).mean(-1)


# ---------------------------------------------------------------------------------------------
# LocalRNN window saliency


def _windows(x: Tensor, window: int) -> Tensor:
    """(B, L, d) -> (B*L, M, d): the zero-padded window ending at every position."""
    batch, length, d = x.shape
    padded = F.pad(x, (0, 0, window - 1, 0))
    return padded.unfold(1, window, 1).transpose(2, 3).reshape(batch * length, window, d)


def _last_hidden(local_rnn: LocalRNN, windows: Tensor) -> Tensor:
    return local_rnn.rnn(windows)[0][:, -1]


def window_saliency_of(local_rnn: LocalRNN, x: Tensor, method: str = "gradient",
                       probes: int = 8, seed: int = 0) -> Tensor:
    """(M,) saliency of each window offset for one LocalRNN given its input x (B, L, d).

    Index k is offset k: the input k steps before the output position. Only positions whose
    window lies inside the sequence (t >= M - 1, when the sequence is that long) are used, so
    the zero padding never counts. The result sums to 1.

    ``gradient``: sqrt(E ||J_k^T r||^2) over `probes` random r ~ N(0, I), an unbiased estimate
    of the Frobenius norm of the Jacobian d h_t / d x_{t-k}. ``occlusion``: mean ||h_t - h_t'||
    where h_t' is the output with the input at offset k set to zero.
    """
    window = local_rnn.window
    windows = _windows(x.detach(), window)
    batch, length = x.shape[:2]
    if length >= window:  # drop windows that reach into the padding
        keep = (torch.arange(length) >= window - 1).repeat(batch)
        windows = windows[keep]
    if method == "gradient":
        windows = windows.clone().requires_grad_()
        # cuDNN's RNN has no backward in eval mode (no dropout here either way): its own kernels
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            out = _last_hidden(local_rnn, windows)
            generator = torch.Generator(device=out.device.type).manual_seed(seed)
            total = torch.zeros(window, device=x.device)
            for _ in range(probes):
                probe = torch.randn(out.shape, generator=generator, device=out.device)
                (grad,) = torch.autograd.grad((out * probe).sum(), windows, retain_graph=True)
                total += grad.pow(2).sum(-1).mean(0)  # (M,) in window order, oldest first
        saliency = (total / probes).sqrt()
    elif method == "occlusion":
        with torch.no_grad():
            out = _last_hidden(local_rnn, windows)
            saliency = torch.zeros(window, device=x.device)
            for j in range(window):
                occluded = windows.clone()
                occluded[:, j] = 0
                saliency[j] = (_last_hidden(local_rnn, occluded) - out).norm(dim=-1).mean()
    else:
        raise ValueError(f"method={method!r} is not one of ['gradient', 'occlusion']")
    saliency = saliency.flip(0).detach()  # window order (oldest first) -> offset order
    return saliency / saliency.sum().clamp_min(1e-12)


def window_saliency(model: nn.Module, x: Any, method: str = "gradient", probes: int = 8) -> Tensor:
    """(LocalRNN layers, M): `window_saliency_of` for every LocalRNN of the model, in order."""
    model.eval()
    layers = modules_of(model, LocalRNN)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LocalRNN layer")
    inputs = layer_inputs(model, x, LocalRNN)
    return torch.stack([window_saliency_of(layer, inp, method, probes)
                        for layer, inp in zip(layers, inputs)])


# ---------------------------------------------------------------------------------------------
# One run -> one small JSON


def load_run(run_dir: str | Path, data_dir: str | Path | None = None,
             device: str = "cpu") -> tuple[RunConfig, nn.Module, Any]:
    """(config, model with the run's weights in eval mode, protocol) of a run folder.

    Weights come from ``best.pt`` (the epoch the run reports) when present, else from the
    ``model`` of ``checkpoint.pt`` (a run stopped before it wrote ``best.pt``). The config comes
    from ``record.json``, else from the checkpoint, else from a ``config.json``.
    """
    from .run_folder import RunFolderError, load_checkpoint, load_weights, read_record
    from .tasks import model_protocol

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is not a run folder: it does not exist")
    record_path, best_path, ckpt_path = (run_dir / name for name in
                                         ("record.json", "best.pt", "checkpoint.pt"))
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    config_path = run_dir / "config.json"  # a run cut off before record/checkpoint came back
    if record_path.exists():
        config = read_record(record_path)["config"]
    elif checkpoint is not None:
        config = checkpoint["config"]
    elif config_path.exists():
        config = json.loads(config_path.read_text())
    else:
        raise RunFolderError(f"{run_dir} has neither record.json, checkpoint.pt nor config.json")
    if best_path.exists():  # checked against the checkpoint where there is one
        weights = load_weights(best_path, checkpoint and checkpoint["state"].get("best_sha256"))
    elif checkpoint is not None:
        weights = checkpoint["model"]
    else:
        raise RunFolderError(f"{run_dir} has neither best.pt nor checkpoint.pt")
    cfg = RunConfig.from_dict(config)
    protocol = model_protocol(cfg, device, data_dir)
    model = build_model(cfg, protocol.shape).to(device)
    model.load_state_dict(weights)
    return cfg, model.eval(), protocol


def pick_example(cfg: RunConfig, protocol, data_dir: str | Path | None = None,
                 max_tokens: int = MAX_TOKENS, index: int = 0) -> dict[str, Any]:
    """A real test example for the run's task: {"input": model input (batch of 1), ...}: test
    image `index`, the start of test tune `index`, or the `index`-th stretch of test text."""
    from .data import load_mnist, load_music, load_ptb, pixel_sequences, pmnist_permutation
    from .tasks import PMNIST_PERMUTATION_SEED, TASKS

    kind = TASKS[cfg.task].kind
    if kind == "classify":
        images, labels = load_mnist("test", data_dir)
        permutation = pmnist_permutation(PMNIST_PERMUTATION_SEED) if cfg.task == "pmnist" else None
        return dict(kind=kind, input=pixel_sequences(images[index:index + 1], permutation),
                    description=f"test image {index + 1}", label=int(labels[index]),
                    pixels=images[index].flatten().tolist(),
                    permutation=None if permutation is None else permutation.tolist())
    if kind == "music":
        tune = load_music(cfg.task, "test", data_dir)[index][:max_tokens]
        return dict(kind=kind, input=tune[None], description=f"the first {len(tune)} steps of test tune {index + 1}",
                    keys=[torch.nonzero(step).flatten().tolist() for step in tune])
    level = "char" if cfg.task == "ptb-char" else "word"
    corpus = load_ptb(level, data_dir)
    start = index * max_tokens
    ids = corpus.test[start:start + max_tokens]
    tokens = [corpus.vocab[i] for i in ids.tolist()]
    if level == "word" and "<eos>" in tokens:  # end at the last full sentence
        end = len(tokens) - tokens[::-1].index("<eos>")
        ids, tokens = ids[:end], tokens[:end]
    return dict(kind=kind, input=ids[None], tokens=tokens,
                description=f"{len(tokens)} {level}s of the test set from {level} {start + 1}")


def _rounded(tensor: Tensor, significant: int = SIGNIFICANT) -> Any:
    """Nested lists of floats with `significant` digits (a small JSON that still sums right)."""
    def round_list(values):
        if isinstance(values, list):
            return [round_list(value) for value in values]
        return float(f"{values:.{significant}g}")
    return round_list(tensor.detach().double().cpu().tolist())


def analyze(cfg: RunConfig, model: nn.Module, example: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The analysis of one model on one example, as plain JSON types."""
    x = example["input"].to(device)
    out: dict[str, Any] = dict(task=cfg.task, model=cfg.model, profile=cfg.profile, variant=cfg.variant,
                               backbone=recorded_settings(cfg.backbone),
                               example={k: v for k, v in example.items() if k != "input"},
                               length=int(x.shape[1]))
    with torch.no_grad():
        logits = model(x)
    if example["kind"] == "classify":
        out["example"]["prediction"] = int(logits.argmax(-1)[0])
    has_attention = bool(modules_of(model, CausalSelfAttention))
    if has_attention:
        maps = attention_maps(model, x)[:, 0]  # (layers, heads, L, L)
        out["layers"], out["heads"] = int(maps.shape[0]), int(maps.shape[1])
        out["mean_distance"] = _rounded(mean_attention_distance(maps[:, None]))
        out["entropy"] = _rounded(normalized_entropy(maps[:, :, -1:] if example["kind"] == "classify" else maps))
        if example["kind"] == "classify":  # 784 x 784 is too big: keep the last query's row
            out["last_row"] = _rounded(maps[:, :, -1])
        else:  # lower triangle of each map, row by row
            out["maps"] = [[[_rounded(head[i, :i + 1]) for i in range(head.shape[0])] for head in layer]
                           for layer in maps]
    if modules_of(model, LocalRNN):
        out["window"] = int(getattr(cfg.backbone, "window", 0))
        out["saliency"] = {method: _rounded(window_saliency(model, x, method))
                           for method in ("gradient", "occlusion")}
    if not has_attention:
        out["note"] = f"{cfg.model} has no attention layer: no maps or distances"
    return out


SUMMARY_KEYS = ("length", "mean_distance", "entropy", "saliency")


def metric_words(metric: str | None) -> str:
    """A metric as prose names it after "test": 'nll' -> 'NLL', 'bpc' -> 'bits per character'."""
    from .results import METRIC_NAMES

    return METRIC_NAMES.get(metric, str(metric)).removeprefix("test ")


def metric_value(metric: str | None, value) -> str:
    """A test metric and its value as a note says it: 'NLL 2.832', 'accuracy 98.46%'."""
    return f"accuracy {value}%" if metric == "accuracy" else f"{metric_words(metric)} {value}"


def kept_maps(result: dict[str, Any]) -> dict[str, Any]:
    """What a further example of an analysis keeps of its attention maps, with the example itself
    (digit, tokens or keys): the last query's row of every head (seq-MNIST, small), or the full
    maps of each layer's first head (all heads of 64 x 64 maps would triple the JSON)."""
    if "last_row" in result:
        return dict(example=result["example"], last_row=result["last_row"])
    if "maps" in result:
        return dict(example=result["example"], maps=[layer[:1] for layer in result["maps"]])
    return {}


def analyze_run(run_dir: str | Path, out_path: str | Path | None = None,
                data_dir: str | Path | None = None, device: str = "cpu", examples: int = 1,
                map_examples: int = MAP_EXAMPLES) -> dict[str, Any]:
    """Analyze the run in `run_dir` on `examples` real test examples: the first in full (maps),
    the others as distances, entropies and saliency (``more_examples``), of which the first
    `map_examples` (the first included) also keep their maps (`kept_maps`); record where the
    weights come from (``provenance``); write the JSON to `out_path` (default
    ``results/analysis/<run id>.json``) and return it."""
    from .run_folder import AGAIN, atomic_write_bytes, read_record, run_id

    cfg, model, protocol = load_run(run_dir, data_dir, device)
    result = dict(run_id=run_id(cfg), run_dir=str(run_dir),
                  **analyze(cfg, model, pick_example(cfg, protocol, data_dir), device))
    result["more_examples"] = []
    for index in range(1, examples):
        other = analyze(cfg, model, pick_example(cfg, protocol, data_dir, index=index), device)
        result["more_examples"].append(dict(description=other["example"]["description"],
                                            **{key: other[key] for key in SUMMARY_KEYS if key in other},
                                            **(kept_maps(other) if index < map_examples else {})))
    run = Path(run_dir)
    record = read_record(run / "record.json") if (run / "record.json").exists() else {}
    result.update(test_metric=record.get("test_metric"), metric=record.get("metric"),
                  epochs_run=record.get("epochs_run"))
    result["provenance"] = dict(
        weights="best.pt" if (run / "best.pt").exists() else "checkpoint.pt (no best.pt)",
        # seq-MNIST has no validation split: its best.pt is the last epoch's weights
        epoch=(record.get("best_epoch") or record.get("epochs_run")) if (run / "best.pt").exists() else None,
        epochs_run=record.get("epochs_run"), precision=record.get("precision", "not recorded"),
        git_commit=record.get("git_commit"), analysed_on=device,
        **({"note": "a second run of this seed, made for its weights (results/repeats/); its test "
                    + (metric_value(record["metric"], f"{record['test_metric']:.4g}")
                       if record.get("test_metric") is not None
                       else f"metric: none ({record.get('status', 'no record')})")}
           if run.name.endswith(AGAIN) else {}))
    out_path = Path(out_path) if out_path else ANALYSIS_DIR / f"{result['run_id']}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_path, lambda tmp: tmp.write_text(json.dumps(result, separators=(",", ":")) + "\n"))
    return result


def load_analyses(folder: str | Path = ANALYSIS_DIR) -> list[dict[str, Any]]:
    """Every analysis JSON in `folder` (none: an empty list)."""
    return [json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))]


PROFILE_PREFERENCE = ("paper", "fast", "smoke")


def pick_analyses(analyses: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, model) -> the analysis of its best-evidence run: no ablation variant, profile
    `paper` before `fast` before `smoke`; of one profile, the one with the most examples' maps
    (an analysis made before `kept_maps` holds one), then the first."""
    def preference(item):
        profile = PROFILE_PREFERENCE.index(item["profile"]) if item["profile"] in PROFILE_PREFERENCE else 9
        return profile, -len(examples_with_maps(item))

    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for item in analyses:
        if item.get("variant"):
            continue
        key = (item["task"], item["model"])
        if key not in chosen or preference(item) < preference(chosen[key]):
            chosen[key] = item
    return chosen


def has_all_maps(item: dict[str, Any]) -> bool:
    """Whether an analysis holds the attention maps of `MAP_EXAMPLES` examples."""
    return len(examples_with_maps(item)) >= MAP_EXAMPLES


def analysed_in_full(task: str, model: str, folder: str | Path = ANALYSIS_DIR) -> bool:
    """Whether `folder` holds a paper-profile analysis of `task`'s `model` (no ablation) with the
    attention maps of `MAP_EXAMPLES` examples: `scripts/gpu_paper_batch.sh` analyses a run
    again where none does."""
    return any(item.get("task") == task and item.get("model") == model and item.get("profile") == "paper"
               and not item.get("variant") and has_all_maps(item) for item in load_analyses(folder))


def wants_analysis(run_dir: str | Path, folder: str | Path = ANALYSIS_DIR) -> bool:
    """Whether `scripts/gpu_paper_batch.sh` analyses the finished run in `run_dir`: a paper-profile
    run of a model with attention, no ablation, at its row's configured lr, whose (task, model)
    `folder` has no analysis of in full (`analysed_in_full`). A grid point at another lr is left
    alone, so that the visualizations show the model the row's cell is made of."""
    record = json.loads((Path(run_dir) / "record.json").read_text())
    task, model = record["task"], record["model"]
    if record["profile"] != "paper" or record.get("variant") or model not in ATTENTION_MODELS:
        return False
    return (record["lr"] == run_config(task, model, "paper").train.lr
            and not analysed_in_full(task, model, folder))


def _entropy_of(item: dict[str, Any]) -> list[list[float]]:
    """(layers, heads) normalized entropy of an analysis, computed from its maps where the JSON
    predates the ``entropy`` field."""
    if "entropy" in item:
        return item["entropy"]
    import numpy as np

    def normalized(row):
        p = np.asarray(row, dtype=float)
        p = p[p > 0] / p.sum()
        return float(-(p * np.log(p)).sum() / np.log(len(row)))

    if "maps" in item:
        return [[float(np.mean([normalized(row) for row in head[1:]])) for head in layer] for layer in item["maps"]]
    return [[normalized(row) for row in layer] for layer in item["last_row"]]


def analysed_examples(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Every example an analysis holds: the first (the analysis itself, with the maps), then
    its ``more_examples`` (summaries)."""
    return [item] + list(item.get("more_examples", []))


def examples_with_maps(item: dict[str, Any], head: int = 0) -> list[dict[str, Any]]:
    """The examples of an analysis that hold attention maps (``maps`` or ``last_row``) of `head`,
    each with its ``example`` (digit, tokens or keys): the first, then those `kept_maps` kept."""
    def has_head(e):
        maps = e.get("maps", e.get("last_row"))
        return maps is not None and len(maps[0]) > head
    return [e for e in analysed_examples(item) if "example" in e and has_head(e)]


def maps_shortfall(items, wanted: int = MAP_EXAMPLES) -> str:
    """Markdown: which analyses hold the attention maps of fewer examples than `wanted` (and than
    they analysed), as one made before `kept_maps` does, so that a page showing one example a
    model says why; "" when none."""
    from .results import join_words, model_name, task_name

    with_maps = [item for item in items if examples_with_maps(item)]
    short = [item for item in with_maps
             if len(examples_with_maps(item)) < min(wanted, len(analysed_examples(item)))]
    if not short:
        return ""
    held = sorted({len(examples_with_maps(item)) for item in short})
    one, every = len(short) == 1, len(short) == len(with_maps)
    names = join_words([f"{task_name(item['task'])} {model_name(item['model'])}" for item in short])
    who = ("Every analysis here predates" if every else
           f"The analysis of {names} predates" if one else f"The analyses of {names} predate")
    count = f"{join_words([str(n) for n in held])} test example{'' if held == [1] else 's'}"
    whose = "a model" if every else "for " + ("this model" if one else "these models")
    return (f"{who} keeping several examples' maps: {'it holds' if one else 'they hold'} "
            f"the maps of {count}{'' if one else ' each'}, so the attention figures below show "
            f"{count} {whose} (the distances, entropies and saliencies use every example analysed). "
            f"`python -m rtlib analyze --run DIR` on the same weights keeps the maps of {wanted}.")


def example_description(example: dict[str, Any]) -> str:
    """An example's description; the first example keeps it under ``example``."""
    return example["example"]["description"] if "example" in example else example["description"]


def head_uniformity(items) -> "pd.DataFrame":
    """One row per (task, model, layer, head) of the analyses: mean attention distance (over the
    examples analysed), that of a uniform head over the same positions ((L - 1) / 4, averaged over
    the examples, whose lengths may differ), their
    ratio, and the normalized entropy of the head's weights (1: uniform)."""
    import numpy as np
    import pandas as pd

    rows = []
    for item in items:
        if "mean_distance" not in item:
            continue
        held = analysed_examples(item)
        distance = np.mean([np.asarray(e["mean_distance"], dtype=float) for e in held], axis=0)
        entropy = np.mean([np.asarray(_entropy_of(e) if e is item else e["entropy"], dtype=float)
                           for e in held if e is item or "entropy" in e], axis=0)
        uniform = float(np.mean([(e["length"] - 1) / 4 for e in held]))  # lengths may differ
        for layer, head in np.ndindex(distance.shape):
            rows.append(dict(task=item["task"], model=item["model"], profile=item.get("profile", "?"),
                             layer=layer + 1, head=head + 1,
                             examples=len(held), distance=distance[layer, head], uniform=uniform,
                             ratio=distance[layer, head] / uniform, entropy=entropy[layer, head]))
    return pd.DataFrame(rows)


def _share_word(part: int, whole: int) -> str:
    """'All', 'Most', 'Half', 'Fewer than half' or 'None' of a count, for a sentence's start."""
    if part == whole:
        return "All"
    if part == 0:
        return "None"
    return "Most" if 2 * part > whole else "Half" if 2 * part == whole else "Fewer than half"


def uniformity_sentence(heads: "pd.DataFrame", threshold: float = 0.9) -> str:
    """Markdown: how many heads are near uniform (normalized entropy >= `threshold`), in all and
    per task, model and profile, whether that is most of them, and the least uniform heads."""
    from .results import model_name, task_name

    if heads.empty:
        return "No attention was analysed."
    heads = heads.assign(near=heads["entropy"] >= threshold)
    if "profile" not in heads:
        heads = heads.assign(profile="?")
    per = heads.groupby(["task", "model", "profile"])["near"].agg(["sum", "count"])
    parts = [f"{task_name(task)} {model_name(model)} ({profile}) {int(row['sum'])} of {int(row['count'])}"
             for (task, model, profile), row in per.iterrows()]
    mostly = [f"{task_name(task)} {model_name(model)} ({profile})" for (task, model, profile), row in per.iterrows()
              if 2 * row["sum"] <= row["count"]]
    least = heads.nsmallest(3, "entropy")
    tail = "; ".join(f"{task_name(r.task)} {model_name(r.model)} layer {r.layer} head {r.head} "
                     f"(entropy {r.entropy:.2f}, {r.ratio:.2f}x a uniform head's distance)" for r in least.itertuples())
    near = int(heads["near"].sum())
    return (f"**{_share_word(near, len(heads))} of the heads are near uniform: {near} of {len(heads)}** "
            f"(normalized entropy of their weights ≥ {threshold}): " + "; ".join(parts) + ". "
            + (f"Half or fewer are near uniform in: {', '.join(mostly)}. " if mostly else "")
            + f"The least uniform: {tail}.")


def distance_comparison(items) -> "pd.DataFrame":
    """One row per (task, example) that both an R-Transformer and a Transformer analysis hold (the
    same example description): each model's mean attention distance over layers and heads, and the
    profile of each."""
    import numpy as np
    import pandas as pd

    by_model: dict[tuple[str, str], dict[str, Any]] = {(item["task"], item["model"]): item for item in items}
    rows = []
    for (task, model), item in sorted(by_model.items()):
        other = by_model.get((task, "transformer"))
        if model != "rtransformer" or other is None:
            continue
        theirs = {example_description(e): e for e in analysed_examples(other)}
        for e in analysed_examples(item):
            description = example_description(e)
            if description in theirs:
                rows.append(dict(task=task, example=description,
                                 rtransformer=float(np.mean(e["mean_distance"])),
                                 transformer=float(np.mean(theirs[description]["mean_distance"])),
                                 profiles=f"{item['profile']} / {other['profile']}"))
    return pd.DataFrame(rows, columns=["task", "example", "rtransformer", "transformer", "profiles"])


def comparison_sentence(comparison: "pd.DataFrame") -> str:
    """Markdown: per task, on how many of the shared examples the R-Transformer's heads look further
    back on average than the Transformer's, and by how many steps (mean over the examples)."""
    from .results import task_name

    if comparison.empty:
        return "No task has both an R-Transformer and a Transformer analysed on the same examples."
    parts = []
    for task, rows in comparison.groupby("task"):
        further = int((rows["rtransformer"] > rows["transformer"]).sum())
        gap = float((rows["rtransformer"] - rows["transformer"]).mean())
        profiles = rows["profiles"].iloc[0].split(" / ")
        profile = profiles[0] if len(set(profiles)) == 1 else " / ".join(profiles)
        parts.append(f"{task_name(task)} ({profile} profile), {further} of {len(rows)} example"
                     f"{'s' if len(rows) > 1 else ''} (R-Transformer minus Transformer: {gap:+.1f} steps, "
                     "mean over the examples)")
    return ("Examples on which the R-Transformer looks further back than the Transformer, averaged over "
            "layers and heads: "
            + "; ".join(parts) + ". These are one trained model of each (one seed): a description of "
            "those models, not a verdict on the architectures.")


def coverage(items, tasks: dict[int, str] | None = None, models=ATTENTION_MODELS) -> str:
    """Markdown: which (table, model) pairs have an analysis at the paper profile, which only a
    shorter profile's, and which none, so that a page never implies more coverage than it has."""
    from .configs import TABLE_TASKS
    from .results import model_name

    profiles = {(item["task"], item["model"]): item["profile"] for item in items}
    groups: dict[str, list[str]] = {"paper": [], "short": [], "none": []}
    for table, task in (tasks or TABLE_TASKS).items():
        for model in models:
            profile = profiles.get((task, model))
            name = f"Table {table} {model_name(model)}"
            groups["paper" if profile == "paper" else "none" if profile is None else "short"].append(
                name if profile in ("paper", None) else f"{name} ({profile})")
    said = {"paper": "Analysed at the paper profile", "short": "Analysed only at a shorter profile",
            "none": "Not analysed at all"}
    return " ".join(f"{said[key]}: {', '.join(names)}." for key, names in groups.items() if names)


def provenance(items) -> "pd.DataFrame":
    """Where each analysis' weights come from: run id, profile, weights file, epoch, precision,
    test examples analysed and how many of them keep their attention maps ("not recorded" where
    an older JSON does not say)."""
    import pandas as pd

    from .results import model_name, task_name

    rows = []
    for item in items:
        origin = item.get("provenance", {})
        epoch = origin.get("epoch")
        rows.append({"task": task_name(item["task"]), "model": model_name(item["model"]), "run": item["run_id"],
                     "profile": item["profile"],
                     "weights": origin.get("weights", "not recorded"),
                     "epoch": "not recorded" if epoch is None else f"{epoch} of {origin.get('epochs_run', '?')}",
                     "precision": origin.get("precision") or "not recorded",
                     "test examples": len(analysed_examples(item)),
                     "with attention maps": len(examples_with_maps(item)),
                     "note": readable_note(origin.get("note", ""), item.get("metric"))})
    return pd.DataFrame(rows)


def readable_note(note: str, metric: str | None) -> str:
    """A provenance note with its test metric in words (`metric_value`): older JSONs wrote the
    metric's id ('its test nll 2.832') or 'its test accuracy in % 98.46'."""
    if not metric:
        return note
    names = "|".join(re.escape(name) for name in (metric_words(metric), metric))  # the longer first
    number = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\d.]*%)"  # not a value with its %: worded already
    return re.sub(rf"its test (?:{names}) ({number})",
                  lambda found: f"its test {metric_value(metric, found.group(1))}", note)


# ---------------------------------------------------------------------------------------------
# The window size M: which ablations the sweep plans and which have records


def window_ablation_runs(records) -> "pd.DataFrame":
    """One row per table whose R-Transformer the sweep varies in M (`configs.ABLATIONS`): its
    task, released M, the windows planned, those with a paper-profile record, and the seeds the
    plan gives each window."""
    import pandas as pd

    from .configs import TABLE_TASKS, run_config
    from .reproduce import FIRST_SEED
    from .results import cells, window_ablations

    rows = []
    for table, planned in window_ablations().items():
        task = TABLE_TASKS[table]
        recorded = []
        for ablation in planned:
            cell = cells(records, ablation.variant)
            cell = cell[(cell["task"] == task) & (cell["model"] == ablation.model)]
            if len(cell) and cell["runs"].iloc[0] > 0:
                recorded.append(int(ablation.variant.removeprefix("window=")))
        rows.append(dict(table=table, task=task, released=run_config(task, "rtransformer", "paper").backbone.window,
                         planned=[int(a.variant.removeprefix("window=")) for a in planned], recorded=recorded,
                         seeds=sorted({seed for a in planned for seed in range(FIRST_SEED, FIRST_SEED + a.seeds)})))
    return pd.DataFrame(rows, columns=["table", "task", "released", "planned", "recorded", "seeds"])


def window_ablation_sentence(runs: "pd.DataFrame") -> str:
    """Markdown: the windows the sweep plans per table, at which seeds, and which of them have
    paper-profile records, so that a page never implies a table's windows were run."""
    from .results import join_words, seeds_text, task_name

    if runs.empty:
        return "The sweep plans no window ablation."
    plans = [f"Table {row.table} ({task_name(row.task)}: M = {join_words([str(m) for m in row.planned])} "
             f"around the released {row.released})" for row in runs.itertuples()]
    seeds = sorted({seed for row in runs.itertuples() for seed in row.seeds})
    states = []
    for row in runs.itertuples():
        name = f"Table {row.table}'s"
        missing = [m for m in row.planned if m not in row.recorded]
        states.append(f"all of {name}" if not missing else f"none of {name} (not run)" if not row.recorded else
                      f"{name} M = {join_words([str(m) for m in row.recorded])} (M = "
                      f"{join_words([str(m) for m in missing])} not run)")
    shown = [f"Table {row.table}" for row in runs.itertuples() if row.recorded]
    return (f"The sweep plans window ablations on {join_words(plans)}, at {seeds_text(seeds)}. "
            f"Paper-profile records exist for {join_words(states)}"
            + (f", so only {join_words(shown)} can be plotted." if shown and len(shown) < len(runs) else
               "." if shown else ", so there is nothing to plot yet."))


def train_and_analyze(task: str, model: str, folder: str | Path, max_steps: int = 60,
                      data_dir=None, examples: int = 1, **train_overrides) -> dict[str, Any]:
    """Train a tiny `smoke`-sized model on CPU for one epoch of `max_steps` steps in
    `folder/<task>_<model>` and analyze it: a stand-in when no GPU analyses exist.
    `train_overrides` (e.g. eval_limit=16) replace further training settings."""
    from .configs import run_config
    from .runtime import Runtime
    from .train import train

    run_dir = Path(folder) / f"{task}_{model}"
    cfg = run_config(task, model, "smoke", epochs=1, max_steps=max_steps, **train_overrides)
    train(cfg, run_dir, Runtime(device="cpu"), data_dir=data_dir, log=lambda message: None)
    return analyze_run(run_dir, Path(folder) / f"{task}_{model}.json", data_dir, examples=examples)


def main(argv: list[str] | None = None) -> int:
    """`python -m rtlib analyze --run DIR [--out FILE] [--data-dir DIR] [--device cpu]`."""
    parser = OneLineParser(prog="rtlib analyze", description=main.__doc__)
    parser.add_argument("--run", type=Path, required=True, nargs="+", help="run folder(s)")
    parser.add_argument("--out", type=Path, help="output JSON (one run only); default "
                                                 "results/analysis/<run id>.json")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples", type=int, default=4, help="test examples to analyse (default 4)")
    args = parser.parse_args(argv)
    if args.out and len(args.run) > 1:
        parser.error("--out takes one --run")
    for run in args.run:
        result = analyze_run(run, args.out, args.data_dir, args.device, args.examples)
        size = len(json.dumps(result, separators=(",", ":")))
        print(f"{run}: {result['run_id']} -> {args.out or ANALYSIS_DIR / (result['run_id'] + '.json')} "
              f"({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

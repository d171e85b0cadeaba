"""Figures of the book: receptive fields, timings, toy results, data, attention and saliency.

Every function draws on a matplotlib Axes (or returns a Figure) with labelled axes and returns
it, so a chapter cell is one call. Used by book/intuition.md, book/model.md, the table
chapters, book/report.md and book/visualizations.md.
"""
from __future__ import annotations

import math
import textwrap
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import MaxNLocator

from .analysis import analysed_examples, example_description, examples_with_maps
from .results import (PAPER_ORDER, cells, evidence, fmt, learning_curves, lr_cuts, model_name,
                      other_lr_note, select_lr, task_name, window_points)
from .tasks import TASKS, metric_label, uniform_metric

PALETTE = {"rtransformer": "C3", "local-rnn": "C0", "conv": "C2", "transformer-none": "C7",
           "transformer-sinusoidal": "C1", "transformer": "C1", "tcn": "C2", "lstm": "C4",
           "gru": "C5", "rnn": "C6"}
LABELS = {"rtransformer": "R-Transformer", "local-rnn": "LocalRNN alone", "conv": "causal conv (TCN block)",
          "transformer-none": "Transformer, no positions", "transformer-sinusoidal": "Transformer, sinusoidal",
          "transformer": "Transformer", "tcn": "TCN"}


def label(model: str) -> str:
    return LABELS.get(model, model)


# ---------------------------------------------------------------------------------------------
# What each position sees


RECEPTIVE_KINDS = ("rnn", "local-rnn", "conv", "attention")
RECEPTIVE_TITLES = {"rnn": "RNN: everything before t, one step at a time",
                    "local-rnn": "LocalRNN: the last M inputs, in order",
                    "conv": "causal convolution: the last k inputs, one weight per offset",
                    "attention": "causal attention: everything before t, as a weighted set"}


def _arrow(ax, start, end, color, style="-|>", alpha=1.0, lw=1.2, rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=9, color=color,
                                 alpha=alpha, lw=lw, connectionstyle=f"arc3,rad={rad}"))


def receptive_field_panel(ax, kind: str, length: int = 10, window: int = 3, t: int = 7):
    """One panel: inputs x_1..x_L (bottom row) and the output at position t (top) of `kind`."""
    xs = np.arange(length)
    seen = {"rnn": range(0, t + 1), "attention": range(0, t + 1),
            "local-rnn": range(max(0, t - window + 1), t + 1),
            "conv": range(max(0, t - window + 1), t + 1)}[kind]
    for i in xs:
        color = "C3" if i in seen else ("0.85" if i > t else "0.6")
        ax.add_patch(plt.Circle((i, 0), 0.28, color=color, zorder=3))
        ax.text(i, -0.5, f"$x_{{{i + 1}}}$", ha="center", va="top", fontsize=9)
    ax.add_patch(plt.Rectangle((t - 0.35, 1.65), 0.7, 0.7, color="C0", zorder=3))
    ax.text(t + 0.5, 2.0, f"$h_{{{t + 1}}}$", ha="left", va="center", fontsize=10)
    if kind in ("rnn", "local-rnn"):  # a chain of hidden states through the seen positions
        chain = list(seen)
        for i in chain:
            ax.add_patch(plt.Circle((i, 1.0), 0.16, color="C0", alpha=0.6, zorder=3))
            _arrow(ax, (i, 0.3), (i, 0.84), "0.4")
        for a, b in zip(chain, chain[1:]):
            _arrow(ax, (a + 0.16, 1.0), (b - 0.16, 1.0), "C0")
        _arrow(ax, (t, 1.16), (t, 1.63), "C0")
        if kind == "local-rnn" and chain[0] > 0:
            ax.text(chain[0] - 0.45, 1.0, "h=0", ha="right", va="center", fontsize=7, color="C0")
    else:
        weights = np.linspace(0.35, 1.0, len(seen))
        for k, i in enumerate(seen):
            color = f"C{(t - i) % 10}" if kind == "conv" else "C3"
            _arrow(ax, (i, 0.3), (t, 1.63), color, alpha=weights[k] if kind == "attention" else 0.9,
                   lw=1.0 + (1.2 * weights[k] if kind == "attention" else 0.6))
            if kind == "conv":
                ax.text(i - 0.1, 0.75, f"$w_{{{t - i}}}$", fontsize=9, color=color, ha="right")
    ax.set_xlim(-0.8, length - 0.2)
    ax.set_ylim(-1.2, 3.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(RECEPTIVE_TITLES[kind], fontsize=10)
    return ax


def receptive_fields(length: int = 10, window: int = 3, t: int = 7):
    """Figure: the four ways a position t can see its past (red inputs are seen)."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 4.4))
    for ax, kind in zip(axes.flat, RECEPTIVE_KINDS):
        receptive_field_panel(ax, kind, length, window, t)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Timings and toys


def plot_timings(timings: pd.DataFrame, ax=None):
    """Forward wall time (ms) against sequence length, log-log, one line per layer: the fastest
    repeat, with a band up to the slowest (`ms_max`) where the timings have one."""
    ax = ax or plt.subplots(figsize=(6, 3.6))[1]
    for layer, rows in timings.groupby("layer", sort=False):
        line, = ax.plot(rows["length"], rows["ms"], marker="o", label=layer)
        if "ms_max" in rows:
            ax.fill_between(rows["length"], rows["ms"], rows["ms_max"], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("forward time (ms)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


def _toy_names(results: pd.DataFrame) -> pd.Series:
    """Each run's model label; a depth other than the usual one (the most common) is named."""
    usual = _toy_usual_depth(results)
    layers = " (" + results["levels"].astype(str) + " layer" + np.where(results["levels"] > 1, "s", "") + ")"
    return results["model"].map(label) + np.where(results["levels"] != usual, layers, "")


def _toy_usual_depth(results: pd.DataFrame) -> int:
    return int(results["levels"].mode().iloc[0])


def _toy_legend_below(ax, ncol: int = 2):
    """A legend under the axes (below its x label), where it covers no data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol, fontsize=8, frameon=False)


def plot_toy_accuracy(results: pd.DataFrame, ax=None, title: str = "", legend: bool = True):
    """Bar per model: mean test accuracy over seeds, ± one standard deviation where there are
    several, each seed a dot; the chance level as a dashed line. Models of an unusual depth are
    hatched. `legend` puts the key (dots, chance) under the axes."""
    ax = ax or plt.subplots(figsize=(6, 1.6 + 0.35 * _toy_names(results).nunique()), layout="constrained")[1]
    rows = results.assign(name=_toy_names(results))
    stats = rows.groupby("name", sort=False)["accuracy"].agg(["mean", "std", "count"])
    first = rows.drop_duplicates("name")
    bars = ax.barh(stats.index, 100 * stats["mean"], color=[PALETTE.get(model, "C9") for model in first["model"]],
                   alpha=0.8, xerr=100 * stats["std"].fillna(0), error_kw=dict(capsize=3, lw=1))
    for bar, levels in zip(bars, first["levels"]):
        bar.set_hatch("//" if levels != _toy_usual_depth(results) else "")
    position = {name: i for i, name in enumerate(stats.index)}
    ax.scatter(100 * rows["accuracy"], rows["name"].map(position), color="k", s=8, zorder=3,
               label=f"one seed (n={int(stats['count'].max())})")
    for i, value in enumerate(stats["mean"]):
        ax.text(100 * value + 3, i, f"{100 * value:.1f}%", va="center", fontsize=8)
    ax.axvline(100 * results["chance"].iloc[0], color="k", ls="--", lw=1, label="chance")
    ax.set_xlim(0, 125)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("test accuracy (%)")
    ax.tick_params(axis="y", labelsize=8)
    ax.invert_yaxis()
    if legend:
        _toy_legend_below(ax)
    ax.set_title(title, fontsize=10)
    return ax


def plot_toy_curves(results: pd.DataFrame, ax=None, level: float = 0.95, legend: bool = True):
    """Test accuracy during training (log-scaled steps, since evaluation is densest early), per
    model the mean over seeds with a band of ± one standard deviation, and the `level` that
    counts as solved (rows from `toys.compare`). Models of an unusual depth are dashed."""
    ax = ax or plt.subplots(figsize=(6, 3.6), layout="constrained")[1]
    rows = results.assign(name=_toy_names(results))
    for name, group in rows.groupby("name", sort=False):
        steps = [step for step, _ in group["curve"].iloc[0]]
        accuracy = 100 * np.array([[a for _, a in curve] for curve in group["curve"]])
        mean, std = accuracy.mean(0), accuracy.std(0)
        dashed = group["levels"].iloc[0] != _toy_usual_depth(results)
        line, = ax.plot(steps, mean, color=PALETTE.get(group["model"].iloc[0]), ls="--" if dashed else "-",
                        label=name)
        ax.fill_between(steps, mean - std, np.minimum(mean + std, 100), color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(100 * level, color="k", ls=":", lw=1, label=f"{100 * level:.0f}% (solved)")
    ax.axhline(100 * results["chance"].iloc[0], color="k", ls="--", lw=1, label="chance")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(plt.LogLocator(subs=(1, 3)))
    ax.xaxis.set_major_formatter(plt.ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("training step (log scale)")
    ax.set_ylabel("test accuracy (%)")
    if legend:
        _toy_legend_below(ax)
    return ax


def plot_toy_results(results: pd.DataFrame, title: str = "", level: float = 0.95):
    """One toy task's figure: final accuracy per model (left, `plot_toy_accuracy`), accuracy
    while training (right, `plot_toy_curves`), and one key for both under them."""
    height = 2.0 + 0.3 * _toy_names(results).nunique()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, height), width_ratios=(1.15, 1), layout="constrained")
    plot_toy_accuracy(results, left, title=title, legend=False)
    plot_toy_curves(results, right, level=level, legend=False)
    right.set_title("while training", fontsize=10)
    handles, labels = right.get_legend_handles_labels()
    for handle, name in zip(*left.get_legend_handles_labels()):
        if name not in labels:  # chance is drawn in both panels
            handles, labels = [*handles, handle], [*labels, name]
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def plot_window_sweep(sweep: pd.DataFrame, ax=None, ceiling: Callable[[int], float] | None = None,
                      x: str = "receptive_field"):
    """Accuracy against window M (or receptive field), one line per model (mean over seeds, bars
    ± one standard deviation); `ceiling(x)` draws the best accuracy any model could reach seeing
    only that many inputs."""
    ax = ax or plt.subplots(figsize=(6, 3.4))[1]
    for model, rows in sweep.groupby("model", sort=False):
        stats = rows.groupby(x)["accuracy"].agg(["mean", "std"]).fillna(0)
        ax.errorbar(stats.index, 100 * stats["mean"], yerr=100 * stats["std"], marker="o", capsize=3,
                    color=PALETTE.get(model), label=label(model))
    if ceiling is not None:
        grid = np.arange(1, sweep[x].max() + 1)
        ax.plot(grid, [100 * ceiling(int(g)) for g in grid], color="k", ls=":", lw=1.5,
                label="best possible from what is seen")
    ax.axhline(100 * sweep["chance"].iloc[0], color="k", ls="--", lw=1, label="chance")
    ax.set_xlabel({"receptive_field": "inputs the last position sees", "window": "LocalRNN window M"}.get(x, x))
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------
# Data


def plot_digit(pixels, ax=None, title: str = ""):
    """A 28 x 28 digit from 784 pixel values (image or normalized sequence)."""
    ax = ax or plt.subplots(figsize=(2.5, 2.5))[1]
    ax.imshow(np.asarray(pixels, dtype=float).reshape(28, 28), cmap="gray_r")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return ax


def plot_sequence(values, ax=None, title: str = ""):
    """A 784-step pixel sequence as the model reads it: value against time step."""
    ax = ax or plt.subplots(figsize=(8, 1.8))[1]
    ax.plot(np.asarray(values, dtype=float).ravel(), lw=0.8)
    ax.set_xlabel("time step (pixel index, row by row)")
    ax.set_ylabel("normalized pixel")
    ax.set_title(title, fontsize=9)
    return ax


def plot_piano_roll(roll, ax=None, title: str = ""):
    """A (T, 88) piano roll: time across, keys up (only the range of keys that sound)."""
    roll = np.asarray(roll)
    ax = ax or plt.subplots(figsize=(8, 2.6))[1]
    keys = np.nonzero(roll.any(0))[0]
    low, high = (keys.min(), keys.max()) if len(keys) else (0, 87)
    ax.imshow(roll[:, low:high + 1].T, origin="lower", aspect="auto", cmap="Greys",
              interpolation="nearest", extent=(-0.5, len(roll) - 0.5, low - 0.5, high + 0.5))
    ax.set_xlabel("time step")
    ax.set_ylabel("key (0 = A0)")
    ax.set_title(title, fontsize=9)
    return ax


def plot_lm_windows(starts: Sequence[int], seq_len: int, scored: int, ax=None, max_windows: int = 4):
    """The first language-model windows over a token stream: context part grey, scored part
    coloured (every token after the first window's context is scored exactly once, each with
    >= seq_len - scored of context; the row's first seq_len - scored + 1 tokens never are)."""
    ax = ax or plt.subplots(figsize=(7, 1.8))[1]
    for row, start in enumerate(starts[:max_windows]):
        context = seq_len - scored
        ax.barh(row, context, left=start, color="0.8", edgecolor="0.5")
        ax.barh(row, scored, left=start + context, color="C0", edgecolor="0.3",
                label="scored" if row == 0 else None)
    ax.set_yticks(range(min(max_windows, len(starts))))
    ax.set_yticklabels([f"window {i + 1}" for i in range(min(max_windows, len(starts)))], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("token position in the stream")
    ax.legend(loc="upper right", fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------
# Attention and saliency (from rtlib.analysis results)


def plot_attention_map(weights, ax=None, tokens: Sequence[str] | None = None, title: str = "",
                       vmax: float | None = None, max_ticks: int = 24):
    """One (L, L) attention map: query rows attend to key columns (lower triangle); at most
    `max_ticks` tokens label each axis."""
    weights = np.asarray(weights, dtype=float)
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    image = ax.imshow(np.ma.masked_where(np.triu(np.ones_like(weights), 1) > 0, weights),
                      cmap="viridis", vmin=0, vmax=vmax)
    if tokens is not None:
        every = -(-len(tokens) // max_ticks)
        ticks = list(range(0, len(tokens), every))
        labels = [("␣" if tokens[i] == " " else repr(tokens[i])[1:-1]) if len(tokens[i]) == 1 else tokens[i]
                  for i in ticks]
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, rotation=90 if max(map(len, labels)) > 1 else 0, fontsize=7)  # a lone char reads upright
        ax.set_yticks(ticks)
        ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("query position")
    ax.set_title(title, fontsize=9)
    return ax, image


def lower_triangle_to_square(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Rows of an `rtlib.analysis` map (row i has i + 1 entries) -> an (L, L) array."""
    square = np.zeros((len(rows), len(rows)))
    for i, row in enumerate(rows):
        square[i, :len(row)] = row
    return square


def digit_attention_image(analysis: dict[str, Any], layer: int, head: int) -> np.ndarray:
    """The last pixel's attention over the 784 pixels, as a 28 x 28 image (pMNIST unpermuted)."""
    row = np.asarray(analysis["last_row"][layer][head], dtype=float)
    permutation = analysis["example"].get("permutation")
    if permutation is not None:  # time step s holds pixel permutation[s]
        image = np.zeros(784)
        image[np.asarray(permutation)] = row
        row = image
    return row.reshape(28, 28)


def plot_digit_attention(analysis: dict[str, Any], layers: Sequence[int] | None = None, examples: int = 3):
    """Figure, 7.2 inches wide: one row per test digit whose maps the analysis holds (at most
    `examples`): the digit, then where the last pixel's query attends in every head of the first,
    middle and last layer (unless `layers` says), brighter for more weight."""
    depth = analysis["layers"]
    layers = sorted({0, depth // 2, depth - 1}) if layers is None else list(layers)
    held = examples_with_maps(analysis)[:examples]
    heads = min(len(example["last_row"][0]) for example in held)
    columns = [(layer, head) for layer in layers for head in range(heads)]
    side = 7.2 / (len(columns) + 1)
    fig, axes = plt.subplots(len(held), len(columns) + 1, figsize=(7.2, (side + 0.1) * len(held) + 0.6),
                             squeeze=False, layout="constrained")
    for row, example in zip(axes, held):
        digit = example["example"]
        plot_digit(digit["pixels"], row[0])
        row[0].set_ylabel(f"label {digit['label']}\npredicted {digit.get('prediction')}", fontsize=8)
        for ax, (layer, head) in zip(row[1:], columns):
            image = digit_attention_image(example, layer, head)
            ax.imshow(np.asarray(digit["pixels"]).reshape(28, 28), cmap="gray_r", alpha=0.35)
            ax.imshow(image, cmap="magma", alpha=0.75, vmin=0, vmax=max(image.max(), 1e-9))
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("test digit", fontsize=8)
    for ax, (layer, head) in zip(axes[0, 1:], columns):
        ax.set_title(f"layer {layer + 1} of {depth}\nhead {head + 1}", fontsize=8)
    fig.suptitle(f"{label(analysis['model'])} ({analysis.get('profile', '?')}): where the last pixel's "
                 "query attends", fontsize=9)
    return fig


def shared_examples(analyses: Sequence[dict[str, Any]], head: int = 0) -> list[str]:
    """Descriptions of the examples whose maps of `head` every analysis holds, in the first's order."""
    held = [[example_description(e) for e in examples_with_maps(analysis, head)] for analysis in analyses]
    return [description for description in held[0] if all(description in other for other in held[1:])]


def excerpt_text(example: dict[str, Any], width: int = 120) -> str:
    """An example's description and, for text, the excerpt itself (wrapped to `width` characters)."""
    tokens = example["example"].get("tokens")
    description = example_description(example)
    if not tokens:
        return description
    text = ("" if all(len(token) == 1 for token in tokens) else " ").join(tokens).strip()
    return textwrap.fill(f"{description}: “{text}”", width)


def plot_maps_side_by_side(analyses: Sequence[dict[str, Any]], layers: Sequence[int], head: int = 0,
                           examples: int = 3):
    """Figure, 7.2 inches wide: one row per example that every analysis holds maps of (at most
    `examples`), headed by the excerpt; one column per analysed model and layer; query rows, key
    columns. Tokens label the axes (every few, so that they stay readable)."""
    rows = shared_examples(analyses, head)[:examples]
    columns = [(analysis, layer) for analysis in analyses for layer in layers]
    held = {example_description(e): e for e in examples_with_maps(analyses[0], head)}
    labelled = [tokens[::-(-len(tokens) // 8)] for tokens in (held[d]["example"].get("tokens") or ["0"] for d in rows)]
    below = 0.2 + 0.05 * max(len(token) for tokens in labelled for token in tokens)  # tick labels under a map
    headers = [excerpt_text(held[description]) for description in rows]
    heights = [0.85 * 7.2 / len(columns) + below + 0.15 * (header.count("\n") + 1) + (0.6 if r == 0 else 0.25)
               + (0.15 if r == len(rows) - 1 else 0) for r, header in enumerate(headers)]
    # (inches: map, tick labels, header, the first row's titles, the last row's "key")
    fig = plt.figure(figsize=(7.2, sum(heights)), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.1)  # a gap between an excerpt's header and the titles under it
    subfigures = fig.subfigures(len(rows), 1, height_ratios=heights, squeeze=False).flat
    for r, (description, subfigure) in enumerate(zip(rows, subfigures)):
        subfigure.suptitle(headers[r], fontsize=7.5, x=0.01, ha="left")
        axes = subfigure.subplots(1, len(columns), squeeze=False).flat
        for c, (ax, (analysis, layer)) in enumerate(zip(axes, columns)):
            example = next(e for e in examples_with_maps(analysis, head) if example_description(e) == description)
            square = lower_triangle_to_square(example["maps"][layer][head])
            vmax = float(np.quantile(square[np.tril_indices(len(square), -1)], 0.99)) if len(square) > 1 else 1.0
            title = f"{label(analysis['model'])}\nlayer {layer + 1}, head {head + 1}" if r == 0 else ""
            plot_attention_map(square, ax, example["example"].get("tokens"), title, vmax=max(vmax, 1e-6), max_ticks=8)
            ax.tick_params(labelsize=7.5)  # >= 7 pt where the page shrinks the figure a little
            ax.set_xlabel("key" if r == len(rows) - 1 else "", fontsize=8)
            ax.set_ylabel("query" if c == 0 else "", fontsize=8)
            if c:
                ax.set_yticklabels([])
    return fig


def _lengths(analysis: dict[str, Any]) -> list[int]:
    """The length of every example analysed."""
    return [e["length"] for e in analysed_examples(analysis)]


def window_saliency_mean(analysis: dict[str, Any], method: str = "gradient") -> np.ndarray:
    """(LocalRNN layers, offsets) window saliency averaged over every example analysed."""
    held = [e for e in analysed_examples(analysis) if "saliency" in e]
    return np.mean([np.asarray(e["saliency"][method], dtype=float) for e in held], axis=0)


def _distances(analysis: dict[str, Any]) -> np.ndarray:
    """(layers, heads) mean attention distance, averaged over every example analysed."""
    distances = [np.asarray(e["mean_distance"], dtype=float) for e in analysed_examples(analysis)]
    return np.mean(distances, axis=0)


def plot_attention_distance(analyses: Sequence[dict[str, Any]], ax=None):
    """Mean attention distance per layer (dots: mean over heads and examples; bars: the range over
    heads), each example analysed as a thin line of its own (mean over heads), and the distance of
    a uniform head over the same positions, (L - 1) / 4, as a dashed line. The legend names each
    model's profile and number of examples."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    for analysis in analyses:
        color = PALETTE.get(analysis["model"])
        held = analysed_examples(analysis)
        distance = _distances(analysis)  # (layers, heads)
        layers = np.arange(1, len(distance) + 1)
        mean = distance.mean(1)
        if len(held) > 1:
            for example in held:
                ax.plot(layers, np.asarray(example["mean_distance"], dtype=float).mean(1), color=color,
                        lw=0.8, alpha=0.45)
        ax.errorbar(layers, mean, yerr=[mean - distance.min(1), distance.max(1) - mean], marker="o",
                    capsize=3, color=color, label=f"{label(analysis['model'])} ({analysis.get('profile', '?')}, "
                                                  f"{len(held)} ex.)")
    for lengths in sorted({tuple(_lengths(analysis)) for analysis in analyses}):
        span = f"L={lengths[0]}" if len(set(lengths)) == 1 else f"L={min(lengths)}–{max(lengths)}, mean"
        ax.axhline(np.mean([(length - 1) / 4 for length in lengths]), color="k", ls="--", lw=1,
                   label=f"uniform head ({span})")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean attention distance (steps)")
    ax.legend(fontsize=8)
    return ax


def plot_window_saliency(analysis: dict[str, Any], ax=None, method: str = "gradient"):
    """Heatmap: LocalRNN layer x window offset, share of the output's dependence on each offset
    (mean over the examples analysed; the title says how many)."""
    saliency = window_saliency_mean(analysis, method)
    ax = ax or plt.subplots(figsize=(5, 0.4 * len(saliency) + 1.4))[1]
    image = ax.imshow(saliency, cmap="Blues", aspect="auto", vmin=0)
    ax.set_xticks(range(saliency.shape[1]))
    wide = saliency.shape[1] > 7  # e.g. Table 4's M = 9: the same labels, smaller, or they run together
    ax.set_xticklabels([f"t-{k}" if k else "t" for k in range(saliency.shape[1])], fontsize=7.5 if wide else None)
    ax.set_yticks(range(len(saliency)))
    ax.set_yticklabels([f"LocalRNN {i + 1}" for i in range(len(saliency))], fontsize=8)
    ax.set_xlabel("input inside the window")
    count = sum("saliency" in e for e in analysed_examples(analysis))
    ax.set_title(f"{task_name(analysis['task'])} ({analysis.get('profile', '?')}): {method}, "
                 f"{count} example{'s' if count > 1 else ''}", fontsize=9)
    plt.colorbar(image, ax=ax, fraction=0.04, label="share")
    return ax


def _cap_at_uniform(ax, task: str, values, references) -> bool:
    """Where a language model's curve rose above a uniform guess's metric (an lr too large, early
    on), end the y axis there with a dotted line that says so, so that the curves that learned
    keep the axis; the epochs above it run off the top. `references`: the paper's numbers drawn.
    Whether it capped the axis."""
    ceiling = uniform_metric(task)
    values = np.asarray(values, dtype=float)
    if ceiling is None or not values.max() > ceiling:
        return False
    words = f"{ceiling:,.0f}" if TASKS[task].metric == "perplexity" else fmt(ceiling, task)
    ax.axhline(ceiling, color="0.4", ls=":", lw=1, label=f"a uniform guess: {words} (above it: off the chart)")
    lowest = min(values.min(), *references)
    if ax.get_yscale() == "log":
        ax.set_ylim(lowest / 1.3, ceiling * 1.5)
    else:
        ax.set_ylim(lowest - 0.05 * (ceiling - lowest), ceiling + 0.05 * (ceiling - lowest))
    return True


def plot_learning_curves(records: pd.DataFrame, task: str, ax=None, quantity: str = "test_metric"):
    """The paper-profile runs of `task` (no ablations), per model over the seeds of its chosen
    lr: the mean per epoch, a band of ± one standard deviation where there are several seeds
    (n in the legend), and the paper's number as a dashed line of the same colour."""
    own_figure = ax is None
    if own_figure:
        _, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    info = TASKS[task]
    curves = learning_curves(select_lr(evidence(records)), task, quantity)
    for model in [m for m in PAPER_ORDER if m in set(curves["model"])]:
        rows = curves[curves["model"] == model]
        stats = rows.groupby("epoch")["value"].agg(["mean", "std", "count"])
        colour = PALETTE.get(model)
        ax.plot(stats.index, stats["mean"], color=colour, label=f"{model_name(model)} (n={rows['seed'].nunique()})")
        if rows["seed"].nunique() > 1:
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color=colour, alpha=0.2, lw=0)
        ax.axhline(info.paper[model], color=colour, ls="--", lw=1, label=f"paper: {fmt(info.paper[model], task)}")
    if curves.empty:
        ax.text(0.5, 0.5, "no paper-profile records yet", ha="center", va="center", transform=ax.transAxes)
    elif info.metric == "perplexity":
        ax.set_yscale("log")
    capped = not curves.empty and _cap_at_uniform(ax, task, curves["value"],
                                                  [info.paper[m] for m in set(curves["model"])])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric_label(info.metric, quantity.split("_")[0].replace("valid", "validation")))
    ax.set_title(f"Table {info.table}: {task_name(task)}, paper profile", fontsize=10)
    if capped and own_figure:  # the capped curves run along the top, where the legend would sit
        ax.figure.legend(loc="outside lower center", fontsize=8, ncol=3)
    elif not curves.empty:
        ax.legend(fontsize=8, ncol=2)
    return ax


def plot_seed_traces(records: pd.DataFrame, task: str, model: str, ax=None):
    """Each paper-profile seed of one cell: its test metric per epoch (left axis), the epochs
    after which its lr was cut (dotted vertical lines) and the paper's number (dashed)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.2), layout="constrained")
    info = TASKS[task]
    runs = select_lr(evidence(records))
    runs = runs[(runs["task"] == task) & (runs["model"] == model)].sort_values("seed") if len(runs) else runs
    values = []
    for index, run in enumerate(runs.itertuples()):
        colour = f"C{index}"
        points = [(e["epoch"], e["test_metric"]) for e in run.curve if "test_metric" in e]
        values += [value for _, value in points]
        ax.plot(*zip(*points), color=colour, lw=1.2, label=f"seed {run.seed}")
        for epoch in lr_cuts(run.curve):
            ax.axvline(epoch + 0.5, color=colour, lw=0.8, ls=":", alpha=0.8)
    ax.axhline(info.paper[model], color="k", ls="--", lw=1, label=f"paper: {fmt(info.paper[model], task)}")
    capped = bool(values) and _cap_at_uniform(ax, task, values, [info.paper[model]])
    ax.set_xlabel("epoch (dotted: the lr is cut after it)")
    ax.set_ylabel(metric_label(info.metric))
    ax.set_title(f"Table {info.table}, {model_name(model)}: every seed", fontsize=10)
    ax.legend(fontsize=8, loc="center right" if capped else "best")  # capped curves run along the top
    return ax


def plot_seed_trace_grid(records: pd.DataFrame):
    """`plot_seed_traces` for every cell with paper-profile runs, two panels a row; None when
    there are none."""
    table_cells = cells(records)
    run = table_cells[table_cells["n"] > 0]
    if run.empty:
        return None
    rows = math.ceil(len(run) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(7.2, 2.9 * rows), squeeze=False, layout="constrained")
    for ax, row in zip(axes.flat, run.itertuples()):
        plot_seed_traces(records, row.task, row.model, ax)
    for ax in axes.flat[len(run):]:
        ax.set_visible(False)
    return fig


def plot_window_ablations(records: pd.DataFrame):
    """`rtlib.results.window_points`, one panel a table. The ablations ran at fewer seeds than the
    released row, so a line joins one seed's runs at every window M, the released M included:
    each step along it is a same-seed change. The released M's seeds are open circles beside it,
    their mean ± one standard deviation a diamond; the paper's number is dashed. None when no
    window ablation has a record."""
    points = window_points(records)
    if points.empty:
        return None
    tables = sorted(points["table"].unique())
    fig, axes = plt.subplots(1, len(tables), figsize=(3.6 * len(tables), 3.2), squeeze=False, layout="constrained")
    for ax, table in zip(axes.flat, tables):
        rows = points[points["table"] == table]
        task = rows["task"].iloc[0]
        _plot_same_seed_windows(ax, rows)
        paper = TASKS[task].paper["rtransformer"]
        ax.axhline(paper, color="k", ls="--", lw=1, label=f"paper: {fmt(paper, task)}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(rows["window"].unique()), [str(w) for w in sorted(rows["window"].unique())])
        ax.minorticks_off()
        ax.set_xlabel("LocalRNN window M")
        ax.set_ylabel(metric_label(TASKS[task].metric))
        lr, chosen = rows["lr"].iloc[0], rows["chosen_lr"].iloc[0]
        other_lr = f"\nall at lr {lr:g}; the table's cell is lr {chosen:g}" if other_lr_note(lr, chosen) else ""
        ax.set_title(f"Table {table}: {task_name(task)}, R-Transformer{other_lr}", fontsize=10)
        ax.legend(fontsize=7)
    return fig


def _plot_same_seed_windows(ax, rows: pd.DataFrame):
    """One table's `window_points` on `ax`: a line per seed the ablations ran at, through that
    seed's value at every window it has (the released one included), and the released window's
    seeds as open circles with their mean ± one standard deviation as a diamond beside them."""
    colour = PALETTE["rtransformer"]
    released = rows[rows["released"]]
    for index, seed in enumerate(sorted(rows[~rows["released"]]["seed"].unique())):
        same = rows[rows["seed"] == seed].sort_values("window")
        ax.plot(same["window"], same["value"], marker="s", ms=4, lw=1, color=colour if index == 0 else f"C{index}",
                label=f"seed {seed} at every M")
    if released.empty:
        return
    window, n = int(released["window"].iloc[0]), len(released)
    ax.scatter(released["window"], released["value"], s=40, zorder=3, facecolors="none", edgecolors=colour,
               label=f"released M = {window}: its {n} seed{'s' if n > 1 else ''}")
    if n > 1:
        ax.errorbar([window * 1.15], [released["value"].mean()], yerr=[released["value"].std()], fmt="D", ms=4,
                    color="k", capsize=3, label=f"released M: mean ± std of {n} seeds")

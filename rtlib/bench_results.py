"""Readers of the JSON that `python -m rtlib bench` writes (results/bench/*.json), as tables.

Read by the chapter "Why a local RNN?" (book/intuition.md) and the report; `rtlib.bench`
writes these files, this module only reads them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .bench import VARIANTS
from .paths import BENCH_DIR
from .runtime import COMPILE_MODE_WORDS


def load_bench(folder: str | Path = BENCH_DIR) -> list[dict[str, Any]]:
    """Every benchmark JSON directly in `folder` (the diagnostics below it are not read)."""
    return [json.loads(path.read_text()) | {"file": path.name} for path in sorted(Path(folder).glob("*.json"))]


def bench_model(entry: dict[str, Any]) -> str:
    """The model a bench entry timed: entries written before the bench timed other models than
    the R-Transformer carry no `model`."""
    return entry.get("model", "rtransformer")


def load_gpu_bench(folder: str | Path = BENCH_DIR, model: str | None = "rtransformer") -> pd.DataFrame:
    """GPU step timings written by `python -m rtlib bench` (results/bench/*.json), one row per
    (file, table, model, variant) of `model` (None: every model): median ms per training step,
    speed-up over the released algorithm, peak memory. The checks' JSON beside them is skipped.
    Empty when there are none.
    """
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        tables = data.get("tables", [])
        for entry in tables if isinstance(tables, list) else []:
            if model is not None and bench_model(entry) != model:
                continue
            base = dict(file=path.name, device=data.get("device", ""), table=entry.get("table"),
                        task=entry.get("task"), model=bench_model(entry))
            for name, timing in entry.get("variants", {}).items():
                if "median_ms" not in timing:
                    continue
                rows.append(dict(base, variant=name, ms_per_step=timing["median_ms"],
                                 speedup=1.0 if name == "reference" else timing.get("speedup_vs_reference"),
                                 peak_memory_mib=timing.get("peak_memory_bytes", 0) / 2**20 or None))
    return pd.DataFrame(rows)


def load_local_rnn_bounds(folder: str | Path = BENCH_DIR) -> pd.DataFrame:
    """`python -m rtlib bench --bound` results (results/bench/bound_*.json), one row per (device,
    table): ms per step of the reference, of the fastest variant, of that step without its
    LocalRNNs and of the LocalRNNs' matmuls alone, and the speed-ups and MFU these allow."""
    columns = ("reference_ms", "variant_ms", "without_local_rnn_ms", "local_rnn_matmuls_ms", "bound_ms",
               "speedup_vs_reference", "bound_speedup_vs_reference", "mfu", "bound_mfu")
    rows = [dict(device=data.get("device", ""), table=int(table), task=bound["table_task"],
                 **{column: bound.get(column) for column in columns})
            for path in sorted(Path(folder).glob("bound_*.json"))
            for data in [json.loads(path.read_text())]
            for table, bound in data.get("tables", {}).items()]
    return pd.DataFrame(rows)


BENCH_HEADERS = {"reference_ms": "reference (ms)", "variant_ms": "fastest (ms)",
                 "without_local_rnn_ms": "without LocalRNNs (ms)", "local_rnn_matmuls_ms": "LocalRNN matmuls (ms)",
                 "bound_ms": "bound (ms)", "speedup_vs_reference": "speed-up", "bound_speedup_vs_reference":
                 "speed-up at the bound", "mfu": "MFU", "bound_mfu": "MFU at the bound", "epoch_s": "epoch (s)",
                 "steps": "steps", "speedup": "speed-up"}


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A bench table for the page: readable headers, '–' where a value was not measured."""
    shown = frame.rename(columns=BENCH_HEADERS)
    return shown.astype(object).where(shown.notna(), "–")


def load_music_epochs(folder: str | Path = BENCH_DIR) -> pd.DataFrame:
    """Whole Nottingham training epochs timed by `python -m rtlib bench --music-epoch`, one row
    per (file, setup): seconds, steps and speed-up over one tune a step through the released
    algorithm (`epoch_speedup`). Empty when no benchmark timed an epoch."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        tables = data.get("tables", [])
        for entry in tables if isinstance(tables, list) else []:
            epoch = entry.get("epoch", {})
            for setup, timing in epoch.items():
                if isinstance(timing, dict) and "epoch_s" in timing:
                    rows.append(dict(file=path.name, device=data.get("device", ""), setup=setup,
                                     epoch_s=timing["epoch_s"], steps=timing["steps"],
                                     speedup=epoch_speedup(epoch, setup)))
    return pd.DataFrame(rows)


def epoch_speedup(epoch: dict[str, Any], setup: str) -> float | None:
    """The speed-up of one setup's epoch over the reference's, as recorded or, where an older
    file records only the times, their ratio; None without a timed reference."""
    timing, reference = epoch[setup], epoch.get("reference", {})
    if timing.get("speedup_vs_reference") is not None:
        return timing["speedup_vs_reference"]
    if setup == "reference":
        return 1.0
    return reference["epoch_s"] / timing["epoch_s"] if reference.get("epoch_s") and timing["epoch_s"] else None


def speedup_sentence(bench: pd.DataFrame, eager: str = "fast") -> str:
    """Markdown: the largest speed-up over the released algorithm in `load_gpu_bench`'s rows, with
    the variant, GPU and table that gave it and what that variant adds to the eager `eager` step,
    then what the eager step alone gave on that GPU, over the tables; "" without timings."""
    timed = bench[bench["variant"] != "reference"].dropna(subset=["speedup"]) if len(bench) else bench
    if timed.empty:
        return ""
    top = timed.loc[timed["speedup"].idxmax()]
    text = (f"up to {top['speedup']:.1f}x faster than the released algorithm ({top['device']}, Table "
            f"{top['table']}) with `{top['variant']}`")
    if top["variant"] != eager and top["variant"] in VARIANTS:
        text += f", which adds to the `{eager}` path its engine mode: {COMPILE_MODE_WORDS[VARIANTS[top['variant']]['mode']]}"
    alone = timed[(timed["device"] == top["device"]) & (timed["variant"] == eager)].sort_values("speedup")
    if top["variant"] == eager or alone.empty:
        return text
    low, high = alone.iloc[0], alone.iloc[-1]
    span = (f"{low['speedup']:.2f}x" if len(alone) == 1 else
            f"from {low['speedup']:.2f}x (Table {low['table']}) to {high['speedup']:.2f}x (Table {high['table']})")
    slower = " (below 1x: slower than the released algorithm)" if low["speedup"] < 1 else ""
    return text + f"; the `{eager}` path alone, run eagerly, gave {span} on the same GPU{slower}"

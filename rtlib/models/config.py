"""What every model's config dataclass shares: its options, and the settings a record keeps.

A config's fields are the model's sizes, which every row gives, and its options
(`option(...)`: norm, attention kernel, position embeddings ...), whose defaults are the
released code's. A run record keeps the sizes and the options that differ from their
default, so a record names exactly what its row and its ablation set.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, field, fields
from typing import Any


def option(default: Any) -> Any:
    """A config field that rows leave at `default` unless an ablation or a task sets it."""
    return field(default=default, metadata={"option": True})


def recorded_settings(config: Any) -> dict[str, Any]:
    """The settings of `config` as a run record stores them: every size, and every option that
    is not at its default."""
    values = asdict(config)
    return {f.name: values[f.name] for f in fields(config)
            if not f.metadata.get("option") or f.default is MISSING or values[f.name] != f.default}

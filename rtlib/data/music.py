"""Polyphonic music: piano rolls of 88 keys, one binary row per time step.

Explained in data/README.md. The four sets of Boulanger-Lewandowski et al. (2012), as the TCN
repository ships them: each ``.mat`` file holds ``traindata``, ``validdata`` and
``testdata``, each a 1 x N object array of tunes, each tune a (T, 88) array of 0s and 1s.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch import Tensor

from rtlib.data.fetch import TASK_DATA, fetch

MUSIC_DATASETS = {name: TASK_DATA[name] for name in ("nottingham", "jsb", "muse", "piano")}
MUSIC_SPLITS = ("train", "valid", "test")
NUM_KEYS = 88


def load_music(name: str, split: str, data_dir: str | Path | None = None) -> list[Tensor]:
    """The tunes of one split ("train", "valid" or "test"), each a float32 (T, 88) piano roll.

    The tensors are shared between calls (the parsed file is cached), so do not change them
    in place.
    """
    if name not in MUSIC_DATASETS:
        raise ValueError(
            f"unknown music data set {name!r}; choose one of {', '.join(MUSIC_DATASETS)}"
        )
    if split not in MUSIC_SPLITS:
        raise ValueError(f"unknown music split {split!r}; choose one of {', '.join(MUSIC_SPLITS)}")
    path = fetch(MUSIC_DATASETS[name], data_dir)
    return list(_read_piano_rolls(path.resolve())[split])


@functools.lru_cache(maxsize=None)
def _read_piano_rolls(path: Path) -> dict[str, list[Tensor]]:
    """Every split of one verified ``.mat`` file, read once per process."""
    contents = scipy.io.loadmat(path)
    splits = {}
    for split in MUSIC_SPLITS:
        tunes = contents[f"{split}data"][0]  # (1, N) object array -> its N tunes
        splits[split] = [torch.from_numpy(tune.astype(np.float32)) for tune in tunes]
    return splits

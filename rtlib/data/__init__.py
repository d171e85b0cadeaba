"""The paper's data: fetched, verified against data/SHA256SUMS, and loaded as tensors.

Fetching and verifying need only the standard library, so that `python -m rtlib data` can check
the data before anything is installed; the loaders (torch, numpy, scipy) are imported on first use.
"""
import importlib

from rtlib.data.fetch import (
    CHECKSUMS_FILE,
    SOURCES,
    TASK_DATA,
    ChecksumError,
    DataNotFoundError,
    default_data_dir,
    fetch,
    fetch_tasks,
    task_files,
    verify_all,
)

_LOADERS = {
    "MNIST_MEAN": "mnist",
    "MNIST_STD": "mnist",
    "load_mnist": "mnist",
    "pixel_sequences": "mnist",
    "pmnist_permutation": "mnist",
    "MUSIC_DATASETS": "music",
    "load_music": "music",
    "Corpus": "ptb",
    "batchify": "ptb",
    "load_ptb": "ptb",
}


def __getattr__(name: str):
    if name in _LOADERS:
        return getattr(importlib.import_module(f"rtlib.data.{_LOADERS[name]}"), name)
    raise AttributeError(f"module 'rtlib.data' has no attribute {name!r}")


__all__ = [
    "CHECKSUMS_FILE",
    "SOURCES",
    "TASK_DATA",
    "ChecksumError",
    "DataNotFoundError",
    "default_data_dir",
    "fetch",
    "fetch_tasks",
    "task_files",
    "verify_all",
    *_LOADERS,
]

"""The paper's data: fetched, verified against data/SHA256SUMS, and loaded as tensors."""
from rtlib.data.fetch import (
    CHECKSUMS_FILE,
    SOURCES,
    ChecksumError,
    DataNotFoundError,
    default_data_dir,
    fetch,
    verify_all,
)
from rtlib.data.mnist import MNIST_MEAN, MNIST_STD, load_mnist, pixel_sequences, pmnist_permutation
from rtlib.data.music import MUSIC_DATASETS, load_music
from rtlib.data.ptb import Corpus, batchify, load_ptb

__all__ = [
    "CHECKSUMS_FILE",
    "SOURCES",
    "ChecksumError",
    "DataNotFoundError",
    "default_data_dir",
    "fetch",
    "verify_all",
    "MNIST_MEAN",
    "MNIST_STD",
    "load_mnist",
    "pixel_sequences",
    "pmnist_permutation",
    "MUSIC_DATASETS",
    "load_music",
    "Corpus",
    "batchify",
    "load_ptb",
]

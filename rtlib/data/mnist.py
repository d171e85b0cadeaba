"""MNIST as pixel sequences: sequential MNIST and permuted MNIST (pMNIST).

Explained in data/README.md. Each 28 x 28 image becomes a sequence of 784 pixels read row by
row, one pixel per step; pMNIST shuffles the steps with one fixed permutation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rtlib.data.fetch import fetch

MNIST_MEAN = 0.1307  # mean and std of the training pixels scaled to [0, 1]
MNIST_STD = 0.3081
NUM_PIXELS = 28 * 28
MNIST_FILES = {  # split -> (images, labels)
    "train": ("mnist/train-images-idx3-ubyte", "mnist/train-labels-idx1-ubyte"),
    "test": ("mnist/t10k-images-idx3-ubyte", "mnist/t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only type MNIST uses


def read_idx(path: Path) -> Tensor:
    """A uint8 tensor from an IDX file: two zero bytes, the type code, the number of
    dimensions, one big-endian uint32 per dimension, then the data."""
    data = path.read_bytes()
    if data[0:2] != b"\x00\x00" or data[2] != _IDX_UBYTE:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    num_dims = data[3]
    shape = tuple(np.frombuffer(data, dtype=">u4", count=num_dims, offset=4))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * num_dims)
    return torch.from_numpy(values.reshape(shape).copy())


def load_mnist(split: str, data_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """Images, uint8 (N, 28, 28), and labels, int64 (N,), of split "train" or "test"."""
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; choose one of {', '.join(MNIST_FILES)}")
    images_name, labels_name = MNIST_FILES[split]
    images = read_idx(fetch(images_name, data_dir))
    labels = read_idx(fetch(labels_name, data_dir)).long()
    return images, labels


def pixel_sequences(images: Tensor, permutation: Tensor | None = None) -> Tensor:
    """Float32 (N, 784, 1) sequences: pixels scaled to [0, 1], normalized with MNIST_MEAN and
    MNIST_STD, and reordered in time by `permutation` (pMNIST) when one is given."""
    pixels = images.flatten(start_dim=1).float().div(255)  # (N, 784)
    pixels = (pixels - MNIST_MEAN) / MNIST_STD
    if permutation is not None:
        pixels = pixels[:, permutation]
    return pixels.unsqueeze(-1)  # (N, 784, 1)


def pmnist_permutation(seed: int) -> Tensor:
    """The pMNIST permutation of the 784 time steps (int64) for `seed`.

    It is drawn from a private `torch.Generator`, so it neither depends on nor changes the
    global random state: the same seed gives the same permutation wherever it is called. Run
    records store this seed so that a result can be tied to its permutation.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(NUM_PIXELS, generator=generator)

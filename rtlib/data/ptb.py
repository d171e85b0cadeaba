"""Penn Treebank for language modelling, at word and at character level.

Explained in data/README.md. Both levels read Mikolov's preprocessed ``ptb.{split}.txt`` and
follow the reference implementations (TCN's ``word_cnn`` and ``char_cnn``):

- word level: each line is ``line.split() + ["<eos>"]``; 10,000 words.
- char level: every "\\n" becomes the five characters "<eos>", and the sequence is the
  characters of that text; 49 symbols.

In both, the vocabulary lists the symbols in order of first appearance over train, then
valid, then test. Token ids are computed once per process and cached.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rtlib.data.fetch import fetch

PTB_LEVELS = ("word", "char")
PTB_SPLITS = ("train", "valid", "test")
EOS = "<eos>"


@dataclass
class Corpus:
    """A tokenized corpus: the vocabulary and each split as 1-D int64 ids into it."""

    vocab: list[str]
    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def load_ptb(level: str, data_dir: str | Path | None = None) -> Corpus:
    """PTB at `level` "word" or "char". The corpus is shared between calls (it is cached), so
    do not change its tensors in place."""
    if level not in PTB_LEVELS:
        raise ValueError(f"unknown PTB level {level!r}; choose one of {', '.join(PTB_LEVELS)}")
    paths = tuple(fetch(f"ptb/ptb.{split}.txt", data_dir).resolve() for split in PTB_SPLITS)
    return _read_corpus(level, paths)


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """Lay a 1-D stream out as (batch_size, n): row i holds the i-th of `batch_size`
    contiguous pieces of the stream, and the remainder that does not fill a row is dropped."""
    num_steps = len(ids) // batch_size if batch_size > 0 else 0
    if num_steps == 0:
        raise ValueError(f"cannot split {len(ids)} tokens into {batch_size} non-empty rows")
    return ids[: batch_size * num_steps].view(batch_size, num_steps)


@functools.lru_cache(maxsize=None)
def _read_corpus(level: str, paths: tuple[Path, ...]) -> Corpus:
    tokenize = _word_tokens if level == "word" else _char_tokens
    splits = [tokenize(path) for path in paths]
    vocab = list(dict.fromkeys(token for tokens in splits for token in tokens))
    index = {token: i for i, token in enumerate(vocab)}
    train, valid, test = (torch.tensor([index[token] for token in tokens]) for tokens in splits)
    return Corpus(vocab=vocab, train=train, valid=valid, test=test)


def _word_tokens(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as file:
        return [word for line in file for word in line.split() + [EOS]]


def _char_tokens(path: Path) -> list[str]:
    return list(path.read_text(encoding="utf-8").replace("\n", EOS))

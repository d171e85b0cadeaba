"""The paper's task protocols: data -> batches -> loss -> metric, exactly as the references do it.

Explained in the table chapters (book/table1_mnist.md ... book/table4_ptb_word.md).

- seq-MNIST / pMNIST: 784 x 1 pixel sequences, cross-entropy on the last position's logits,
  test accuracy in %; the reference has no validation split.
- polyphonic music: predict step t+1 from steps <= t; NLL = summed binary cross-entropy over
  keys and steps of the split divided by its number of predicted steps. Training minimizes
  the *summed* NLL of the tune(s) in a step, as the released script does.
- PTB char / word: streams laid out as batch rows; windows of ``seq_len`` tokens with stride
  ``scored``; cross-entropy on the last ``scored`` positions of each window. Char reports bits
  per character (the paper's Table 3 calls it NLL), word reports perplexity. Evaluation runs
  up to ``EVAL_ROWS`` rows of windows a forward (the released scripts: one window a forward).

A protocol's batch order is a function of (seed, epoch) alone, so a resumed run can skip to
the exact batch it stopped at. A protocol's `shape` says what its model takes and gives;
`rtlib.models.build_model` builds the model. `music_frequency_nll` and `unigram_metric` score
what a model that ignores all context would.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import RunConfig
from .data import (batchify, load_mnist, load_music, load_ptb, pixel_sequences,
                   pmnist_permutation)
from .models import TaskShape

# rows of one language-model evaluation forward, as independent windows side by side: a runtime
# choice (it changes no sum), so not part of a run's settings or identity
EVAL_ROWS = 64
PMNIST_PERMUTATION_SEED = 0  # one fixed permutation for every pMNIST run; recorded in records


@dataclass(frozen=True)
class Task:
    name: str
    table: int | None
    kind: str                     # "classify" | "music" | "lm"
    metric: str
    higher_is_better: bool
    paper: dict[str, float] = field(default_factory=dict)  # model -> the paper's number
    copied: tuple[str, ...] = ()  # rows the paper copied from Bai et al. (2018)
    note: str = ""

    @property
    def has_validation(self) -> bool:
        """Whether there is a validation split to choose an lr and an epoch on (seq-MNIST has none:
        the sweep runs the config's lr and the released script reports the last epoch)."""
        return self.kind != "classify"


# How an axis or a printed result names each metric, with its unit (results.METRIC_NAMES names
# it in prose)
METRIC_LABELS = {"accuracy": "accuracy (%)", "nll": "NLL (nats per step)", "bpc": "bits per character",
                 "perplexity": "perplexity"}


def metric_label(metric: str, split: str = "test") -> str:
    """A metric on an axis or beside a number: ('nll', 'test') -> 'test NLL (nats per step)'."""
    return f"{split} {METRIC_LABELS.get(metric, metric)}".strip()


COPIED = ("rnn", "gru", "lstm", "tcn")
TASKS: dict[str, Task] = {
    "mnist": Task("mnist", 1, "classify", "accuracy", True,
                  dict(rnn=21.5, gru=96.2, lstm=87.2, tcn=99.0, transformer=98.2, rtransformer=99.1),
                  COPIED, "final-epoch test accuracy (%); the reference has no validation split"),
    "pmnist": Task("pmnist", None, "classify", "accuracy", True,
                   note="permuted MNIST (not in the paper); final-epoch test accuracy (%)"),
    "nottingham": Task("nottingham", 2, "music", "nll", False,
                       dict(rnn=4.05, gru=3.46, lstm=3.29, tcn=3.07, transformer=3.34, rtransformer=2.37),
                       COPIED, "NLL per time step (nats, summed over 88 keys)"),
    "jsb": Task("jsb", None, "music", "nll", False, note="JSB Chorales (not in the paper)"),
    "muse": Task("muse", None, "music", "nll", False, note="MuseData (not in the paper)"),
    "piano": Task("piano", None, "music", "nll", False, note="Piano-midi.de (not in the paper)"),
    "ptb-char": Task("ptb-char", 3, "lm", "bpc", False,
                     dict(rnn=1.48, gru=1.37, lstm=1.36, tcn=1.31, transformer=1.45, rtransformer=1.24),
                     COPIED, "bits per character on the last 320 of 400 positions "
                             "(the paper's Table 3 heads the column NLL)"),
    "ptb-word": Task("ptb-word", 4, "lm", "perplexity", False,
                     dict(rnn=114.50, gru=92.48, lstm=78.93, tcn=88.68, transformer=122.37,
                          rtransformer=84.38),
                     COPIED, "perplexity on the last 40 of 80 positions"),
}


def metric_from_stats(task: Task, stats: dict[str, float]) -> float:
    """The task's metric from summed statistics (loss_sum, count[, correct])."""
    if task.metric == "accuracy":
        return 100.0 * stats["correct"] / stats["count"]
    mean_loss = stats["loss_sum"] / stats["count"]
    if task.metric == "bpc":
        return mean_loss / math.log(2)
    if task.metric == "perplexity":
        return math.exp(mean_loss) if mean_loss < 709.0 else math.inf  # exp overflows past ~709.78
    return mean_loss


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Batch-order randomness of one epoch, independent of the global RNG."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Protocol:
    """Data, batches and loss of one task under one RunConfig; `shape` says what its model
    takes and gives (`rtlib.models.build_model` builds it)."""

    splits: tuple[str, ...] = ("train", "valid", "test")
    eval_windows_stacked: int | None = None  # language models: windows of one evaluation forward

    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu",
                 data_dir: str | Path | None = None):
        self.cfg, self.task, self.device = cfg, TASKS[cfg.task], torch.device(device)
        self.train_cfg = cfg.train
        self.data_dir = data_dir

    @property
    def valid_split(self) -> str | None:
        return "valid" if "valid" in self.splits else None

    @property
    def shape(self) -> TaskShape:
        raise NotImplementedError

    def train_batches(self, epoch: int) -> list[Any]:
        """Every batch of one training epoch, in order (cheap: indices or views)."""
        raise NotImplementedError

    def eval_batches(self, split: str) -> Iterator[Any]:
        raise NotImplementedError

    def batch_loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss to minimize, summed statistics for the metric)."""
        raise NotImplementedError

    def as_tensors(self, batch: Any, pad_to: int = 1) -> tuple[Tensor, ...]:
        """A batch as the tuple of tensors `tensor_loss` takes; where lengths vary (music), padded
        to a multiple of `pad_to` positions, so that a few shapes serve all batches (CUDA graphs
        of the training step, `rtlib.step`)."""
        return tuple(batch)

    def tensor_loss(self, model: nn.Module, tensors: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.batch_loss(model, tensors)

    def _limit(self, items, limit: int | None):
        return items if limit is None else items[:limit]


class ClassifyProtocol(Protocol):
    splits = ("train", "test")
    shape = TaskShape("classify", in_features=1, out_features=10)  # pixels in, digits out

    def __init__(self, cfg: RunConfig, device="cpu", data_dir=None):
        super().__init__(cfg, device, data_dir)
        permutation = pmnist_permutation(PMNIST_PERMUTATION_SEED) if cfg.task == "pmnist" else None
        self.data = {}
        for split, limit in [("train", self.train_cfg.train_limit), ("test", self.train_cfg.eval_limit)]:
            images, labels = load_mnist(split, data_dir)
            images, labels = self._limit(images, limit), self._limit(labels, limit)
            self.data[split] = (pixel_sequences(images, permutation).to(self.device), labels.to(self.device))

    def _batches(self, split: str, order: Tensor, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        inputs, labels = self.data[split]
        order = order.to(self.device)
        return [(inputs[idx], labels[idx]) for idx in order.split(batch_size)]

    def train_batches(self, epoch: int):
        count = len(self.data["train"][1])
        order = torch.randperm(count, generator=epoch_generator(self.train_cfg.seed, epoch))
        return self._batches("train", order, self.train_cfg.batch_size)

    def eval_batches(self, split: str):
        return iter(self._batches(split, torch.arange(len(self.data[split][1])),
                                  self.train_cfg.eval_batch_size))

    def batch_loss(self, model, batch):
        inputs, labels = batch
        logits = model(inputs).float()
        loss = F.cross_entropy(logits, labels)
        stats = dict(loss_sum=loss.detach() * len(labels), count=torch.tensor(float(len(labels))),
                     correct=(logits.argmax(-1) == labels).sum().float())
        return loss, stats


class MusicProtocol(Protocol):
    shape = TaskShape("music", in_features=88, out_features=88)  # keys in, next keys out

    def __init__(self, cfg: RunConfig, device="cpu", data_dir=None):
        super().__init__(cfg, device, data_dir)
        self.data = {}
        for split in self.splits:
            limit = self.train_cfg.train_limit if split == "train" else self.train_cfg.eval_limit
            tunes = self._limit(load_music(cfg.task, split, data_dir), limit)
            self.data[split] = [tune.to(self.device) for tune in tunes if len(tune) > 1]

    def collate(self, tunes: list[Tensor], pad_to: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs, targets, mask) of a batch of tunes, zero-padded at the end to the longest
        tune's length rounded up to a multiple of `pad_to` (so that a few shapes serve all
        batches). Padding never changes the loss: the model is causal and the mask drops it."""
        rolls = nn.utils.rnn.pad_sequence(tunes, batch_first=True)  # (B, T_max, 88)
        length = -(-(rolls.shape[1] - 1) // pad_to) * pad_to
        rolls = F.pad(rolls, (0, 0, 0, length + 1 - rolls.shape[1]))
        lengths = torch.tensor([len(t) - 1 for t in tunes], device=self.device)
        mask = torch.arange(length, device=self.device)[None, :] < lengths[:, None]
        return rolls[:, :-1], rolls[:, 1:], mask

    def train_batches(self, epoch: int):
        """Shuffled tunes; with batch_size > 1, tunes of similar length share a batch."""
        generator = epoch_generator(self.train_cfg.seed, epoch)
        order = torch.randperm(len(self.data["train"]), generator=generator).tolist()
        size = self.train_cfg.batch_size
        tunes = self.data["train"]
        if size > 1:
            by_length = sorted(order, key=lambda i: len(tunes[i]))
            groups = [by_length[j:j + size] for j in range(0, len(by_length), size)]
            order_of_groups = torch.randperm(len(groups), generator=generator).tolist()
            return [[tunes[i] for i in groups[g]] for g in order_of_groups]
        return [[tunes[i]] for i in order]

    def eval_batches(self, split: str):
        tunes = sorted(self.data[split], key=len)
        size = self.train_cfg.eval_batch_size
        return iter([tunes[j:j + size] for j in range(0, len(tunes), size)])

    def batch_loss(self, model, batch):
        return self.tensor_loss(model, self.collate(batch))

    def as_tensors(self, batch, pad_to=1):
        return self.collate(batch, pad_to)

    def tensor_loss(self, model, tensors):
        inputs, targets, mask = tensors
        logits = model(inputs).float()
        nll = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
        loss_sum = (nll * mask).sum()
        return loss_sum, dict(loss_sum=loss_sum.detach(), count=mask.sum().float())


class LanguageModelProtocol(Protocol):
    def __init__(self, cfg: RunConfig, device="cpu", data_dir=None):
        super().__init__(cfg, device, data_dir)
        corpus = task_corpus(cfg.task, data_dir)
        self.vocab, self.data = corpus.vocab, {}
        for split in self.splits:
            ids = getattr(corpus, split)
            if split == "train":
                rows = batchify(ids, self.train_cfg.batch_size)
                limit = self.train_cfg.train_limit
            else:
                rows = batchify(ids, self.train_cfg.eval_batch_size)
                limit = self.train_cfg.eval_limit
            self.data[split] = (rows if limit is None else rows[:, :limit]).to(self.device)

    @property
    def shape(self) -> TaskShape:
        return TaskShape("lm", in_features=None, out_features=len(self.vocab))  # token ids in and out

    def window_starts(self, length: int) -> list[int]:
        """TCN's loop: stride `scored`, skipping windows whose scored part would be empty."""
        seq_len, scored = self.train_cfg.seq_len, self.train_cfg.scored
        return [i for i in range(0, length - 1, scored) if i + seq_len - scored < length - 1]

    def _windows(self, split: str) -> list[tuple[Tensor, Tensor]]:
        rows = self.data[split]
        windows = []
        for start in self.window_starts(rows.shape[1]):
            end = start + min(self.train_cfg.seq_len, rows.shape[1] - 1 - start)
            windows.append((rows[:, start:end], rows[:, start + 1:end + 1]))
        return windows

    def train_batches(self, epoch: int):
        return self._windows("train")

    @property
    def eval_windows_stacked(self) -> int:
        """Windows of one evaluation forward. No state passes from one window to the next, so
        stacking them along the batch sums the same losses in fewer launches: at one stream
        (PTB-char) a window a forward left a recurrent model's epoch mostly evaluation."""
        return max(1, EVAL_ROWS // self.train_cfg.eval_batch_size)

    def eval_batches(self, split: str):
        stacked = self.eval_windows_stacked
        for _, same_length in itertools.groupby(self._windows(split), key=lambda window: window[0].shape[1]):
            same_length = list(same_length)
            for start in range(0, len(same_length), stacked):
                chunk = same_length[start:start + stacked]
                yield torch.cat([inputs for inputs, _ in chunk]), torch.cat([targets for _, targets in chunk])

    def batch_loss(self, model, batch):
        inputs, targets = batch
        history = self.train_cfg.seq_len - self.train_cfg.scored
        logits = model(inputs)[:, history:].float()
        scored_targets = targets[:, history:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), scored_targets.reshape(-1))
        count = torch.tensor(float(scored_targets.numel()))
        return loss, dict(loss_sum=loss.detach() * count, count=count)


PROTOCOLS = {"classify": ClassifyProtocol, "music": MusicProtocol, "lm": LanguageModelProtocol}


def make_protocol(cfg: RunConfig, device: torch.device | str = "cpu",
                  data_dir: str | Path | None = None) -> Protocol:
    return PROTOCOLS[TASKS[cfg.task].kind](cfg, device, data_dir)


def model_protocol(cfg: RunConfig, device: torch.device | str = "cpu",
                   data_dir: str | Path | None = None) -> Protocol:
    """The protocol of `cfg` with tiny data slices: for its model, vocabulary and loss, not
    for training (benchmarks, analyses, chapters)."""
    small = replace(cfg, train=replace(cfg.train, train_limit=16, eval_limit=16))
    return make_protocol(small, device, data_dir)


def check_sequence_lengths(cfg: RunConfig) -> None:
    """A LocalRNN window or TCN receptive field longer than the task's sequence is a config error."""
    window = getattr(cfg.backbone, "window", None)
    length = {"classify": 784, "lm": cfg.train.seq_len}.get(TASKS[cfg.task].kind)
    if window is not None and length is not None and window > length:
        raise ValueError(f"window={window} is larger than the sequence length {length}; "
                         f"allowed: 1..{length}")


# ---------------------------------------------------------------------------------------------
# What a model that ignores all context scores: reference points for the table chapters


def music_frequency_nll(name: str = "nottingham", data_dir=None) -> float:
    """Test NLL per time step (nats, summed over 88 keys) of a model that predicts every key
    independently with its training frequency, ignoring time altogether."""
    train = torch.cat(load_music(name, "train", data_dir))
    p = train.mean(0).clamp(1e-6, 1 - 1e-6)  # (88,)
    test = torch.cat([tune[1:] for tune in load_music(name, "test", data_dir)])  # predicted steps
    nll = -(test * p.log() + (1 - test) * (1 - p).log()).sum(1)
    return float(nll.mean())


def task_corpus(task: str, data_dir=None):
    """The PTB corpus of a language-model task: "ptb-char" reads characters, "ptb-word" words."""
    return load_ptb("char" if task == "ptb-char" else "word", data_dir)


@functools.lru_cache(maxsize=None)
def uniform_loss(task: str, data_dir=None) -> float | None:
    """A language model's loss when it guesses every token of its vocabulary alike (ln of the
    vocabulary, read from the data): a training loss above it knows less than no model at all,
    the mark of an lr too large. None for the other tasks."""
    return math.log(task_corpus(task, data_dir).vocab_size) if TASKS[task].kind == "lm" else None


def uniform_metric(task: str, data_dir=None) -> float | None:
    """`uniform_loss` as the task's metric: perplexity (the vocabulary's size) or bits per
    character; None for the tasks that are not language models."""
    loss = uniform_loss(task, data_dir)
    return None if loss is None else metric_from_stats(TASKS[task], dict(loss_sum=loss, count=1))


def above_uniform(curve: list[dict[str, Any]], task: str) -> list[int]:
    """The positions in `curve` (a record's log, an entry an epoch) of the epochs whose training
    loss was above a uniform guess's (`uniform_loss`); [] for the tasks that are not language models."""
    if TASKS[task].kind != "lm":
        return []
    uniform = uniform_loss(task)
    return [i for i, entry in enumerate(curve) if entry["train_loss"] > uniform]


def unigram_metric(level: str, data_dir=None) -> float:
    """Test bits per character (level "char") or perplexity (level "word") of the training
    unigram distribution: the score of a model that ignores all context."""
    corpus = load_ptb(level, data_dir)
    counts = torch.bincount(corpus.train, minlength=corpus.vocab_size).double() + 1  # add-one
    log_p = (counts / counts.sum()).log()
    nats = float(-log_p[corpus.test].mean())
    return nats / math.log(2) if level == "char" else math.exp(nats)

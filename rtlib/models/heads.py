"""Task heads: an input encoder and an output decoder around any backbone.

Every backbone maps (B, L, backbone.input_size) -> (B, L, backbone.output_size), so any of
them serves any task:
- `SequenceClassifier` (seq-MNIST): features in, class logits from the last position out;
- `PianoRollModel` (polyphonic music): 88 keys in, 88 independent key logits per step out;
- `LanguageModel` (PTB char/word): token embedding in, next-token logits out, the decoder
  tied to the embedding when the sizes allow it.
`project_input=True` puts a Linear between the raw features and the backbone (the attention
models, as released); False feeds the features directly (TCN and RNN rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EMBEDDING_INITS = ("uniform", "normal")
HEAD_KINDS = ("classify", "music", "lm")


@dataclass(frozen=True)
class HeadConfig:
    """The settings of a `LanguageModel` head, as its keyword arguments; the classifier and
    piano-roll heads have none."""
    emb_dropout: float
    tied: bool
    init: str          # one of EMBEDDING_INITS
    init_scale: float  # the bound of the uniform init, or the std of the normal one


@dataclass(frozen=True)
class TaskShape:
    """What a task feeds its model and reads off it: `kind` picks the head."""
    kind: str                  # one of HEAD_KINDS
    in_features: int | None    # features per step; None: token ids
    out_features: int          # classes, keys or vocabulary size


def input_encoder(in_features: int, backbone: nn.Module, project_input: bool) -> nn.Module:
    if project_input:
        return nn.Linear(in_features, backbone.input_size)
    if backbone.input_size != in_features:
        raise ValueError(f"backbone.input_size={backbone.input_size} != {in_features} input "
                         "features; use project_input=True")
    return nn.Identity()


class SequenceClassifier(nn.Module):
    """(B, L, in_features) -> (B, num_classes) logits read off the last position."""

    def __init__(self, backbone: nn.Module, in_features: int, num_classes: int,
                 project_input: bool = True):
        super().__init__()
        self.encoder = input_encoder(in_features, backbone, project_input)
        self.backbone = backbone
        self.decoder = nn.Linear(backbone.output_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(self.encoder(x))[:, -1])


class PianoRollModel(nn.Module):
    """(B, L, keys) -> (B, L, keys) logits; sigmoid of output t is P(key on at step t+1)."""

    def __init__(self, backbone: nn.Module, num_keys: int = 88, project_input: bool = True):
        super().__init__()
        self.encoder = input_encoder(num_keys, backbone, project_input)
        self.backbone = backbone
        self.decoder = nn.Linear(backbone.output_size, num_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(self.encoder(x)))


class LanguageModel(nn.Module):
    """(B, L) token ids -> (B, L, vocab) next-token logits."""

    def __init__(self, backbone: nn.Module, vocab_size: int, emb_dropout: float = 0.0,
                 tied: bool = True, init: str = "uniform", init_scale: float = 0.1):
        super().__init__()
        if init not in EMBEDDING_INITS:
            raise ValueError(f"init={init!r} is not one of {list(EMBEDDING_INITS)}")
        self.embedding = nn.Embedding(vocab_size, backbone.input_size)
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.backbone = backbone
        self.decoder = nn.Linear(backbone.output_size, vocab_size)
        if init == "uniform":
            nn.init.uniform_(self.embedding.weight, -init_scale, init_scale)
        else:
            nn.init.normal_(self.embedding.weight, 0.0, init_scale)
        nn.init.zeros_(self.decoder.bias)
        if tied:
            if backbone.input_size != backbone.output_size:
                raise ValueError("tied=True needs backbone.input_size == backbone.output_size, got "
                                 f"{backbone.input_size} and {backbone.output_size}")
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(self.emb_dropout(self.embedding(tokens))))

"""R-Transformer (Wang et al. 2019): LocalRNN + causal multi-head attention + feed-forward.

Explained in the book's chapter "The model, step by step" (book/model.md).

A block is ``n_local`` LocalRNN sublayers, then one causal attention sublayer, then one
feed-forward sublayer, each wrapped in a residual `Sublayer`. There are no position
embeddings: the LocalRNN windows are what tell the attention where it is.

Differences from the released code, all deliberate:
- the released code builds modules its ``forward`` never uses (the stack's final LayerNorm
  and feed-forward, and a Linear+ReLU inside each LocalRNN), so its printed parameter counts
  include dead weights; this file builds only what ``forward`` uses, and its counts equal the
  released code's *used* parameters (204,426 / 1,420,888 / 14,213,169 / 2,281,872 for
  Tables 1-4, checked in tests/test_models.py);
- ``norm="post"`` gives the paper's Eq. 8 (LayerNorm(x + sublayer(x))); the released code and
  our default are pre-norm.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import option
from .layers import CausalSelfAttention, FeedForward, Sublayer
from .local_rnn import LocalRNN


@dataclass(frozen=True)
class RTransformerConfig:
    d_model: int = 32
    levels: int = 8
    heads: int = 2
    n_local: int = 2           # LocalRNN sublayers per block
    window: int = 7            # M, the LocalRNN window
    cell: str = "gru"
    dropout: float = 0.05
    norm: str = option("pre")  # "pre" (released code) or "post" (paper Eq. 8)
    layer_norm: str = option("released")
    local_rnn_impl: str = option("fast")
    attention_impl: str = option("sdpa")


class RTransformerBlock(nn.Module):
    def __init__(self, cfg: RTransformerConfig):
        super().__init__()
        d = cfg.d_model

        def sublayer(layer: nn.Module) -> Sublayer:
            return Sublayer(layer, d, cfg.dropout, cfg.norm, cfg.layer_norm)

        self.local_rnns = nn.ModuleList(
            sublayer(LocalRNN(d, cfg.window, cfg.cell, cfg.local_rnn_impl)) for _ in range(cfg.n_local))
        self.attention = sublayer(CausalSelfAttention(d, cfg.heads, cfg.dropout, cfg.attention_impl))
        self.feed_forward = sublayer(FeedForward(d, cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, L, d)
        for local_rnn in self.local_rnns:
            x = local_rnn(x)
        return self.feed_forward(self.attention(x))


class RTransformer(nn.Module):
    """A stack of `levels` R-Transformer blocks; (B, L, d_model) -> (B, L, d_model)."""

    def __init__(self, config: RTransformerConfig | None = None, **settings):
        """`RTransformer(cfg)` or `RTransformer(d_model=..., levels=..., ...)`."""
        super().__init__()
        self.config = config or RTransformerConfig(**settings)
        self.input_size = self.output_size = self.config.d_model
        self.blocks = nn.ModuleList(RTransformerBlock(self.config) for _ in range(self.config.levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

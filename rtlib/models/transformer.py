"""The Transformer baseline: R-Transformer blocks without LocalRNN, plus position embeddings.

Explained in the book's chapter "The model, step by step" (book/model.md). The paper's
Transformer rows use the same sizes as its R-Transformer rows; only the LocalRNN sublayers
go, and position information has to come from embeddings added to the input instead.
``position="none"`` removes them too, for the ablation that shows what attention alone
can (not) tell apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import option
from .layers import CausalSelfAttention, FeedForward, Sublayer

POSITIONS = ("sinusoidal", "learned", "none")


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int = 32
    levels: int = 8
    heads: int = 2
    dropout: float = 0.05
    position: str = option("sinusoidal")
    max_len: int = option(4096)  # learned embeddings only
    norm: str = option("pre")
    layer_norm: str = option("released")
    attention_impl: str = option("sdpa")


def sinusoidal_positions(length: int, d: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Vaswani et al.'s table: (L, d), sin on even and cos on odd features, computed on
    `device` (a copy from the CPU could not be captured in a CUDA graph)."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(torch.arange(0, d, 2, dtype=torch.float32, device=device)
                          * (-math.log(10000.0) / d))
    table = torch.zeros(length, d, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d // 2]
    return table


class TransformerBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attention = Sublayer(CausalSelfAttention(cfg.d_model, cfg.heads, cfg.dropout, cfg.attention_impl),
                                  cfg.d_model, cfg.dropout, cfg.norm, cfg.layer_norm)
        self.feed_forward = Sublayer(FeedForward(cfg.d_model, cfg.dropout),
                                     cfg.d_model, cfg.dropout, cfg.norm, cfg.layer_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.attention(x))


class Transformer(nn.Module):
    """Position embeddings + `levels` causal blocks; (B, L, d_model) -> (B, L, d_model)."""

    def __init__(self, config: TransformerConfig | None = None, **settings):
        super().__init__()
        cfg = self.config = config or TransformerConfig(**settings)
        if cfg.position not in POSITIONS:
            raise ValueError(f"position={cfg.position!r} is not one of {list(POSITIONS)}")
        self.input_size = self.output_size = cfg.d_model
        self.learned_positions = (nn.Embedding(cfg.max_len, cfg.d_model)
                                  if cfg.position == "learned" else None)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.levels))

    def positions(self, length: int, device: torch.device) -> torch.Tensor | None:
        if self.config.position == "none":
            return None
        if self.learned_positions is not None:
            if length > self.config.max_len:
                raise ValueError(f"sequence length {length} exceeds max_len={self.config.max_len}")
            return self.learned_positions(torch.arange(length, device=device))
        return sinusoidal_positions(length, self.config.d_model, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.positions(x.shape[1], x.device)
        if table is not None:
            x = x + table.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x

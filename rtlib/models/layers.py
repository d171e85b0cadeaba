"""Pieces shared by the R-Transformer and the Transformer baseline.

Explained in the book's chapter "The model, step by step" (book/model.md): layer norm,
causal multi-head attention, the position-wise feed-forward network and the residual
sublayer wrapper that makes a block pre-norm (released code) or post-norm (paper, Eq. 8).
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

NORM_POSITIONS = ("pre", "post")
LAYER_NORMS = ("released", "torch")
ATTENTION_IMPLS = ("sdpa", "explicit")
# Not cuDNN's attention: it builds a new execution plan for every new sequence length, which
# made an eager epoch of batched tunes take 7.5 s instead of 2.7 s on an H100
# (results/bench/diagnostics/before_sdpa_fix_*.json vs results/bench/NVIDIA_H100_*.json).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa_backends(dtype: torch.dtype) -> list[SDPBackend]:
    """The attention kernels allowed for inputs of `dtype`. In fp32 only the math kernel is
    exact: the efficient kernel put Table 4's fp32 gradients 2.4e-4 off float64 on an H100
    (math: 5e-7), so fp32 uses it only where torch allows TF32 matmuls anyway."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return [SDPBackend.MATH]
    return SDPA_BACKENDS


class ReleasedLayerNorm(nn.Module):
    """The released code's LayerNorm: gain * (x - mean) / (std + eps) + bias, unbiased std."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gain * (x - mean) / (std + self.eps) + self.bias


def make_layer_norm(kind: str, d: int) -> nn.Module:
    if kind == "released":
        return ReleasedLayerNorm(d)
    if kind == "torch":
        return nn.LayerNorm(d)
    raise ValueError(f"layer_norm={kind!r} is not one of {list(LAYER_NORMS)}")


class Sublayer(nn.Module):
    """Residual wrapper around `layer`.

    pre (released code): x + drop(layer(norm(x))); post (paper Eq. 8): norm(x + drop(layer(x))).
    """

    def __init__(self, layer: nn.Module, d: int, dropout: float, norm: str, layer_norm: str):
        super().__init__()
        if norm not in NORM_POSITIONS:
            raise ValueError(f"norm={norm!r} is not one of {list(NORM_POSITIONS)}")
        self.layer = layer
        self.norm_position = norm
        self.norm = make_layer_norm(layer_norm, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_position == "pre":
            return x + self.dropout(self.layer(self.norm(x)))
        return self.norm(x + self.dropout(self.layer(x)))


class CausalSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; position t attends to positions <= t.

    One fused Linear(d, 3d) for q, k, v holds exactly the weights of the released code's three
    Linear(d, d). ``impl="explicit"`` is the released masked softmax; ``"sdpa"`` calls
    `scaled_dot_product_attention(is_causal=True)`, the same function (flash kernels on GPUs).
    """

    def __init__(self, d: int, heads: int, dropout: float, impl: str = "sdpa"):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model={d} is not divisible by heads={heads}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl={impl!r} is not one of {list(ATTENTION_IMPLS)}")
        self.heads, self.impl, self.dropout = heads, impl, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, d_head)
        dropout = self.dropout if self.training else 0.0
        if self.impl == "sdpa":
            with sdpa_kernel(sdpa_backends(q.dtype)):
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = F.dropout(self.attention_weights(q, k), dropout, self.training) @ v
        return self.out(y.transpose(1, 2).reshape(batch, length, d))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, heads, L, L) this layer gives input x (for visualizations)."""
        batch, length, d = x.shape
        q, k, _ = self.qkv(x).view(batch, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.attention_weights(q, k)

    @staticmethod
    def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Softmax weights (B, heads, L, L) with the released code's -1e9 causal mask."""
        length = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        return scores.masked_fill(future, -1e9).softmax(-1)


class FeedForward(nn.Module):
    """Position-wise Linear(d, 4d) -> ReLU -> dropout -> Linear(4d, d)."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

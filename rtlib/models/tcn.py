"""Temporal Convolutional Network (Bai, Kolter & Koltun 2018), the paper's TCN rows.

Residual blocks of two weight-normalized, dilated causal convolutions (dilation 2**level,
left padding (k-1)*dilation), ReLU and dropout; a 1x1 convolution on the residual path when
the channel count changes. Works on (B, L, C) like every backbone here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .config import option


@dataclass(frozen=True)
class TCNConfig:
    channels: list[int]        # output channels of each level; dilation 2**level
    kernel_size: int
    dropout: float
    input_size: int | None = option(None)  # None: the task's input features


class CausalConv1d(nn.Module):
    """Conv1d whose output t sees inputs t - (k-1)*dilation .. t (left padding, no chomp needed).

    Initialised as PyTorch initialises a Conv1d, as the TCN suite's really is: its
    ``conv.weight.data.normal_(0, 0.01)`` after ``weight_norm`` writes a tensor that the
    weight-norm hook recomputes from g and v before every forward, so it changes nothing.
    """

    def __init__(self, n_in: int, n_out: int, kernel_size: int, dilation: int):
        super().__init__()
        self.left_pad = (kernel_size - 1) * dilation
        self.conv = weight_norm(nn.Conv1d(n_in, n_out, kernel_size, dilation=dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, L)
        return self.conv(F.pad(x, (self.left_pad, 0)))


class TemporalBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            CausalConv1d(n_in, n_out, kernel_size, dilation), nn.ReLU(), nn.Dropout(dropout),
            CausalConv1d(n_out, n_out, kernel_size, dilation), nn.ReLU(), nn.Dropout(dropout))
        self.downsample = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else None
        if self.downsample is not None:  # not weight-normalised: the suite's N(0, 0.01) holds here
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, L)
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(self.net(x) + residual)


class TCN(nn.Module):
    """(B, L, input_size) -> (B, L, channels[-1])."""

    def __init__(self, input_size: int, channels: list[int], kernel_size: int, dropout: float):
        super().__init__()
        self.input_size, self.output_size = input_size, channels[-1]
        sizes = [input_size, *channels]
        self.blocks = nn.Sequential(*(
            TemporalBlock(sizes[level], sizes[level + 1], kernel_size, 2 ** level, dropout)
            for level in range(len(channels))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)

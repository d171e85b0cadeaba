"""Whole-sequence recurrent baselines: the paper's RNN, GRU and LSTM rows."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import option
from .local_rnn import CELLS


@dataclass(frozen=True)
class RNNConfig:
    """The rnn, gru and lstm rows alike: the model's name picks the cell."""
    hidden_size: int
    num_layers: int
    dropout: float
    input_size: int | None = option(None)  # None: the task's input features (LMs: hidden_size)


class RNNModel(nn.Module):
    """`num_layers` stacked nn.RNN/GRU/LSTM over the whole sequence; (B, L, in) -> (B, L, hidden)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, cell: str = "lstm",
                 dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not one of {sorted(CELLS)}")
        self.input_size, self.output_size = input_size, hidden_size
        self.rnn = CELLS[cell](input_size, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]

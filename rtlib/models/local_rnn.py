"""LocalRNN: one shared RNN run over the `window` inputs that end at every position.

Explained in the book's chapter "The model, step by step" (book/model.md).

For a sequence x_1..x_L and a window M, position t gets

    h_t = RNN(x_{t-M+1}, ..., x_t)          (last hidden state, zero-padded in front)

so the output has the input's shape and no position sees the future. Four implementations
compute the same function with the same parameters (one `nn.GRU`/`nn.LSTM`/`nn.RNN`):

- ``reference``: the released code's algorithm. Copy the B x L x M x d windows with an
  index-select and run cuDNN over B*L sequences of length M.
- ``unfold``: the same, but the windows are an `unfold` view of the padded input.
- ``batched``: every input appears in M windows, so project it once: P = W_ih x + b_ih over
  the padded sequence. Step j of every window then reads the input projection P[:, j:j+L] (a
  slice, no copy), and the M recurrent steps are M batched matmuls over all B*L windows.
  It does ~half the FLOPs of the reference and moves no window copies. On CUDA the gate
  math of each step runs in PyTorch's fused GRU/LSTM cell kernels.
- ``fast``: ``batched``, except that a GRU with a small hidden size (d = 16..64, Table 1) on
  CUDA in bf16/fp16 runs all M steps in one fused Triton kernel (rtlib/kernels/gru_windows.py)
  instead of M matmuls and M gate kernels; in fp32 it is ``batched`` (`gru_windows.supported`).

Compiling a model that holds an nn.GRU/LSTM needs `torch._dynamo.config.allow_rnn = True`
(`rtlib.step.compile_model` sets it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import gru_windows

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
IMPLS = ("reference", "unfold", "batched", "fast")


class LocalRNN(nn.Module):
    """Maps (B, L, d) -> (B, L, d); output t summarizes inputs t-window+1..t in order."""

    def __init__(self, d: int, window: int, cell: str = "gru", impl: str = "fast"):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not one of {sorted(CELLS)}")
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not one of {list(IMPLS)}")
        if window < 1:
            raise ValueError(f"window={window} must be >= 1")
        self.d, self.window, self.cell, self.impl = d, window, cell, impl
        # tanh for the plain RNN, as nn.RNN's default
        self.rnn = CELLS[cell](d, d, batch_first=True)

    def extra_repr(self) -> str:
        return f"d={self.d}, window={self.window}, cell={self.cell!r}, impl={self.impl!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl in ("batched", "fast"):
            return self._forward_fast(x)
        windows = self._windows(x)  # (B, L, M, d)
        batch, length, window, d = windows.shape
        out, _ = self.rnn(windows.reshape(batch * length, window, d))
        return out[:, -1].reshape(batch, length, d)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d = x.shape
        padded = F.pad(x, (0, 0, self.window - 1, 0))  # (B, L+M-1, d)
        if self.impl == "unfold":
            return padded.unfold(1, self.window, 1).transpose(2, 3)  # view (B, L, M, d)
        # released: index (L*M,) positions, gather, reshape
        index = (torch.arange(length, device=x.device)[:, None]
                 + torch.arange(self.window, device=x.device)[None, :]).reshape(-1)
        return padded.index_select(1, index).reshape(batch, length, self.window, d)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d = x.shape
        rnn = self.rnn
        # time-major, so that step j of every window, rows j..j+L-1, is one contiguous block
        padded = F.pad(x.transpose(0, 1), (0, 0, 0, 0, self.window - 1, 0))  # (L+M-1, B, d)
        projected = F.linear(padded, rnn.weight_ih_l0, rnn.bias_ih_l0)      # (L+M-1, B, G*d)
        projected = projected.reshape(-1, projected.shape[-1])
        windows = length * batch
        # cast W_hh once per call rather than once per step under autocast
        w_hh = rnn.weight_hh_l0.to(projected.dtype)
        b_hh = rnn.bias_hh_l0.to(projected.dtype)
        if self.impl == "fast" and gru_windows.supported(self.cell, d, projected):
            h = gru_windows.gru_windows(projected, w_hh, b_hh, batch, self.window)
            return h.view(length, batch, d).transpose(0, 1)
        # eager CUDA: PyTorch's fused cell kernels; under torch.compile the plain gate math,
        # which the compiler fuses itself
        fused = x.is_cuda and self.cell != "rnn" and not torch.compiler.is_compiling()
        h = c = None
        for step in range(self.window):
            gates_in = projected[step * batch: step * batch + windows]  # (L*B, G*d), a view
            gates_h = (b_hh.expand_as(gates_in) if h is None
                       else F.linear(h, w_hh, b_hh))
            if fused:
                h, c = fused_cell_step(self.cell, gates_in, gates_h, h, c)
            elif self.cell == "gru":
                h = gru_update(gates_in, gates_h, h)
            elif self.cell == "lstm":
                h, c = lstm_update(gates_in + gates_h, c)
            else:
                h = torch.tanh(gates_in + gates_h)
        return h.view(length, batch, d).transpose(0, 1)


def fused_cell_step(cell: str, gates_in: torch.Tensor, gates_h: torch.Tensor,
                    h: torch.Tensor | None, c: torch.Tensor | None):
    """One GRU/LSTM step in PyTorch's fused CUDA kernels (those behind nn.GRUCell/LSTMCell)."""
    gates_h = gates_h.contiguous()
    if h is None:
        h = c = gates_in.new_zeros(gates_in.shape[0], gates_in.shape[1] // (3 if cell == "gru" else 4))
    if cell == "gru":
        return torch.ops.aten._thnn_fused_gru_cell(gates_in, gates_h, h)[0], None
    h, c, _ = torch.ops.aten._thnn_fused_lstm_cell(gates_in, gates_h, c)
    return h, c


def gru_update(gates_in: torch.Tensor, gates_h: torch.Tensor,
               h: torch.Tensor | None) -> torch.Tensor:
    """One GRU step from precomputed projections, in nn.GRU's gate order (r, z, n)."""
    in_r, in_z, in_n = gates_in.chunk(3, dim=-1)
    h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
    reset = torch.sigmoid(in_r + h_r)
    update = torch.sigmoid(in_z + h_z)
    candidate = torch.tanh(in_n + reset * h_n)
    if h is None:  # h_0 = 0
        return (1 - update) * candidate
    return candidate + update * (h - candidate)


def lstm_update(gates: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from summed projections, in nn.LSTM's gate order (i, f, g, o)."""
    in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(in_gate) * torch.tanh(cell_gate)
    if c is not None:  # c_0 = 0
        c_new = c_new + torch.sigmoid(forget_gate) * c
    return torch.sigmoid(out_gate) * torch.tanh(c_new), c_new

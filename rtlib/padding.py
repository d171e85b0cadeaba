"""The recurrent baselines run wider on a GPU, with extra hidden units that are exactly zero.

A row's hidden size is the inner dimension of every matmul of its step. At sizes that are not a
multiple of 8, cuBLAS and cuDNN fall back to much slower kernels: on one H100 the PTB-char
RNN's bf16 step takes 19.0 ms at its hidden size of 1198 and 9.4-10.1 ms at 1200, its GRU's
14.8 ms at 692 and 11.5 at 696, the PTB-word GRU's 10.4 ms at 780 and 8.7 at 784
(results/bench/hidden_width_NVIDIA_H100_80GB_HBM3.json). The PTB-word LSTM at 700
was faster than at 704, and the PTB-word RNN gained 2% at 1128: `rtlib.runtime.PADDED_WIDTH`
lists only the measured wins.

The padded model computes the same function as the configured one, and trains the same:
- each extra unit starts with all its weights and biases zero, so its pre-activations are 0
  and its state stays 0 (RNN: tanh 0 = 0; GRU: candidate 0, so h = z * 0; LSTM: cell input 0,
  so c = 0 and h = 0);
- its outgoing weights (recurrent, next layer's input, decoder, a tied embedding's columns) are
  zero too, so no loss gradient reaches it: every gradient into its weights is a product with
  its zero state or its zero error, and stays 0. SGD and Adam leave them at 0, and gradient
  clipping sees the same norm;
- the real units' weights are initialised from the same random draws as the configured model
  (it is built first, and the padded one copies it), and checkpoints and best weights hold the
  configured shapes (`HiddenPadding.unpad`), so a run may resume with or without padding.

What differs is floating-point rounding (other kernels, other summation orders) and the dropout
masks between layers and on a language model's embedding, drawn for the wider tensors: the
same distribution, other draws, as under a compiled step.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .models import TaskShape, build_model

# how many gate blocks the cell stacks along its weights' first dimension (torch.nn.RNN/GRU/LSTM)
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@dataclass(frozen=True)
class HiddenPadding:
    """How each tensor of a model's state maps into the same model `width` units wide: per
    state-dict key, per dimension, None (unchanged), "units" (the hidden units) or "gates" (the
    cell's gate blocks of hidden units, stacked)."""
    hidden: int
    width: int
    gates: int
    layout: dict[str, tuple[str | None, ...]]

    @classmethod
    def between(cls, model: nn.Module, wide: nn.Module, hidden: int, width: int, gates: int) -> "HiddenPadding":
        """The layout that maps `model`'s state (hidden size `hidden`) onto `wide`'s (`width`)."""
        layout = {}
        wide_state = wide.state_dict()
        for key, tensor in model.state_dict().items():
            kinds = []
            for size, wide_size in zip(tensor.shape, wide_state[key].shape, strict=True):
                if size == wide_size:
                    kinds.append(None)
                elif (size, wide_size) == (hidden, width):
                    kinds.append("units")
                elif (size, wide_size) == (gates * hidden, gates * width):
                    kinds.append("gates")
                else:
                    raise ValueError(f"{key}: size {size} vs {wide_size} is neither {hidden} units "
                                     f"nor {gates} gate blocks of them, widened to {width}")
            layout[key] = tuple(kinds)
        return cls(hidden, width, gates, layout)

    def _where(self, kind: str, device: torch.device) -> torch.Tensor:
        """The positions of the real units along a dimension of `kind`, in the wide tensor."""
        blocks = 1 if kind == "units" else self.gates
        return torch.cat([block * self.width + torch.arange(self.hidden, device=device) for block in range(blocks)])

    def pad_tensor(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        for dim, kind in enumerate(self.layout[key]):
            if kind is not None:
                shape = list(tensor.shape)
                shape[dim] = self.width * (1 if kind == "units" else self.gates)
                tensor = tensor.new_zeros(shape).index_copy_(dim, self._where(kind, tensor.device), tensor)
        return tensor

    def unpad_tensor(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        for dim, kind in enumerate(self.layout[key]):
            if kind is not None:
                tensor = tensor.index_select(dim, self._where(kind, tensor.device))
        return tensor

    def pad(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A configured model's state dict -> the wide model's."""
        return {key: self.pad_tensor(key, tensor) for key, tensor in state.items()}

    def unpad(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The wide model's state dict -> the configured model's."""
        return {key: self.unpad_tensor(key, tensor) for key, tensor in state.items()}

    def _optimizer_state(self, state: dict[str, Any], names: list[str], convert) -> dict[str, Any]:
        """`convert` applied to each parameter's tensors of its shape (momentum, Adam's moments),
        not to its scalars (Adam's step count)."""
        def converted(key: str, value: Any) -> Any:
            shaped = torch.is_tensor(value) and value.dim() == len(self.layout[key]) > 0
            return convert(key, value) if shaped else value

        return {**state, "state": {index: {name: converted(names[index], value) for name, value in values.items()}
                                   for index, values in state["state"].items()}}

    def pad_optimizer(self, state: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """An optimizer's state dict over parameters named `names` (in order), widened."""
        return self._optimizer_state(state, names, self.pad_tensor)

    def unpad_optimizer(self, state: dict[str, Any], names: list[str]) -> dict[str, Any]:
        return self._optimizer_state(state, names, self.unpad_tensor)


def widened(model: nn.Module, cfg: Any, shape: TaskShape, width: int) -> tuple[nn.Module, HiddenPadding]:
    """`model` (built from the run config `cfg` for a task of `shape`) as the same model `width`
    hidden units wide, its extra units zero, and the map between their states. The global
    random state is left as `model`'s construction left it."""
    if cfg.model not in GATES:
        raise ValueError(f"model={cfg.model!r}: only the recurrent rows {sorted(GATES)} are widened")
    hidden = cfg.backbone.hidden_size
    if width < hidden:
        raise ValueError(f"width={width} is narrower than the hidden size {hidden}")
    wide_cfg = replace(cfg, backbone=replace(cfg.backbone, hidden_size=width))
    with torch.random.fork_rng(devices=[]):
        wide = build_model(wide_cfg, shape)
    padding = HiddenPadding.between(model, wide, hidden, width, GATES[cfg.model])
    wide.load_state_dict(padding.pad(model.state_dict()))
    return wide, padding

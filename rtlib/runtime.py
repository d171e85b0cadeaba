"""How a run executes on its machine (`Runtime`): the device, the compile mode and CUDA graphs
of the training step, the time budget, checkpoint interval and progress bars.

None of this changes what the experiment *is*: a run's identity (its config and run id) is the
task, the model, the hyperparameters, the precision and the seed (`rtlib.configs`). The engine
mode changes only how fast the same computation runs, and where floating-point rounding
falls; a run may be resumed under another mode. The record says which mode ran.

Modes (`COMPILE_MODES`): ``none`` (eager), ``default`` (`torch.compile` fusion),
``reduce-overhead`` (fusion + CUDA graphs of forward and backward), ``step-graph`` (the whole
step -- zero grads, forward, backward, clip, optimizer -- as one CUDA graph a batch shape, and
evaluation batches as graphs too; `rtlib.step`) and ``default+step-graph`` (both).
``auto`` picks `FASTEST_ON_CUDA[model]` on a GPU and ``none`` on the CPU.

On CUDA, with a compiled or graphed step, a recurrent row whose hidden size has a measured
faster width (`PADDED_WIDTH`) runs that wide, its extra units exactly zero (`rtlib.padding`):
the same function and training, other rounding and dropout draws. `pad_hidden` ``off`` keeps
the configured width; ``on`` widens on any device (to check the padding itself on a CPU).

Precision is part of the experiment (an fp32 run and a bf16 run are two runs); what it means on
a given machine is resolved here (`autocast_dtype`).
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

COMPILE_MODES = ("auto", "none", "default", "reduce-overhead", "step-graph", "default+step-graph")
COMPILE_MODE_WORDS = {"none": "eager", "default": "torch.compile",
                      "reduce-overhead": "torch.compile with CUDA graphs of forward and backward",
                      "step-graph": "the whole step as one CUDA graph",
                      "default+step-graph": "torch.compile, the whole step as one CUDA graph"}

# The fastest mode measured correct on one GPU, per model. The attention models: every table's
# training step, reference vs fast variants (results/bench/NVIDIA_H100_80GB_HBM3.json). The
# baselines: every table through the engine, eager vs step-graph, same losses, dropout masks
# varying (results/bench/engine_modes_NVIDIA_H200.json: 1.3-6.2x per step).
FASTEST_ON_CUDA: dict[str, str] = {
    "rtransformer": "default+step-graph",
    "transformer": "default+step-graph",
    "tcn": "step-graph",
    "rnn": "step-graph",
    "gru": "step-graph",
    "lstm": "step-graph",
}


# (model, configured hidden size) -> the width its step ran fastest at, bf16, step-graph, one H100
# (results/bench/hidden_width_NVIDIA_H100_80GB_HBM3.json): PTB-char RNN 19.0 -> 9.4-10.1
# ms a step, PTB-char GRU 14.8 -> 11.5, PTB-word GRU 10.4 -> 8.7. Sizes not listed were not faster
# (the PTB-word LSTM at 704: 9.5 ms against 8.1-8.5 at 700) or not measured.
PADDED_WIDTH: dict[tuple[str, int], int] = {("rnn", 1198): 1200, ("gru", 692): 696, ("gru", 780): 784}
PAD_HIDDEN = ("auto", "on", "off")


def padded_width(model: str, hidden: int | None) -> int | None:
    """The width `PADDED_WIDTH` measured faster for a row of `model` with `hidden` units, if any."""
    return PADDED_WIDTH.get((model, hidden))


def hidden_width(pad_hidden: str, model: str, hidden: int | None, device: torch.device, engine_mode: str) -> int | None:
    """The width a recurrent row runs at (`PADDED_WIDTH`), or None to run it as configured:
    ``auto`` widens on CUDA with a compiled or graphed step, ``on`` everywhere, ``off`` never."""
    if pad_hidden not in PAD_HIDDEN:
        raise ValueError(f"pad_hidden={pad_hidden!r} is not one of {list(PAD_HIDDEN)}")
    if pad_hidden == "off" or (pad_hidden == "auto" and (device.type != "cuda" or engine_mode == "none")):
        return None
    return padded_width(model, hidden)


def resolve_compile(mode: str, model: str, device: torch.device) -> str:
    """The mode a run uses: `mode` itself, or for ``auto`` the model's fastest on CUDA (``none``
    on the CPU, where compiling and graphs are not used)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile={mode!r} is not one of {list(COMPILE_MODES)}")
    if device.type != "cuda":
        return "none"
    return FASTEST_ON_CUDA[model] if mode == "auto" else mode


def compile_plan(mode: str) -> tuple[str | None, bool]:
    """A resolved mode -> (torch.compile mode or None, whether steps are whole CUDA graphs)."""
    graphed = mode.endswith("step-graph")
    compile_mode = mode.removesuffix("step-graph").rstrip("+")
    return (compile_mode if compile_mode not in ("", "none") else None), graphed


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None): the GPU if there is one, else the CPU; ValueError for a GPU that is not there."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; allowed: 'cpu', 'auto'")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} but this machine has {torch.cuda.device_count()} GPUs; "
                         f"allowed: 'cuda:0' .. 'cuda:{torch.cuda.device_count() - 1}', 'cpu', 'auto'")
    return resolved


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, fp16 (with a gradient scaler) where not, fp32 on CPU."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


@dataclass(frozen=True)
class Runtime:
    """How `rtlib.train.train` executes a run here; none of it is part of the run's identity.

    `device`: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (`resolve_device`); `compile`: one of
    `COMPILE_MODES`, resolved per model and device (`resolve_compile`); `max_minutes`: this
    session's time budget (None: none), after which the run checkpoints and stops, resumable;
    `checkpoint_minutes`: the interval of mid-epoch checkpoints; `progress`: progress bars (None:
    when stderr is a terminal); `pad_hidden`: one of `PAD_HIDDEN` (`hidden_width`).
    """
    device: str | None = "auto"
    compile: str = "auto"
    max_minutes: float | None = None
    checkpoint_minutes: float = 5.0
    progress: bool | None = None
    pad_hidden: str = "auto"

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def engine_mode(self, model: str, device: torch.device) -> str:
        return resolve_compile(self.compile, model, device)

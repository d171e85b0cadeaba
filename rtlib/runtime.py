"""How a run executes on its machine: the compile mode and CUDA graphs of the training step.

None of this changes what the experiment *is*: a run's identity (its config and run id) is the
task, the model, the hyperparameters, the precision and the seed (`rtlib.configs`). The engine
mode changes only how fast the same computation runs, and where floating-point rounding
falls; a run may be resumed under another mode. The record says which mode ran.

Modes (`COMPILE_MODES`): ``none`` (eager), ``default`` (`torch.compile` fusion),
``reduce-overhead`` (fusion + CUDA graphs of forward and backward), ``step-graph`` (the whole
step -- zero grads, forward, backward, clip, optimizer -- as one CUDA graph a batch shape, and
evaluation batches as graphs too; `rtlib.step_graph`) and ``default+step-graph`` (both).
``auto`` picks `FASTEST_ON_CUDA[model]` on a GPU and ``none`` on the CPU.
"""
from __future__ import annotations

import torch

COMPILE_MODES = ("auto", "none", "default", "reduce-overhead", "step-graph", "default+step-graph")

# The fastest mode measured correct on one GPU, per model. The attention models: every table's
# training step, reference vs fast variants (results/bench/NVIDIA_H100_80GB_HBM3.json).
FASTEST_ON_CUDA: dict[str, str] = {
    "rtransformer": "default+step-graph",
    "transformer": "default+step-graph",
    "tcn": "none",
    "rnn": "none",
    "gru": "none",
    "lstm": "none",
}


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

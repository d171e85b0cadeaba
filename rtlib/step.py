"""The training step, written once: zero the gradients, forward under autocast, backward, clip,
update. The engine (`rtlib.train`), the benchmark (`rtlib.bench`) and the toy trainers
(`rtlib.toys`) all run it.

`make_step` returns it in one of three forms, chosen by the engine mode (`rtlib.runtime`); each
runs the body of `Step.run`:

- eager (`Step`);
- compiled (`CompiledStep`): the model compiled by `torch.compile` for the epoch's common batch
  shape; a batch of another shape (a ragged last batch) runs eagerly rather than compiling again;
- graphed (`GraphedSteps`): the whole step -- zeroing, forward, loss, backward, clipping,
  optimizer update -- captured once per batch shape as one `torch.cuda.CUDAGraph` and replayed.

Why graphs: the models of Tables 1, 2 and 4 are small, so one training step is a few thousand
kernels of a few microseconds each, and launching them from Python takes longer than running
them. `torch.compile(mode="reduce-overhead")` graphs the forward and the backward, but the
autograd engine, clipping and the optimizer still run from Python between them; a whole-step
graph is one launch. A step's inputs are copied into the graph's static input tensors first; a
graph serves one set of shapes (batches of varying length are padded to a multiple of
`GRAPH_LENGTH_MULTIPLE` positions, one graph each, sharing the gradients and optimizer state).
Capture needs a few eager warm-up steps (lazy initialisation of cuBLAS, optimizer state and,
for a compiled model, compilation); they would be real training steps, so the weights and the
optimizer state are put back as they were after the capture. `EvalGraphs` does the same for
evaluation batches.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from .runtime import compile_plan

LossFn = Callable[[nn.Module, tuple[Tensor, ...]], tuple[Tensor, dict[str, Tensor]]]
Inputs = Callable[[Any, int], tuple[Tensor, ...]]
# music batches for CUDA graphs are padded to a multiple of this many steps: ~30 shapes in all
GRAPH_LENGTH_MULTIPLE = 64


def autocast(device_type: str, amp: torch.dtype | None):
    """Autocast to `amp` (bf16/fp16), or nothing when it is None (fp32)."""
    return torch.autocast(device_type, dtype=amp) if amp is not None else nullcontext()


# tensors of state a parameter keeps in `make_optimizer`'s optimizers: Adam's two moments; plain SGD none
OPTIMIZER_SLOTS = {"adam": 2, "sgd": 0}


def make_optimizer(name: str, parameters: Iterable[nn.Parameter], lr: float,
                   fused: bool) -> torch.optim.Optimizer:
    """Adam or plain SGD (no momentum), as the released scripts use them; `fused`: PyTorch's fused
    CUDA kernel (the same update rule), else the per-parameter loop of the released scripts."""
    implementation = dict(fused=True) if fused else dict(foreach=False)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, **implementation)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, **implementation)
    raise ValueError(f"optimizer={name!r} is not one of ['adam', 'sgd']")


def clip_norm(train: Any) -> float | None:
    """The gradient norm a step of `train` (a `TrainSettings`) clips to, or None: no clipping.

    The released music script (like the TCN suite's music_test.py it copies) calls
    ``clip_grad_norm_`` right after ``zero_grad()``, before ``backward()``: it clips gradients
    that are not there yet, so its updates are unclipped. Rows that reproduce it
    (``clip_before_backward=True``) therefore clip nothing; every other row clips after backward.
    """
    return None if train.clip_before_backward else train.grad_clip


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """`torch.compile(model, mode=mode)`, letting the compiler trace through the LocalRNN's
    nn.GRU/LSTM modules (Dynamo refuses nn.RNN modules by default)."""
    torch._dynamo.config.allow_rnn = True
    return torch.compile(model, mode=mode)


def shape_of(batch: Any) -> tuple:
    """Shapes of a batch's tensors (music batches are lists of tunes)."""
    tensors = batch if isinstance(batch, (list, tuple)) else [batch]
    return tuple(tuple(t.shape) for t in tensors)


def _as_given(batch: Any, pad_to: int = 1) -> tuple[Tensor, ...]:
    return tuple(batch)


class Step:
    """`step(batch)` -> (loss, stats): one eager training step of `model`.

    `loss_fn(model, tensors)` returns (loss to minimize, summed statistics), like
    `Protocol.tensor_loss`; `inputs(batch, pad_to)` turns a batch into those tensors (default:
    the batch is a tuple of tensors already). `max_norm` is the clipping rule's norm
    (`clip_norm`); `amp` the autocast dtype (None: fp32), with a gradient scaler for fp16.
    """
    graphed = False

    def __init__(self, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                 max_norm: float | None, amp: torch.dtype | None = None, inputs: Inputs = _as_given):
        self.model, self.loss_fn, self.optimizer, self.max_norm, self.amp = model, loss_fn, optimizer, max_norm, amp
        self.inputs, self.runs = inputs, model
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.device_type = next(model.parameters()).device.type
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

    def run(self, model: nn.Module, tensors: tuple[Tensor, ...],
            set_to_none: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        self.optimizer.zero_grad(set_to_none=set_to_none)
        with autocast(self.device_type, self.amp):
            loss, stats = self.loss_fn(model, tensors)
        self.scaler.scale(loss).backward()
        if self.max_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.parameters, self.max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), stats

    def start_epoch(self, first_batch: Any) -> None:
        """Called with each epoch's first batch (the compiled step serves its shape)."""

    def __call__(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        return self.run(self.model, self.inputs(batch, 1))


class CompiledStep(Step):
    """`Step` with the model compiled (`torch.compile` `mode`) for the epoch's common batch
    shape: that of the epoch's first batch (`start_epoch`), else of the first batch it is given.
    ``reduce-overhead`` replays CUDA graphs whose outputs a new step may overwrite, so each step
    is marked as new."""

    def __init__(self, model, loss_fn, optimizer, max_norm, amp=None, inputs: Inputs = _as_given,
                 mode: str = "default"):
        super().__init__(model, loss_fn, optimizer, max_norm, amp, inputs)
        self.runs = compile_model(model, mode)
        self.mark_step = torch.compiler.cudagraph_mark_step_begin if mode == "reduce-overhead" else None
        self.common_shape: tuple | None = None

    def start_epoch(self, first_batch: Any) -> None:
        self.common_shape = shape_of(first_batch)

    def __call__(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        if self.mark_step is not None:
            self.mark_step()
        shape = shape_of(batch)
        if self.common_shape is None:
            self.common_shape = shape
        model = self.runs if shape == self.common_shape else self.model
        return self.run(model, self.inputs(batch, 1))


class GraphedStep:
    """`step(tensors)` = `Step.run` of `step` on `example`'s shapes as one CUDA graph replay; the
    returned loss and stats are the graph's static outputs, overwritten by the next replay."""

    def __init__(self, step: Step, example: tuple[Tensor, ...], warmup: int = 2):
        if not example or example[0].device.type != "cuda":
            raise ValueError("GraphedStep needs a batch of CUDA tensors")
        for group in step.optimizer.param_groups:
            if "capturable" in group:  # Adam & co. check this before a step is captured
                group["capturable"] = True
        self.inputs = tuple(t.clone() for t in example)
        saved = _snapshot(step.parameters, step.optimizer)

        def body():
            # zeroed in place, not set to None: every graph reads and writes the same gradients
            return step.run(step.runs, self.inputs, set_to_none=False)
        self.graph, (self.loss, self.stats) = _capture(body, warmup)
        _restore(saved, step.parameters, step.optimizer)

    def __call__(self, tensors: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        shapes = [tuple(t.shape) for t in tensors]
        expected = [tuple(t.shape) for t in self.inputs]
        if shapes != expected:
            raise ValueError(f"batch shapes {shapes} differ from the captured {expected}")
        for static, value in zip(self.inputs, tensors):
            static.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.loss, self.stats


class StepGraphs:
    """One `GraphedStep` of `step` per batch shape, captured on first use and shared by later
    batches.

    A captured step bakes in the learning rate, so the graphs are captured again after the lr
    changes (at most once an epoch). Beyond `max_graphs` shapes, `step` returns None and the
    caller runs the step eagerly.
    """

    def __init__(self, step: Step, max_graphs: int = 64):
        if step.amp == torch.float16:
            raise ValueError("whole-step CUDA graphs need precision bf16 or fp32, not fp16 "
                             "(fp16's loss scaler decides on the host whether to step)")
        self.eager, self.max_graphs = step, max_graphs
        self.graphs: dict[tuple, GraphedStep] = {}
        self.captured_lrs: list[float] = []
        self.captures = 0

    def __len__(self) -> int:
        return len(self.graphs)

    def step(self, tensors: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]] | None:
        lrs = [group["lr"] for group in self.eager.optimizer.param_groups]
        if lrs != self.captured_lrs:
            self.graphs.clear()
            self.captured_lrs = lrs
        shapes = tuple(tuple(t.shape) for t in tensors)
        if shapes not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                return None
            # the first capture also initialises lazily built state (and compiles a compiled model)
            self.graphs[shapes] = GraphedStep(self.eager, tensors, warmup=1 if self.captures else 3)
            self.captures += 1
        return self.graphs[shapes](tensors)


class GraphedSteps:
    """`step(batch)`: the batch padded for a graph (`inputs(batch, GRAPH_LENGTH_MULTIPLE)`) and
    replayed by `StepGraphs`, or run by the eager (or compiled) `step` where no graph serves it."""
    graphed = True

    def __init__(self, step: Step):
        self.eager, self.graphs = step, StepGraphs(step)
        self.model, self.runs, self.optimizer, self.scaler = step.model, step.runs, step.optimizer, step.scaler

    def start_epoch(self, first_batch: Any) -> None:
        self.eager.start_epoch(first_batch)

    def __call__(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        result = self.graphs.step(self.eager.inputs(batch, GRAPH_LENGTH_MULTIPLE))
        return result if result is not None else self.eager(batch)


def make_step(model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, max_norm: float | None,
              *, amp: torch.dtype | None = None, mode: str = "none",
              inputs: Inputs = _as_given) -> Step | GraphedSteps:
    """The training step of `model` in engine mode `mode` (resolved, `rtlib.runtime`): eager,
    compiled and/or graphed; see `Step` for the arguments."""
    compiled, graphed = compile_plan(mode)
    step = (CompiledStep(model, loss_fn, optimizer, max_norm, amp, inputs, compiled) if compiled
            else Step(model, loss_fn, optimizer, max_norm, amp, inputs))
    return GraphedSteps(step) if graphed else step


class EvalGraphs:
    """Evaluation batches as CUDA graph replays: `stats(batch)` is `loss_fn(model, batch)[1]`
    under `no_grad`, one graph per batch shape, captured on first use.

    Evaluation batches of the language and music tasks are one stream or one tune each, so an
    eager evaluation is as launch-bound as a small training step. The graphs are captured with
    the model in eval mode (no dropout) and must be replayed in it. Beyond `max_graphs` shapes,
    `stats` returns None and the caller evaluates eagerly.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, amp: torch.dtype | None, max_graphs: int = 64):
        self.model, self.loss_fn, self.amp, self.max_graphs = model, loss_fn, amp, max_graphs
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], dict[str, Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.graphs)

    def _capture(self, batch: tuple[Tensor, ...]):
        inputs = tuple(t.clone() for t in batch)

        @torch.no_grad()
        def forward() -> dict[str, Tensor]:
            with autocast("cuda", self.amp):
                return self.loss_fn(self.model, inputs)[1]
        # twice: the first call of a compiled model in eval mode compiles it
        graph, stats = _capture(forward, warmup=2)
        return graph, inputs, stats

    def stats(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor] | None:
        if getattr(self.model, "_orig_mod", self.model).training:  # a compiled model's own module
            raise ValueError("EvalGraphs.stats needs the model in eval mode (model.eval())")
        shapes = tuple(tuple(t.shape) for t in batch)
        if shapes not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                return None
            self.graphs[shapes] = self._capture(batch)
        graph, inputs, stats = self.graphs[shapes]
        for static, value in zip(inputs, batch):
            static.copy_(value, non_blocking=True)
        graph.replay()
        return stats


def _capture(call: Callable[[], Any], warmup: int) -> tuple[torch.cuda.CUDAGraph, Any]:
    """`call` run `warmup` times on a side stream, then captured as a CUDA graph: (graph, the
    capture's outputs, which each replay overwrites)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = call()
    return graph, outputs


def _snapshot(parameters: list[Tensor], optimizer: torch.optim.Optimizer):
    weights = [p.detach().clone() for p in parameters]
    state = {id(p): {k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()}
             for p, s in optimizer.state.items()}
    return weights, state


@torch.no_grad()
def _restore(saved, parameters: list[Tensor], optimizer: torch.optim.Optimizer) -> None:
    """Copy the saved weights and optimizer state back *in place* (the graph holds these
    tensors); state that the warm-up created starts from zero, as a fresh optimizer's does."""
    weights, state = saved
    for p, w in zip(parameters, weights):
        p.copy_(w)
    for p, s in optimizer.state.items():
        before = state.get(id(p), {})
        for key, value in s.items():
            if not isinstance(value, Tensor):
                continue
            if key in before:
                value.copy_(before[key])
            else:
                value.zero_()

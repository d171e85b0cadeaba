"""A whole training step captured once in a CUDA graph and replayed for every batch.

The models of Tables 1, 2 and 4 are small: one training step is a few thousand kernels of a
few microseconds each, and launching them from Python takes longer than running them.
`torch.compile(mode="reduce-overhead")` graphs the forward and the backward, but the autograd
engine, gradient clipping and the optimizer still run from Python between the graphs.
`GraphedStep` captures everything a step does -- zeroing the gradients, forward, loss,
backward, clipping, optimizer update -- in one `torch.cuda.CUDAGraph`, so a step is one
launch. A step's inputs are copied into the graph's static input tensors first; a graph
serves one set of shapes (batches of varying length are padded to a few lengths, one graph
each, sharing the gradients and optimizer state).

Capture needs a few eager warm-up steps (lazy initialisation of cuBLAS, optimizer state and,
for a compiled model, compilation). They would be real training steps, so the weights and the
optimizer state are put back as they were after the capture.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

LossFn = Callable[[nn.Module, tuple[Tensor, ...]], tuple[Tensor, dict[str, Tensor]]]


class GraphedStep:
    """`step(batch)` = zero grads, loss, backward, clip, optimizer step, as one graph replay.

    `loss_fn(model, batch)` returns (loss, stats) like `Protocol.batch_loss`; the returned
    loss and stats are the graph's static outputs, overwritten by the next replay.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                 grad_clip: float, example: tuple[Tensor, ...], autocast_dtype: torch.dtype | None,
                 warmup: int = 2):
        if not example or example[0].device.type != "cuda":
            raise ValueError("GraphedStep needs a batch of CUDA tensors")
        for group in optimizer.param_groups:
            if "capturable" in group:  # Adam & co. check this before a step is captured
                group["capturable"] = True
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.grad_clip, self.autocast_dtype = grad_clip, autocast_dtype
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.inputs = tuple(t.clone() for t in example)
        saved = _snapshot(self.parameters, optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.stats = self._step()
        _restore(saved, self.parameters, optimizer)

    def _step(self) -> tuple[Tensor, dict[str, Tensor]]:
        # zeroed in place, not set to None: every graph reads and writes the same gradients
        for p in self.parameters:
            if p.grad is not None:
                p.grad.zero_()
        with _autocast(self.autocast_dtype):
            loss, stats = self.loss_fn(self.model, self.inputs)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip, foreach=True)
        self.optimizer.step()
        return loss.detach(), stats

    def step(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        shapes = [tuple(t.shape) for t in batch]
        expected = [tuple(t.shape) for t in self.inputs]
        if shapes != expected:
            raise ValueError(f"batch shapes {shapes} differ from the captured {expected}")
        for static, value in zip(self.inputs, batch):
            static.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.loss, self.stats


class StepGraphs:
    """One `GraphedStep` per batch shape, captured on first use and shared by later batches.

    A captured step bakes in the learning rate, so the graphs are captured again after the lr
    changes (at most once an epoch). Beyond `max_graphs` shapes, `step` returns None and the
    caller runs the step eagerly.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                 grad_clip: float, autocast_dtype: torch.dtype | None, max_graphs: int = 64):
        if autocast_dtype == torch.float16:
            raise ValueError("whole-step CUDA graphs need precision bf16 or fp32, not fp16 "
                             "(fp16's loss scaler decides on the host whether to step)")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.grad_clip, self.autocast_dtype, self.max_graphs = grad_clip, autocast_dtype, max_graphs
        self.graphs: dict[tuple, GraphedStep] = {}
        self.captured_lrs: list[float] = []
        self.captures = 0

    def __len__(self) -> int:
        return len(self.graphs)

    def step(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]] | None:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if lrs != self.captured_lrs:
            self.graphs.clear()
            self.captured_lrs = lrs
        shapes = tuple(tuple(t.shape) for t in batch)
        if shapes not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                return None
            # the first capture also initialises lazily built state (and compiles a compiled model)
            self.graphs[shapes] = GraphedStep(self.model, self.loss_fn, self.optimizer, self.grad_clip,
                                              batch, self.autocast_dtype, warmup=1 if self.captures else 3)
            self.captures += 1
        return self.graphs[shapes].step(batch)


class EvalGraphs:
    """Evaluation batches as CUDA graph replays: `stats(batch)` is `loss_fn(model, batch)[1]`
    under `no_grad`, one graph per batch shape, captured on first use.

    Evaluation batches of the language and music tasks are one stream or one tune each, so an
    eager evaluation is as launch-bound as a small training step. The graphs are captured with
    the model in eval mode (no dropout) and must be replayed in it. Beyond `max_graphs` shapes,
    `stats` returns None and the caller evaluates eagerly.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, autocast_dtype: torch.dtype | None,
                 max_graphs: int = 64):
        self.model, self.loss_fn, self.autocast_dtype = model, loss_fn, autocast_dtype
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], dict[str, Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.graphs)

    @torch.no_grad()
    def _forward(self, inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
        with _autocast(self.autocast_dtype):
            return self.loss_fn(self.model, inputs)[1]

    def _capture(self, batch: tuple[Tensor, ...]):
        inputs = tuple(t.clone() for t in batch)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # the first call of a compiled model in eval mode compiles it
                self._forward(inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            stats = self._forward(inputs)
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


def _autocast(dtype: torch.dtype | None):
    return torch.autocast("cuda", dtype=dtype, enabled=dtype is not None)


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

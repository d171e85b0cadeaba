"""Training-step benchmark: the released algorithm vs the fast path, side by side on one GPU.

`python -m rtlib bench [--tables 1 2 3 4] [--models rtransformer] [--out results/bench/<gpu>.json]`
(`--models rtransformer tcn rnn gru lstm transformer` times the baselines' rows too).

For each table's paper configuration (batch, sequence length, sizes) of each model it times
full training steps (forward, loss, backward, clipping, optimizer) of:

- ``reference``: what the released scripts' engine does, in fp32, eagerly, with an unfused
  optimizer (`released_variant`). For the R-Transformer: LocalRNN windows copied by
  index-select and run through cuDNN, explicit masked-softmax attention. For TCN, RNN, GRU and
  LSTM (the TCN suite's code): our model as it is, the same ops. The Transformer has no
  released code, so no reference (`NO_RELEASED_CODE`);
- ``fast``: our model as it trains (the R-Transformer's: projection-once LocalRNN,
  `scaled_dot_product_attention`), in the row's precision (bf16 autocast, or fp32 where the row
  trains in fp32), with a fused optimizer; ``fast+compile`` adds
  `torch.compile`, the other ``fast+`` variants CUDA graphs; ``fastest`` names the variant of
  the model's engine mode (`rtlib.runtime.FASTEST_ON_CUDA`).

and reports the median ms per step after warm-up, tokens/s, peak memory, and the MFU of the
fast path (FLOPs it performs, counted by `FlopCounterMode`, over the GPU's dense bf16 peak).
For the R-Transformer it also checks, in fp32, that the fast path computes the reference's
outputs and gradients (the baselines have one implementation).

Diagnostics, each written to its own JSON: ``--profile VARIANT`` (GPU time by kernel),
``--bound`` (what a faster LocalRNN could still buy), ``--equivalence``, ``--precision-check``.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .cli import OneLineParser
from .configs import MODELS, NO_RELEASED_CODE, PROFILES, TABLE_TASKS, RunConfig, run_config, with_variant
from .data.fetch import fetch_tasks
from .models import RNNConfig, build_model
from .models.config import recorded_settings
from .models.local_rnn import LocalRNN
from .paths import BENCH_DIR
from .run_folder import atomic_write_json, git_commit, variant_slug
from .padding import widened
from .runtime import FASTEST_ON_CUDA, Runtime, autocast_dtype, device_name, hidden_width, resolve_compile
from .step import GRAPH_LENGTH_MULTIPLE, autocast, clip_norm, make_optimizer, make_step
from .tasks import TASKS, make_protocol, model_protocol

# Dense bf16 tensor-core peaks (no sparsity) by GPU name, for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}
REFERENCE_VARIANT = "local_rnn_impl=reference,attention_impl=explicit"
MUSIC_STEPS_PER_TUNE = 254  # mean Nottingham training tune length (176,561 steps / 694 tunes)


def peak_flops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def sequence_length(cfg: RunConfig) -> int:
    """Positions per sequence in a benchmark step (music: the mean training tune)."""
    return {"classify": 784, "music": MUSIC_STEPS_PER_TUNE, "lm": cfg.train.seq_len}[TASKS[cfg.task].kind]


class StepRunner:
    """One model + optimizer + a fixed synthetic batch of a table's paper shapes, and the training
    step (`rtlib.step.make_step`) of engine mode `mode`, with the row's clipping rule."""

    def __init__(self, cfg: RunConfig, device: torch.device, precision: str, mode: str = "none",
                 fused: bool = True, seed: int = 0, real_data: bool = False):
        torch.manual_seed(seed)
        self.cfg, self.device, self.precision, self.kind = cfg, device, precision, TASKS[cfg.task].kind
        # the protocol gives the model, the vocabulary and the loss (and, if asked, the data)
        self.protocol = make_protocol(cfg, device) if real_data else model_protocol(cfg, device)
        model = build_model(cfg, self.protocol.shape)
        # as the engine runs the row: a recurrent one wider where that was measured faster
        self.hidden_width = hidden_width("auto", cfg.model, getattr(cfg.backbone, "hidden_size", None), device,
                                         resolve_compile(mode, cfg.model, device))
        if self.hidden_width is not None:
            model, _ = widened(model, cfg, self.protocol.shape, self.hidden_width)
        self.model = model.to(device)
        self.amp = autocast_dtype(precision, device)
        self.optimizer = make_optimizer(cfg.train.optimizer, self.model.parameters(), cfg.train.lr, fused)
        # music batches are lists of tunes; every batch below is a tuple of tensors
        self.loss_fn = self.protocol.tensor_loss
        self.train_step = make_step(self.model, self.loss_fn, self.optimizer, clip_norm(cfg.train),
                                    amp=self.amp, mode=mode)
        self.step_model = self.train_step.runs
        self.graphs = self.train_step.graphs if self.train_step.graphed else None
        self.batch = self._synthetic_batch()

    def _synthetic_batch(self) -> tuple[torch.Tensor, ...]:
        train = self.cfg.train
        g = torch.Generator().manual_seed(1)
        if self.kind == "classify":
            x = torch.randn(train.batch_size, 784, 1, generator=g)
            return x.to(self.device), torch.randint(0, 10, (train.batch_size,), generator=g).to(self.device)
        if self.kind == "music":
            roll = (torch.rand(train.batch_size, MUSIC_STEPS_PER_TUNE + 1, 88, generator=g) < 0.05).float()
            return self.protocol.collate([tune.to(self.device) for tune in roll])
        tokens = torch.randint(0, len(self.protocol.vocab), (train.batch_size, train.seq_len + 1), generator=g)
        return tokens[:, :-1].to(self.device), tokens[:, 1:].to(self.device)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.train.batch_size * sequence_length(self.cfg)

    def loss(self, batch=None) -> torch.Tensor:
        with autocast(self.device.type, self.amp):
            loss, _ = self.loss_fn(self.step_model, self.batch if batch is None else batch)
        return loss

    def step(self, batch=None) -> torch.Tensor:
        """One training step (on the fixed synthetic batch unless given one); returns the loss."""
        return self.train_step(self.batch if batch is None else batch)[0]


def time_steps(runner: StepRunner, warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time of full training steps, timed with CUDA events (host clock on CPU).

    Peak memory counts everything since the caller reset the counter before building the
    runner: weights, optimizer state, activations and compiled graphs' memory pools.
    """
    times = _times_ms(runner.step, runner.device, warmup, repeats)
    peak = torch.cuda.max_memory_allocated(runner.device) if runner.device.type == "cuda" else 0
    median = statistics.median(times)
    return dict(median_ms=median, min_ms=min(times), max_ms=max(times), repeats=repeats,
                tokens_per_s=runner.tokens_per_step / (median / 1e3), peak_memory_bytes=peak)


def _times_ms(call: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        call()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            call()
            times.append(1e3 * (time.perf_counter() - began))
    return times


def step_flops(runner: StepRunner) -> int:
    """FLOPs of one forward + backward, as the ops the model really runs count them. The
    recurrent baselines are counted with cuDNN and oneDNN off: the counter sees nothing inside
    their fused RNNs, while PyTorch's own RNN kernels do the same matmuls as ops it counts."""
    counter = FlopCounterMode(display=False)
    with counter, fused_rnns_off(isinstance(runner.cfg.backbone, RNNConfig)):
        runner.optimizer.zero_grad(set_to_none=True)
        runner.loss().backward()
    return counter.get_total_flops()


@contextlib.contextmanager
def fused_rnns_off(off: bool = True) -> Iterator[None]:
    """cuDNN and oneDNN off (where `off`), so that RNNs run as PyTorch's own ops; nothing else changes."""
    backends = (torch.backends.cudnn, torch.backends.mkldnn)
    enabled = [backend.enabled for backend in backends]
    try:
        for backend in backends:
            backend.enabled = backend.enabled and not off
        yield
    finally:
        for backend, was in zip(backends, enabled):
            backend.enabled = was


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_equivalence(cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    """fp32: relative error of the fast path's loss and gradients against the reference path,
    and of both against a float64 computation on the CPU (which of the two is off, if any).

    On CUDA the reference runs twice: through cuDNN's RNN as released, and with cuDNN off
    (PyTorch's own RNN kernels). cuDNN's fp32 RNN is not exact (the float64 comparison shows
    it), so the fast path is held to the second: the same algorithm in exact fp32 kernels.
    """
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        # no dropout, so both paths compute one function (cuDNN's RNN backward needs train mode)
        no_dropout = "dropout=0" + (",emb_dropout=0" if cfg.head is not None else "")
        runners = {name: StepRunner(with_variant(cfg, f"{variant},{no_dropout}".lstrip(",")), on, "fp32",
                                    fused=False)
                   for name, variant, on in (("reference", REFERENCE_VARIANT, device), ("fast", "", device),
                                             ("float64", "", torch.device("cpu")))}
        exact = runners["float64"]
        exact.model.double()
        exact.batch = tuple(t.double() if t.is_floating_point() else t for t in exact.batch)
        for runner in list(runners.values())[1:]:
            runner.model.load_state_dict(runners["reference"].model.state_dict())
        results = {name: _loss_and_grads(runner) for name, runner in runners.items()}
        with torch.backends.cudnn.flags(enabled=False):
            results["reference_no_cudnn"] = _loss_and_grads(runners["reference"])
        (ref_loss, ref_grads), (fast_loss, fast_grads) = results["reference_no_cudnn"], results["fast"]
        per_tensor = {name: _relative_error({name: fast_grads[name]}, {name: g}) for name, g in ref_grads.items()}
        worst = max(per_tensor, key=per_tensor.get)
        exact_grads = results["float64"][1]
        check = dict(loss_rel_error=float((fast_loss - ref_loss).abs() / ref_loss.abs()),
                     grad_rel_error=_relative_error(fast_grads, ref_grads), worst_tensor=worst,
                     worst_tensor_grad_rel_error=per_tensor[worst],
                     worst_tensor_grad_norm=float(ref_grads[worst].norm()),
                     reference_grad_rel_error_vs_float64=_relative_error(ref_grads, exact_grads),
                     fast_grad_rel_error_vs_float64=_relative_error(fast_grads, exact_grads))
        if device.type == "cuda":
            cudnn_grads = results["reference"][1]
            check.update(grad_rel_error_vs_cudnn_reference=_relative_error(fast_grads, cudnn_grads),
                         cudnn_reference_grad_rel_error_vs_float64=_relative_error(cudnn_grads, exact_grads))
        return check
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32


def _loss_and_grads(runner: StepRunner) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    runner.optimizer.zero_grad(set_to_none=True)
    loss = runner.loss()
    loss.backward()
    grads = {name: p.grad.double().cpu() for name, p in runner.model.named_parameters() if p.grad is not None}
    return loss.detach().double().cpu(), grads


def _relative_error(grads: dict[str, torch.Tensor], exact: dict[str, torch.Tensor]) -> float:
    """|| grads - exact || / || exact || over all the tensors together."""
    difference = torch.cat([(grads[name] - g).flatten() for name, g in exact.items()])
    return float(difference.norm() / torch.cat([g.flatten() for g in exact.values()]).norm().clamp_min(1e-300))


# precision "row": the row's own (configs.py: "auto", bf16 autocast on a GPU, or "fp32")
VARIANTS: dict[str, dict[str, Any]] = {
    # the released scripts' engine; its model variant is `released_variant`'s
    "reference": dict(precision="fp32", mode="none", fused=False),
    "fast": dict(variant="", precision="row", mode="none", fused=True),
    "fast+compile": dict(variant="", precision="row", mode="default", fused=True),
    # compile + CUDA graphs of forward and backward: removes most per-kernel launch cost
    "fast+graphs": dict(variant="", precision="row", mode="reduce-overhead", fused=True),
    # the whole step (forward, backward, clipping, optimizer) as one CUDA graph
    "fast+step-graph": dict(variant="", precision="row", mode="step-graph", fused=True),
    "fast+compile+step-graph": dict(variant="", precision="row", mode="default+step-graph", fused=True),
}
FASTEST = "fastest"  # on the command line: the variant of the model's engine mode on a GPU


def released_variant(model: str) -> str:
    """The model variant that runs the released scripts' algorithm: the R-Transformer's released
    LocalRNN and attention; none for the baselines, whose released code (the TCN suite:
    weight-normed convolutions, nn.RNN/GRU/LSTM through cuDNN) does what our model code does.
    ValueError for a model without released code (`NO_RELEASED_CODE`)."""
    if model in NO_RELEASED_CODE:
        raise ValueError(f"{model} has no reference: {NO_RELEASED_CODE[model]}")
    return REFERENCE_VARIANT if model == "rtransformer" else ""


def model_variants(model: str, names: list[str]) -> list[str]:
    """The variants `names` asks of `model`: ``fastest`` as the variant that runs the model's
    engine mode (`FASTEST_ON_CUDA`), each once, without ``reference`` for a model without
    released code."""
    fastest = next(name for name, spec in VARIANTS.items()
                   if name != "reference" and spec["mode"] == FASTEST_ON_CUDA[model])
    named = [fastest if name == FASTEST else name for name in names]
    return [name for name in dict.fromkeys(named) if name != "reference" or model not in NO_RELEASED_CODE]


def variant_runner(cfg: RunConfig, name: str, device: torch.device, precision: str | None = None,
                   **kwargs) -> StepRunner:
    """The StepRunner of variant `name` (`VARIANTS`), in its precision or `precision`."""
    spec = dict(VARIANTS[name])
    variant = released_variant(cfg.model) if name == "reference" else spec.pop("variant")
    if spec["precision"] == "row":
        spec["precision"] = cfg.train.precision
    spec["precision"] = precision or spec["precision"]
    return StepRunner(with_variant(cfg, variant) if variant else cfg, device, **spec, **kwargs)


def timed_variant(cfg: RunConfig, name: str, device: torch.device, warmup: int, repeats: int,
                  count_flops: bool = False,
                  prepare: Callable[[nn.Module], None] | None = None) -> dict[str, float]:
    """`time_steps` of one variant, built fresh (peak memory counted from its construction) and
    freed afterwards; `prepare` may change the model before its first (compiling) step."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runner = variant_runner(cfg, name, device)
    if prepare:
        prepare(runner.model)
    timing = time_steps(runner, warmup, repeats)
    if runner.hidden_width is not None:
        timing["hidden_width"] = runner.hidden_width
    if count_flops:
        timing["flops_per_step"] = step_flops(runner)
    del runner
    torch._dynamo.reset()  # frees compiled graphs and their memory pools
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return timing


def bench_table(table: int, device: torch.device, warmup: int, repeats: int,
                variants: list[str], log: Callable[[str], None] = print, model: str = "rtransformer",
                profile: str = "paper") -> dict[str, Any]:
    """One table's row of `model` (`profile`'s configuration; the report reads ``paper``):
    each of `variants` (`model_variants`) timed, and for the R-Transformer the fp32 check of
    the fast path against the released algorithm."""
    task = TABLE_TASKS[table]
    cfg = run_config(task, model, profile)
    result: dict[str, Any] = dict(table=table, task=task, model=model, batch_size=cfg.train.batch_size,
                                  precision=cfg.train.precision, backbone=recorded_settings(cfg.backbone),
                                  variants={})
    if model in NO_RELEASED_CODE:
        result["no_reference"] = NO_RELEASED_CODE[model]
    for name in model_variants(model, variants):
        try:
            timing = timed_variant(cfg, name, device, warmup, repeats, count_flops=name == "fast")
            result["variants"][name] = timing
            log(f"table {table} {model} {name:13s} {timing['median_ms']:8.2f} ms/step "
                f"{timing['peak_memory_bytes'] / 2**20:8.0f} MiB")
        except Exception as error:  # a variant that fails (e.g. compile) is reported, not fatal
            result["variants"][name] = dict(error=f"{type(error).__name__}: {error}"[:500])
            log(f"table {table} {model} {name}: {result['variants'][name]['error']}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    reference = result["variants"].get("reference", {}).get("median_ms")
    flops = result["variants"].get("fast", {}).get("flops_per_step")
    peak = peak_flops(device_name(device))
    for name, timing in result["variants"].items():
        if reference and "median_ms" in timing:
            timing["speedup_vs_reference"] = reference / timing["median_ms"]
        if flops and peak and "median_ms" in timing and name != "reference":
            timing["mfu"] = flops / (timing["median_ms"] / 1e3) / peak
    if model == "rtransformer":  # the baselines have one implementation: nothing to compare
        result["equivalence_fp32"] = check_equivalence(cfg, device)
    return result


MUSIC_EPOCH_SETUPS = {  # name: (variant, tunes a step)
    "reference": ("reference", 1),
    "fast, 8 tunes a step": ("fast", 8),
    "fast+step-graph, 8 tunes a step": ("fast+step-graph", 8),
}


def bench_music_epoch(device: torch.device, setups: list[str] | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Table 2 per epoch on the real 694 training tunes: one tune a step through the released
    algorithm (paper) vs 8 tunes of similar length a step through the fast path (fast profile).
    Batches are padded to a multiple of `GRAPH_LENGTH_MULTIPLE` steps: with step graphs, one
    graph per length, captured the first time it occurs, so the epoch is timed after a warm-up
    epoch."""
    result: dict[str, Any] = {}
    for name in setups or list(MUSIC_EPOCH_SETUPS):
        variant, batch_size = MUSIC_EPOCH_SETUPS[name]
        cfg = run_config("nottingham", "rtransformer", "paper", batch_size=batch_size)
        runner = variant_runner(cfg, variant, device, real_data=True)
        protocol = runner.protocol
        batches = protocol.train_batches(1)
        graphed = runner.graphs is not None
        for tunes in batches if graphed else batches[:3]:
            runner.step(protocol.as_tensors(tunes, GRAPH_LENGTH_MULTIPLE))
        synchronize(device)
        began = time.perf_counter()
        for tunes in batches:
            runner.step(protocol.as_tensors(tunes, GRAPH_LENGTH_MULTIPLE))
        synchronize(device)
        result[name] = dict(epoch_s=time.perf_counter() - began, steps=len(batches))
        if graphed:
            result[name].update(graphs=len(runner.graphs), padded_to_multiple_of=GRAPH_LENGTH_MULTIPLE)
        log(f"table 2 epoch {name:32s} {result[name]['epoch_s']:7.2f} s ({len(batches)} steps)")
        del runner
        torch._dynamo.reset()
    reference = result.get("reference", {}).get("epoch_s")
    for name, timing in result.items():
        if reference:
            timing["speedup_vs_reference"] = reference / timing["epoch_s"]
    return result


def precision_check(table: int, device: torch.device, steps: int = 300,
                    smoothing: int = 25) -> dict[str, Any]:
    """Train the same model from the same seed on the same real batches in fp32 and in bf16
    (fast path, eager) and compare the loss curves (moving averages of `smoothing` steps)."""
    curves = {}
    for precision in ("fp32", "bf16"):
        cfg = run_config(TABLE_TASKS[table], "rtransformer", "paper")
        runner = StepRunner(cfg, device, precision, fused=True, real_data=True)
        torch.manual_seed(cfg.train.seed)
        batches = runner.protocol.train_batches(1)[:steps]
        losses = [runner.step(runner.protocol.as_tensors(batch, GRAPH_LENGTH_MULTIPLE)) for batch in batches]
        curve = torch.stack(losses).float().cpu()
        curves[precision] = curve.unfold(0, smoothing, 1).mean(-1)
    deviation = ((curves["bf16"] - curves["fp32"]).abs() / curves["fp32"]).max()
    return dict(table=table, steps=steps, smoothing=smoothing,
                max_rel_deviation_of_smoothed_loss=float(deviation),
                final_smoothed_loss={k: float(v[-1]) for k, v in curves.items()},
                curves={k: [round(float(x), 4) for x in v[::10]] for k, v in curves.items()})


KERNEL_KINDS = (  # (kind, substrings of CUDA kernel names), first match wins
    ("attention", ("flash", "fmha", "attention")),
    ("LocalRNN GRU windows (triton)", ("_gru_windows", "_sum_step_gradients")),
    ("matmul", ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas")),
    ("fused pointwise/reduction (triton)", ("triton_",)),
)


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(key in lowered for key in keys)), "other")


def profile_table(table: int, variant: str, device: torch.device, steps: int = 3,
                  rows: int = 40, precision: str | None = None, model_variant: str = "") -> dict[str, Any]:
    """Where the GPU time of a training step goes: every CUDA kernel of a few steps, summed by
    name and by kind (matmul, attention, fused pointwise, other), in microseconds per step; in
    the variant's precision or `precision` (an ablation's), of the row's model or its
    `model_variant` (say ``local_rnn_impl=batched``)."""
    cfg = with_model_variant(run_config(TABLE_TASKS[table], "rtransformer", "paper"), model_variant)
    runner = variant_runner(cfg, variant, device, precision)
    time_steps(runner, warmup=3, repeats=1)
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            runner.step()
        synchronize(device)
    kernels: dict[str, list[float]] = {}
    for event in profiler.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            total = kernels.setdefault(event.name, [0.0, 0])
            total[0] += event.device_time / steps
            total[1] += 1
    by_kind: dict[str, float] = {}
    for name, (micros, _) in kernels.items():
        by_kind[kernel_kind(name)] = by_kind.get(kernel_kind(name), 0.0) + micros
    top = sorted(kernels.items(), key=lambda item: -item[1][0])[:rows]
    return dict(variant=variant, model_variant=model_variant, precision=runner.precision, steps=steps,
                gpu_us_per_step=sum(by_kind.values()),
                launches_per_step=sum(calls for _, calls in kernels.values()) / steps,
                us_per_step_by_kind=dict(sorted(by_kind.items(), key=lambda item: -item[1])),
                kernels=[dict(name=name[:120], us_per_step=micros, launches_per_step=calls / steps)
                         for name, (micros, calls) in top])


GATES = {"gru": 3, "lstm": 4, "rnn": 1}


def local_rnn_bound(cfg: RunConfig, device: torch.device, warmup: int, repeats: int,
                    variant: str = "fast+compile+step-graph") -> dict[str, Any]:
    """How fast the training step could get from a faster LocalRNN alone.

    Times, in one process: the reference step; `variant`'s step; that step with every LocalRNN
    replaced by the identity (the rest of the model's cost); and, alone, the matmuls that the
    step's LocalRNNs cannot avoid (`local_rnn_matmuls`), in cuBLAS, in the fast path's dtype. A
    LocalRNN that cost no more than its matmuls would make the step ``without + matmuls``
    (`bound_ms`): no kernel work on the LocalRNN beats that unless it beats cuBLAS at the
    matmuls themselves, and only work on the rest of the model goes below it.
    """
    reference, best, without = (
        timed_variant(cfg, name, device, warmup, repeats, prepare=prepare)["median_ms"]
        for name, prepare in (("reference", None), (variant, None), (variant, remove_local_rnns)))
    flops = step_flops(variant_runner(cfg, "fast", device))
    batch, length = cfg.train.batch_size, sequence_length(cfg)
    matmuls, matmul_flops = local_rnn_matmuls(cfg, batch, length, device,
                                              autocast_dtype("auto", device) or torch.float32)
    matmul_ms = statistics.median(_times_ms(_graphed(matmuls, device), device, warmup, repeats))
    bound = without + matmul_ms
    result = dict(table_task=cfg.task, variant=variant, batch_size=batch, length=length,
                  reference_ms=reference, variant_ms=best, without_local_rnn_ms=without,
                  local_rnn_matmuls_ms=matmul_ms, local_rnn_matmul_flops=matmul_flops,
                  local_rnn_matmul_tflops_per_s=matmul_flops / matmul_ms / 1e9, bound_ms=bound,
                  flops_per_step=flops, speedup_vs_reference=reference / best,
                  bound_speedup_vs_reference=reference / bound,
                  without_local_rnn_speedup_vs_reference=reference / without)
    peak = peak_flops(device_name(device))
    if peak:
        result.update(mfu=flops / (best / 1e3) / peak, bound_mfu=flops / (bound / 1e3) / peak)
    return result


def remove_local_rnns(model: nn.Module) -> None:
    """Replace every LocalRNN of `model` by the identity."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, LocalRNN):
                setattr(module, name, nn.Identity())


def local_rnn_matmuls(cfg: RunConfig, batch: int, length: int, device: torch.device,
                      dtype: torch.dtype) -> tuple[Callable[[], None], int]:
    """A call that does the matmuls of one training step's LocalRNNs, and their FLOPs.

    Per LocalRNN: the input projection of the padded sequence and its two gradients; the
    window-1 recurrent matmuls W_hh h and their input gradients; W_hh's gradient as one matmul
    over all steps. Random operands of the real shapes; the results are thrown away.
    """
    backbone = cfg.backbone
    d, window = backbone.d_model, backbone.window
    gates = GATES[backbone.cell] * d
    local_rnns = backbone.levels * backbone.n_local
    windows, padded = batch * length, batch * (length + window - 1)

    def operand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    x, grad_projected, w_ih, w_hh = operand(padded, d), operand(padded, gates), operand(gates, d), operand(gates, d)
    states, grad_gates = operand(window - 1, windows, d), operand(window - 1, windows, gates)

    def matmuls() -> None:
        for _ in range(local_rnns):
            x @ w_ih.t()
            for step in range(window - 1):
                states[step] @ w_hh.t()
                grad_gates[step] @ w_hh
            grad_gates.view(-1, gates).t() @ states.view(-1, d)
            grad_projected @ w_ih
            grad_projected.t() @ x

    flops = local_rnns * 2 * d * gates * (3 * padded + 3 * (window - 1) * windows)
    return matmuls, flops


def _graphed(call: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """On CUDA, `call` captured once as a CUDA graph (its replay has no launch overhead)."""
    if device.type != "cuda":
        return call
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):  # cuBLAS sets up its workspace outside the capture
        call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


ENGINE_MODES = ("none", "default", "step-graph", "default+step-graph")


def engine_modes(table: int, model: str, device: torch.device, steps: int = 100,
                 data_dir: Path | None = None, modes: tuple[str, ...] = ENGINE_MODES,
                 timing_profile: str = "paper", precision: str | None = None,
                 model_variant: str = "", pad_hidden: str = "auto") -> dict[str, Any]:
    """Which engine mode (`rtlib.runtime`) trains one cell fastest, and correctly, through the
    engine itself (`rtlib.train.train`).

    Speed: the `timing_profile` configuration in its precision (or `precision`: an ablation's),
    of its model or its `model_variant` (say ``local_rnn_impl=batched``), 3 epochs of `steps`
    steps with a small evaluation; the third epoch's seconds (after compilation and graph
    capture) a step. `pad_hidden` as in `rtlib.runtime.Runtime`: ``off`` times a recurrent row
    at its configured width where the engine would widen it (`rtlib.padding`).
    Correctness: the smoke model in fp32 without dropout trains 2 epochs in each mode and
    eagerly; the largest relative difference of their losses. Dropout: two steps on one batch
    with lr 0 must see different dropout masks (a graph that replayed one mask would not).
    """
    import tempfile

    from .train import train

    task = TABLE_TASKS[table]
    quiet = dict(log=lambda message: None, data_dir=data_dir)
    timing = with_model_variant(run_config(task, model, timing_profile, epochs=3, max_steps=steps,
                                           eval_limit=_small_eval(task), precision=precision), model_variant)
    smoke = with_model_variant(run_config(task, model, "smoke", epochs=2, precision="fp32"), model_variant)
    no_dropout = with_variant(smoke, "dropout=0" + (",emb_dropout=0" if smoke.head is not None else ""))

    widths = set()

    def curve(cfg, mode, folder):
        record = train(cfg, Path(folder) / mode, Runtime(device=str(device), compile=mode, pad_hidden=pad_hidden),
                       **quiet)
        if cfg is timing:
            widths.add(record["engine"].get("hidden_width"))
        return record["curve"]

    def losses(entries):
        return [entry[key] for entry in entries for key in ("train_loss", "test_loss")]

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        eager = losses(curve(no_dropout, "none", folder + "/eager"))
        for mode in modes:
            try:
                timed = curve(timing, mode, folder + "/timed")
                same = losses(curve(no_dropout, mode, folder + "/same"))
                masks_vary = dropout_masks_vary(smoke, mode, device, data_dir)
            except Exception as error:  # a mode that fails is a finding, not a crash
                results[mode] = dict(works=False, error=f"{type(error).__name__}: {error}"[:300])
                continue
            results[mode] = dict(
                works=True, ms_per_step=1000 * (timed[2]["elapsed_s"] - timed[1]["elapsed_s"]) / steps,
                max_rel_loss_difference_vs_eager=max(abs(a - b) / abs(b) for a, b in zip(same, eager)),
                dropout_masks_vary=masks_vary)
    correct = {mode: r for mode, r in results.items() if r["works"] and r["dropout_masks_vary"] is not False
               and r["max_rel_loss_difference_vs_eager"] < 1e-3}
    fastest = min(correct, key=lambda mode: correct[mode]["ms_per_step"]) if correct else None
    width = max((w for w in widths if w is not None), default=None)  # the compiled modes widen, eager does not
    return dict(table=table, task=task, model=model, model_variant=model_variant, steps=steps,
                timing_profile=timing_profile, precision=timing.train.precision, modes=results,
                fastest_correct=fastest, pad_hidden=pad_hidden,
                **({"hidden_width": width} if width is not None else {}))


def with_model_variant(cfg: RunConfig, model_variant: str) -> RunConfig:
    """`cfg` with a model setting changed for timing (`with_variant`), or as it is for ''."""
    return with_variant(cfg, model_variant) if model_variant else cfg


def _kind(kind: str, model_variant: str) -> str:
    """A bench JSON's kind, with the model variant it timed: 'engine_modes_local_rnn_impl-batched'."""
    return f"{kind}_{variant_slug(model_variant)}" if model_variant else kind


def dropout_masks_vary(cfg: RunConfig, mode: str, device: torch.device,
                       data_dir: Path | None = None) -> bool | None:
    """Two training steps of `mode` on one batch with lr 0: do their losses differ, as fresh
    dropout masks make them? None where the model has no dropout."""
    if not (cfg.backbone.dropout or (cfg.head is not None and cfg.head.emb_dropout)):
        return None
    protocol = model_protocol(cfg, device, data_dir)
    model = build_model(cfg, protocol.shape).to(device).train()
    optimizer = make_optimizer("sgd", model.parameters(), 0.0, fused=device.type == "cuda")
    step = make_step(model, protocol.tensor_loss, optimizer, None, mode=resolve_compile(mode, cfg.model, device),
                     inputs=protocol.as_tensors)
    batch = protocol.train_batches(1)[0]
    first, second = (float(step(batch)[0]) for _ in range(2))
    return first != second


def _small_eval(task: str) -> int:
    """An evaluation limit that keeps the timed epochs' evaluation short (examples, tunes, tokens)."""
    return {"mnist": 320, "nottingham": 8, "ptb-char": 4000, "ptb-word": 2000}[task]


def _out_file(out: Path | None, kind: str, device: torch.device) -> Path:
    """Where a bench JSON goes: `out`, or its default name ``[<kind>_]<gpu>.json`` in
    results/bench, or in `out` when that is a folder (the device tool's $OUT is one)."""
    name = "_".join(filter(None, [kind, device_name(device).replace(" ", "_")])) + ".json"
    if out is None:
        return BENCH_DIR / name
    return out / name if out.is_dir() else out


def _write_check(out: Path | None, kind: str, device: torch.device, **results: Any) -> None:
    """A check's JSON (`_out_file`)."""
    out = _out_file(out, kind, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, dict(device=device_name(device), torch_version=torch.__version__,
                                git_commit=git_commit(), **results))
    print(f"wrote {out}")


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="rtlib bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--models", nargs="+", default=["rtransformer"], choices=list(MODELS),
                        help="whose rows to time (default: rtransformer); the Transformer has no reference")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, FASTEST],
                        help="default: all; 'fastest': the variant of each model's engine mode on a GPU")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="the JSON to write, or a folder to write it in under its "
                                                 "default name (default: results/bench/[KIND_]GPU.json)")
    parser.add_argument("--precision-check", type=int, nargs="*", choices=[1, 2, 3, 4],
                        help="only compare bf16 with fp32 training curves for these tables")
    parser.add_argument("--music-epoch", nargs="*", choices=list(MUSIC_EPOCH_SETUPS),
                        help="also time a whole Nottingham epoch of the R-Transformer with these setups "
                             "(default: all; needs the data)")
    parser.add_argument("--equivalence", action="store_true",
                        help="only check the fp32 equivalence (with a float64 CPU ground truth)")
    parser.add_argument("--profile", choices=list(VARIANTS),
                        help="only profile this variant: GPU time a step by kernel and by kind")
    parser.add_argument("--engine-modes", nargs="+", choices=list(MODELS), metavar="MODEL",
                        help="only time and check every engine mode of these models (needs the data)")
    parser.add_argument("--steps", type=int, default=100, help="steps an epoch for --engine-modes")
    parser.add_argument("--modes", nargs="+", choices=ENGINE_MODES, default=list(ENGINE_MODES),
                        help="the engine modes --engine-modes tries (default: all; 'none step-graph' "
                             "compiles nothing, so it takes seconds a cell)")
    parser.add_argument("--precision", choices=["bf16", "fp32"],
                        help="--engine-modes and --profile run the steps in this precision (default: "
                             "each row's), e.g. fp32 to price the fp32 ablations and see where their time goes")
    parser.add_argument("--model-variant", default="", metavar="SETTING=VALUE[,...]",
                        help="--engine-modes and --profile time the rows with this model setting changed "
                             "(a run's --variant, e.g. local_rnn_impl=batched: the LocalRNN's matmul steps "
                             "instead of its fused GRU kernels); the JSON's name says it")
    parser.add_argument("--pad-hidden", choices=["auto", "off"], default="auto",
                        help="--engine-modes: 'off' times the recurrent rows the engine widens on a GPU "
                             "(rtlib.padding) at their configured width, as before the widening")
    parser.add_argument("--bound", action="store_true",
                        help="only bound what a faster LocalRNN can buy: the step without LocalRNNs "
                             "plus their matmuls alone, against the reference and the fastest variant")
    parser.add_argument("--sharing", nargs="+", metavar="ROUND",
                        help="only time jobs sharing the GPU (rtlib.sharing), one round each, e.g. "
                             "4:rtransformer 4:rtransformer*3 4:rtransformer*2+3:rtransformer")
    parser.add_argument("--sharing-seconds", type=float, default=15.0,
                        help="how long each --sharing round runs its steps")
    parser.add_argument("--sharing-profile", choices=PROFILES, default="paper",
                        help="whose configurations the --sharing jobs train (default: paper)")
    return parser


def _run_precision_checks(args: argparse.Namespace, device: torch.device) -> None:
    checks = [precision_check(table, device) for table in args.precision_check]
    for check in checks:
        print(f"table {check['table']}: bf16 vs fp32 smoothed loss, max relative deviation "
              f"{check['max_rel_deviation_of_smoothed_loss']:.4f}; final {check['final_smoothed_loss']}")
    _write_check(args.out, "precision", device, checks=checks)


def _run_equivalence_checks(args: argparse.Namespace, device: torch.device) -> None:
    checks = {table: check_equivalence(run_config(TABLE_TASKS[table], "rtransformer", "paper"), device)
              for table in args.tables}
    for table, check in checks.items():
        print(f"table {table}: fast vs reference {check['grad_rel_error']:.2e} (vs cuDNN reference "
              f"{check.get('grad_rel_error_vs_cudnn_reference', float('nan')):.2e}); vs float64: reference "
              f"{check['reference_grad_rel_error_vs_float64']:.2e}, fast {check['fast_grad_rel_error_vs_float64']:.2e}"
              f", cuDNN reference {check.get('cudnn_reference_grad_rel_error_vs_float64', float('nan')):.2e}")
    _write_check(args.out, "equivalence", device, tables=checks)


def _run_profiles(args: argparse.Namespace, device: torch.device) -> None:
    profiles = {table: profile_table(table, args.profile, device, precision=args.precision,
                                     model_variant=args.model_variant) for table in args.tables}
    for table, profile in profiles.items():
        print(f"table {table}, {args.profile} in {profile['precision']}: {profile['gpu_us_per_step']:.0f} us of GPU time a step "
              f"in {profile['launches_per_step']:.0f} kernels")
        for kind, micros in profile["us_per_step_by_kind"].items():
            print(f"  {kind:36s} {micros:8.0f} us")
        for kernel in profile["kernels"][:15]:
            print(f"  {kernel['us_per_step']:8.1f} us {kernel['launches_per_step']:5.1f}x {kernel['name'][:90]}")
    _write_check(args.out, _kind("profile", args.model_variant), device, tables=profiles)


def _run_engine_modes(args: argparse.Namespace, device: torch.device) -> None:
    cells = []
    for table in args.tables:
        for model in args.engine_modes:
            cells.append(engine_modes(table, model, device, args.steps, modes=tuple(args.modes),
                                      precision=args.precision, model_variant=args.model_variant,
                                      pad_hidden=args.pad_hidden))
            timing = {mode: round(r["ms_per_step"], 2) if r["works"] else r["error"][:60]
                      for mode, r in cells[-1]["modes"].items()}
            print(f"table {table} {model}: fastest correct {cells[-1]['fastest_correct']}; ms/step {timing}")
            kind = _kind("engine_modes", args.model_variant) + ("_pad-hidden-off" if args.pad_hidden == "off" else "")
            _write_check(args.out, kind, device, cells=cells)  # a cut-off run keeps it


def _run_bounds(args: argparse.Namespace, device: torch.device) -> None:
    bounds = {}
    for table in args.tables:
        cfg = run_config(TABLE_TASKS[table], "rtransformer", "paper")
        # step graphs need CUDA; on a CPU the bound is taken against the eager fast path
        variant = "fast+compile+step-graph" if device.type == "cuda" else "fast"
        bound = bounds[table] = local_rnn_bound(cfg, device, args.warmup, args.repeats, variant)
        print(f"table {table}: reference {bound['reference_ms']:.2f} ms, {bound['variant']} "
              f"{bound['variant_ms']:.2f} ms ({bound['speedup_vs_reference']:.1f}x); without LocalRNNs "
              f"{bound['without_local_rnn_ms']:.2f} ms + their matmuls {bound['local_rnn_matmuls_ms']:.2f} ms"
              f" = {bound['bound_ms']:.2f} ms ({bound['bound_speedup_vs_reference']:.1f}x)")
        _write_check(args.out, "bound", device, tables=bounds)  # after each table: a cut-off run keeps it


def _run_sharing(args: argparse.Namespace, device: torch.device) -> None:
    from .reproduce import mps_daemon
    from .sharing import measure, parse_round

    rounds = [parse_round(text) for text in args.sharing]
    name = device_name(device)
    out = _out_file(args.out, "sharing", device)
    with mps_daemon(enabled=device.type == "cuda" and max(map(len, rounds)) > 1) as mps:
        header = dict(device=name, torch_version=torch.__version__, git_commit=git_commit(), mps=mps,
                      date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

        def write(result: dict) -> None:  # after each round, so a cut-off run keeps what it measured
            atomic_write_json(out, {**header, **result, "complete": len(result["rounds"]) == len(rounds)})

        result = measure(rounds, str(device), seconds=args.sharing_seconds, profile=args.sharing_profile,
                         warmup=args.warmup, on_round=write)
    report = {**header, **result}
    for row in report["rounds"]:
        gain = "" if row["gain"] is None else f"gain {row['gain']:.2f}  "
        print(f"{row['jobs']:<48} {gain}steps/s " + " ".join(f"{job['steps_per_s']:.3g}" for job in row["per_job"]))
    print(f"wrote {out}")


def _run_benchmark(args: argparse.Namespace, device: torch.device) -> None:
    name = device_name(device)
    report = dict(device=name, torch_version=torch.__version__, git_commit=git_commit(),
                  peak_bf16_flops=peak_flops(name), warmup=args.warmup, repeats=args.repeats,
                  date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), tables=[])
    out = _out_file(args.out, "", device)
    # the rows' shapes come from their data (vocabularies, MNIST): a missing data set stops the
    # benchmark now, in one line, rather than as an error in every row (batch ad's Tables 1 and 2)
    fetch_tasks(sorted({TABLE_TASKS[table] for table in args.tables}))
    out.parent.mkdir(parents=True, exist_ok=True)
    for table in args.tables:  # written after each row, so a cut-off run keeps what it measured
        for model in args.models:
            report["tables"].append(bench_table(table, device, args.warmup, args.repeats, args.variants,
                                                model=model))
            if table == 2 and model == "rtransformer" and args.music_epoch is not None:
                report["tables"][-1]["epoch"] = bench_music_epoch(device, args.music_epoch)
            atomic_write_json(out, report)
    print(f"wrote {out}")


# the option that asks for one check only, and the check; without any, the benchmark
CHECKS = (("precision_check", _run_precision_checks), ("equivalence", _run_equivalence_checks),
          ("profile", _run_profiles), ("engine_modes", _run_engine_modes), ("bound", _run_bounds),
          ("sharing", _run_sharing))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.pad_hidden != "auto" and not args.engine_modes:
        parser.error(f"--pad-hidden {args.pad_hidden} times only with --engine-modes")
    if args.model_variant:
        if not (args.engine_modes or args.profile):
            parser.error(f"--model-variant {args.model_variant!r} times only with --engine-modes or --profile")
        for table in args.tables:
            for model in args.engine_modes or ["rtransformer"]:
                try:
                    with_model_variant(run_config(TABLE_TASKS[table], model, "paper"), args.model_variant)
                except ValueError as error:
                    parser.error(f"--model-variant {args.model_variant!r}: {error}")
    run = next((check for option, check in CHECKS if getattr(args, option)), _run_benchmark)
    run(args, torch.device(args.device))
    return 0

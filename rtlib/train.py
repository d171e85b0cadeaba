"""One training engine for every task and model: seed, train, evaluate, checkpoint, resume, record.

A run lives in one folder (``out_dir``, `rtlib.run_folder`): ``checkpoint.pt`` (everything
needed to resume, the epoch log included, rewritten atomically every few minutes and at every
epoch end), ``best.pt`` (the weights of the best validation epoch; of the last epoch for
seq-MNIST, which has no validation split), ``log.jsonl`` (one line per epoch, rewritten from
the checkpoint) and, once finished, ``record.json``. One process at a time trains in a folder.
A run killed at any moment and resumed from its checkpoint finishes with exactly the record of
an uninterrupted run (bitwise on CPU, timings aside): the checkpoint holds model, optimizer,
schedule, every RNG state, the position in the epoch and the epoch log, and batch order is a
function of (seed, epoch) alone.
"""
from __future__ import annotations

import math
import os
import platform
import random
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .configs import RunConfig, Schedule, check_settings
from .models import build_model
from .models.local_rnn import enable_compile
from .paths import REPO
from .run_folder import (RunFolder, copy_record, load_checkpoint, load_weights, read_record, safe_child,
                         writable_folder)
from .runtime import compile_plan, resolve_compile
from .step_graph import EvalGraphs, StepGraphs
from .tasks import TASKS, Protocol, check_sequence_lengths, make_protocol, metric_from_stats

RECORD_VERSION = 2  # 2: test metric every epoch, selections, precision, engine, deviations


class ConfigMismatchError(ValueError):
    """Resuming a run folder whose checkpoint was made with other settings."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf: the run is recorded as diverged."""


class RunInterrupted(Exception):
    """Raised by the `fail_at_step` test hook to simulate a kill at a chosen step."""


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) in one place."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_states() -> dict[str, Any]:
    """Every RNG state, in types that `torch.load(weights_only=True)` accepts."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached)
    return dict(python=random.getstate(), numpy=numpy_state,
                torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class TrainState:
    """Everything besides model/optimizer weights that a resumed run must restore."""
    epoch: int = 0                    # completed epochs
    step: int = 0                     # completed steps of the current epoch
    global_step: int = 0
    train_loss_sum: float = 0.0       # this epoch so far
    train_count: float = 0.0
    valid_losses: list[float] = field(default_factory=list)
    best_valid_loss: float | None = None
    best_epoch: int | None = None
    elapsed_s: float = 0.0            # wall time of earlier sessions of this run
    log: list[dict[str, Any]] = field(default_factory=list)  # one entry per completed epoch
    best_sha256: str | None = None    # of the weights best.pt holds


def resolve_device(device: str | None) -> torch.device:
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


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    name, lr = cfg.train.optimizer, cfg.train.lr
    fused = dict(fused=True) if next(model.parameters()).is_cuda else {}
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, **fused)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, **fused)
    raise ValueError(f"optimizer={name!r} is not one of ['adam', 'sgd']")


def anneal(schedule: Schedule, epoch: int, valid_losses: list[float], valid_loss: float | None) -> float:
    """The factor to multiply the lr by after 1-based `epoch` (released scripts' rules)."""
    if schedule.kind == "step":
        return schedule.factor if epoch % schedule.every == 0 else 1.0
    if valid_loss is None or epoch <= schedule.after or not valid_losses:
        return 1.0
    worst_recent = max(valid_losses[-schedule.window:])
    plateaued = valid_loss > worst_recent if schedule.strict else valid_loss >= worst_recent
    return schedule.factor if plateaued else 1.0


def git_commit() -> str:
    """The commit of the code that ran, "-dirty" when tracked code differs from it (files under
    results/ are data, not code); $RTLIB_GIT_COMMIT where the tree has no .git, and "unknown"
    where the project is not a checkout of its own (say, a copy inside another repository)."""
    if os.environ.get("RTLIB_GIT_COMMIT"):
        return os.environ["RTLIB_GIT_COMMIT"]
    root = REPO

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or Path(top).resolve() != root:
            return "unknown"
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
        return f"{sha}{'-dirty' if dirty else ''}" if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def run_id(cfg: RunConfig) -> str:
    """The run's name, of safe characters only (it names its folder and its record's copy)."""
    variant = f"_{cfg.variant.replace('=', '-').replace(',', '_')}" if cfg.variant else ""
    name = f"{cfg.task}_{cfg.model}_{cfg.profile}{variant}_lr{cfg.train.lr:g}_seed{cfg.train.seed}"
    safe_child(".", name)
    return name


def evaluate(protocol: Protocol, model: nn.Module, split: str, amp: torch.dtype | None,
             graphs: EvalGraphs | None = None) -> dict[str, float]:
    """Loss and metric of `model` on a split; with `graphs`, batches replay CUDA graphs of the
    (compiled) model's forward where they can, else run eagerly."""
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for batch in protocol.eval_batches(split):
            stats = graphs.stats(protocol.as_tensors(batch)) if graphs is not None else None
            if stats is None:
                with autocast(protocol.device, amp):
                    _, stats = protocol.batch_loss(model, batch)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + value
    stats = {key: float(value) for key, value in totals.items()}
    return dict(loss=stats["loss_sum"] / stats["count"], metric=metric_from_stats(protocol.task, stats))


def _shape(batch: Any) -> tuple:
    """Shapes of a batch's tensors (music batches are lists of tunes)."""
    tensors = batch if isinstance(batch, (list, tuple)) else [batch]
    return tuple(tuple(t.shape) for t in tensors)


def autocast(device: torch.device, amp: torch.dtype | None):
    """Autocast to `amp` (bf16/fp16), or nothing when it is None (fp32)."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm
    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True)


def train(cfg: RunConfig, out_dir: str | Path, *, device: str | None = None, compile_mode: str = "auto",
          data_dir: str | Path | None = None, resume: bool = False,
          max_minutes: float | None = None, checkpoint_minutes: float = 5.0,
          checkpoint_every_steps: int | None = None, results_dir: str | Path | None = None,
          progress: bool | None = None, callbacks: list[Callable[[dict], None]] = (),
          fail_at_step: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train `cfg` in `out_dir`; returns the run record, or None when `max_minutes` ran out first.

    `resume=True` continues from ``out_dir/checkpoint.pt``, or returns the finished record
    (writing its copy in `results_dir` if that is missing); without it an existing checkpoint
    is an error rather than silently overwritten. Settings are checked before any folder is made
    or data read; the folder is locked for the whole call (`rtlib.run_folder`).
    `compile_mode` is the engine mode (`rtlib.runtime`); it is not part of the run's identity, so
    a run may be resumed under another one.
    """
    check_settings(cfg)
    check_sequence_lengths(cfg)
    run_device = resolve_device(device)
    engine_mode = resolve_compile(compile_mode, cfg.model, run_device)
    results = None if results_dir is None else writable_folder(Path(results_dir))
    folder = RunFolder(out_dir)
    config = cfg.to_dict()
    with folder.claim():
        if resume and folder.record.exists():
            return _finished_record(folder, cfg, results, log)
        folder.check_start(resume)
        checkpoint = _checkpoint_to_resume(folder, config) if resume and folder.checkpoint.exists() else None
        amp = autocast_dtype(cfg.train.precision, run_device)
        seed_all(cfg.train.seed)
        protocol = make_protocol(cfg, run_device, data_dir)
        model = build_model(cfg, protocol.shape).to(run_device)
        optimizer = make_optimizer(cfg, model)
        scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
        state = TrainState()
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scaler.load_state_dict(checkpoint["scaler"])
            state = _restored_state(checkpoint, folder, log)
            set_rng_states(checkpoint["rng"])
            log(f"resumed {folder.path} at epoch {state.epoch + 1}, step {state.step}")
        step_model, mark_step, graphs, eval_graphs = model, lambda: None, None, None
        torch_compile_mode, graphed = compile_plan(engine_mode)
        if torch_compile_mode:
            enable_compile()
            step_model = torch.compile(model, mode=torch_compile_mode)
            if torch_compile_mode == "reduce-overhead":  # CUDA graphs: a new step may reuse output memory
                mark_step = torch.compiler.cudagraph_mark_step_begin
        parameters = [p for p in model.parameters() if p.requires_grad]
        if graphed:
            # the released music script clips before backward, which does nothing: left out here
            clip = None if cfg.train.clip_before_backward else cfg.train.grad_clip
            graphs = StepGraphs(step_model, protocol.tensor_loss, optimizer, clip, amp)
            eval_graphs = EvalGraphs(step_model, protocol.tensor_loss, amp)
        num_parameters = sum(p.numel() for p in parameters)

        session_start = time.monotonic()
        last_checkpoint = session_start
        elapsed_before = state.elapsed_s  # wall time of earlier sessions of this run
        check_every = 1 if run_device.type == "cpu" else 50

        def save_checkpoint() -> None:
            state.elapsed_s = elapsed_before + time.monotonic() - session_start
            folder.save_checkpoint(dict(config=config, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                        scaler=scaler.state_dict(), state=vars(state).copy(), rng=rng_states()))

        engine = dict(compile=engine_mode, requested=compile_mode, fused_optimizer=run_device.type == "cuda")

        def diverge(what: str) -> None:
            message = (f"{what} in epoch {state.epoch + 1} near step {state.step} at lr "
                       f"{optimizer.param_groups[0]['lr']:g}: the run diverged; its record "
                       f"({folder.record}) says so. Lower the lr or clip gradients")
            state.elapsed_s = elapsed_before + time.monotonic() - session_start
            folder.write_record(_record(cfg, amp, state, num_parameters, run_device, engine,
                                        status="diverged", valid=None, test=None,
                                        selection="none (diverged)", error=message),
                                results, run_id(cfg))
            raise NonFiniteLossError(message)

        def check_finite(loss_sum: torch.Tensor) -> None:
            value = float(loss_sum)
            if not math.isfinite(value):
                diverge(f"training loss became {value}")

        def evaluated(split: str) -> dict[str, float]:
            result = evaluate(protocol, model, split, amp, eval_graphs)
            if not all(math.isfinite(value) for value in result.values()):  # a perplexity past exp's range
                diverge(f"{split} loss {result['loss']:.6g} gives {split} {protocol.task.metric} {result['metric']}")
            return result

        while state.epoch < cfg.train.epochs:
            epoch = state.epoch + 1
            batches = protocol.train_batches(epoch)
            if cfg.train.max_steps is not None:
                batches = batches[:cfg.train.max_steps]
            main_shape = _shape(batches[0])
            model.train()
            # summed on the device: reading them every step would stall the GPU
            running = torch.zeros((), device=run_device, dtype=torch.float64) + state.train_loss_sum
            count = torch.zeros((), device=run_device, dtype=torch.float64) + state.train_count
            bar = _progress(len(batches), f"epoch {epoch}/{cfg.train.epochs}", progress)
            bar.update(state.step)
            for step_index in range(state.step, len(batches)):
                if fail_at_step is not None and state.global_step == fail_at_step:
                    raise RunInterrupted(f"simulated kill before global step {fail_at_step}")
                batch = batches[step_index]
                graph_result = graphs.step(protocol.as_tensors(batch)) if graphs is not None else None
                if graph_result is not None:
                    stats = graph_result[1]
                else:
                    mark_step()
                    optimizer.zero_grad(set_to_none=True)
                    if cfg.train.clip_before_backward and cfg.train.grad_clip:
                        # the released music script's order: clips the zeroed gradients, so a no-op
                        nn.utils.clip_grad_norm_(parameters, cfg.train.grad_clip)
                    # the compiled model serves the epoch's common batch shape; a ragged last batch
                    # runs eagerly rather than triggering another compilation
                    batch_model = step_model if _shape(batch) == main_shape else model
                    with autocast(run_device, amp):
                        loss, stats = protocol.batch_loss(batch_model, batch)
                    scaler.scale(loss).backward()
                    if cfg.train.grad_clip and not cfg.train.clip_before_backward:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(parameters, cfg.train.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                running += stats["loss_sum"]
                count += stats["count"]
                state.step, state.global_step = step_index + 1, state.global_step + 1
                bar.update(1)
                if state.global_step % check_every == 0:
                    check_finite(running)
                now = time.monotonic()
                due_by_steps = checkpoint_every_steps and state.global_step % checkpoint_every_steps == 0
                if due_by_steps or now - last_checkpoint > 60 * checkpoint_minutes:
                    check_finite(running)
                    state.train_loss_sum, state.train_count = float(running), float(count)
                    save_checkpoint()
                    last_checkpoint = now
                if max_minutes is not None and now - session_start > 60 * max_minutes and state.step < len(batches):
                    check_finite(running)
                    state.train_loss_sum, state.train_count = float(running), float(count)
                    save_checkpoint()
                    bar.close()
                    log(f"time budget of {max_minutes} min reached in epoch {epoch}; checkpoint saved, "
                        "resume to continue")
                    return None
            bar.close()
            check_finite(running)
            train_loss = float(running) / max(float(count), 1.0)

            entry = dict(epoch=epoch, lr=optimizer.param_groups[0]["lr"], train_loss=train_loss)
            valid_loss = None
            if protocol.valid_split:
                valid = evaluated("valid")
                valid_loss = valid["loss"]
                entry.update(valid_loss=valid_loss, valid_metric=valid["metric"])
                if state.best_valid_loss is None or valid_loss < state.best_valid_loss:
                    state.best_valid_loss, state.best_epoch = valid_loss, epoch
                    state.best_sha256 = folder.stage_best(model.state_dict())
            else:  # seq-MNIST has no validation split: the reported weights are the final epoch's
                state.best_sha256 = folder.stage_best(model.state_dict())
            # test every epoch, as the released scripts print it, for the report's side-by-side
            # selection rules; selection itself never looks at it
            test = evaluated("test")
            entry.update(test_loss=test["loss"], test_metric=test["metric"])
            factor = anneal(cfg.train.schedule, epoch, state.valid_losses, valid_loss)
            for group in optimizer.param_groups:
                group["lr"] *= factor
            if valid_loss is not None:
                state.valid_losses.append(valid_loss)
            state.epoch, state.step, state.train_loss_sum, state.train_count = epoch, 0, 0.0, 0.0
            entry["elapsed_s"] = elapsed_before + time.monotonic() - session_start
            state.log.append(entry)
            save_checkpoint()
            folder.settle(state.best_sha256, state.log)
            last_checkpoint = time.monotonic()
            log(_format_entry(entry, protocol))
            for callback in callbacks:
                callback(entry)

        record = folder.write_record(_finish(cfg, protocol, model, amp, state, folder, num_parameters,
                                             run_device, engine, eval_graphs), results, run_id(cfg))
    log(f"finished {run_id(cfg)}: test {record['metric']} = {record['test_metric']:.4f} "
        f"(paper {record['paper_value']})")
    return record


def _finished_record(folder: RunFolder, cfg: RunConfig, results: Path | None,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """The record of a finished run, its copy in `results` made if missing or stale."""
    record = read_record(folder.record)
    if record["config"] != cfg.to_dict():
        raise ConfigMismatchError(_mismatch_message(folder.record, record["config"], cfg.to_dict()))
    copied = copy_record(record, results, run_id(cfg)) if results is not None else None
    log(f"{folder.path}: already {record.get('status', 'finished')}; record kept"
        + (f"; its missing copy written to {copied}" if copied else ""))
    return record


def _checkpoint_to_resume(folder: RunFolder, config: dict[str, Any]) -> dict[str, Any]:
    """The folder's checkpoint, checked (content hash, settings) before anything is built."""
    checkpoint = load_checkpoint(folder.checkpoint)
    if checkpoint["config"] != config:
        raise ConfigMismatchError(_mismatch_message(folder.checkpoint, checkpoint["config"], config))
    return checkpoint


def _restored_state(checkpoint: dict[str, Any], folder: RunFolder, log: Callable[[str], None]) -> TrainState:
    """The checkpoint's training state, with the folder's other files brought in line with it."""
    state = TrainState(**checkpoint["state"])
    if "log" not in checkpoint["state"]:
        log(f"{folder.checkpoint} predates content hashes and epoch logs in checkpoints: loaded "
            "unchecked, its log taken from log.jsonl")
        state.log = folder.logged_entries(state.epoch)
    folder.settle(state.best_sha256, state.log)
    return state


def selection_rules(curve: list[dict[str, Any]], higher_is_better: bool) -> dict[str, dict[str, Any]]:
    """The test metric under four reporting rules, from the per-epoch log: the best validation
    epoch (how our runs select; absent without a validation split), the last epoch, the mean of
    the last 3 epochs (what Bai et al. say they report) and the best test epoch (optimistic:
    it selects on test)."""
    tested = [entry for entry in curve if "test_metric" in entry]
    if not tested:
        return {}
    last_3 = tested[-3:]
    rules = dict(
        last_epoch=dict(epoch=tested[-1]["epoch"], test_metric=tested[-1]["test_metric"]),
        mean_last_3=dict(epochs=[entry["epoch"] for entry in last_3],
                         test_metric=sum(entry["test_metric"] for entry in last_3) / len(last_3)))
    validated = [entry for entry in tested if "valid_loss" in entry]
    if validated:
        best = min(validated, key=lambda entry: entry["valid_loss"])  # the first of equals, as the engine
        rules["best_valid"] = dict(epoch=best["epoch"], test_metric=best["test_metric"])
    pick = max if higher_is_better else min
    best_test = pick(tested, key=lambda entry: entry["test_metric"])
    rules["best_test"] = dict(epoch=best_test["epoch"], test_metric=best_test["test_metric"],
                              optimistic=True)
    return rules


def runtime_deviations(amp: torch.dtype | None, engine: dict[str, Any]) -> list[str]:
    """How this run's execution differs from the released scripts' (fp32, eager, PyTorch 1.0)."""
    deviations = []
    if amp is not None:
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
        deviations.append(f"precision: {name} autocast (the released scripts train in fp32)")
    if engine["compile"] != "none":
        deviations.append(f"engine: {engine['compile']} (the same computation compiled and/or "
                          "replayed as CUDA graphs; rounding differs from eager)")
    if engine["fused_optimizer"]:
        deviations.append("optimizer: PyTorch's fused CUDA kernel (the same update rule)")
    return deviations


def _finish(cfg, protocol, model, amp, state, folder, num_parameters, run_device, engine,
            eval_graphs) -> dict[str, Any]:
    """The record of a finished run: the selected weights evaluated once more."""
    if protocol.valid_split:
        # in place: the graphs stay valid
        model.load_state_dict(load_weights(folder.best, state.best_sha256))
        valid = evaluate(protocol, model, "valid", amp, eval_graphs)
        test = evaluate(protocol, model, "test", amp, eval_graphs)
        selection = f"best validation epoch ({state.best_epoch} of {state.epoch})"
    else:
        valid = None
        last = state.log[-1]
        test = dict(loss=last["test_loss"], metric=last["test_metric"])
        selection = "final epoch (no validation split; never the best test epoch)"
    return _record(cfg, amp, state, num_parameters, run_device, engine, status="finished",
                   valid=valid, test=test, selection=selection)


def _record(cfg, amp, state, num_parameters, run_device, engine, *, status: str,
            valid: dict | None, test: dict | None, selection: str, error: str | None = None) -> dict[str, Any]:
    """A run record: `status` "finished", or "diverged" (no test metric; `error` says where)."""
    task = TASKS[cfg.task]
    log_entries = state.log
    wall_s = state.elapsed_s
    return dict(
        record_version=RECORD_VERSION, run_id=run_id(cfg), status=status, task=cfg.task,
        table=task.table, model=cfg.model, profile=cfg.profile, variant=cfg.variant,
        seed=cfg.train.seed, lr=cfg.train.lr, metric=task.metric, higher_is_better=task.higher_is_better,
        best_valid_loss=None if valid is None else valid["loss"],
        best_valid_metric=None if valid is None else valid["metric"],
        best_epoch=state.best_epoch, test_loss=None if test is None else test["loss"],
        test_metric=None if test is None else test["metric"], selection=selection,
        selections=selection_rules(log_entries, task.higher_is_better) if test is not None else {},
        error=error, epochs_run=state.epoch, wall_time_s=wall_s,
        gpu_minutes=wall_s / 60 if run_device.type == "cuda" else 0.0,
        device=device_name(run_device), precision={None: "fp32", torch.bfloat16: "bf16",
                                                   torch.float16: "fp16"}[amp],
        engine=engine, deviations=runtime_deviations(amp, engine),
        torch_version=torch.__version__, git_commit=git_commit(),
        num_parameters=num_parameters, paper_value=task.paper.get(cfg.model),
        paper_value_copied_from_bai=cfg.model in task.copied, note=task.note,
        changes=list(cfg.changes), config=cfg.to_dict(), curve=log_entries,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _format_entry(entry: dict[str, Any], protocol: Protocol) -> str:
    metric = protocol.task.metric
    parts = [f"epoch {entry['epoch']:3d}", f"lr {entry['lr']:.3g}", f"train loss {entry['train_loss']:.4f}"]
    if "valid_metric" in entry:
        parts.append(f"valid {metric} {entry['valid_metric']:.4f}")
    if "test_metric" in entry:
        parts.append(f"test {metric} {entry['test_metric']:.4f}")
    return " | ".join(parts)


def _mismatch_message(path: Path, saved: dict, wanted: dict) -> str:
    differences = _diff(saved, wanted)
    return (f"{path} was made with other settings ({'; '.join(differences[:6])}); "
            "resume with the same settings or choose another out_dir")


def _diff(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(saved) | set(wanted)):
            out += _diff(saved.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == wanted else [f"{prefix.rstrip('.')}: {saved!r} -> {wanted!r}"]

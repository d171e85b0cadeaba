"""One training engine for every task and model: the epoch loop (`train`) and `evaluate`.

A run lives in one folder (``out_dir``, `rtlib.run_folder`): ``checkpoint.pt`` (everything
needed to resume, the epoch log included, rewritten atomically every few minutes and at every
epoch end), ``best.pt`` (the weights of the best validation epoch; of the last epoch for
seq-MNIST, which has no validation split), ``log.jsonl`` (one line per epoch, rewritten from
the checkpoint) and, once finished, ``record.json``. One process at a time trains in a folder.
A run killed at any moment and resumed from its checkpoint finishes with exactly the record of
an uninterrupted run (bitwise on CPU, timings aside): the checkpoint holds model, optimizer,
schedule, every RNG state, the position in the epoch and the epoch log, and batch order is a
function of (seed, epoch) alone. What a run folder holds, and how a resume is checked, is
`rtlib.run_folder`'s; how a step is computed, `rtlib.step`'s; how the run executes on this
machine, `rtlib.runtime`'s.
"""
from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .configs import RunConfig, Schedule, check_settings
from .models import build_model
from .run_folder import (RECORD_VERSION, RunFolder, TrainState, checkpoint_to_resume, finished_record,
                         git_commit, load_weights, restored_state, rng_states, run_id, runtime_deviations,
                         selection_rules, set_rng_states, writable_folder)
from .padding import widened
from .runtime import Runtime, autocast_dtype, device_name, hidden_width
from .step import GRAPH_LENGTH_MULTIPLE, EvalGraphs, autocast, clip_norm, make_optimizer, make_step
from .tasks import TASKS, Protocol, check_sequence_lengths, make_protocol, metric_from_stats, metric_label


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf: the run is recorded as diverged."""


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) in one place."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def anneal(schedule: Schedule, epoch: int, valid_losses: list[float], valid_loss: float | None) -> float:
    """The factor to multiply the lr by after 1-based `epoch` (released scripts' rules)."""
    if schedule.kind == "step":
        return schedule.factor if epoch % schedule.every == 0 else 1.0
    if valid_loss is None or epoch <= schedule.after or not valid_losses:
        return 1.0
    worst_recent = max(valid_losses[-schedule.window:])
    plateaued = valid_loss > worst_recent if schedule.strict else valid_loss >= worst_recent
    return schedule.factor if plateaued else 1.0


def evaluate(protocol: Protocol, model: nn.Module, split: str, amp: torch.dtype | None,
             graphs: EvalGraphs | None = None) -> dict[str, float]:
    """Loss and metric of `model` on a split; with `graphs`, batches replay CUDA graphs of the
    (compiled) model's forward where they can, else run eagerly."""
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for batch in protocol.eval_batches(split):
            stats = graphs.stats(protocol.as_tensors(batch, GRAPH_LENGTH_MULTIPLE)) if graphs is not None else None
            if stats is None:
                with autocast(protocol.device.type, amp):
                    _, stats = protocol.batch_loss(model, batch)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + value
    stats = {key: float(value) for key, value in totals.items()}
    return dict(loss=stats["loss_sum"] / stats["count"], metric=metric_from_stats(protocol.task, stats))


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm
    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True)


class Callback:
    """A hook into `train`'s loop; override either method. A plain function among `train`'s
    callbacks is called as `epoch_end`."""

    def step_end(self, state: TrainState) -> bool:
        """After each training step (`state.global_step` steps done); True asks for a checkpoint now."""
        return False

    def epoch_end(self, entry: dict[str, Any]) -> None:
        """After each epoch, with its log entry, once the checkpoint holds it."""


class CheckpointEvery(Callback):
    """A checkpoint every `steps` training steps, besides the timed ones."""

    def __init__(self, steps: int):
        self.steps = steps

    def step_end(self, state: TrainState) -> bool:
        return state.global_step % self.steps == 0


class _EpochEnd(Callback):
    def __init__(self, call: Callable[[dict[str, Any]], None]):
        self.epoch_end = call


def train(cfg: RunConfig, out_dir: str | Path, runtime: Runtime = Runtime(), *,
          data_dir: str | Path | None = None, resume: bool = False, results_dir: str | Path | None = None,
          callbacks: list[Callback | Callable[[dict], None]] = (),
          log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train `cfg` in `out_dir`; returns the run record, or None when it stopped first, checkpointed:
    `runtime.max_minutes` ran out, or a file ``out_dir/STOP`` asked it to (`run_folder.STOP_REQUEST`).

    `resume=True` continues from ``out_dir/checkpoint.pt``, or returns the finished record
    (writing its copy in `results_dir` if that is missing); without it an existing checkpoint
    is an error rather than silently overwritten. Settings are checked before any folder is made
    or data read; the folder is locked for the whole call (`rtlib.run_folder`). `runtime` says
    how the run executes here (`rtlib.runtime.Runtime`); it is not part of the run's identity,
    so a run may be resumed under another one.
    """
    check_settings(cfg)
    check_sequence_lengths(cfg)
    device = runtime.torch_device()
    engine_mode = runtime.engine_mode(cfg.model, device)
    width = hidden_width(runtime.pad_hidden, cfg.model, getattr(cfg.backbone, "hidden_size", None), device, engine_mode)
    results = None if results_dir is None else writable_folder(Path(results_dir))
    hooks = [callback if isinstance(callback, Callback) else _EpochEnd(callback) for callback in callbacks]
    folder = RunFolder(out_dir)
    with folder.claim():
        if resume and folder.record.exists():
            return finished_record(folder, cfg, results, log)
        folder.check_start(resume)
        checkpoint = checkpoint_to_resume(folder, cfg) if resume and folder.checkpoint.exists() else None
        run = _Training(cfg, folder, runtime, device, engine_mode, width, data_dir, results)
        if checkpoint is not None:
            run.restore(checkpoint, log)
        run.begin_session()
        while run.state.epoch < cfg.train.epochs:
            epoch = run.state.epoch + 1
            train_loss = run.train_epoch(epoch, hooks)
            if train_loss is None:
                log(f"{run.stopped_by} stopped the run in epoch {epoch}; checkpoint saved, resume to continue")
                return None
            entry = run.end_epoch(epoch, train_loss)
            log(_format_entry(entry, run.protocol))
            for hook in hooks:
                hook.epoch_end(entry)
        record = folder.write_record(_finished(run), results, run_id(cfg))
    log(f"finished {run_id(cfg)}: {metric_label(record['metric'])} = {record['test_metric']:.4f} "
        f"(paper {record['paper_value']})")
    return record


class _Training:
    """One session of a run in its claimed folder: what it trains, with what, and how far it is."""

    def __init__(self, cfg: RunConfig, folder: RunFolder, runtime: Runtime, device: torch.device,
                 engine_mode: str, width: int | None, data_dir: str | Path | None, results: Path | None):
        self.cfg, self.folder, self.runtime, self.device, self.results = cfg, folder, runtime, device, results
        self.amp = autocast_dtype(cfg.train.precision, device)
        seed_all(cfg.train.seed)
        self.protocol = make_protocol(cfg, device, data_dir)
        model = build_model(cfg, self.protocol.shape)
        self.num_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.padding = None  # the map to the wider model that runs, when one does (rtlib.padding)
        if width is not None:
            model, self.padding = widened(model, cfg, self.protocol.shape, width)
        self.model = model.to(device)
        fused = device.type == "cuda"
        self.optimizer = make_optimizer(cfg.train.optimizer, self.model.parameters(), cfg.train.lr, fused)
        self.step = make_step(self.model, self.protocol.tensor_loss, self.optimizer, clip_norm(cfg.train),
                              amp=self.amp, mode=engine_mode, inputs=self.protocol.as_tensors)
        self.eval_graphs = EvalGraphs(self.step.runs, self.protocol.tensor_loss, self.amp) if self.step.graphed else None
        self.engine = dict(compile=engine_mode, requested=runtime.compile, fused_optimizer=fused)
        if self.protocol.eval_windows_stacked:
            self.engine["eval_windows_stacked"] = self.protocol.eval_windows_stacked
        if width is not None:
            self.engine["hidden_width"] = width
        self.state = TrainState()
        self.elapsed_before = 0.0  # wall time of earlier sessions of this run
        self.session_start = self.last_checkpoint = time.monotonic()
        self.stopped_by: str | None = None  # what ended the last epoch early

    def configured_weights(self) -> dict[str, torch.Tensor]:
        """The model's state in the configured shapes, as checkpoints and best weights hold it."""
        state = self.model.state_dict()
        return state if self.padding is None else self.padding.unpad(state)

    def load_configured_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state in the configured shapes, in place (the step's CUDA graphs stay valid)."""
        self.model.load_state_dict(state if self.padding is None else self.padding.pad(state))

    def optimizer_state(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        return state if self.padding is None else self.padding.unpad_optimizer(state, self.parameter_names())

    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()]

    def restore(self, checkpoint: dict[str, Any], log: Callable[[str], None]) -> None:
        self.load_configured_weights(checkpoint["model"])
        optimizer = checkpoint["optimizer"]
        self.optimizer.load_state_dict(optimizer if self.padding is None
                                       else self.padding.pad_optimizer(optimizer, self.parameter_names()))
        self.step.scaler.load_state_dict(checkpoint["scaler"])
        self.state = restored_state(checkpoint, self.folder, log)
        set_rng_states(checkpoint["rng"])
        self.elapsed_before = self.state.elapsed_s
        log(f"resumed {self.folder.path} at epoch {self.state.epoch + 1}, step {self.state.step}")

    def begin_session(self) -> None:
        """Note where this session trains: a run resumed elsewhere (another commit, GPU or
        engine) says so in its record. A session that only rewrites a finished run's record
        trains nothing and is not noted."""
        if self.state.epoch >= self.cfg.train.epochs:
            return
        self.state.sessions.append(dict(git_commit=git_commit(), device=device_name(self.device),
                                        torch_version=str(torch.__version__), engine=self.engine["compile"],
                                        from_epoch=self.state.epoch + 1, from_step=self.state.step,
                                        **({"hidden_width": self.engine["hidden_width"]}
                                           if "hidden_width" in self.engine else {})))

    def elapsed_s(self) -> float:
        """Wall time of this run: earlier sessions' and this one's."""
        return self.elapsed_before + time.monotonic() - self.session_start

    def train_epoch(self, epoch: int, hooks: list[Callback]) -> float | None:
        """The rest of epoch `epoch`'s training steps: their mean loss, or None when the time
        budget ran out or a stop was requested first (with a checkpoint saved; `stopped_by` says which)."""
        state, budget = self.state, self.runtime.max_minutes
        batches = self.protocol.train_batches(epoch)
        if self.cfg.train.max_steps is not None:
            batches = batches[:self.cfg.train.max_steps]
        self.step.start_epoch(batches[0])
        self.model.train()
        # summed on the device: reading them every step would stall the GPU
        running = torch.zeros((), device=self.device, dtype=torch.float64) + state.train_loss_sum
        count = torch.zeros((), device=self.device, dtype=torch.float64) + state.train_count
        check_every = 1 if self.device.type == "cpu" else 50
        stop_requested = False
        with _progress(len(batches), f"epoch {epoch}/{self.cfg.train.epochs}", self.runtime.progress) as bar:
            bar.update(state.step)
            for step_index in range(state.step, len(batches)):
                _, stats = self.step(batches[step_index])
                running += stats["loss_sum"]
                count += stats["count"]
                state.step, state.global_step = step_index + 1, state.global_step + 1
                bar.update(1)
                if state.global_step % check_every == 0:
                    self.check_finite(running)
                    stop_requested = self.folder.stop_request.exists()
                asked = [hook.step_end(state) for hook in hooks]
                now = time.monotonic()
                if any(asked) or now - self.last_checkpoint > 60 * self.runtime.checkpoint_minutes:
                    self.checkpoint_mid_epoch(running, count)
                    self.last_checkpoint = now
                out_of_time = budget is not None and now - self.session_start > 60 * budget
                if (out_of_time or stop_requested) and state.step < len(batches):
                    self.checkpoint_mid_epoch(running, count)
                    self.stopped_by = "a stop request" if stop_requested else f"the time budget of {budget} min"
                    return None
        self.check_finite(running)
        return float(running) / max(float(count), 1.0)

    def end_epoch(self, epoch: int, train_loss: float) -> dict[str, Any]:
        """Evaluate, keep the best weights, anneal the lr and checkpoint: the epoch's log entry."""
        state, protocol = self.state, self.protocol
        entry = dict(epoch=epoch, lr=self.optimizer.param_groups[0]["lr"], train_loss=train_loss)
        valid_loss = None
        if protocol.valid_split:
            valid = self.evaluated("valid")
            valid_loss = valid["loss"]
            entry.update(valid_loss=valid_loss, valid_metric=valid["metric"])
            if state.best_valid_loss is None or valid_loss < state.best_valid_loss:
                state.best_valid_loss, state.best_epoch = valid_loss, epoch
                state.best_sha256 = self.folder.stage_best(self.configured_weights())
        else:  # seq-MNIST has no validation split: the reported weights are the final epoch's
            state.best_sha256 = self.folder.stage_best(self.configured_weights())
        # test every epoch, as the released scripts print it, for the report's side-by-side
        # selection rules; selection itself never looks at it
        test = self.evaluated("test")
        entry.update(test_loss=test["loss"], test_metric=test["metric"])
        factor = anneal(self.cfg.train.schedule, epoch, state.valid_losses, valid_loss)
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        if valid_loss is not None:
            state.valid_losses.append(valid_loss)
        state.epoch, state.step, state.train_loss_sum, state.train_count = epoch, 0, 0.0, 0.0
        entry["elapsed_s"] = self.elapsed_s()
        state.log.append(entry)
        self.save_checkpoint()
        self.folder.settle(state.best_sha256, state.log)
        self.last_checkpoint = time.monotonic()
        return entry

    def checkpoint_mid_epoch(self, running: torch.Tensor, count: torch.Tensor) -> None:
        self.check_finite(running)
        self.state.train_loss_sum, self.state.train_count = float(running), float(count)
        self.save_checkpoint()

    def save_checkpoint(self) -> None:
        self.state.elapsed_s = self.elapsed_s()
        self.folder.save_checkpoint(dict(config=self.cfg.to_dict(), model=self.configured_weights(),
                                         optimizer=self.optimizer_state(), scaler=self.step.scaler.state_dict(),
                                         state=vars(self.state).copy(), rng=rng_states()))

    def check_finite(self, loss_sum: torch.Tensor) -> None:
        value = float(loss_sum)
        if not math.isfinite(value):
            self.diverge(f"training loss became {value}")

    def evaluated(self, split: str) -> dict[str, float]:
        result = evaluate(self.protocol, self.model, split, self.amp, self.eval_graphs)
        if not all(math.isfinite(value) for value in result.values()):  # a perplexity past exp's range
            self.diverge(f"{split} loss {result['loss']:.6g} gives {split} {self.protocol.task.metric} "
                         f"{result['metric']}")
        return result

    def diverge(self, what: str) -> None:
        message = (f"{what} in epoch {self.state.epoch + 1} near step {self.state.step} at lr "
                   f"{self.optimizer.param_groups[0]['lr']:g}: the run diverged; its record "
                   f"({self.folder.record}) says so. Lower the lr or clip gradients")
        self.state.elapsed_s = self.elapsed_s()
        record = _record(self, status="diverged", valid=None, test=None, selection="none (diverged)", error=message)
        self.folder.write_record(record, self.results, run_id(self.cfg))
        raise NonFiniteLossError(message)


def _finished(run: _Training) -> dict[str, Any]:
    """The record of a finished run: the selected weights evaluated once more."""
    state = run.state
    if run.protocol.valid_split:
        run.load_configured_weights(load_weights(run.folder.best, state.best_sha256))
        valid = evaluate(run.protocol, run.model, "valid", run.amp, run.eval_graphs)
        test = evaluate(run.protocol, run.model, "test", run.amp, run.eval_graphs)
        selection = f"best validation epoch ({state.best_epoch} of {state.epoch})"
    else:
        valid = None
        last = state.log[-1]
        test = dict(loss=last["test_loss"], metric=last["test_metric"])
        selection = "final epoch (no validation split; never the best test epoch)"
    return _record(run, status="finished", valid=valid, test=test, selection=selection)


def _record(run: _Training, *, status: str, valid: dict | None, test: dict | None, selection: str,
            error: str | None = None) -> dict[str, Any]:
    """A run record: `status` "finished", or "diverged" (no test metric; `error` says where)."""
    cfg, state, amp = run.cfg, run.state, run.amp
    task = TASKS[cfg.task]
    log_entries = state.log
    wall_s = state.elapsed_s
    record = dict(
        record_version=RECORD_VERSION, run_id=run_id(cfg), status=status, task=cfg.task,
        table=task.table, model=cfg.model, profile=cfg.profile, variant=cfg.variant,
        seed=cfg.train.seed, lr=cfg.train.lr, metric=task.metric, higher_is_better=task.higher_is_better,
        best_valid_loss=None if valid is None else valid["loss"],
        best_valid_metric=None if valid is None else valid["metric"],
        best_epoch=state.best_epoch, test_loss=None if test is None else test["loss"],
        test_metric=None if test is None else test["metric"], selection=selection,
        selections=selection_rules(log_entries, task.higher_is_better) if test is not None else {},
        error=error, epochs_run=state.epoch, wall_time_s=wall_s,
        gpu_minutes=wall_s / 60 if run.device.type == "cuda" else 0.0,
        device=device_name(run.device), precision={None: "fp32", torch.bfloat16: "bf16",
                                                   torch.float16: "fp16"}[amp],
        engine=run.engine, deviations=runtime_deviations(amp, run.engine),
        torch_version=torch.__version__, git_commit=git_commit(),
        num_parameters=run.num_parameters, paper_value=task.paper.get(cfg.model),
        paper_value_copied_from_bai=cfg.model in task.copied, note=task.note,
        changes=list(cfg.changes), config=cfg.to_dict(), curve=log_entries,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if len(state.sessions) > 1:  # resumed: `git_commit`, `device` and `engine` are the last session's
        record["sessions"] = state.sessions
    return record


def _format_entry(entry: dict[str, Any], protocol: Protocol) -> str:
    metric = protocol.task.metric
    parts = [f"epoch {entry['epoch']:3d}", f"lr {entry['lr']:.3g}", f"train loss {entry['train_loss']:.4f}"]
    if "valid_metric" in entry:
        parts.append(f"{metric_label(metric, 'valid')} {entry['valid_metric']:.4f}")
    if "test_metric" in entry:
        parts.append(f"{metric_label(metric)} {entry['test_metric']:.4f}")
    return " | ".join(parts)

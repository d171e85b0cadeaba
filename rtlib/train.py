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
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .configs import RunConfig, Schedule, check_settings
from .run_folder import (RunFolder, copy_record, load_checkpoint, load_weights, read_record, safe_child,
                         writable_folder)
from .runtime import Runtime, autocast_dtype, device_name
from .step import GRAPH_LENGTH_MULTIPLE, EvalGraphs, autocast, clip_norm, make_optimizer, make_step
from .tasks import TASKS, Protocol, check_sequence_lengths, make_protocol, metric_from_stats

RECORD_VERSION = 2  # 2: test metric every epoch, selections, precision, engine, deviations


class ConfigMismatchError(ValueError):
    """Resuming a run folder whose checkpoint was made with other settings."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf: the run is recorded as diverged."""


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
    root = Path(__file__).resolve().parents[1]

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
    """Train `cfg` in `out_dir`; returns the run record, or None when `runtime.max_minutes` ran
    out first.

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
    results = None if results_dir is None else writable_folder(Path(results_dir))
    hooks = [callback if isinstance(callback, Callback) else _EpochEnd(callback) for callback in callbacks]
    folder = RunFolder(out_dir)
    with folder.claim():
        if resume and folder.record.exists():
            return _finished_record(folder, cfg, results, log)
        folder.check_start(resume)
        checkpoint = _checkpoint_to_resume(folder, cfg.to_dict()) if resume and folder.checkpoint.exists() else None
        run = _Training(cfg, folder, runtime, device, engine_mode, data_dir, results)
        if checkpoint is not None:
            run.restore(checkpoint, log)
        while run.state.epoch < cfg.train.epochs:
            epoch = run.state.epoch + 1
            train_loss = run.train_epoch(epoch, hooks)
            if train_loss is None:
                log(f"time budget of {runtime.max_minutes} min reached in epoch {epoch}; checkpoint saved, "
                    "resume to continue")
                return None
            entry = run.end_epoch(epoch, train_loss)
            log(_format_entry(entry, run.protocol))
            for hook in hooks:
                hook.epoch_end(entry)
        record = folder.write_record(_finished(run), results, run_id(cfg))
    log(f"finished {run_id(cfg)}: test {record['metric']} = {record['test_metric']:.4f} "
        f"(paper {record['paper_value']})")
    return record


class _Training:
    """One session of a run in its claimed folder: what it trains, with what, and how far it is."""

    def __init__(self, cfg: RunConfig, folder: RunFolder, runtime: Runtime, device: torch.device,
                 engine_mode: str, data_dir: str | Path | None, results: Path | None):
        self.cfg, self.folder, self.runtime, self.device, self.results = cfg, folder, runtime, device, results
        self.amp = autocast_dtype(cfg.train.precision, device)
        seed_all(cfg.train.seed)
        self.protocol = make_protocol(cfg, device, data_dir)
        self.model = self.protocol.build_model().to(device)
        fused = device.type == "cuda"
        self.optimizer = make_optimizer(cfg.train.optimizer, self.model.parameters(), cfg.train.lr, fused)
        self.step = make_step(self.model, self.protocol.tensor_loss, self.optimizer, clip_norm(cfg.train),
                              amp=self.amp, mode=engine_mode, inputs=self.protocol.as_tensors)
        self.eval_graphs = EvalGraphs(self.step.runs, self.protocol.tensor_loss, self.amp) if self.step.graphed else None
        self.engine = dict(compile=engine_mode, requested=runtime.compile, fused_optimizer=fused)
        self.num_parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.state = TrainState()
        self.elapsed_before = 0.0  # wall time of earlier sessions of this run
        self.session_start = self.last_checkpoint = time.monotonic()

    def restore(self, checkpoint: dict[str, Any], log: Callable[[str], None]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step.scaler.load_state_dict(checkpoint["scaler"])
        self.state = _restored_state(checkpoint, self.folder, log)
        set_rng_states(checkpoint["rng"])
        self.elapsed_before = self.state.elapsed_s
        log(f"resumed {self.folder.path} at epoch {self.state.epoch + 1}, step {self.state.step}")

    def elapsed_s(self) -> float:
        """Wall time of this run: earlier sessions' and this one's."""
        return self.elapsed_before + time.monotonic() - self.session_start

    def train_epoch(self, epoch: int, hooks: list[Callback]) -> float | None:
        """The rest of epoch `epoch`'s training steps: their mean loss, or None when the time
        budget ran out first (with a checkpoint saved)."""
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
                asked = [hook.step_end(state) for hook in hooks]
                now = time.monotonic()
                if any(asked) or now - self.last_checkpoint > 60 * self.runtime.checkpoint_minutes:
                    self.checkpoint_mid_epoch(running, count)
                    self.last_checkpoint = now
                if budget is not None and now - self.session_start > 60 * budget and state.step < len(batches):
                    self.checkpoint_mid_epoch(running, count)
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
                state.best_sha256 = self.folder.stage_best(self.model.state_dict())
        else:  # seq-MNIST has no validation split: the reported weights are the final epoch's
            state.best_sha256 = self.folder.stage_best(self.model.state_dict())
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
        self.folder.save_checkpoint(dict(config=self.cfg.to_dict(), model=self.model.state_dict(),
                                         optimizer=self.optimizer.state_dict(), scaler=self.step.scaler.state_dict(),
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


def _finished(run: _Training) -> dict[str, Any]:
    """The record of a finished run: the selected weights evaluated once more."""
    state = run.state
    if run.protocol.valid_split:
        # in place: the graphs stay valid
        run.model.load_state_dict(load_weights(run.folder.best, state.best_sha256))
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
        gpu_minutes=wall_s / 60 if run.device.type == "cuda" else 0.0,
        device=device_name(run.device), precision={None: "fp32", torch.bfloat16: "bf16",
                                                   torch.float16: "fp16"}[amp],
        engine=run.engine, deviations=runtime_deviations(amp, run.engine),
        torch_version=torch.__version__, git_commit=git_commit(),
        num_parameters=run.num_parameters, paper_value=task.paper.get(cfg.model),
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

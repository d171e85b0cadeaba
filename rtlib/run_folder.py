"""A run folder and its one writer: the lock, the checkpoint and its content hash, the epoch
log, the best weights and the record.

The checkpoint is the single source of truth. It holds the epoch log and the SHA-256 of the
best weights as well as the training state, and carries a digest of its own content, checked
before it is used. Every file is written atomically (a temporary file renamed into place), and
an epoch ends in this order:

1. the best weights (when they changed) to ``best.next.pt``;
2. ``checkpoint.pt``, naming those weights by their SHA-256 and holding the log with this epoch;
3. `RunFolder.settle`: ``best.next.pt`` renamed to ``best.pt`` when the checkpoint names it
   (dropped when it does not), and ``log.jsonl`` rewritten from the checkpoint's log.

A process killed between any two writes leaves a checkpoint that describes the run, and
`settle`, run again on resume, brings the other files in line with it, so a resumed run's
curve and weights are those of an uninterrupted one. The record is written after the last
checkpoint, with a digest of its content, then its copy; resuming a finished run makes a
missing or stale copy again.

One process at a time writes a run folder: `RunFolder.claim` holds an exclusive lock on its
``.lock`` file, which the operating system releases when the process ends, however it ends.

Also here: what names a run (`run_id`) and the code that ran (`git_commit`), what a checkpoint
holds besides weights (`TrainState`, `rng_states`), how a resume is checked against the
settings (`checkpoint_to_resume`, `finished_record`), and what a record reports beside the
final metric (`selection_rules`, `runtime_deviations`).
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import random
import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .configs import RunConfig, experiment
from .data.fetch import remove_orphans, sha256_of
from .paths import REPO

AGAIN = ".again"  # the suffix of a run folder that runs a recorded run a second time
LOCK, JOB_LOCK = ".lock", ".job.lock"  # the engine's; the batch runner's, for a job's whole life
# A file by this name asks the run training in the folder to checkpoint and stop at its next
# step: the safe way to stop a job that shares a GPU under MPS, where a killed process can take
# its neighbours down with it.
STOP_REQUEST = "STOP"
DIGEST_KEY = "content_sha256"
# what checkpoints held before they carried a digest: still resumable, unchecked
UNCHECKED_KEYS = {"config", "model", "optimizer", "scaler", "state", "rng"}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked (the CLI prints the message and exits 2)."""


class FolderInUseError(RunFolderError):
    """Another process holds the folder's lock."""


class CheckpointError(RunFolderError):
    """A checkpoint or weights file that cannot be read or is not what was saved."""


class RecordError(RunFolderError):
    """A record.json that is not a readable run record."""


def safe_child(parent: str | Path, name: str) -> Path:
    """``parent/name`` for a `name` of safe characters only, so the path stays inside `parent`."""
    if not SAFE_NAME.match(name):
        raise ValueError(f"{name!r} is not a safe file name: letters, digits and . _ + - only, "
                         "not starting with . _ + or -")
    return Path(parent) / name


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp)` then rename: readers see the old file or the new one. A
    temporary file left by a killed process is removed by the next `RunFolder.claim`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's content (nested dicts, lists, tuples, tensors and scalars), the
    same before `torch.save` and after `torch.load`."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # bytes of any dtype
    elif isinstance(obj, dict):
        digest.update(f"dict {len(obj)};".encode())
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__} {len(obj)};".encode())
        for item in obj:
            _feed(digest, item)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        digest.update(f"{type(obj).__name__} {obj!r};".encode())
    else:
        raise TypeError(f"a checkpoint cannot hold a {type(obj).__name__}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint whose content matches its digest (one saved before digests existed is
    returned unchecked); CheckpointError naming the file otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        stored = checkpoint.pop(DIGEST_KEY, None)
        intact = stored == content_digest(checkpoint) or stored is None and set(checkpoint) == UNCHECKED_KEYS
    except Exception as error:  # whatever a damaged file makes the unpickler raise
        raise CheckpointError(f"{path} cannot be read ({_one_line(error)}): the file is damaged; "
                              "move it away to start the run again") from error
    if not intact:
        raise CheckpointError(f"{path} is damaged: its content does not match the SHA-256 it was "
                              "saved with; move it away to start the run again")
    return checkpoint


def load_weights(path: Path, sha256: str | None) -> dict[str, Any]:
    """A state dict saved by `RunFolder.stage_best`, checked against `sha256` when known."""
    if sha256 is not None and sha256_of(path) != sha256:
        raise CheckpointError(f"{path} is not the weights the checkpoint names (SHA-256 {sha256}); "
                              "the file is damaged or from another run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} cannot be read ({_one_line(error)})") from error


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a record's content (its own digest left out), the same before and after JSON."""
    content = {key: value for key, value in record.items() if key != DIGEST_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def read_record(path: Path) -> dict[str, Any]:
    """A run record, checked against its digest where it has one (records written before
    digests existed have none); RecordError naming the file when it is not a record or damaged."""
    fix = "move it away (resuming the run writes it again from its checkpoint)"
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{path} is not a readable run record ({error}); {fix}") from error
    if not isinstance(record, dict) or "config" not in record:
        raise RecordError(f"{path} is not a run record (it has no config)")
    if DIGEST_KEY in record and record[DIGEST_KEY] != record_digest(record):
        raise RecordError(f"{path} is damaged: its content does not match the SHA-256 it was "
                          f"written with; {fix}")
    return record


def copy_record(record: dict[str, Any], results_dir: Path, run_id: str) -> Path | None:
    """Write `record` to ``results_dir/<run_id>.json`` unless that copy is already equal;
    the path written, or None."""
    copy = safe_child(results_dir, f"{run_id}.json")
    remove_orphans(results_dir, f".{copy.name}.*.tmp")
    if copy.exists():
        try:
            if json.loads(copy.read_text()) == json.loads(json.dumps(record, default=str)):
                return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # a damaged copy is written again
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(copy, record)
    return copy


def writable_folder(path: Path) -> Path:
    """`path`, made if missing, once a file could be created in it: a folder that cannot take the
    record's copy is an error before the run, not after it."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass
    return path


@contextmanager
def locked(folder: Path, name: str = LOCK) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/name`` (the folder is made if missing) for the block;
    FolderInUseError naming the holder's process id if another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(handle)
        raise FolderInUseError(f"{folder} is in use by process {holder} (another train, run "
                               "notebook or reproduce): wait for it to end, or choose another folder") from None
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(handle)  # releases the lock


class RunFolder:
    """The files of one run: ``checkpoint.pt``, ``best.pt``, ``log.jsonl``, ``record.json``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint, self.best, self.log, self.record = (
            self.path / name for name in ("checkpoint.pt", "best.pt", "log.jsonl", "record.json"))
        self.best_next = self.path / "best.next.pt"
        self.stop_request = self.path / STOP_REQUEST

    @contextmanager
    def claim(self) -> Iterator["RunFolder"]:
        """Be the folder's only writer for the block; temporary files of a killed writer go."""
        with locked(self.path):
            for stale in self.path.glob(".*.tmp"):
                stale.unlink()
            self.stop_request.unlink(missing_ok=True)  # a request to the previous writer
            yield self

    def check_start(self, resume: bool) -> None:
        """Refuse to start where the folder holds another run's files."""
        if self.checkpoint.exists():
            if not resume:
                raise FileExistsError(f"{self.checkpoint} exists: pass resume=True (--resume) to "
                                      "continue that run, or choose another out_dir")
            return
        leftovers = [path.name for path in (self.log, self.record) if path.exists()]
        if leftovers:
            raise RunFolderError(f"{self.path} holds {' and '.join(leftovers)} but no checkpoint.pt: "
                                 "files of another run; choose another out_dir or move them away")

    def write_record(self, record: dict[str, Any], results_dir: Path | None, run_id: str) -> dict[str, Any]:
        """Write the record with its digest, then its copy in `results_dir`; the record written."""
        record = {**record, DIGEST_KEY: record_digest(record)}
        atomic_write_json(self.record, record)
        if results_dir is not None:
            copy_record(record, results_dir, run_id)
        return record

    def save_checkpoint(self, payload: dict[str, Any]) -> None:
        atomic_write_bytes(self.checkpoint,
                           lambda tmp: torch.save({**payload, DIGEST_KEY: content_digest(payload)}, tmp))

    def stage_best(self, weights: dict[str, Any]) -> str:
        """Write the best weights beside ``best.pt`` (`settle` moves them in); their SHA-256."""
        buffer = io.BytesIO()
        torch.save(weights, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(self.best_next, lambda tmp: tmp.write_bytes(data))
        return hashlib.sha256(data).hexdigest()

    def settle(self, best_sha256: str | None, entries: list[dict[str, Any]]) -> None:
        """Bring ``best.pt`` and ``log.jsonl`` in line with the checkpoint just saved or loaded."""
        if self.best_next.exists():
            if best_sha256 is not None and sha256_of(self.best_next) == best_sha256:
                os.replace(self.best_next, self.best)
            else:  # staged by a process killed before its checkpoint named it
                self.best_next.unlink()
        text = "".join(json.dumps(entry) + "\n" for entry in entries)
        atomic_write_bytes(self.log, lambda tmp: tmp.write_text(text))

    def logged_entries(self, epochs: int) -> list[dict[str, Any]]:
        """The log of a checkpoint that predates logs in checkpoints: ``log.jsonl``'s entries of
        its first `epochs` epochs, the last written of each (an epoch repeated after a kill)."""
        by_epoch = {}
        for line in self.log.read_text().splitlines() if self.log.exists() else []:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the last line, cut off by a kill
                continue
            by_epoch[entry["epoch"]] = entry
        return [by_epoch[epoch] for epoch in range(1, epochs + 1) if epoch in by_epoch]


# ---------------------------------------------------------------- a run's identity, state and record

RECORD_VERSION = 2  # 2: test metric every epoch, selections, precision, engine, deviations


class ConfigMismatchError(ValueError):
    """Resuming a run folder whose checkpoint was made with other settings."""


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


def variant_slug(variant: str) -> str:
    """A variant as a run id spells it: 'precision=fp32,norm=post' -> 'precision-fp32_norm-post'."""
    return variant.replace("=", "-").replace(",", "_")


def run_id(cfg: RunConfig) -> str:
    """The run's name, of safe characters only (it names its folder and its record's copy)."""
    variant = f"_{variant_slug(cfg.variant)}" if cfg.variant else ""
    name = f"{cfg.task}_{cfg.model}_{cfg.profile}{variant}_lr{cfg.train.lr:g}_seed{cfg.train.seed}"
    safe_child(".", name)
    return name


RUN_ID = re.compile(r"(?P<task>[^_]+)_(?P<model>[^_]+)_(?P<profile>[^_]+)(?:_(?P<variant>.+?))?"
                    rf"_lr(?P<lr>[^_]+)_seed(?P<seed>\d+)(?:{re.escape(AGAIN)})?")


def run_id_fields(name: str) -> dict[str, str]:
    """`run_id`'s parts back from the name (the variant as `variant_slug` spells it, '' for none),
    or from a repeat's (`RUN_ID.again`)."""
    found = RUN_ID.fullmatch(name)
    if found is None:
        raise ValueError(f"run id {name!r} is not TASK_MODEL_PROFILE[_VARIANT]_lrLR_seedSEED")
    return {key: value or "" for key, value in found.groupdict().items()}


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
    sessions: list[dict[str, Any]] = field(default_factory=list)  # where each session ran, from which epoch


def finished_record(folder: RunFolder, cfg: RunConfig, results: Path | None,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """The record of a finished run, its copy in `results` made if missing or stale."""
    record = read_record(folder.record)
    if not cfg.is_recorded_as(record["config"]):
        raise ConfigMismatchError(_mismatch_message(folder.record, record["config"], cfg.to_dict()))
    copied = copy_record(record, results, run_id(cfg)) if results is not None else None
    log(f"{folder.path}: already {record.get('status', 'finished')}; record kept"
        + (f"; its missing copy written to {copied}" if copied else ""))
    return record


def checkpoint_to_resume(folder: RunFolder, cfg: RunConfig) -> dict[str, Any]:
    """The folder's checkpoint, checked (content hash, settings) before anything is built."""
    checkpoint = load_checkpoint(folder.checkpoint)
    if not cfg.is_recorded_as(checkpoint["config"]):
        raise ConfigMismatchError(_mismatch_message(folder.checkpoint, checkpoint["config"], cfg.to_dict()))
    return checkpoint


def restored_state(checkpoint: dict[str, Any], folder: RunFolder, log: Callable[[str], None]) -> TrainState:
    """The checkpoint's training state, with the folder's other files brought in line with it."""
    state = TrainState(**checkpoint["state"])
    if "log" not in checkpoint["state"]:
        log(f"{folder.checkpoint} predates content hashes and epoch logs in checkpoints: loaded "
            "unchecked, its log taken from log.jsonl")
        state.log = folder.logged_entries(state.epoch)
    if "sessions" not in checkpoint["state"]:
        state.sessions = [dict(git_commit="unknown: its checkpoint predates session logs", from_epoch=1)]
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


def stacks_eval_windows(engine: dict[str, Any]) -> bool:
    """Whether a record's run evaluated several language-model windows a forward (its `engine`)."""
    return engine.get("eval_windows_stacked", 1) > 1


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
    if engine.get("hidden_width"):
        deviations.append(f"width: {engine['hidden_width']} hidden units, the configured ones and extra ones that "
                          "stay exactly zero (rtlib.padding: the same function and gradients; other rounding "
                          "and dropout draws)")
    if stacks_eval_windows(engine):
        deviations.append(f"evaluation: up to {engine['eval_windows_stacked']} independent windows a forward, "
                          "stacked along the batch (the released scripts: one); the same sums, rounded differently")
    return deviations


def _mismatch_message(path: Path, saved: dict, wanted: dict) -> str:
    differences = _diff(experiment(saved), experiment(wanted))
    return (f"{path} was made with other settings ({'; '.join(differences[:6])}); "
            "resume with the same settings or choose another out_dir")


def _diff(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(saved) | set(wanted)):
            out += _diff(saved.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == wanted else [f"{prefix.rstrip('.')}: {saved!r} -> {wanted!r}"]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__

"""Run integrity: a record is never wrong, never mixed, never silently lost.

Fault injection, CPU, smoke runs of a few steps:
- kill points at every write: each rename (`os.replace`) into a run folder or its results
  folder, killed just before or just after it, then a resume whose whole record (timings aside),
  log, results copy and best weights must equal the uninterrupted run's. In this process the
  kill is an exception nothing catches (`Kill`); one run is killed for real (SIGKILL) in a
  subprocess, leaving its temporary file and lock as a kill does;
- one flipped bit anywhere in a checkpoint, a truncated checkpoint, a damaged record;
- two writers on one run folder (train, resume, reproduce);
- bad input: exit 2, one line, nothing final written.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rtlib.__main__ import main
from rtlib.configs import run_config
from rtlib.paths import REPO
from rtlib.run import NOTEBOOK_PARAMETERS
from rtlib.train import CheckpointEvery, train

QUIET = dict(log=lambda message: None)
CELLS = [("ptb-word", "rtransformer"), ("mnist", "tcn")]  # with and without a validation split
SHORT = dict(epochs=2, max_steps=2)
EVERY = 3  # steps between checkpoints: one checkpoint inside the second epoch
SMOKE_ID = "ptb-word_rtransformer_smoke_lr2_seed1111"
# one thread a process: these runs are tiny, and threads that outnumber free cores slow them
# several-fold on a shared machine
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Kill(BaseException):
    """Stands for SIGKILL at a kill point: not an Exception, so nothing in the engine catches it."""


@contextlib.contextmanager
def renames_into(root: Path, kill_at: int | None = None, after: bool = False):
    """Count the renames into `root`; with `kill_at`, raise Kill just before (or just after)
    the rename of that number (1-based)."""
    real_replace, seen = os.replace, []

    def replace(source, destination, *args, **kwargs):
        watched = str(destination).startswith(str(root))
        seen.extend([destination] if watched else [])
        hit = watched and len(seen) == kill_at
        if hit and not after:
            raise Kill(f"before rename {kill_at} ({destination})")
        real_replace(source, destination, *args, **kwargs)
        if hit and after:
            raise Kill(f"after rename {kill_at} ({destination})")

    os.replace = replace
    try:
        yield seen
    finally:
        os.replace = real_replace


def short_run(cell, root: Path, data_dir: Path, **options):
    cfg = run_config(*cell, "smoke", **SHORT)
    return train(cfg, root / "run", data_dir=data_dir, results_dir=root / "results",
                 callbacks=[CheckpointEvery(EVERY)], **QUIET, **options)


def timeless(record: dict) -> dict:
    """A record without what depends on the clock or on how many sessions made it (and the
    digest over them)."""
    kept = {key: value for key, value in record.items()
            if key not in ("wall_time_s", "gpu_minutes", "finished_at", "content_sha256", "sessions")}
    kept["curve"] = [{k: v for k, v in entry.items() if k != "elapsed_s"} for entry in record["curve"]]
    return kept


def assert_folder_matches(root: Path, record: dict, best_pt: bytes) -> None:
    """The run folder and results copy say what the record says, and nothing is left over."""
    run = root / "run"
    assert [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] == record["curve"]
    assert json.loads((root / "results" / f"{record['run_id']}.json").read_text()) == record
    assert (run / "best.pt").read_bytes() == best_pt
    assert json.loads((run / "record.json").read_text()) == record
    leftovers = [path.name for path in run.iterdir() if ".tmp" in path.name or path.name == "best.next.pt"]
    assert leftovers == []


@pytest.fixture(scope="module")
def uninterrupted(real_data, tmp_path_factory):
    """Each cell's uninterrupted run: its record, its best.pt bytes and how many renames it made."""
    runs = {}
    for cell in CELLS:
        root = tmp_path_factory.mktemp("whole")
        with renames_into(root) as renames:
            record = short_run(cell, root, real_data)
        runs[cell] = record, (root / "run" / "best.pt").read_bytes(), len(renames)
    return runs


def one_line_error(capsys, command: str, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"rtlib {command}: error: "), err
    assert all(name in err for name in names), err
    return err


def cli_train(root: Path, data_dir: Path, *extra: str) -> int:
    return main(["train", "--task", "ptb-word", "--model", "rtransformer", "--out", str(root / "run"),
                 "--results", str(root / "results"), "--data-dir", str(data_dir), *extra])


# ---------------------------------------------------------------- kill points

@pytest.mark.parametrize("cell", CELLS)
def test_a_kill_at_any_write_then_resume_gives_the_uninterrupted_record(uninterrupted, real_data, tmp_path, cell):
    record, best_pt, renames = uninterrupted[cell]
    assert renames >= 6  # checkpoints mid-epoch and at epoch ends, best weights, record, its copy
    for kill_at in range(1, renames + 1):
        for after in (False, True):
            root = tmp_path / f"{kill_at}{'ab'[after]}"
            with pytest.raises(Kill), renames_into(root, kill_at, after):
                short_run(cell, root, real_data)
            resumed = short_run(cell, root, real_data, resume=True)
            assert timeless(resumed) == timeless(record), (kill_at, after)
            assert_folder_matches(root, resumed, best_pt)


KILLED_RUN = """import os, signal, sys
from pathlib import Path
from rtlib.configs import run_config
from rtlib.train import CheckpointEvery, train
root, kill_at, data_dir = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
real_replace, seen = os.replace, []
def replace(source, destination):
    if str(destination).startswith(str(root)):
        seen.append(destination)
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, destination)
os.replace = replace
train(run_config("ptb-word", "rtransformer", "smoke", epochs=2, max_steps=2), root / "run",
      data_dir=data_dir, results_dir=root / "results", callbacks=[CheckpointEvery(3)], log=lambda m: None)
"""


def test_a_sigkilled_run_leaves_its_temporary_file_and_lock_and_resumes_to_the_same_record(
        uninterrupted, real_data, tmp_path):
    record, best_pt, renames = uninterrupted[CELLS[0]]
    kill_at = renames - 4  # the last epoch's checkpoint, its best weights staged before it
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(kill_at), str(real_data)],
                            cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [path.name for path in (tmp_path / "run").glob(".checkpoint.pt.*")]  # left by the kill
    resumed = short_run(CELLS[0], tmp_path, real_data, resume=True)
    assert timeless(resumed) == timeless(record)
    assert_folder_matches(tmp_path, resumed, best_pt)


def test_resume_of_a_finished_run_writes_its_missing_copy_and_says_so(real_data, tmp_path, capsys):
    assert cli_train(tmp_path, real_data) == 0
    copy = tmp_path / "results" / f"{SMOKE_ID}.json"
    record = json.loads(copy.read_text())
    copy.unlink()
    capsys.readouterr()
    assert cli_train(tmp_path, real_data, "--resume") == 0
    assert "already finished" in capsys.readouterr().out
    assert json.loads(copy.read_text()) == record == json.loads((tmp_path / "run" / "record.json").read_text())


# ---------------------------------------------------------------- damaged checkpoints and records

def flipped(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1:]


def test_a_flipped_bit_anywhere_in_the_checkpoint_is_refused_or_harmless(real_data, tmp_path, capsys):
    """Stopped after one step, then a bit flipped at one place of the checkpoint at a time: the
    resume exits 2 with one line naming the file, or (a byte nothing reads) finishes with the
    uninterrupted record; never with another one."""
    assert cli_train(tmp_path / "whole", real_data) == 0
    reference = timeless(json.loads((tmp_path / "whole" / "run" / "record.json").read_text()))
    assert cli_train(tmp_path / "stopped", real_data, "--max-minutes", "0") == 3
    saved = (tmp_path / "stopped" / "run" / "checkpoint.pt").read_bytes()
    weights = torch.load(io.BytesIO(saved), weights_only=True)["model"]
    first_weights = next(iter(weights.values())).numpy().tobytes()[:64]
    positions = [saved.index(first_weights) + 3] + [len(saved) * k // 12 for k in range(12)]
    refused = 0
    for position in positions:
        root = tmp_path / f"flip{position}"
        shutil.copytree(tmp_path / "stopped", root)
        (root / "run" / "checkpoint.pt").write_bytes(flipped(saved, position))
        capsys.readouterr()
        if cli_train(root, real_data, "--resume") == 2:
            one_line_error(capsys, "train", str(root / "run" / "checkpoint.pt"))
            assert not (root / "run" / "record.json").exists()
            refused += 1
        else:
            assert timeless(json.loads((root / "run" / "record.json").read_text())) == reference, position
    assert refused >= len(positions) // 2  # the weights and optimizer state fill most of the file


def test_a_truncated_checkpoint_is_one_line_naming_it(real_data, tmp_path, capsys):
    assert cli_train(tmp_path, real_data, "--max-minutes", "0") == 3
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    capsys.readouterr()
    assert cli_train(tmp_path, real_data, "--resume") == 2
    one_line_error(capsys, "train", str(checkpoint), "damaged")
    assert not (tmp_path / "run" / "record.json").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip a digit of test_loss"])
def test_a_damaged_record_is_one_line_naming_it_and_resume_writes_it_again(real_data, tmp_path, capsys, damage):
    assert cli_train(tmp_path, real_data) == 0
    path = tmp_path / "run" / "record.json"
    good = json.loads(path.read_text())
    text = path.read_text()
    if damage == "truncate":
        text = text[: len(text) // 2]
    else:
        digits = f"{good['test_loss']!r}"
        text = text.replace(digits, digits[:-1] + ("1" if digits[-1] != "1" else "2"))
    path.write_text(text)
    capsys.readouterr()
    assert cli_train(tmp_path, real_data, "--resume") == 2
    one_line_error(capsys, "train", str(path))
    assert path.read_text() == text  # left for the user to see
    path.unlink()  # the fix the message gives
    assert cli_train(tmp_path, real_data, "--resume") == 0
    assert timeless(json.loads(path.read_text())) == timeless(good)


def test_the_runner_names_a_damaged_record_and_carries_on(real_data, tmp_path):
    """Two jobs finished before, one of them with a cut-off record: that one fails naming the
    file, the other is kept (no notebook runs)."""
    good = train(run_config("ptb-word", "transformer", "smoke"), tmp_path / "runs" /
                 "ptb-word_transformer_smoke_lr2_seed1111", data_dir=real_data, **QUIET)
    damaged = tmp_path / "runs" / SMOKE_ID / "record.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text(json.dumps(good)[:100])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["reproduce", "--table", "4", "--profile", "smoke", "--models", "rtransformer",
                     "transformer", "--lrs", "config", "--gpus", "", "--out", str(tmp_path / "runs"),
                     "--results", str(tmp_path / "records"), "--data-dir", str(real_data)])
    out = stdout.getvalue()
    assert code == 1 and "1 done (1 finished before), 1 failed" in out, out
    assert str(damaged) in out
    assert (tmp_path / "records" / "ptb-word_transformer_smoke_lr2_seed1111.json").exists()


# ---------------------------------------------------------------- one writer per run folder

def test_a_resume_while_the_run_trains_exits_2_naming_its_process(real_data, tmp_path, capsys):
    """A second writer arrives after the first epoch (from the first run's callback, so at a
    known moment): refused; the first finishes with one curve, not two interleaved."""
    second = []

    def second_writer(entry):
        if entry["epoch"] == 1:
            second.append(cli_train(tmp_path, real_data, "--resume"))
            second.append(capsys.readouterr().err)
    record = train(run_config("ptb-word", "rtransformer", "smoke"), tmp_path / "run", data_dir=real_data,
                   callbacks=[second_writer], **QUIET)
    assert second[0] == 2 and len(second[1].strip().splitlines()) == 1
    assert f"in use by process {os.getpid()}" in second[1]
    assert [entry["epoch"] for entry in record["curve"]] == [1, 2]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_the_lock_goes_with_its_process(real_data, tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from rtlib.run_folder import locked\n"
         "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)", str(tmp_path / "run")],
        cwd=REPO, env=ONE_THREAD, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli_train(tmp_path, real_data) == 2
        one_line_error(capsys, "train", f"in use by process {holder.pid}")
        assert not (tmp_path / "run" / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli_train(tmp_path, real_data) == 0  # released by the kill


def test_a_second_reproduce_on_the_same_runs_exits_2_and_the_first_finishes(real_data, tmp_path, capsys):
    argv = ["reproduce", "--table", "4", "--profile", "smoke", "--models", "rtransformer", "--lrs", "config",
            "--gpus", "", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "records"),
            "--notebooks", str(tmp_path / "notebooks"), "--data-dir", str(real_data)]
    first = subprocess.Popen([sys.executable, "-m", "rtlib", *argv], cwd=REPO, env=ONE_THREAD,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = tmp_path / "runs" / SMOKE_ID
    deadline = time.monotonic() + 120
    while not (job / "job.log").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    code = main(argv)
    err = capsys.readouterr().err
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"in use by process {first.pid}" in err
    record = json.loads((job / "record.json").read_text())
    assert [entry["epoch"] for entry in record["curve"]] == [1, 2]


def test_a_folder_with_another_runs_log_and_no_checkpoint_is_refused(real_data, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    foreign = json.dumps(dict(epoch=1, lr=0.5, train_loss=7.0)) + "\n"
    (tmp_path / "run" / "log.jsonl").write_text(foreign)
    for extra in ([], ["--resume"]):
        assert cli_train(tmp_path, real_data, *extra) == 2
        one_line_error(capsys, "train", "log.jsonl", "no checkpoint.pt")
    assert (tmp_path / "run" / "log.jsonl").read_text() == foreign
    assert not (tmp_path / "run" / "record.json").exists()


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing final

BAD_VARIANTS = ["grad_clip=-1", "levels=0", "n_local=-1", "max_steps=-1", "tied=banana", "epochs=1.5",
                "window=3,window=4", "window=abc", "seed=abc", "max_steps=0", "eval_limit=0",
                "batch_size=2.5", "lr=inf", "dropout=1.5", "norm=sideways"]


@pytest.mark.parametrize("variant", BAD_VARIANTS)
def test_a_bad_setting_exits_2_naming_it_before_anything_is_made(real_data, tmp_path, capsys, variant):
    assert cli_train(tmp_path, real_data, "--variant", variant) == 2
    one_line_error(capsys, "train", variant.split("=")[0])
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("flags,named", [(["--lr", "inf"], "lr=inf"), (["--lr", "nan"], "lr=nan"),
                                         (["--seed", "-1"], "seed=-1"), (["--epochs", "0"], "epochs=0"),
                                         (["--max-minutes", "-1"], "max_minutes=-1")])
def test_a_bad_flag_exits_2_naming_it_before_anything_is_made(real_data, tmp_path, capsys, flags, named):
    assert cli_train(tmp_path, real_data, *flags) == 2
    one_line_error(capsys, "train", named)
    assert not (tmp_path / "run").exists()


def test_a_variant_cannot_lead_a_run_out_of_its_folder(real_data, tmp_path, capsys):
    escape = "tied=/" + "../" * 16 + str(tmp_path).strip("/") + "/evil"
    code = main(["train", "--task", "ptb-word", "--model", "rtransformer", "--variant", escape,
                 "--results", str(tmp_path / "results"), "--data-dir", str(real_data)])
    assert code == 2
    one_line_error(capsys, "train", "tied=")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_out_folder_is_refused(real_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["train", "--task", "ptb-word", "--model", "rtransformer", "--out", "", "--data-dir", str(real_data)])
    assert exited.value.code == 2
    one_line_error(capsys, "train", "--out")
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_lr_ends_with_a_diverged_record_and_exit_2(real_data, tmp_path, capsys):
    """lr 1e3 on PTB words: a finite training loss whose perplexity overflows."""
    assert cli_train(tmp_path, real_data, "--lr", "1e3") == 2
    one_line_error(capsys, "train", "perplexity inf", "diverged")
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "diverged" and record["test_metric"] is None


def test_damaged_or_missing_data_is_one_line(tmp_path, capsys, monkeypatch):
    corrupt = tmp_path / "corrupt"
    (corrupt / "ptb").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (corrupt / "ptb" / f"ptb.{split}.txt").write_text("not the corpus\n")
    assert cli_train(tmp_path / "a", corrupt) == 2
    one_line_error(capsys, "train", "is not the expected file", "SHA-256")

    def unreachable(url, timeout_s=0.0):
        raise OSError("network is unreachable")
    monkeypatch.setattr(importlib.import_module("rtlib.data.fetch"), "download", unreachable)
    monkeypatch.setenv("RTLIB_DATA_MIRROR", str(tmp_path / "no mirror"))
    assert cli_train(tmp_path / "b", tmp_path / "empty") == 2
    one_line_error(capsys, "train", "cannot find data file")
    assert not list(tmp_path.rglob("record.json")) and not list(tmp_path.rglob("checkpoint.pt"))


def test_unwritable_folders_are_one_line_before_training(real_data, tmp_path, capsys):
    (tmp_path / "a file").write_text("")
    assert cli_train(tmp_path / "a file", real_data) == 2  # --out a file/run
    one_line_error(capsys, "train", "Not a directory")
    code = main(["train", "--task", "ptb-word", "--model", "rtransformer", "--out", str(tmp_path / "run"),
                 "--results", str(tmp_path / "a file" / "results"), "--data-dir", str(real_data)])
    assert code == 2
    one_line_error(capsys, "train", "Not a directory")
    assert not (tmp_path / "run").exists()


def test_analyze_of_a_missing_run_is_one_line(capsys):
    assert main(["analyze", "--run", "/nonexistent/run"]) == 2
    one_line_error(capsys, "analyze", "/nonexistent/run")


def test_a_gpu_that_is_not_there_is_refused(tmp_path, capsys):
    missing = torch.cuda.device_count() + 7
    assert main(["reproduce", "--table", "4", "--profile", "smoke", "--models", "rtransformer", "--lrs",
                 "config", "--gpus", str(missing), "--out", str(tmp_path / "runs")]) == 2
    one_line_error(capsys, "reproduce", f"GPU {missing}")
    assert not (tmp_path / "runs").exists()


def test_a_misspelled_notebook_parameter_is_refused(tmp_path):
    import papermill as pm

    from rtlib import reproduce
    with pytest.raises(pm.PapermillExecutionError) as error:
        pm.execute_notebook(str(reproduce.RUN_NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name="python3",
                            parameters=dict(learning_rate=-1, out_dir=str(tmp_path / "run")),
                            cwd=str(REPO), progress_bar=False)
    assert error.value.ename == "ValueError" and "learning_rate" in error.value.evalue
    assert not (tmp_path / "run").exists()
    assert tuple(pm.inspect_notebook(str(reproduce.RUN_NOTEBOOK))) == NOTEBOOK_PARAMETERS


# ---------------------------------------------------------------- what a record says about its code

def test_a_copy_of_the_project_inside_another_repository_records_an_unknown_commit(tmp_path):
    enclosing = tmp_path / "other"
    shutil.copytree(REPO / "rtlib", enclosing / "project" / "rtlib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    git = dict(cwd=enclosing, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q"], **git)
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty",
                    "-m", "another project"], **git)
    env = {key: value for key, value in os.environ.items() if key != "RTLIB_GIT_COMMIT"}
    printed = subprocess.run([sys.executable, "-c", "from rtlib.run_folder import git_commit; print(git_commit())"],
                             cwd=tmp_path, capture_output=True, text=True, check=True,
                             env={**env, "PYTHONPATH": str(enclosing / "project")})
    assert printed.stdout.strip() == "unknown"


@pytest.mark.parametrize("argv", [["analyze", "--bogus"], ["bench", "--tables", "9"], ["data", "--bogus"]])
def test_delegated_commands_reject_bad_arguments_in_one_line(argv, capsys):
    from rtlib.__main__ import main
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(f"rtlib {argv[0]}: error:")

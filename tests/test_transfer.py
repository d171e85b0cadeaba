"""scripts/transfer.py and the batch script's `more` and `receive`: run folders too large for
one device call go out and come in over several calls, whole or not at all."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtlib.paths import REPO

spec = importlib.util.spec_from_file_location("transfer", REPO / "scripts" / "transfer.py")
transfer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(transfer)
SCRIPT = REPO / "scripts" / "gpu_paper_batch.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None,
                                reason="needs bash and coreutils")


def big_run(root: Path, name: str, size: int) -> Path:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(os.urandom(size))
    (folder / "best.pt").write_bytes(os.urandom(size // 2))
    (folder / "log.jsonl").write_text('{"epoch": 1}\n')
    return folder


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(path.relative_to(a) for path in a.rglob("*") if path.is_file())
    return files == sorted(path.relative_to(b) for path in b.rglob("*") if path.is_file()) and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in files)


def test_split_send_and_join_give_back_the_same_run_folders(tmp_path, monkeypatch):
    machine, here = tmp_path / "machine", tmp_path / "here"
    for name, size in [("ptb-word_gru_paper_lr20_seed1111", 50_000), ("ptb-word_lstm_paper_lr20_seed1111", 30_000)]:
        big_run(machine, name, size)
    monkeypatch.chdir(machine)
    manifest = transfer.split(Path("runs/_outgoing"), [Path("runs/ptb-word_gru_paper_lr20_seed1111"),
                                                       Path("runs/ptb-word_lstm_paper_lr20_seed1111")], 20_000)
    assert len(manifest["parts"]) > 4 and all(part["bytes"] <= 20_000 for part in manifest["parts"])
    calls, left = [], None
    while left != 0:
        calls.append(tmp_path / f"call{len(calls)}")
        left = transfer.send_next(Path("runs/_outgoing"), calls[-1], parts=2)
    assert len(calls) == -(-len(manifest["parts"]) // 2)
    runs, missing = transfer.join(calls[:-1], here)  # one call's parts not fetched: nothing unpacked
    assert runs == [] and missing and not (here / "runs").exists()
    runs, missing = transfer.join(calls, here)
    assert missing == [] and runs == manifest["runs"]
    assert same_tree(machine / "runs" / "ptb-word_gru_paper_lr20_seed1111", here / "runs" / "ptb-word_gru_paper_lr20_seed1111")
    assert same_tree(machine / "runs" / "ptb-word_lstm_paper_lr20_seed1111", here / "runs" / "ptb-word_lstm_paper_lr20_seed1111")


def test_a_damaged_part_is_named_and_a_split_is_never_made_twice(tmp_path, monkeypatch):
    big_run(tmp_path, "x_seed1", 10_000)
    monkeypatch.chdir(tmp_path)
    transfer.split(Path("out"), [Path("runs/x_seed1")], 4_000)
    with pytest.raises(ValueError, match="already split there"):
        transfer.split(Path("out"), [Path("runs/x_seed1")], 4_000)
    with pytest.raises(ValueError, match="not a run folder: runs/nope"):
        transfer.split(Path("other"), [Path("runs/nope")], 4_000)
    (tmp_path / "out" / "part-001").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="part-001: its SHA-256 is not the manifest's"):
        transfer.join([Path("out")], tmp_path / "into")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "transfer.py"), "join", "out", "--into", "into"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("transfer: error: ")


@needs_bash
def test_more_sends_what_finish_left_behind_and_receive_unpacks_it_in_the_next_lease(tmp_path):
    machine, here, lease = tmp_path / "machine", tmp_path / "here", tmp_path / "lease"
    (machine / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "transfer.py", machine / "scripts")
    (machine / "runs" / "_logs").mkdir(parents=True)
    (machine / "runs" / "_logs" / "runner_pids").write_text("999999999\n")
    big = big_run(machine, "ptb-word_gru_paper_lr20_seed1111", 500_000)
    (machine / "runs" / "_logs" / "too_large_to_carry.txt").write_text(f"runs/{big.name}\n")
    limits = dict(OUT_FILES="8", OUT_BYTES="1400000", PART_BYTES="100000")  # 4 parts a call
    calls, said = [], ""
    while "parts left to send: 0" not in said:
        calls.append(tmp_path / f"out{len(calls)}")
        calls[-1].mkdir()
        done = subprocess.run(["bash", str(SCRIPT), "more"], cwd=machine, capture_output=True, text=True,
                              env=dict(os.environ, OUT=str(calls[-1]), **limits), timeout=60)
        assert done.returncode == 0, done.stderr
        said = done.stdout
        assert len(list(calls[-1].iterdir())) <= 5
    assert len(calls) == 2  # 750 kB in 8 parts of 100 kB, 4 a call
    runs, missing = transfer.join(calls, here)
    assert missing == [] and same_tree(big, here / "runs" / big.name)

    os.chdir(here)
    try:
        manifest = transfer.split(Path("incoming"), [Path("runs") / big.name], 300_000)
    finally:
        os.chdir(REPO)
    (lease / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "transfer.py", lease / "scripts")
    for index, part in enumerate(manifest["parts"]):  # one call a part, each carrying only it
        shutil.rmtree(lease / "incoming", ignore_errors=True)
        (lease / "incoming").mkdir()
        for name in ("manifest.json", part["name"]):
            shutil.copy(here / "incoming" / name, lease / "incoming" / name)
        done = subprocess.run(["bash", str(SCRIPT), "receive"], cwd=lease, capture_output=True, text=True,
                              env=dict(os.environ, OUT=str(tmp_path / "unused")), timeout=60)
        last = index == len(manifest["parts"]) - 1
        assert done.returncode == (0 if last else 3), done.stderr
    assert same_tree(big, lease / "runs" / big.name) and not (lease / "runs" / "_incoming").exists()

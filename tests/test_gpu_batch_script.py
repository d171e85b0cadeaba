"""scripts/gpu_paper_batch.sh's `finish` on a CPU, with the GPU tools stubbed and the limits on
what a call brings back scaled down: what it ships, what it leaves behind, and that it stays
within the device tool's limits (8 files, 64 MiB in all, at full scale)."""
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from rtlib.configs import run_config
from rtlib.paths import REPO
from rtlib.run_folder import run_id_fields

SCRIPT = REPO / "scripts" / "gpu_paper_batch.sh"
LIMITS = dict(OUT_FILES="8", OUT_BYTES="600000", PART_BYTES="100000", CARRY_LIMIT_BYTES="400000")


def run_folder(root: Path, run_id: str, checkpoint: int, best: int, finished: bool) -> Path:
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(os.urandom(checkpoint))
    (folder / "best.pt").write_bytes(os.urandom(best))
    (folder / "log.jsonl").write_text('{"epoch": 1}\n')
    if finished:
        fields = run_id_fields(run_id)
        record = dict(task=fields["task"], model=fields["model"], profile="paper", variant="",
                      lr=run_config(fields["task"], fields["model"], "paper").train.lr)
        (folder / "record.json").write_text(json.dumps(record) + "\n")
    return folder


def members(out: Path, name: str) -> set[str]:
    parts = sorted(out.glob(f"{name}.tar.part-*"))
    if not parts:
        return set()
    joined = out.parent / f"{name}.tar"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    with tarfile.open(joined) as archive:
        return set(archive.getnames())


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash and coreutils")
def test_finish_ships_unfinished_runs_that_can_be_carried_then_analysed_best_weights(tmp_path):
    root, out, stubs = tmp_path / "repo", tmp_path / "out", tmp_path / "bin"
    for folder in (root / "runs" / "_logs", root / "results" / "analysis", out, stubs):
        folder.mkdir(parents=True)
    (stubs / "nvidia-cuda-mps-control").write_text("#!/bin/sh\ncat > /dev/null\n")
    (stubs / "nvidia-cuda-mps-control").chmod(0o755)
    (root / "runs" / "_logs" / "runner_pids").write_text("999999999\n")  # runners that have ended
    analysed = dict(task="ptb-word", model="transformer", profile="paper", example=[1], maps=[[[[1.0]]]])
    analysed["more_examples"] = [dict(example=[2], maps=[[[[1.0]]]]), dict(example=[3], maps=[[[[1.0]]]])]
    (root / "results" / "analysis" / "ptb-word_transformer_paper_lr2_seed1112.json").write_text(json.dumps(analysed))
    one_example = dict(analysed, task="ptb-char", model="rtransformer", more_examples=[dict(example=[2])])
    (root / "results" / "analysis" / "ptb-char_rtransformer_paper_lr2_seed1113.json").write_text(json.dumps(one_example))
    run_folder(root, "ptb-char_rtransformer_paper_lr2_seed1112", 150_000, 150_000, finished=True)
    run_folder(root, "ptb-char_rtransformer_paper_lr2_seed1113", 150_000, 150_000, finished=True)
    run_folder(root, "ptb-word_transformer_paper_lr2_seed1113", 50_000, 50_000, finished=True)
    run_folder(root, "nottingham_gru_paper_lr0.001_seed1111", 5_000, 5_000, finished=True)  # no attention
    run_folder(root, "mnist_rtransformer_paper_lr0.001_seed1111", 20_000, 10_000, finished=False)
    run_folder(root, "ptb-char_transformer_paper_lr2_seed1112", 250_000, 250_000, finished=False)  # too large
    run_folder(root, "nottingham_gru_paper_lr0.001_seed1112", 190_000, 190_000, finished=False)
    env = dict(os.environ, OUT=str(out), PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", **LIMITS)
    done = subprocess.run(["bash", str(SCRIPT), "finish"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = list(out.iterdir())
    assert len(files) <= 8 and sum(f.stat().st_size for f in files) <= int(LIMITS["OUT_BYTES"])
    assert members(out, "checkpoints") == {
        f"runs/{run}/{name}" for run in ("mnist_rtransformer_paper_lr0.001_seed1111", "nottingham_gru_paper_lr0.001_seed1112")
        for name in ("checkpoint.pt", "best.pt", "log.jsonl")}
    too_large = (root / "runs" / "_logs" / "too_large_to_carry.txt").read_text()
    assert too_large.strip() == "runs/ptb-char_transformer_paper_lr2_seed1112"
    assert members(out, "weights") == set()  # no room left after the checkpoints
    left = (root / "runs" / "_logs" / "left_behind_weights.txt").read_text()
    # one run per (task, attention model) whose analyses keep fewer than 3 examples' maps (here one)
    assert left.strip() == "runs/ptb-char_rtransformer_paper_lr2_seed1112"
    assert (out / "records.tgz").exists() and (out / "notebooks.tgz").exists()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash and coreutils")
def test_finish_called_without_a_carry_limit_keeps_the_one_its_start_used(tmp_path):
    root, out = tmp_path / "repo", tmp_path / "out"
    (root / "runs" / "_logs").mkdir(parents=True)
    out.mkdir()
    (root / "runs" / "_logs" / "runner_pids").write_text("999999999\n")
    run_folder(root, "mnist_rtransformer_paper_lr0.001_seed1111", 60_000, 60_000, finished=False)
    env = {key: value for key, value in dict(os.environ, OUT=str(out), **LIMITS).items() if key != "CARRY_LIMIT_BYTES"}
    (root / "runs" / "_logs" / "carry_limit_bytes").write_text("100000\n")  # what `start` was given
    done = subprocess.run(["bash", str(SCRIPT), "finish"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert members(out, "checkpoints") == set()  # 120 kB of weights: over the kept 100 kB
    assert "mnist_rtransformer" in (root / "runs" / "_logs" / "too_large_to_carry.txt").read_text()


def test_finish_refuses_a_machine_where_no_runner_started(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "finish"], cwd=tmp_path, env=dict(os.environ, OUT=str(tmp_path)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no runners were started on this machine" in done.stderr


def test_wait_ends_early_once_no_runner_of_the_batch_runs(tmp_path):
    import time
    (tmp_path / "runs" / "_logs").mkdir(parents=True)
    pids = tmp_path / "runs" / "_logs" / "runner_pids"
    env = dict(os.environ, OUT=str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    pids.write_text("1\n999999999\n")  # a pid that is no runner (an earlier machine's, reused), one gone
    finished = tmp_path / "runs" / "nottingham_tcn_paper_lr0.001_seed1111"
    finished.mkdir()
    for name in ("record.json", "run.ipynb"):
        (finished / name).write_text("{}")
    began = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), "wait", "60"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert time.monotonic() - began < 10 and "cmdline" not in done.stderr
    with tarfile.open(tmp_path / "out" / "notebooks.tgz") as tar:  # every step, not only finish
        assert tar.getnames() == [f"runs/{finished.name}/run.ipynb"]
    runner = subprocess.Popen(["bash", "-c", 'exec -a "python3 -m rtlib reproduce" sleep 30'])
    try:
        pids.write_text(f"{runner.pid}\n")
        began = time.monotonic()
        subprocess.run(["bash", str(SCRIPT), "wait", "3"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
        assert time.monotonic() - began >= 3
    finally:
        runner.kill()


def test_wait_ships_the_small_unfinished_runs_so_that_a_machine_gone_cold_loses_less(tmp_path):
    root, out = tmp_path / "repo", tmp_path / "out"
    for folder in (root / "runs" / "_logs", out):
        folder.mkdir(parents=True)
    (root / "runs" / "_logs" / "runner_pids").write_text("999999999\n")  # runners that have ended
    run_folder(root, "mnist_lstm_paper_precision-fp32_lr0.001_seed1111", 20_000, 10_000, finished=False)
    (root / "runs" / "mnist_lstm_paper_precision-fp32_lr0.001_seed1111" / "best.next.pt").write_bytes(b"staged")
    run_folder(root, "ptb-char_rtransformer_paper_lr1_seed1111", 250_000, 250_000, finished=False)  # too large
    run_folder(root, "mnist_rnn_paper_lr0.001_seed1112", 5_000, 5_000, finished=True)
    env = dict(os.environ, OUT=str(out), **LIMITS)
    done = subprocess.run(["bash", str(SCRIPT), "wait", "1"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    run = "runs/mnist_lstm_paper_precision-fp32_lr0.001_seed1111"
    assert members(out, "checkpoints") == {f"{run}/{name}" for name in
                                          ("best.next.pt", "best.pt", "checkpoint.pt", "log.jsonl")}
    too_large = (root / "runs" / "_logs" / "too_large_to_carry.txt").read_text()
    assert too_large.strip() == "runs/ptb-char_rtransformer_paper_lr1_seed1111"
    assert (out / "records.tgz").exists()
    assert (root / run / "checkpoint.pt").stat().st_ino == (root / "runs" / "_live" / run / "checkpoint.pt").stat().st_ino


def stubbed_machine(tmp_path: Path, imports: bool = True, data: bool = True) -> tuple[Path, Path, dict[str, str]]:
    """A repo, $OUT and an environment whose python3, nvidia-smi and MPS are stubs that note
    their arguments in tmp_path/calls.txt; with imports=False the notebook tools fail to import,
    with data=False `rtlib data` finds no data."""
    root, out, stubs = tmp_path / "repo", tmp_path / "out", tmp_path / "bin"
    for folder in (root / "rtlib", root / "notebooks", root / "results" / "records", root / "data",
                   root / "wheels312", out, stubs):
        folder.mkdir(parents=True)
    for name in ("pyproject.toml", "rtlib/__init__.py", "notebooks/run.ipynb", "data/SHA256SUMS", "data/README.md",
                 "wheels312/papermill-2.7.0-py3-none-any.whl"):
        (root / name).write_text("")
    fakes = {
        "python3": f'echo "$*" >> {tmp_path / "calls.txt"}\ncase "$*" in\n'
                   f'  *"rtlib reproduce"*) exec -a "python3 -m rtlib reproduce" sleep 2 ;;\n'
                   f'  "-c import papermill"*) exit {0 if imports else 1} ;;\n'
                   f'  *"rtlib data"*) {"exit 0" if data else "echo rtlib data: error: cannot find ptb >&2; exit 1"} ;;\nesac',
        "nvidia-smi": 'echo "GPU 0: stub"',
        "nvidia-cuda-mps-control": "cat > /dev/null",
    }
    for name, body in fakes.items():
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    env = dict(os.environ, OUT=str(out), PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", GPU_TESTS_SKIP="1",
               CUDA_MPS_PIPE_DIRECTORY=str(tmp_path / "mps"), CUDA_MPS_LOG_DIRECTORY=str(tmp_path / "mpslog"))
    return root, out, env


def test_start_runs_the_sharing_bench_then_one_runner_per_argument_set_and_waits(tmp_path):
    """`start` on a CPU with python3, nvidia-smi and MPS stubbed: what it calls, with which
    arguments, that START_WAIT_S keeps the call going, and that `finish` then packs."""
    import time
    root, out, env = stubbed_machine(tmp_path)
    env.update(START_WAIT_S="4", SHARING_ROUNDS="4:rtransformer 4:rtransformer*2")
    del env["GPU_TESTS_SKIP"]  # the stubbed GPU tests run beside the runner
    (root / "runs" / "_logs").mkdir(parents=True, exist_ok=True)
    (root / "runs" / "_logs" / "runner3.log").write_text("an earlier batch's runner, on this warm machine\n")
    began = time.monotonic()
    started = subprocess.run(["bash", str(SCRIPT), "start", "5", "--cells 3:rtransformer:config --seeds 3"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert "warning: the deadline" not in started.stderr  # 5 minutes end inside this call's `wait`
    assert time.monotonic() - began >= 3  # START_WAIT_S=4, counted by bash in whole seconds from its start
    lines = (tmp_path / "calls.txt").read_text().splitlines()
    assert lines[:3] == ["-m pip install -q --no-index --no-deps wheels312/papermill-2.7.0-py3-none-any.whl",
                         "-m pip check", "-c import papermill, nbclient, ipykernel, jupytext"]
    lines.remove("-m rtlib data --tasks mnist nottingham ptb-char ptb-word")  # the GPU tests' data, checked
    assert lines[3] == ("-m rtlib bench --sharing 4:rtransformer 4:rtransformer*2 --sharing-seconds 10 "
                        "--out runs/_logs/sharing.json")
    marker = root / "runs" / "_logs" / "gpu_tests.running"  # exists while the GPU tests run
    assert lines[4] == (f"-m rtlib reproduce --profile paper --gpus 0 --out {root}/runs --deadline-minutes 5 "
                        f"--carry-limit-mb 30 --hold-judgement-while {marker} "
                        "--cells 3:rtransformer:config --seeds 3")  # the runner's own last
    assert any(line.startswith("-m pytest") for line in lines[5:]) and not marker.exists()
    assert (root / "runs" / "_code" / "rtlib" / "__init__.py").exists() and (out / "records.tgz").exists()
    assert not (root / "runs" / "_logs" / "runner3.log").exists()  # the earlier batch's, packed by that batch
    assert (root / "runs" / "_logs" / "carry_limit_bytes").read_text().strip() == "30000000"  # for later calls
    finished = subprocess.run(["bash", str(SCRIPT), "finish"], cwd=root, env=env, capture_output=True, text=True,
                              timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert (out / "notebooks.tgz").exists()


def test_start_warns_when_the_deadline_ends_after_its_one_wait_and_auto_ends_inside_it(tmp_path):
    """Batch u: `wait 540` ended 1-2 epochs before three runs' last, the `finish` call came late,
    and the machine went cold with them. A deadline past start + one full `wait` says so."""
    root, out, env = stubbed_machine(tmp_path)
    env.update(START_WAIT_S="1")
    started = subprocess.run(["bash", str(SCRIPT), "start", "10.5", "--cells 3:lstm:config"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert "warning: the deadline (10.5 min) ends after this call and one `wait` (591 s)" in started.stderr
    (tmp_path / "calls.txt").unlink()
    started = subprocess.run(["bash", str(SCRIPT), "start", "auto", "--cells 3:lstm:config"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and "warning" not in started.stderr, started.stderr
    runner = [line for line in (tmp_path / "calls.txt").read_text().splitlines() if "rtlib reproduce" in line]
    assert runner and "--deadline-minutes 8.8 " in runner[0]  # (1 + 590) s / 60, less a minute


def test_start_starts_no_runner_when_the_notebook_tools_do_not_import(tmp_path):
    root, out, env = stubbed_machine(tmp_path, imports=False)
    started = subprocess.run(["bash", str(SCRIPT), "start", "5", "--cells 3:rtransformer:config"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert "the run notebook's tools do not import" in started.stderr
    assert not any("rtlib reproduce" in line for line in (tmp_path / "calls.txt").read_text().splitlines())
    assert (out / "records.tgz").exists()


def test_start_checks_the_data_of_the_gpu_tests_before_it_starts_anything(tmp_path):
    """Batch h carried no PTB data: its GPU tests' PTB cases failed for that alone, saying nothing
    about the engine. With the GPU tests on, a missing data set stops `start` before MPS."""
    root, out, env = stubbed_machine(tmp_path, data=False)
    env.pop("GPU_TESTS_SKIP")
    started = subprocess.run(["bash", str(SCRIPT), "start", "5", "--cells 3:rtransformer:config"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert "the GPU tests need every table's data set" in started.stderr
    assert "cannot find ptb" in started.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert "-m rtlib data --tasks mnist nottingham ptb-char ptb-word" in calls
    assert not any("rtlib reproduce" in line for line in calls)
    assert (out / "records.tgz").exists()


def test_start_stops_waiting_once_every_runner_has_ended(tmp_path):
    """Batch am: its only job was stopped a minute in, and `start` slept out START_WAIT_S=575 on
    a held machine. The stub runner ends after 2 s; `start` must not sleep the 30."""
    import time
    root, out, env = stubbed_machine(tmp_path)
    env.update(START_WAIT_S="30")
    began = time.monotonic()
    started = subprocess.run(["bash", str(SCRIPT), "start", "5", "--cells 3:gru:grid --seeds 1"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert time.monotonic() - began < 15
    assert (out / "records.tgz").exists()


@pytest.mark.parametrize("analysed_here", [False, True])
def test_finish_analyses_and_ships_a_run_once_per_machine(tmp_path, analysed_here):
    """Batch am's `finish`, on batch al's warm machine, analysed and shipped al's analysed
    repeat again: the tree's analyses lag until al lands. A marker in the run folder says so."""
    root, out, stubs = tmp_path / "repo", tmp_path / "out", tmp_path / "bin"
    for folder in (root / "runs" / "_logs", root / "results" / "analysis", out, stubs):
        folder.mkdir(parents=True)
    (stubs / "nvidia-cuda-mps-control").write_text("#!/bin/sh\ncat > /dev/null\n")
    (stubs / "nvidia-cuda-mps-control").chmod(0o755)
    (root / "runs" / "_logs" / "runner_pids").write_text("999999999\n")
    one_example = dict(task="ptb-word", model="rtransformer", profile="paper", example=[1], maps=[[[[1.0]]]],
                       more_examples=[dict(example=[2])])
    (root / "results" / "analysis" / "ptb-word_rtransformer_paper_lr2_seed1111.json").write_text(json.dumps(one_example))
    run = run_folder(root, "ptb-word_rtransformer_paper_lr2_seed1111", 50_000, 50_000, finished=True)
    if analysed_here:
        (run / "ANALYSED_HERE").write_text("")
    env = dict(os.environ, OUT=str(out), PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", **LIMITS)
    done = subprocess.run(["bash", str(SCRIPT), "finish"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shipped = {f"runs/{run.name}/{name}" for name in ("best.pt", "record.json", "log.jsonl")}
    assert members(out, "weights") == (set() if analysed_here else shipped)

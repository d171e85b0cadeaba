"""The batch runner and the run notebook: papermill really executes notebooks/run.ipynb here.

Each notebook execution starts a kernel (seconds), so the runs are shared through two
module-scoped fixtures: a 2-job grid (run, then re-issued), and a grid with one failing job and
one stopped by its time budget (run, then re-issued to resume).
"""
import contextlib
import io
import json
import math
import re
import shlex
from pathlib import Path

import nbformat
import pytest

from rtlib.__main__ import main
from rtlib.configs import TABLE_TASKS, run_config, with_variant
from rtlib.paths import RECORDS_DIR, REPO, RESULTS_DIR
from rtlib.reproduce import (RUN_NOTEBOOK, ablation_jobs, expand_jobs, notebooks_dir_for,
                             strip_notebook)
from rtlib.results import load_records
from rtlib.run_folder import run_id, run_id_fields, variant_slug

NORM_POST = "ptb-word_rtransformer_smoke_norm-post_lr2_seed1111"
TABLE4 = ["--table", "4", "--profile", "smoke", "--seeds", "1", "--lrs", "config", "--gpus", ""]


def reproduce(argv: list[str]) -> tuple[int, str]:
    """`python -m rtlib reproduce ...` in this process; its stdout."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["reproduce", *argv])
    return code, stdout.getvalue()


def folders(root: Path, data_dir: Path) -> list[str]:
    return ["--out", str(root / "runs"), "--results", str(root / "records" / "smoke"),
            "--data-dir", str(data_dir)]


@pytest.fixture(scope="module")
def grid(real_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    argv = [*TABLE4, "--models", "rtransformer", "transformer", *folders(root, real_data)]
    first = reproduce(argv)
    mtimes = {p: p.stat().st_mtime for p in (root / "runs").rglob("record.json")}
    again = reproduce(argv)
    return root, first, again, mtimes


@pytest.fixture(scope="module")
def fail_and_resume(real_data, tmp_path_factory):
    """window=100 cannot fit the smoke sequence (24) and fails in the notebook's check cell;
    norm=post runs after it and stops at once (--max-minutes 0); the re-issue, without the
    time budget (and without the failing job, to save a kernel start), resumes it."""
    root = tmp_path_factory.mktemp("fail")
    argv = [*TABLE4, "--models", "rtransformer", *folders(root, real_data)]
    first = reproduce([*argv, "--variants", "window=100", "norm=post", "--max-minutes", "0"])
    stopped = sorted(p.name for p in (root / "runs" / NORM_POST).iterdir())
    again = reproduce([*argv, "--variants", "norm=post"])
    return root, first, stopped, again


def test_grid_runs_every_job_through_the_notebook(grid):
    root, (code, out), _, _ = grid
    assert code == 0, out
    assert "summary: 2 done" in out and "0 failed, 0 remaining" in out
    for model in ("rtransformer", "transformer"):
        run_id = f"ptb-word_{model}_smoke_lr2_seed1111"
        run = root / "runs" / run_id
        record = json.loads((run / "record.json").read_text())
        assert record["run_id"] == run_id and record["epochs_run"] == 2 and "gpu_minutes" in record
        assert (run / "checkpoint.pt").exists()
        executed = nbformat.read(run / "run.ipynb", as_version=4)
        assert any("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs)  # the live learning curves
        assert json.loads((root / "records" / "smoke" / f"{run_id}.json").read_text()) == record
        kept = nbformat.read(root / "notebooks" / "smoke" / f"{run_id}.ipynb", as_version=4)
        assert not any("image/png" in o.get("data", {}) for c in kept.cells if c.cell_type == "code"
                       for o in c.outputs)
        assert "paper" in json.dumps(kept.cells[-1].outputs)  # ends with ours beside the paper


def test_reissued_grid_skips_finished_jobs(grid):
    root, _, (code, out), mtimes = grid
    assert code == 0 and "summary: 2 done (2 finished before)" in out
    assert "start" not in out
    assert {p: p.stat().st_mtime for p in (root / "runs").rglob("record.json")} == mtimes


def test_failing_job_does_not_stop_the_others(fail_and_resume):
    _, (code, out), stopped, _ = fail_and_resume
    assert code == 1, out
    assert "1 failed, 1 remaining" in out
    failed = [line for line in out.splitlines() if line.startswith("failed ") and "window-100" in line]
    assert failed and "ValueError: window=100 is larger than the sequence length 24" in failed[-1]
    assert "checkpoint.pt" in stopped and "record.json" not in stopped  # ran after the failure


def test_stopped_job_resumes_when_the_command_is_reissued(fail_and_resume):
    root, _, _, (code, out) = fail_and_resume
    assert code == 0 and "1 done" in out and "0 failed, 0 remaining" in out
    run = root / "runs" / NORM_POST
    assert "(resuming)" in out and "resumed" in out
    assert "resumed" in (run / "run.ipynb").read_text()  # train() continued the checkpoint
    record = json.loads((run / "record.json").read_text())
    assert [entry["epoch"] for entry in record["curve"]] == [1, 2]
    assert record["variant"] == "norm=post"


def test_bad_notebook_parameter_fails_with_the_named_value(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as error:
        pm.execute_notebook(str(RUN_NOTEBOOK), str(tmp_path / "out.ipynb"), parameters=dict(task="nope"),
                            kernel_name="python3", cwd=str(REPO), progress_bar=False)
    assert error.value.ename == "ValueError"
    assert "task='nope'" in error.value.evalue and "ptb-word" in error.value.evalue


def test_plan_prints_one_command_per_job(capsys):
    code = main(["reproduce", "--table", "4", "--profile", "fast", "--seeds", "2", "--plan",
                 "--out", "runs"])
    lines = [line for line in capsys.readouterr().out.strip().splitlines() if not line.startswith("#")]
    expected = sum(2 * len(run_config("ptb-word", model, "fast").train.lr_grid)
                   for model in ("rtransformer", "transformer", "tcn", "rnn", "gru", "lstm"))
    assert code == 0 and len(lines) == expected
    for line in lines:
        mkdir, command = line.split(" && ")
        args = shlex.split(command)
        assert args[:2] == ["papermill", "notebooks/run.ipynb"] and args[2].endswith("/run.ipynb")
        assert " ".join(args[-3:]) == "-p resume True" and "-p profile fast" in command
        assert mkdir == f"mkdir -p {Path(args[2]).parent}"
    assert len({line.split(" && ")[0] for line in lines}) == expected  # one folder per job


def test_a_paper_plan_gives_each_job_its_measured_minutes(capsys, monkeypatch, data_mirror):
    from rtlib import cost
    from rtlib.cost import job_minutes

    def never_ran(prices):  # the RNN as before its first run (batch at timed it)
        return lambda *args: {key: value for key, value in prices(*args).items() if key[:2] != ("ptb-char", "rnn")}
    monkeypatch.setattr(cost, "minutes_per_run", never_ran(cost.minutes_per_run))
    monkeypatch.setattr(cost, "fastest_minutes", never_ran(cost.fastest_minutes))
    jobs = expand_jobs([3], ["gru", "rnn"], "paper", 1, "config")
    assert job_minutes(jobs, {("ptb-char", "gru", ""): 12.4}) == [12.4, pytest.approx(math.nan, nan_ok=True)]
    code = main(["reproduce", "--cells", "3:gru:config", "3:rnn:config", "--profile", "paper", "--plan",
                 "--out", "runs", "--results", "/nonexistent"])
    out = capsys.readouterr().out
    assert code == 0 and "# job-minutes as measured so far" in out
    assert re.search(r"^#   ptb-char_gru_paper_lr4_seed1111: \d+\.\d \((at the fastest pace a batch measured: \d+\.\d; )?"
                     r"its steps alone, benchmarked: at least \d+\.\d; 46 MB to carry if stopped\)$", out,
                     re.MULTILINE)  # batch z timed it
    # never run, but the committed H100 step bench timed its steps
    assert re.search(r"^#   ptb-char_rnn_paper_lr4_seed1111: not timed yet \(its steps alone, benchmarked: at "
                     r"least \d+\.\d; 46 MB to carry if stopped\)$", out, re.MULTILINE)
    main(["reproduce", "--table", "4", "--profile", "fast", "--plan", "--out", "runs"])
    assert "job-minutes" not in capsys.readouterr().out  # measured for the paper profile only


def test_a_variant_is_priced_by_its_own_runs_and_the_plan_says_when_it_is_not(capsys, monkeypatch, data_mirror):
    from rtlib import bench_results, cost, results
    from rtlib.cost import job_minutes, minutes_per_run

    fp32 = ablation_jobs("paper", [1, 3])
    fp32 = [job for job in fp32 if job.cfg.variant == "precision=fp32"]
    mnist, ptb_char = fp32
    # batch ab stopped seq-MNIST in fp32 after its first epoch, which no steady pace covers
    batch = dict(lost_runs=[dict(run_id=mnist.run_id, epochs=1, job_minutes=6.0, seconds_per_epoch=None,
                                 why="unfinished at the deadline")])
    price = minutes_per_run(load_records(Path("/nonexistent")), [batch])
    epochs = mnist.cfg.train.epochs
    assert price == {("mnist", "rtransformer", "precision-fp32"): 6.0 * epochs}
    price[("ptb-char", "rtransformer", "")] = 18.5
    assert job_minutes(fp32, price) == [6.0 * epochs, 18.5]
    assert job_minutes(fp32, price, row_pace=False) == [6.0 * epochs, pytest.approx(math.nan, nan_ok=True)]
    # a batch log that timed the row, not the variant (the committed logs time more and more variants)
    row = dict(run_id="ptb-word_rtransformer_paper_lr2_seed1111", status="finished", epochs=100, job_minutes=16.0,
               seconds_per_epoch=9.5)
    monkeypatch.setattr(cost, "load_batches", lambda: [dict(finished=[row])])
    monkeypatch.setattr(results, "load_records", lambda: load_records(Path("/nonexistent")))
    main(["reproduce", "--table", "all", "--ablations", "--profile", "paper", "--plan", "--out", "runs",
          "--results", "/nonexistent"])
    out = capsys.readouterr().out
    assert re.search(r"^#   ptb-word_rtransformer_paper_window-1_lr2_seed1111: not timed yet \(the row without "
                     r"`window=1`: 15\.8; 18 MB to carry if stopped\)$", out, re.MULTILINE)
    # an fp32 ablation's steps were benchmarked in fp32 (results/bench/engine_modes_fp32_*.json)
    assert re.search(r"^#   ptb-char_rtransformer_paper_precision-fp32_lr2_seed1111: not timed yet \(its steps "
                     r"alone, benchmarked: at least \d+\.\d; 114 MB to carry if stopped\)$", out, re.MULTILINE)
    monkeypatch.setattr(bench_results, "load_bench", lambda: [])
    main(["reproduce", "--cells", "1:rtransformer:config", "--variants", "precision=fp32", "--profile", "paper",
          "--plan", "--out", "runs", "--results", "/nonexistent"])
    assert re.search(r"^#   mnist_rtransformer_paper_precision-fp32_lr0\.001_seed1111: not timed yet "
                     r"\(3 MB to carry if stopped\)$",
                     capsys.readouterr().out, re.MULTILINE)


def test_a_run_id_reads_back_as_its_parts():
    for task, model, variant in [("ptb-char", "rtransformer", ""), ("nottingham", "transformer", "position=none"),
                                 ("ptb-word", "rtransformer", "window=3,norm=post")]:
        cfg = with_variant(run_config(task, model, "paper"), variant)
        fields = run_id_fields(run_id(cfg))
        assert (fields["task"], fields["model"], fields["profile"]) == (task, model, "paper")
        assert fields["variant"] == variant_slug(variant) and float(fields["lr"]) == cfg.train.lr
        assert run_id_fields(run_id(cfg) + ".again") == fields and fields["seed"] == str(cfg.train.seed)
    with pytest.raises(ValueError, match="'ptb-char_gru' is not TASK_MODEL_PROFILE"):
        run_id_fields("ptb-char_gru")


def test_grid_expansion():
    jobs = expand_jobs([4], ["rtransformer", "transformer"], "smoke", seeds=3, lrs="grid",
                       variants=["", "position=none"], notes=(notes := []))
    grid = run_config("ptb-word", "rtransformer", "smoke").train.lr_grid
    # rtransformer: 1 variant (position is a Transformer setting); transformer: 2
    assert len(jobs) == 3 * len(grid) * 3
    assert {job.cfg.train.seed for job in jobs} == {1111, 1112, 1113}
    assert len({job.run_id for job in jobs}) == len(jobs)
    assert notes and "position=none" in notes[0]
    all_tables = expand_jobs(list(TABLE_TASKS), ["rtransformer"], "paper", seeds=1, lrs="config")
    assert [job.cfg.task for job in all_tables] == list(TABLE_TASKS.values())


def test_sweep_runs_the_grid_at_the_first_seed_and_follows_the_lr_chosen_on_validation():
    def ids(jobs):
        return sorted((job.cfg.train.lr, job.cfg.train.seed) for job in jobs)

    jobs = expand_jobs([4], ["rtransformer"], "paper", seeds=3, lrs="sweep", notes=(notes := []))
    assert ids(jobs) == [(1.0, 1111), (2.0, 1111), (2.0, 1112), (2.0, 1113), (3.0, 1111)]
    assert "not finished" in notes[0]
    grid = [job for job in jobs if job.cfg.train.seed == 1111]
    finished = {job.run_id: dict(config=job.cfg.to_dict(), lr=job.cfg.train.lr, status="finished",
                                 best_valid_metric={1.0: 90.0, 2.0: 95.0, 3.0: 88.0}[job.cfg.train.lr])
                for job in grid}
    finished[grid[-1].run_id]["status"] = "diverged"  # lr 3: a diverged run never wins
    again = expand_jobs([4], ["rtransformer"], "paper", seeds=3, lrs="sweep", finished=finished,
                        notes=(notes := []))
    # the config's lr 2 lost on validation: its other seeds are no longer worth a GPU
    assert ids(again) == [(1.0, 1111), (1.0, 1112), (1.0, 1113), (2.0, 1111), (3.0, 1111)]
    assert "lr 1 chosen on validation" in notes[0]
    mnist = expand_jobs([1], ["rtransformer"], "paper", seeds=3, lrs="sweep")
    assert ids(mnist) == [(1e-3, 1111), (1e-3, 1112), (1e-3, 1113)]  # no validation split


def test_sweep_runs_no_more_seeds_at_an_lr_that_diverged_at_the_first_seed():
    def ids(jobs):
        return sorted((job.cfg.train.lr, job.cfg.train.seed) for job in jobs)

    grid = [job for job in expand_jobs([4], ["rtransformer"], "paper", seeds=1, lrs="sweep")]
    record = {job.cfg.train.lr: dict(config=job.cfg.to_dict(), lr=job.cfg.train.lr, status="diverged",
                                     best_valid_metric=None) for job in grid}
    config_lr = run_config("ptb-word", "rtransformer", "paper").train.lr
    by_lr = {job.cfg.train.lr: job for job in grid}
    diverged_at_config = {by_lr[config_lr].run_id: record[config_lr]}
    jobs = expand_jobs([4], ["rtransformer"], "paper", seeds=3, lrs="sweep", finished=diverged_at_config,
                       notes=(notes := []))
    assert ids(jobs) == [(1.0, 1111), (2.0, 1111), (3.0, 1111)]
    assert f"the config's lr {config_lr:g} diverged at seed 1111" in notes[0]
    all_diverged = {job.run_id: record[job.cfg.train.lr] for job in grid}
    jobs = expand_jobs([4], ["rtransformer"], "paper", seeds=3, lrs="sweep", finished=all_diverged,
                       notes=(notes := []))
    assert ids(jobs) == [(1.0, 1111), (2.0, 1111), (3.0, 1111)]
    assert "every lr of the grid diverged" in notes[0]


def test_ablations_run_at_the_first_seed_and_those_a_claim_rests_on_at_the_seeds_of_a_verdict():
    jobs = ablation_jobs("paper", [2, 4])
    assert jobs and all(job.cfg.variant for job in jobs)
    assert {job.cfg.task for job in jobs} == {"nottingham", "ptb-word"}
    seeds = {}
    for job in jobs:
        seeds.setdefault((job.cfg.task, job.cfg.variant), []).append(job.cfg.train.seed)
    # "no position embeddings needed" is tested against the position=none Transformers
    assert seeds["nottingham", "position=none"] == seeds["ptb-word", "position=none"] == [1111, 1112, 1113]
    assert all(found == [1111] for (_, variant), found in seeds.items() if variant != "position=none")


@pytest.mark.parametrize("argv,named", [
    (["--table", "5", "--profile", "smoke", "--seeds", "1"], "'5'"),
    (["--table", "4", "--profile", "huge", "--seeds", "1"], "'huge'"),
    (["--table", "4", "--profile", "smoke", "--seeds", "0"], "'0'"),
    (["--table", "4", "--profile", "smoke", "--seeds", "1", "--models", "gpt"], "'gpt'"),
    (["--table", "4", "--profile", "smoke", "--seeds", "1", "--gpus", "a,b"], "'a,b'"),
    (["--table", "4", "--profile", "smoke", "--seeds", "1", "--lrs", "all"], "'all'"),
    (["--table", "4", "--profile", "smoke", "--seeds", "1", "--variants", "nrom=post", "--plan"], "'nrom"),
    (["--table", "4", "--profile", "smoke", "--seeds", "1", "--carry-limit-mb", "-1"], "'-1'"),
    (["--table", "4", "--profile", "smoke", "--seeds", "1", "--carry-limit-mb", "31"], "--carry-limit-mb 31 needs"),
    (["--cells", "3:rtx", "--profile", "smoke", "--plan"], "'3:rtx'"),
    (["--cells", "3:rtransformer:all", "--profile", "smoke", "--plan"], "'3:rtransformer:all'"),
    (["--profile", "smoke", "--plan"], "--cells"),
    (["--table", "3", "--cells", "3:rtransformer", "--profile", "smoke", "--plan"], "--table 3 and --cells"),
    (["--cells", "3:rtransformer", "--ablations", "--profile", "smoke", "--plan"], "--ablations"),
])
def test_bad_cli_values_exit_2_with_one_line(capsys, argv, named):
    try:
        code = main(["reproduce", *argv])  # a value argparse can check exits; the rest returns 2
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err


def test_a_missing_data_set_stops_the_runner_before_any_job_in_one_line(tmp_path, offline, capsys):
    code = main(["reproduce", *TABLE4, "--models", "rtransformer", *folders(tmp_path, tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot find data file ptb/" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_strip_notebook_removes_images_and_large_outputs():
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="\r 10%|#\r 50%|#####"),
        nbformat.v4.new_output("stream", name="stderr", text="\r100%|##########|\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"}),
        nbformat.v4.new_output("stream", name="stdout", text="x" * 30_000),
        nbformat.v4.new_output("execute_result", data={"text/plain": "small"}, execution_count=1),
    ]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    kept = strip_notebook(notebook).cells[0].outputs
    assert kept[0].text == "100%|##########|\n"  # merged, carriage returns collapsed
    assert "image removed" in kept[1].text and "kB removed" in kept[2].text
    assert kept[3].data["text/plain"] == "small"
    nbformat.validate(strip_notebook(notebook))
    assert len(notebook.cells[0].outputs) == 5  # the original is untouched


def test_notebook_copies_go_beside_the_records():
    assert notebooks_dir_for(RECORDS_DIR / "fast") == RESULTS_DIR / "notebooks" / "fast"


def test_a_deadline_cuts_each_new_jobs_time_budget():
    import time

    from rtlib.reproduce import _job_minutes
    assert _job_minutes(None, None) is None and _job_minutes(7.5, None) == 7.5
    assert _job_minutes(None, time.monotonic() + 120) == pytest.approx(2.0, abs=0.01)
    assert _job_minutes(1.0, time.monotonic() + 600) == 1.0


def test_mps_falls_back_to_time_slicing_without_its_daemon(monkeypatch):
    import rtlib.reproduce as reproduce
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.setattr(reproduce.shutil, "which", lambda name: None)
    said = []
    with reproduce.mps_daemon(enabled=True, log=said.append) as on:
        assert on is False
    assert "not found" in said[0]
    with reproduce.mps_daemon(enabled=False, log=said.append) as on:
        assert on is False and len(said) == 1


class ExitedProcess:
    """A job's process that has already exited with `returncode`."""

    def __init__(self, returncode: int):
        self.returncode = returncode

    def poll(self):
        return self.returncode


def run_fake_jobs(monkeypatch, tmp_path, jobs, start, finish, **settings):
    """The runner's loop over `jobs` with `start` and `finish` in place of real job processes."""
    import rtlib.reproduce as reproduce
    monkeypatch.setattr(reproduce, "RUN_NOTEBOOK", tmp_path)
    monkeypatch.setattr(reproduce, "_start", start)
    monkeypatch.setattr(reproduce, "_finish", finish)
    options = dict(results_dir=None, notebooks_dir=None, gpus=[0], jobs_per_gpu=1, max_minutes=None,
                   deadline=None, data_dir=None, compile_mode="auto", poll_s=0)
    return reproduce._run_jobs(jobs, view=reproduce.LiveView(io.StringIO(), len(jobs)), **{**options, **settings})


def test_a_job_a_gpu_fault_killed_resumes_once_and_a_settings_error_never(monkeypatch, tmp_path):
    """Under MPS one client's crash takes the others down ('unspecified launch failure'): those
    jobs go back to the queue once, to resume from their checkpoints; other failures stay."""
    import rtlib.reproduce as reproduce
    jobs = expand_jobs([4], ["rtransformer", "transformer"], "smoke", seeds=1, lrs="config", out=tmp_path)
    fault = "AcceleratorError: CUDA error: unspecified launch failure"
    errors = {jobs[0].run_id: [fault, fault, fault], jobs[1].run_id: ["ValueError: window=100 is too large"]}
    started = []

    def start(job, slot, params, threads_share=1):
        started.append(job.run_id)
        return reproduce.Running(job, ExitedProcess(1), slot[0], 0.0, resumed=len(started) > 2)

    def finish(running):
        return reproduce.Outcome(running.job, "failed", "ran", error=errors[running.job.run_id].pop(0),
                                 slot=running.slot)
    outcomes = run_fake_jobs(monkeypatch, tmp_path, jobs, start, finish)
    assert started == [jobs[0].run_id, jobs[0].run_id, jobs[1].run_id]
    assert [outcome.error for outcome in outcomes] == [fault, "ValueError: window=100 is too large"]


@pytest.mark.parametrize("died", ["exit code 1: RuntimeError: Kernel died before replying to kernel_info",
                                  "exit code 1: RuntimeError: Kernel didn't respond in 60 seconds"])
def test_a_job_whose_kernel_died_before_it_started_is_retried_once(monkeypatch, tmp_path, died):
    """With five (four) jobs starting at once under MPS a Jupyter kernel died before it replied to
    kernel_info (did not answer in 60 s), before its job did any work: such a job goes back to the
    queue once too."""
    import rtlib.reproduce as reproduce
    jobs = expand_jobs([4], ["rtransformer", "transformer"], "smoke", seeds=1, lrs="config", out=tmp_path)
    errors = {jobs[0].run_id: [died, ""], jobs[1].run_id: [died, died]}  # "": the job is done
    started = []

    def start(job, slot, params, threads_share=1):
        started.append(job.run_id)
        return reproduce.Running(job, ExitedProcess(1), slot[0], 0.0, resumed=False)

    def finish(running):
        error = errors[running.job.run_id].pop(0)
        return reproduce.Outcome(running.job, "failed" if error else "done", "ran", error=error, slot=running.slot)
    outcomes = run_fake_jobs(monkeypatch, tmp_path, jobs, start, finish)
    assert started == [jobs[0].run_id, jobs[0].run_id, jobs[1].run_id, jobs[1].run_id]
    assert [(outcome.status, outcome.error) for outcome in outcomes] == [("done", ""), ("failed", died)]


def test_only_the_batch_deadline_keeps_jobs_from_starting_not_a_short_max_minutes(monkeypatch, tmp_path):
    import time

    import rtlib.reproduce as reproduce
    jobs = expand_jobs([4], ["rtransformer"], "smoke", seeds=1, lrs="config", out=tmp_path)
    started = []

    def start(job, slot, params, threads_share=1):
        started.append(params["max_minutes"])
        return reproduce.Running(job, ExitedProcess(0), slot[0], 0.0, resumed=False)

    def finish(running):
        return reproduce.Outcome(running.job, "done", "ran")
    for deadline_s, expected in [(600, [0.5]), (30, [])]:
        started.clear()
        outcomes = run_fake_jobs(monkeypatch, tmp_path, jobs, start, finish, max_minutes=0.5,
                                 deadline=time.monotonic() + deadline_s)
        assert started == expected
        assert [o.status for o in outcomes] == (["done"] if expected else ["remaining"])


def test_a_stopped_job_is_asked_to_checkpoint_first_and_ended_only_after_its_grace(tmp_path):
    import subprocess
    import sys

    import rtlib.reproduce as reproduce
    job = expand_jobs([4], ["rtransformer"], "smoke", seeds=1, lrs="config", out=tmp_path)[0]
    job.out_dir.mkdir(parents=True)
    waits_for_the_request = ("import pathlib, sys, time\n"
                             "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.02)")
    for script, grace_s, returncode in [(waits_for_the_request, 30.0, 0), ("import time; time.sleep(60)", 0.5, -15)]:
        process = subprocess.Popen([sys.executable, "-c", script, str(job.out_dir / "STOP")])
        running = reproduce.Running(job, process, "gpu0", 0.0, False, log=io.StringIO())
        outcome = reproduce._stop(running, grace_s=grace_s)
        assert process.returncode == returncode and outcome.status == "remaining"


def test_cells_run_in_the_order_given_each_with_its_own_lr_mode(tmp_path):
    from rtlib.reproduce import cell_jobs, parse_cell
    cells = [parse_cell("3:rtransformer:config"), parse_cell("2:gru:grid"), parse_cell("3:rtransformer")]
    jobs = cell_jobs(cells, "paper", seeds=2, lrs="config", variants=[""], out=tmp_path, notes=[], finished={})
    ptb = expand_jobs([3], ["rtransformer"], "paper", seeds=2, lrs="config", out=tmp_path)
    gru = expand_jobs([2], ["gru"], "paper", seeds=2, lrs="grid", out=tmp_path)
    assert [job.run_id for job in jobs] == [job.run_id for job in ptb + gru]  # the repeated cell adds nothing
    assert len(gru) > 2  # the grid: more than the config's lr at 2 seeds


def test_again_runs_a_recorded_run_once_more_in_its_own_folder_with_its_record_kept_apart(monkeypatch, tmp_path):
    import rtlib.reproduce as reproduce
    from rtlib.reproduce import AGAIN, Again, cell_jobs, parse_cell
    first = expand_jobs([4], ["rtransformer"], "smoke", seeds=1, lrs="config", out=tmp_path)[0]
    finished = {first.run_id: dict(config=first.cfg.to_dict(), run_id=first.run_id)}
    assert parse_cell(f"again:{first.run_id}") == Again(first.run_id)
    jobs = cell_jobs([parse_cell("4:rtransformer:config"), parse_cell(f"again:{first.run_id}")], "smoke", seeds=1,
                     lrs="config", variants=[""], out=tmp_path, notes=[], finished=finished)
    assert [(job.run_id, job.repeat, job.name) for job in jobs] == [
        (first.run_id, False, first.run_id), (first.run_id, True, first.run_id + AGAIN)]
    assert jobs[1].cfg == first.cfg and jobs[1].out_dir == tmp_path / f"{first.run_id}{AGAIN}"
    for run, profile, error in [("nope_seed1", "smoke", "no record of nope_seed1 to run again"),
                                (first.run_id, "paper", "is a 'smoke' run, not of --profile paper")]:
        with pytest.raises(ValueError, match=error):
            cell_jobs([Again(run)], profile, 1, "config", [""], tmp_path, [], finished)
    stale = {first.run_id: dict(finished[first.run_id], config={**first.cfg.to_dict(), "changes": ["x"]})}
    with pytest.raises(ValueError, match="its record was made with other settings"):
        cell_jobs([Again(first.run_id)], "smoke", 1, "config", [""], tmp_path, [], stale)

    results, repeats = tmp_path / "records", tmp_path / "repeats"
    results.mkdir()
    (results / f"{first.run_id}.json").write_text("{}")  # the first run's record: the plain job is skipped
    monkeypatch.setattr(reproduce, "_finished_before",
                        lambda job, folder: None if job.repeat or folder != results else
                        reproduce.Outcome(job, "done", "skipped"))
    monkeypatch.setattr(reproduce, "_keep_results", lambda *args: None)
    given = {}

    def start(job, slot, params, threads_share=1):
        given[job.name] = params
        return reproduce.Running(job, ExitedProcess(0), slot[0], 0.0, resumed=False)

    def finish(running):
        return reproduce.Outcome(running.job, "remaining", "stopped, checkpointed")
    outcomes = run_fake_jobs(monkeypatch, tmp_path, jobs, start, finish, results_dir=results, repeats_dir=repeats)
    assert [outcome.how for outcome in outcomes] == ["skipped", "stopped, checkpointed"]
    assert list(given) == [first.run_id + AGAIN]
    assert given[first.run_id + AGAIN]["results_dir"] == str(repeats)
    assert given[first.run_id + AGAIN]["out_dir"] == str(tmp_path / f"{first.run_id}{AGAIN}")


def test_finished_records_leave_out_the_folders_of_repeats(tmp_path):
    from rtlib.reproduce import AGAIN, finished_records
    for name, value in [("x_seed1", 1.0), (f"x_seed1{AGAIN}", 2.0)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_text(json.dumps(dict(run_id="x_seed1", config={}, test_metric=value)))
    assert finished_records(tmp_path, None)["x_seed1"]["test_metric"] == 1.0


def test_a_job_waits_for_its_kernel_longer_than_papermills_60_seconds(tmp_path, monkeypatch):
    """Four kernels starting at once under MPS took longer than papermill's default 60 s."""
    import subprocess
    import sys
    import types

    from rtlib import reproduce as runner

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kwargs: started.append(args))
    job = expand_jobs([2], ["rtransformer"], "smoke", seeds=1, lrs="config", out=tmp_path)[0]
    runner._start(job, ("cpu", None), {})
    script, spec = started[0][-2:]
    executed = []
    monkeypatch.setitem(sys.modules, "papermill",
                        types.SimpleNamespace(execute_notebook=lambda *a, **k: executed.append(k)))
    monkeypatch.setattr(sys, "argv", ["-c", spec])
    exec(script, {})
    assert executed[0]["start_timeout"] == runner.KERNEL_START_TIMEOUT_S > 60


def test_a_plan_gives_a_timed_jobs_minutes_at_the_fastest_pace_a_batch_measured(capsys, monkeypatch, data_mirror):
    from rtlib import bench_results, cost, results

    shared = dict(run_id="ptb-char_gru_paper_lr4_seed1112", status="finished", epochs=100, job_minutes=15.5,
                  seconds_per_epoch=9.3)
    alone = dict(run_id="ptb-char_gru_paper_lr4_seed1113.again", epochs=6, job_minutes=0.7, seconds_per_epoch=7.2,
                 why="stopped at the batch's deadline")
    batches = [dict(lost_runs=[alone]), dict(finished=[shared])]  # a later batch's pace prices the job
    assert cost.fastest_minutes(batches) == {("ptb-char", "gru", ""): pytest.approx(12.0)}
    monkeypatch.setattr(cost, "load_batches", lambda: batches)
    monkeypatch.setattr(results, "load_records", lambda: load_records(Path("/nonexistent")))
    monkeypatch.setattr(bench_results, "load_bench", lambda: [])
    main(["reproduce", "--cells", "3:gru:config", "--seeds", "1", "--profile", "paper", "--plan", "--out", "runs",
          "--results", "/nonexistent"])
    assert re.search(r"^#   ptb-char_gru_paper_lr4_seed1111: 15\.5 \(at the fastest pace a batch measured: 12\.0; "
                     r"46 MB to carry if stopped\)$",
                     capsys.readouterr().out, re.MULTILINE)


def test_sweep_runs_no_more_seeds_at_an_lr_whose_first_seed_sat_above_a_uniform_guess(monkeypatch):
    """The PTB-word RNN's lr 20 at seed 1111 (batch an): finished, but its training loss was above
    ln 10,000 for 30 epochs, so the other seeds wait for lr 4 before they spend a GPU on lr 20."""
    from types import SimpleNamespace

    from rtlib import tasks
    monkeypatch.setattr(tasks, "task_corpus", lambda task, data_dir=None: SimpleNamespace(vocab_size=10_000))
    config_lr = run_config("ptb-word", "rnn", "paper").train.lr
    grid = expand_jobs([4], ["rnn"], "paper", seeds=1, lrs="sweep")
    at_config = next(job for job in grid if job.cfg.train.lr == config_lr)

    def finished(losses):
        curve = [dict(epoch=e, lr=config_lr, train_loss=loss) for e, loss in enumerate(losses, start=1)]
        return {at_config.run_id: dict(config=at_config.cfg.to_dict(), lr=config_lr, status="finished",
                                       best_valid_metric=697.4, curve=curve)}

    jobs = expand_jobs([4], ["rnn"], "paper", seeds=3, lrs="sweep", finished=finished([43.2, 12.5, 6.5]),
                       notes=(notes := []))
    assert sorted(job.cfg.train.seed for job in jobs) == [1111] * len(grid)
    assert f"at the config's lr {config_lr:g}, seed 1111's training loss was above a uniform guess's in 2 epochs" in notes[0]
    learned = expand_jobs([4], ["rnn"], "paper", seeds=3, lrs="sweep", finished=finished([6.9, 6.5]), notes=(notes := []))
    assert sorted((job.cfg.train.lr, job.cfg.train.seed) for job in learned if job.cfg.train.seed != 1111) == [
        (config_lr, 1112), (config_lr, 1113)]
    assert "for now" in notes[0]


def test_the_sweep_runs_the_papers_rows_first_then_the_baselines_then_the_grids(monkeypatch):
    """The issue's order, so that each batch that lands fills the tables first: R-Transformer and
    Transformer rows at every seed, then the baseline rows, then the lr grid points; a grid point
    that a row waits for (its config's lr blew up) counts as the row's."""
    from types import SimpleNamespace

    from rtlib import tasks
    from rtlib.reproduce import ATTENTION_MODELS, SWEEP_PHASES
    monkeypatch.setattr(tasks, "task_corpus", lambda task, data_dir=None: SimpleNamespace(vocab_size=10_000))

    def phases(jobs):
        out = []
        for job in jobs:
            train = run_config(job.cfg.task, job.cfg.model, "paper").train
            at_row_lr = job.cfg.train.lr == train.lr or len(train.lr_grid) == 1 or job.cfg.task == "mnist"
            out.append(SWEEP_PHASES[2] if not at_row_lr else
                       SWEEP_PHASES[0] if job.cfg.model in ATTENTION_MODELS else SWEEP_PHASES[1])
        return out

    jobs = expand_jobs(list(TABLE_TASKS), ["rnn", "rtransformer", "tcn", "transformer"], "paper", seeds=3, lrs="sweep")
    found = phases(jobs)
    assert found == sorted(found, key=SWEEP_PHASES.index) and set(found) == set(SWEEP_PHASES)
    first = [job for job, phase in zip(jobs, found) if phase == SWEEP_PHASES[0]]
    assert [job.cfg.task for job in first] == sorted((job.cfg.task for job in first), key=list(TABLE_TASKS.values()).index)
    rnn = [job for job in expand_jobs([4], ["rnn"], "paper", seeds=3, lrs="sweep")]
    config_lr = run_config("ptb-word", "rnn", "paper").train.lr
    blown = {rnn[0].run_id: dict(config=rnn[0].cfg.to_dict(), lr=config_lr, status="finished", best_valid_metric=697.4,
                                 curve=[dict(epoch=1, lr=config_lr, train_loss=43.2)])}
    assert rnn[0].cfg.train.lr == config_lr and rnn[0].cfg.train.seed == 1111
    waiting = expand_jobs([4], ["rtransformer", "rnn"], "paper", seeds=3, lrs="sweep", finished=blown)
    # the RNN's lr 4 at seed 1111 comes with the rows, before the R-Transformer's grid points
    order = [(job.cfg.model, job.cfg.train.lr, job.cfg.train.seed) for job in waiting]
    assert order.index(("rnn", 4.0, 1111)) < order.index(("rtransformer", 1.0, 1111))

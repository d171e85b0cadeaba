"""scripts/land_batch.py: a batch's fetched files land as records, notebooks, analyses, run
folders to carry and a batch log, and a committed record is never overwritten."""
import importlib.util
import io
import json
import shutil
import tarfile
from pathlib import Path

import nbformat
import pytest

from rtlib.paths import REPO

spec = importlib.util.spec_from_file_location("land_batch", REPO / "scripts" / "land_batch.py")
land_batch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(land_batch)

RECORD = REPO / "results" / "records" / "paper" / "nottingham_rtransformer_paper_lr5e-05_seed1111.json"
LOST = "mnist_rtransformer_paper_lr0.001_seed1111"


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def fetched_batch(folder: Path, repeat: bytes | None = None) -> str:
    """A batch's fetched files around the committed RECORD; with `repeat`, a second run's
    record of the same run in its .again folder."""
    record = json.loads(RECORD.read_text())
    run = record["run_id"]
    with tarfile.open(folder / "records.tgz", "w:gz") as tar:
        add(tar, f"runs/{run}/record.json", RECORD.read_bytes())
        if repeat is not None:
            add(tar, f"runs/{run}.again/record.json", repeat)
        add(tar, f"runs/{LOST}/log.jsonl",
            "".join(json.dumps(dict(epoch=k, elapsed_s=90.0 + 37.0 * (k - 1))) + "\n" for k in range(1, 5)).encode())
        add(tar, "runs/_logs/runner2.log",
            f"start  [gpu0] {LOST}\nstop   [gpu0] {LOST}: projected to need 30.0 more minutes\n"
            f"remaining  {LOST}  stopped, checkpointed  3.4\n"
            "remaining  nottingham_gru_paper_lr0.001_seed1113  not started  0.0\n".encode())
        # a runner the machine took before its summary: its skips are all it says of the jobs it never started
        add(tar, "runs/_logs/runner3.log",
            b"start  [gpu0/1] ptb-char_lstm_paper_lr4_seed1111\n"
            b"skip   [gpu0/1] ptb-char_transformer_paper_lr3_seed1111: not started: projected to need 7.1 more minutes\n")
        add(tar, f"runs/_code/results/analysis/{run}.json", b'{"run_id": "x"}\n')
        add(tar, "runs/_logs/sharing.json", b'{"device": "NVIDIA H200", "rounds": []}\n')
    with tarfile.open(folder / "notebooks.tgz", "w:gz") as tar:
        add(tar, f"runs/{run}/run.ipynb", nbformat.writes(nbformat.v4.new_notebook()).encode())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder_entry in ("runs", f"runs/{LOST}"):
            info = tarfile.TarInfo(folder_entry)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        add(tar, f"runs/{LOST}/checkpoint.pt", b"weights")
    data = buffer.getvalue()
    (folder / "checkpoints.tar.part-aa").write_bytes(data[:1000])
    (folder / "checkpoints.tar.part-ab").write_bytes(data[1000:])
    return run


def repo(folder: Path) -> Path:
    for sub in ("records/paper", "notebooks/paper", "analysis", "bench", "batches"):
        (folder / "results" / sub).mkdir(parents=True)
    return folder


def test_a_batch_lands_its_records_analyses_carried_runs_and_log(tmp_path, capsys):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    run = fetched_batch(fetched)
    code = land_batch.main([str(fetched), "--name", "2026-12-02_h200_f", "--script", "start; wait; finish",
                            "--sharing", "MPS, 2 jobs", "--deadline-minutes", "23", "--held-minutes", "25.1",
                            "--repo", str(root)])
    assert code == 0
    assert json.loads((root / "results" / "records" / "paper" / f"{run}.json").read_text()) == json.loads(RECORD.read_text())
    assert (root / "results" / "notebooks" / "paper" / f"{run}.ipynb").exists()
    assert (root / "results" / "analysis" / f"{run}.json").exists()
    assert (root / "runs" / LOST / "checkpoint.pt").read_bytes() == b"weights"
    # one sharing file a batch: an earlier batch's measurement is never replaced
    assert [path.name for path in (root / "results" / "bench").iterdir()] == ["sharing_NVIDIA_H200_2026-12-02_h200_f.json"]
    log = json.loads((root / "results" / "batches" / "2026-12-02_h200_f.json").read_text())
    record = json.loads(RECORD.read_text())
    assert log["finished"] == [dict(run_id=run, status="finished", epochs=record["epochs_run"],
                                    job_minutes=round(record["gpu_minutes"], 2),
                                    seconds_per_epoch=land_batch.steady_seconds_per_epoch(record["curve"]))]
    assert log["lost_runs"] == [dict(run_id=LOST, epochs=4, job_minutes=round(201.0 / 60, 2), seconds_per_epoch=37.0,
                                     why="stopped by its runner: projected to need 30.0 more minutes "
                                         "(checkpoint brought back to resume)", checkpoint="brought back")]
    assert log["git_commit"] == record["git_commit"] and log["machine_held_minutes"] == 25.1
    assert log["not_started"] == ["nottingham_gru_paper_lr0.001_seed1113", "ptb-char_transformer_paper_lr3_seed1111"]
    carry = capsys.readouterr().out.split("to resume, carry: ")[1]
    assert json.loads(carry) == [f"runs/{LOST}"]


def test_a_committed_record_with_other_content_is_never_overwritten(tmp_path):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    run = fetched_batch(fetched)
    committed = root / "results" / "records" / "paper" / f"{run}.json"
    committed.write_text(json.dumps({**json.loads(RECORD.read_text()), "test_metric": 1.0}))
    before = committed.read_text()
    code = land_batch.main([str(fetched), "--name", "2026-12-02_h200_g", "--script", "s", "--sharing", "s",
                            "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)])
    assert code == 1 and committed.read_text() == before


def test_a_later_batch_on_the_same_warm_machine_logs_only_its_own_runs(tmp_path):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    run = fetched_batch(fetched)
    args = ["--script", "s", "--sharing", "s", "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)]
    assert land_batch.main([str(fetched), "--name", "2026-12-06_h100_w", *args]) == 0
    # the next batch's machine still holds the first one's runs/: its records come back again
    assert land_batch.main([str(fetched), "--name", "2026-12-06_h100_x", *args]) == 0
    first, later = (json.loads((root / "results" / "batches" / f"2026-12-06_h100_{name}.json").read_text())
                    for name in "wx")
    assert [entry["run_id"] for entry in first["finished"]] == [run]
    assert later["finished"] == []
    assert [entry["run_id"] for entry in first["lost_runs"]] == [LOST] and later["lost_runs"] == []


def test_a_run_lost_at_the_same_epoch_on_another_machine_is_lost_again(tmp_path):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    fetched_batch(fetched)
    args = ["--script", "s", "--sharing", "s", "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)]
    assert land_batch.main([str(fetched), "--name", "2026-12-06_h100_w", *args]) == 0
    earlier = root / "results" / "batches" / "2026-12-06_h100_w.json"
    log = json.loads(earlier.read_text())
    log["lost_runs"][0]["job_minutes"] += 1.2  # the same epoch, reached after other minutes: another machine
    earlier.write_text(json.dumps(log))
    assert land_batch.main([str(fetched), "--name", "2026-12-06_h100_x", *args]) == 0
    later = json.loads((root / "results" / "batches" / "2026-12-06_h100_x.json").read_text())
    assert [entry["run_id"] for entry in later["lost_runs"]] == [LOST]


def test_a_batch_log_that_exists_is_refused(tmp_path):
    root = repo(tmp_path / "repo")
    (root / "results" / "batches" / "x.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        land_batch.main([str(tmp_path), "--name", "x", "--script", "s", "--sharing", "s",
                         "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)])
    assert exit_.value.code == 2


def test_a_repeat_lands_apart_and_leaves_the_first_runs_record_alone(tmp_path):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    again = {**json.loads(RECORD.read_text()), "test_metric": 2.5}
    again.pop("content_sha256", None)  # a record without its digest is read unchecked
    run = fetched_batch(fetched, repeat=json.dumps(again).encode())
    with tarfile.open(fetched / "weights.tar.part-aa", "w") as tar:  # the repeat's weights, analysed on the GPU
        add(tar, f"runs/{run}.again/best.pt", b"not loadable: a CPU analysis of it would fail")
        add(tar, f"runs/{run}.again/record.json", json.dumps(again).encode())
    code = land_batch.main([str(fetched), "--name", "2026-12-02_h200_g", "--script", "s", "--sharing", "s",
                            "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)])
    assert code == 0
    first = root / "results" / "records" / "paper" / f"{run}.json"
    assert json.loads(first.read_text()) == json.loads(RECORD.read_text())
    assert json.loads((root / "results" / "repeats" / "records" / "paper" / f"{run}.json").read_text())["test_metric"] == 2.5
    log = json.loads((root / "results" / "batches" / "2026-12-02_h200_g.json").read_text())
    assert [entry["run_id"] for entry in log["finished"]] == [run, f"{run}.again"]
    assert log["analysed"] == [f"{run} (on the GPU machine)"]


def test_a_batch_of_repeats_and_diverged_runs_logs_each_ones_status_and_its_records_commit(tmp_path):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    first = json.loads(RECORD.read_text())
    again = {key: value for key, value in first.items() if key != "content_sha256"}
    broke = {**again, "run_id": "ptb-char_lstm_paper_lr2_seed1111", "status": "diverged", "test_metric": None}
    with tarfile.open(fetched / "records.tgz", "w:gz") as tar:  # only a repeat and a diverged run came back
        add(tar, f"runs/{first['run_id']}.again/record.json", json.dumps(again).encode())
        add(tar, f"runs/{broke['run_id']}/record.json", json.dumps(broke).encode())
    code = land_batch.main([str(fetched), "--name", "2026-12-02_h200_x", "--script", "s", "--sharing", "s",
                            "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)])
    assert code == 0
    log = json.loads((root / "results" / "batches" / "2026-12-02_h200_x.json").read_text())
    assert [(entry["run_id"], entry["status"]) for entry in log["finished"]] == [
        (f"{first['run_id']}.again", "finished"), (broke["run_id"], "diverged")]
    assert log["git_commit"] == first["git_commit"]


def test_run_folders_sent_in_parts_by_more_calls_land_in_runs(tmp_path, capsys, monkeypatch):
    fetched, root, machine = tmp_path / "fetched", repo(tmp_path / "repo"), tmp_path / "machine"
    fetched.mkdir()
    fetched_batch(fetched)
    for part in fetched.glob("checkpoints.tar.part-*"):
        part.unlink()  # finish had no room for it
    (machine / "runs" / LOST).mkdir(parents=True)
    (machine / "runs" / LOST / "checkpoint.pt").write_bytes(b"w" * 5000)
    monkeypatch.chdir(machine)
    land_batch.transfer.split(Path("runs/_outgoing"), [Path("runs") / LOST], 2000)
    calls = [tmp_path / "more1", tmp_path / "more2"]
    for call in calls:
        land_batch.transfer.send_next(Path("runs/_outgoing"), call, parts=4)
    args = [str(fetched), "--name", "2026-12-02_h200_h", "--script", "s", "--sharing", "s",
            "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root), "--more"]
    with pytest.raises(SystemExit):  # a part not fetched: nothing lands
        land_batch.main(args + [str(calls[0])])
    assert not (root / "results" / "batches" / "2026-12-02_h200_h.json").exists()
    assert not list((root / "results" / "records" / "paper").iterdir())
    assert land_batch.main(args + [str(call) for call in calls]) == 0
    assert (root / "runs" / LOST / "checkpoint.pt").read_bytes() == b"w" * 5000
    log = json.loads((root / "results" / "batches" / "2026-12-02_h200_h.json").read_text())
    assert log["lost_runs"][0]["checkpoint"] == "brought back"
    assert f"transfer.py split incoming runs/{LOST}" in capsys.readouterr().out


def test_a_run_still_training_when_the_records_were_packed_is_lost_with_the_machine_not_at_the_deadline(tmp_path):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    ended, running = "mnist_gru_paper_lr0.001_seed1112", "mnist_gru_paper_lr0.001_seed1113"
    with tarfile.open(fetched / "records.tgz", "w:gz") as tar:
        for run in (ended, running):
            add(tar, f"runs/{run}/log.jsonl", b'{"epoch": 1, "elapsed_s": 30.0}\n')
        add(tar, "runs/_logs/runner1.log", f"start  [gpu0] {ended}\nsummary: 0 done, 0 failed, 1 remaining\n".encode())
        add(tar, "runs/_logs/runner2.log", f"start  [gpu0] {running}\npace   [gpu0] {running}: epoch 1/20\n".encode())
    assert land_batch.main([str(fetched), "--name", "b", "--script", "start", "--sharing", "MPS",
                            "--deadline-minutes", "13.5", "--held-minutes", "9.7", "--repo", str(root)]) == 0
    lost = {run["run_id"]: run for run in json.loads((root / "results" / "batches" / "b.json").read_text())["lost_runs"]}
    assert lost[ended]["why"] == "unfinished at the deadline" and "checkpoint" not in lost[ended]
    assert lost[running]["why"] == land_batch.STILL_TRAINING
    assert lost[running]["checkpoint"] == "lost with the machine"


def test_a_failed_run_is_lost_with_its_error_even_before_its_first_epoch_unless_it_ran_again(tmp_path):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    at_start, later, again = ("nottingham_transformer_paper_position-none_lr5e-05_seed1112",
                              "mnist_gru_paper_lr0.001_seed1112", "mnist_gru_paper_lr0.001_seed1113")
    done = json.loads(RECORD.read_text())["run_id"]
    died = "exit code 1: RuntimeError: Kernel died before replying to kernel_info"
    fault = "AcceleratorError: CUDA error: unspecified launch failure"
    with tarfile.open(fetched / "records.tgz", "w:gz") as tar:
        add(tar, f"runs/{at_start}/job.log", b"RuntimeError: Kernel died before replying to kernel_info\n")
        for run in (later, again):
            add(tar, f"runs/{run}/log.jsonl",
                "".join(json.dumps(dict(epoch=k, elapsed_s=30.0 * k)) + "\n" for k in range(1, 4)).encode())
        add(tar, f"runs/{done}/record.json", RECORD.read_bytes())
        # the runner's lines as in batch y's runner2.log: its event, then its summary table's row
        add(tar, "runs/_logs/runner1.log", "".join(
            f"start  [gpu0/1] {run}\nfailed [gpu0/1] {run} {minutes} min: {error}\n"
            for run, minutes, error in [(at_start, 0.1, died), (later, 1.6, fault), (again, 1.6, fault),
                                        (done, 0.1, died)]).encode()
            + f"failed  {at_start}  ran  0.06  {died}\nsummary: 0 done, 4 failed, 0 remaining\n".encode())
        # a later runner, not ended when the records were packed, ran two of them again
        add(tar, "runs/_logs/runner2.log",
            f"start  [gpu0/1] {done}\ndone   [gpu0/1] {done} 3.4 min\nstart  [gpu0/2] {again} (resuming)\n".encode())
    assert land_batch.main([str(fetched), "--name", "b", "--script", "start", "--sharing", "MPS",
                            "--deadline-minutes", "13.5", "--held-minutes", "9.7", "--repo", str(root)]) == 0
    log = json.loads((root / "results" / "batches" / "b.json").read_text())
    assert [run["run_id"] for run in log["finished"]] == [done]
    lost = {run["run_id"]: run for run in log["lost_runs"]}
    assert sorted(lost) == [later, again, at_start]
    assert lost[at_start] == dict(run_id=at_start, epochs=0, job_minutes=0.1, seconds_per_epoch=None,
                                  why=f"failed: {died}")
    assert (lost[later]["epochs"], lost[later]["job_minutes"], lost[later]["why"]) == (3, 1.5, f"failed: {fault}")
    assert lost[again]["why"] == land_batch.STILL_TRAINING


@pytest.mark.parametrize("maps_committed, kept", [(0, False), (3, True)])
def test_the_gpu_analysis_replaces_a_committed_one_only_where_that_lacks_the_maps(tmp_path, maps_committed, kept):
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    run = fetched_batch(fetched)
    with_maps = dict(example={"kind": "keys"}, maps=[[[1.0]]])
    committed = {"run_id": "committed", **with_maps, "more_examples": [with_maps] * (maps_committed - 1)}
    if not maps_committed:
        committed = {"run_id": "committed", "more_examples": [{"example": {"kind": "keys"}}]}
    target = root / "results" / "analysis" / f"{run}.json"
    target.write_text(json.dumps(committed))
    assert land_batch.main([str(fetched), "--name", "2026-12-07_h100_ak", "--script", "s", "--sharing", "s",
                            "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)]) == 0
    assert json.loads(target.read_text())["run_id"] == ("committed" if kept else "x")
    log = json.loads((root / "results" / "batches" / "2026-12-07_h100_ak.json").read_text())
    assert log["analysed"] == ([] if kept else [f"{run} (on the GPU machine)"])


def test_weights_of_a_run_whose_committed_analysis_is_complete_are_not_analysed_again(tmp_path):
    """Batch am: a later batch on the same warm machine shipped weights that batch al had already
    analysed with 3 examples' maps; analysing them again on a CPU replaced that analysis."""
    fetched, root = tmp_path / "fetched", repo(tmp_path / "repo")
    fetched.mkdir()
    run = fetched_batch(fetched)
    with_maps = dict(example={"kind": "keys"}, maps=[[[1.0]]])
    target = root / "results" / "analysis" / f"{run}.json"
    target.write_text(json.dumps({"run_id": "committed", **with_maps, "more_examples": [with_maps] * 2}))
    with tarfile.open(fetched / "weights.tar.part-aa", "w") as tar:
        add(tar, f"runs/{run}.again/best.pt", b"not loadable: a CPU analysis of it would fail")
        add(tar, f"runs/{run}.again/record.json", RECORD.read_bytes())
    assert land_batch.main([str(fetched), "--name", "2026-12-07_h100_am", "--script", "s", "--sharing", "s",
                            "--deadline-minutes", "1", "--held-minutes", "1", "--repo", str(root)]) == 0
    assert json.loads(target.read_text())["run_id"] == "committed"
    assert json.loads((root / "results" / "batches" / "2026-12-07_h100_am.json").read_text())["analysed"] == []

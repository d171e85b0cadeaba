"""Training engine: exact resume, refusal of mismatched resumes, NaN stop, schedules, CLI."""
import json
import math
from dataclasses import replace

import pytest
import torch

import rtlib.train as train_module
from rtlib.__main__ import main
from rtlib.configs import Schedule, run_config, with_variant
from rtlib.run_folder import ConfigMismatchError, RunFolder, load_checkpoint, run_id, selection_rules
from rtlib.runtime import COMPILE_MODES, FASTEST_ON_CUDA, Runtime, compile_plan, resolve_compile
from rtlib.train import Callback, CheckpointEvery, NonFiniteLossError, anneal, train

QUIET = dict(log=lambda message: None)


class Killed(Exception):
    """Stands for a kill of the training process."""


class KillAfter(Callback):
    """Kills the run right after global step `steps`, before a checkpoint of that step."""

    def __init__(self, steps: int):
        self.steps = steps

    def step_end(self, state) -> bool:
        if state.global_step == self.steps:
            raise Killed(f"killed after global step {self.steps}")
        return False


def comparable(record):
    curve = [{k: v for k, v in entry.items() if k != "elapsed_s"} for entry in record["curve"]]
    return record["test_metric"], record["best_valid_loss"], curve


@pytest.mark.parametrize("task,model,kill_at", [("ptb-word", "rtransformer", 7),
                                                ("nottingham", "transformer", 7),
                                                ("mnist", "tcn", 7)])
def test_killed_and_resumed_run_equals_uninterrupted_run_bitwise(real_data, tmp_path, task, model, kill_at):
    cfg = run_config(task, model, "smoke", epochs=3, max_steps=4)
    whole = train(cfg, tmp_path / "whole", data_dir=real_data, **QUIET)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "killed", data_dir=real_data, callbacks=[CheckpointEvery(3), KillAfter(kill_at)],
              **QUIET)
    saved = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert saved["state"]["step"] > 0  # resumes mid-epoch, from the last checkpoint before the kill
    assert saved["state"]["global_step"] < kill_at
    resumed = train(cfg, tmp_path / "killed", data_dir=real_data, resume=True, **QUIET)
    assert comparable(resumed) == comparable(whole)
    assert "sessions" not in whole  # the record of a run made in one go keeps its old shape
    assert [(s["from_epoch"], s["from_step"]) for s in resumed["sessions"]] == [
        (1, 0), (saved["state"]["epoch"] + 1, saved["state"]["step"])]
    final = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["model"]
    reference = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def test_time_budget_stops_with_checkpoint_and_resume_finishes(real_data, tmp_path):
    cfg = run_config("ptb-char", "rtransformer", "smoke")
    assert train(cfg, tmp_path, Runtime(max_minutes=0.0), data_dir=real_data, **QUIET) is None
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "record.json").exists()
    record = train(cfg, tmp_path, data_dir=real_data, resume=True, **QUIET)
    assert record["epochs_run"] == 2
    again = train(cfg, tmp_path, data_dir=real_data, resume=True, **QUIET)
    assert again == record  # a finished run is not trained twice


def test_a_run_resumed_from_a_checkpoint_without_session_logs_says_its_first_session_is_unknown(real_data, tmp_path):
    cfg = run_config("ptb-word", "rtransformer", "smoke", epochs=2, max_steps=2)
    assert train(cfg, tmp_path, Runtime(max_minutes=0.0), data_dir=real_data, **QUIET) is None
    old = load_checkpoint(tmp_path / "checkpoint.pt")
    del old["state"]["sessions"]  # as checkpoints made before session logs are
    RunFolder(tmp_path).save_checkpoint(old)
    record = train(cfg, tmp_path, data_dir=real_data, resume=True, **QUIET)
    first, second = record["sessions"]
    assert first["git_commit"].startswith("unknown") and second["from_epoch"] == 1


def test_a_stop_request_checkpoints_at_the_next_step_and_the_resume_equals_the_whole_run(real_data, tmp_path):
    cfg = run_config("nottingham", "rtransformer", "smoke", epochs=3, max_steps=4)
    whole = train(cfg, tmp_path / "whole", data_dir=real_data, **QUIET)
    stop = tmp_path / "stopped" / "STOP"
    said = []
    assert train(cfg, stop.parent, data_dir=real_data, callbacks=[lambda entry: stop.touch()],
                 log=said.append) is None
    assert load_checkpoint(stop.parent / "checkpoint.pt")["state"]["epoch"] == 1
    assert any("stop request" in line for line in said)
    resumed = train(cfg, stop.parent, data_dir=real_data, resume=True, **QUIET)
    assert not stop.exists() and comparable(resumed) == comparable(whole)


def test_resume_with_other_settings_is_refused(real_data, tmp_path):
    cfg = run_config("ptb-word", "rtransformer", "smoke", epochs=1)
    with pytest.raises(Killed):
        train(cfg, tmp_path, data_dir=real_data, callbacks=[CheckpointEvery(1), KillAfter(2)], **QUIET)
    other = run_config("ptb-word", "rtransformer", "smoke", epochs=1, lr=0.5)
    with pytest.raises(ConfigMismatchError, match=r"train.lr: 2.0 -> 0.5"):
        train(other, tmp_path, data_dir=real_data, resume=True, **QUIET)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path, data_dir=real_data, **QUIET)
    reworded = replace(cfg, source="the same settings, described anew")
    assert train(reworded, tmp_path, data_dir=real_data, resume=True, **QUIET)["config"]["source"] == reworded.source


def test_non_finite_loss_stops_with_a_diverged_record(real_data, tmp_path, monkeypatch):
    real_make_protocol = train_module.make_protocol

    def poisoned(*args, **kwargs):
        protocol = real_make_protocol(*args, **kwargs)
        real_loss, calls = protocol.batch_loss, []

        def batch_loss(model, batch):
            loss, stats = real_loss(model, batch)
            calls.append(1)
            if len(calls) == 3:
                stats = {**stats, "loss_sum": stats["loss_sum"] * float("nan")}
            return loss, stats
        protocol.batch_loss = batch_loss
        return protocol

    monkeypatch.setattr(train_module, "make_protocol", poisoned)
    cfg = run_config("ptb-word", "rtransformer", "smoke", epochs=1, max_steps=5)
    with pytest.raises(NonFiniteLossError, match="nan in epoch 1 near step 3.*diverged"):
        train(cfg, tmp_path / "run", data_dir=real_data, callbacks=[CheckpointEvery(2)],
              results_dir=tmp_path / "results", **QUIET)
    kept = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert kept["state"]["global_step"] == 2 and math.isfinite(kept["state"]["train_loss_sum"])
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "diverged" and record["test_metric"] is None and "nan" in record["error"]
    assert json.loads((tmp_path / "results" / f"{record['run_id']}.json").read_text()) == record


def test_record_fields(real_data, tmp_path):
    cfg = run_config("nottingham", "rtransformer", "smoke")
    record = train(cfg, tmp_path / "run", data_dir=real_data, results_dir=tmp_path / "results", **QUIET)
    saved = json.loads((tmp_path / "results" / f"{record['run_id']}.json").read_text())
    assert saved == record
    for key in ["task", "model", "profile", "config", "seed", "best_valid_metric", "test_metric",
                "epochs_run", "wall_time_s", "device", "torch_version", "git_commit",
                "num_parameters", "paper_value", "changes"]:
        assert key in record, key
    assert record["paper_value"] == 2.37 and record["metric"] == "nll" and record["status"] == "finished"
    assert record["num_parameters"] == sum(p.numel() for p in torch.load(
        tmp_path / "run" / "best.pt", weights_only=True).values())


def test_mnist_reports_final_epoch_test_accuracy(real_data, tmp_path):
    record = train(run_config("mnist", "tcn", "smoke", epochs=3), tmp_path, data_dir=real_data, **QUIET)
    assert record["test_metric"] == record["curve"][-1]["test_metric"]
    assert record["best_valid_metric"] is None and "final epoch" in record["selection"]


def test_plateau_and_step_schedules_follow_released_rules():
    word = Schedule(factor=0.5, after=5, window=5, strict=False)
    history = [5.0, 4.0, 3.0, 2.9, 2.8, 2.7]
    assert anneal(word, 5, history[:4], 10.0) == 1.0          # not before epoch 6
    assert anneal(word, 7, history, 3.9) == 1.0                # below the max of the last 5 (4.0)
    assert anneal(word, 7, history, 4.0) == 0.5                # >= that max
    assert anneal(word, 8, history + [2.6], 4.0) == 0.5        # window slides: max now 3.0
    char = Schedule(factor=0.1, after=5, window=3, strict=True)
    assert anneal(char, 7, history, 2.9) == 1.0                # equal is not worse when strict
    assert anneal(char, 7, history, 2.91) == 0.1
    step = Schedule(kind="step", factor=0.1, every=10)
    assert [anneal(step, e, [], None) for e in (9, 10, 11, 20)] == [1.0, 0.1, 1.0, 0.1]


def test_released_clip_order_is_a_no_op_and_the_paper_text_clipping_is_not(real_data, tmp_path):
    released = run_config("nottingham", "rtransformer", "smoke", epochs=1, max_steps=2, grad_clip=1e-6)
    assert released.train.clip_before_backward  # the paper profile's rule, inherited by smoke
    paper_text = with_variant(released, "clip_before_backward=false")
    unclipped = with_variant(released, "grad_clip=none")
    results = [comparable(train(cfg, tmp_path / str(i), data_dir=real_data, **QUIET))
               for i, cfg in enumerate([released, unclipped, paper_text])]
    assert results[0] == results[1] != results[2]


def test_compile_modes_name_the_compiler_and_the_step_graph():
    assert [compile_plan(mode) for mode in COMPILE_MODES if mode != "auto"] == [
        (None, False), ("default", False), ("reduce-overhead", False), (None, True), ("default", True)]


def test_auto_engine_mode_is_the_models_fastest_on_cuda_and_eager_on_cpu():
    for model, fastest in FASTEST_ON_CUDA.items():
        assert resolve_compile("auto", model, torch.device("cuda")) == fastest
        assert resolve_compile("auto", model, torch.device("cpu")) == "none"
        assert resolve_compile("step-graph", model, torch.device("cpu")) == "none"
    assert resolve_compile("default", "tcn", torch.device("cuda")) == "default"
    with pytest.raises(ValueError, match=r"compile='fastest' is not one of \['auto'"):
        resolve_compile("fastest", "tcn", torch.device("cuda"))


def test_engine_mode_is_not_part_of_the_run_identity(real_data, tmp_path):
    cfg = run_config("ptb-word", "rtransformer", "smoke", epochs=2)
    with pytest.raises(ValueError, match="engine setting, not part of the experiment: pass it as --compile"):
        with_variant(cfg, "compile=step-graph")
    with pytest.raises(Killed):
        train(cfg, tmp_path, Runtime(compile="none"), data_dir=real_data,
              callbacks=[CheckpointEvery(1), KillAfter(2)], **QUIET)
    record = train(cfg, tmp_path, Runtime(compile="step-graph"), data_dir=real_data, resume=True, **QUIET)
    assert record["run_id"] == run_id(cfg) and "compile" not in record["config"]["train"]
    assert record["engine"]["requested"] == "step-graph" and record["engine"]["compile"] == "none"  # CPU
    assert record["precision"] == "fp32" and record["deviations"] == [
        "evaluation: up to 8 independent windows a forward, stacked along the batch (the released scripts: one); "
        "the same sums, rounded differently"]


def test_test_metric_is_logged_every_epoch_and_selection_stays_on_validation(real_data, tmp_path):
    cfg = run_config("ptb-char", "rtransformer", "smoke", epochs=3)
    record = train(cfg, tmp_path, data_dir=real_data, **QUIET)
    assert all("test_metric" in entry and "valid_metric" in entry for entry in record["curve"])
    rules = record["selections"]
    assert rules["best_valid"]["epoch"] == record["best_epoch"]
    assert rules["best_valid"]["test_metric"] == pytest.approx(record["test_metric"], rel=1e-12)
    assert rules["last_epoch"]["epoch"] == 3 and rules["mean_last_3"]["epochs"] == [1, 2, 3]
    assert rules["best_test"]["test_metric"] == min(e["test_metric"] for e in record["curve"])


def test_selection_rules_of_a_curve():
    curve = [dict(epoch=1, valid_loss=3.0, test_metric=1.5), dict(epoch=2, valid_loss=2.0, test_metric=1.4),
             dict(epoch=3, valid_loss=2.5, test_metric=1.2), dict(epoch=4, valid_loss=2.0, test_metric=1.3)]
    rules = selection_rules(curve, higher_is_better=False)
    assert rules["best_valid"] == dict(epoch=2, test_metric=1.4)  # the first of two equal losses
    assert rules["last_epoch"] == dict(epoch=4, test_metric=1.3)
    assert rules["mean_last_3"] == dict(epochs=[2, 3, 4], test_metric=pytest.approx(1.3))
    assert rules["best_test"] == dict(epoch=3, test_metric=1.2, optimistic=True)
    no_validation = selection_rules([{k: v for k, v in e.items() if k != "valid_loss"} for e in curve], True)
    assert "best_valid" not in no_validation and no_validation["best_test"]["epoch"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("task", ["nottingham", "ptb-word"])
def test_step_graph_training_follows_eager_training(real_data, tmp_path, task):
    """Whole-step CUDA graphs (one per padded tune length for music; captured again when the
    lr anneals) train like eager steps: same curve within fp32 rounding."""
    # clipped after backward: the music rows' released (unclipped) rule diverges at lr 1e-3
    no_dropout = "dropout=0" + (",emb_dropout=0" if task == "ptb-word" else ",clip_before_backward=false")
    base = with_variant(run_config(task, "rtransformer", "smoke", epochs=3, max_steps=None, lr=1e-3),
                        no_dropout)
    curves = []
    for mode in ("none", "step-graph"):
        record = train(base, tmp_path / mode, Runtime(device="cuda", compile=mode), data_dir=real_data, **QUIET)
        curves.append([entry[key] for entry in record["curve"]
                       for key in ("train_loss", "valid_loss", "test_loss")])
    assert curves[1] == pytest.approx(curves[0], rel=1e-3)


@pytest.mark.parametrize("argv,message", [
    (["train", "--task", "ptb", "--model", "rtransformer"], "invalid choice: 'ptb'"),
    (["train", "--task", "mnist", "--model", "gpt"], "invalid choice: 'gpt'"),
    (["train", "--task", "mnist", "--model", "tcn", "--profile", "huge"], "invalid choice: 'huge'"),
    (["train", "--task", "mnist", "--model", "tcn", "--lr", "-0.1"], "lr=-0.1 must be a finite number > 0"),
    (["train", "--task", "mnist", "--model", "tcn", "--epochs", "0"], "epochs=0 must be an integer >= 1"),
    (["train", "--task", "ptb-word", "--model", "rtransformer", "--variant", "window=25"],
     "window=25 is larger than the sequence length 24; allowed: 1..24"),
    (["train", "--task", "ptb-word", "--model", "rtransformer", "--variant", "colour=red"],
     "variant key 'colour'"),
])
def test_bad_cli_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) if "choice" in message else _returns(2) as outcome:
        code = main(argv + (["--out", str(tmp_path / "run")] if "choice" not in message else []))
        outcome.code = code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


class _returns:
    def __init__(self, code):
        self.expected = code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        assert self.code == self.expected
        return False


@pytest.mark.parametrize("task", ["mnist", "nottingham", "ptb-char", "ptb-word"])
@pytest.mark.parametrize("model", ["rtransformer", "transformer"])
def test_smoke_cli_run_of_every_table(real_data, tmp_path, task, model, capsys):
    code = main(["train", "--task", task, "--model", model, "--profile", "smoke",
                 "--out", str(tmp_path / "run"), "--results", str(tmp_path / "results"),
                 "--data-dir", str(real_data)])
    assert code == 0
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["task"] == task and math.isfinite(record["test_metric"])

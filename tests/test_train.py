"""Training engine: exact resume, refusal of mismatched resumes, NaN stop, schedules, CLI."""
import json
import math

import pytest
import torch

import rtlib.train as train_module
from rtlib.__main__ import main
from rtlib.configs import COMPILE_MODES, Schedule, run_config, with_variant
from rtlib.train import (ConfigMismatchError, NonFiniteLossError, RunInterrupted, anneal,
                         compile_plan, load_checkpoint, train)

QUIET = dict(log=lambda message: None)


def comparable(record):
    curve = [{k: v for k, v in entry.items() if k != "elapsed_s"} for entry in record["curve"]]
    return record["test_metric"], record["best_valid_loss"], curve


@pytest.mark.parametrize("task,model,kill_at", [("ptb-word", "rtransformer", 7),
                                                ("nottingham", "transformer", 7),
                                                ("mnist", "tcn", 7)])
def test_killed_and_resumed_run_equals_uninterrupted_run_bitwise(real_data, tmp_path, task, model, kill_at):
    cfg = run_config(task, model, "smoke", epochs=3, max_steps=4)
    whole = train(cfg, tmp_path / "whole", data_dir=real_data, **QUIET)
    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path / "killed", data_dir=real_data, checkpoint_every_steps=3,
              fail_at_step=kill_at, **QUIET)
    saved = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert saved["state"]["step"] > 0  # resumes mid-epoch, from the last checkpoint before the kill
    assert saved["state"]["global_step"] < kill_at
    resumed = train(cfg, tmp_path / "killed", data_dir=real_data, resume=True, **QUIET)
    assert comparable(resumed) == comparable(whole)
    final = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["model"]
    reference = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def test_time_budget_stops_with_checkpoint_and_resume_finishes(real_data, tmp_path):
    cfg = run_config("ptb-char", "rtransformer", "smoke")
    assert train(cfg, tmp_path, data_dir=real_data, max_minutes=0.0, **QUIET) is None
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "record.json").exists()
    record = train(cfg, tmp_path, data_dir=real_data, resume=True, **QUIET)
    assert record["epochs_run"] == 2
    again = train(cfg, tmp_path, data_dir=real_data, resume=True, **QUIET)
    assert again == record  # a finished run is not trained twice


def test_resume_with_other_settings_is_refused(real_data, tmp_path):
    cfg = run_config("ptb-word", "rtransformer", "smoke", epochs=1)
    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path, data_dir=real_data, checkpoint_every_steps=1, fail_at_step=2, **QUIET)
    other = run_config("ptb-word", "rtransformer", "smoke", epochs=1, lr=0.5)
    with pytest.raises(ConfigMismatchError, match=r"train.lr: 2.0 -> 0.5"):
        train(other, tmp_path, data_dir=real_data, resume=True, **QUIET)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path, data_dir=real_data, **QUIET)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(real_data, tmp_path, monkeypatch):
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
    with pytest.raises(NonFiniteLossError, match="nan.*last good checkpoint"):
        train(cfg, tmp_path, data_dir=real_data, checkpoint_every_steps=2, **QUIET)
    kept = load_checkpoint(tmp_path / "checkpoint.pt")
    assert kept["state"]["global_step"] == 2 and math.isfinite(kept["state"]["train_loss_sum"])
    assert not (tmp_path / "record.json").exists()


def test_record_fields(real_data, tmp_path):
    cfg = run_config("nottingham", "rtransformer", "smoke")
    record = train(cfg, tmp_path / "run", data_dir=real_data, results_dir=tmp_path / "results", **QUIET)
    saved = json.loads((tmp_path / "results" / f"{record['run_id']}.json").read_text())
    assert saved == record
    for key in ["task", "model", "profile", "config", "seed", "best_valid_metric", "test_metric",
                "epochs_run", "wall_time_s", "device", "torch_version", "git_commit",
                "num_parameters", "paper_value", "changes"]:
        assert key in record, key
    assert record["paper_value"] == 2.37 and record["metric"] == "nll"
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


def test_clip_before_backward_reproduces_the_released_no_op(real_data, tmp_path):
    base = run_config("nottingham", "rtransformer", "smoke", epochs=1, max_steps=2, grad_clip=1e-6)
    released = with_variant(base, "clip_before_backward=true")
    unclipped = with_variant(base, "grad_clip=none")
    results = [comparable(train(cfg, tmp_path / str(i), data_dir=real_data, **QUIET))
               for i, cfg in enumerate([base, released, unclipped])]
    assert results[1] == results[2] != results[0]


def test_compile_modes_name_the_compiler_and_the_step_graph():
    assert [compile_plan(mode) for mode in COMPILE_MODES] == [
        (None, False), ("default", False), ("reduce-overhead", False), (None, True), ("default", True)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("task", ["nottingham", "ptb-word"])
def test_step_graph_training_follows_eager_training(real_data, tmp_path, task):
    """Whole-step CUDA graphs (one per padded tune length for music; captured again when the
    lr anneals) train like eager steps: same curve within fp32 rounding."""
    no_dropout = "dropout=0" + (",emb_dropout=0" if task == "ptb-word" else "")
    base = with_variant(run_config(task, "rtransformer", "smoke", epochs=3, max_steps=None, lr=1e-3),
                        no_dropout)
    curves = []
    for mode in ("none", "step-graph"):
        record = train(with_variant(base, f"compile={mode}"), tmp_path / mode, device="cuda",
                       data_dir=real_data, **QUIET)
        curves.append([entry[key] for entry in record["curve"] for key in ("train_loss", "valid_loss")])
    assert curves[1] == pytest.approx(curves[0], rel=1e-3)


@pytest.mark.parametrize("argv,message", [
    (["train", "--task", "ptb", "--model", "rtransformer"], "invalid choice: 'ptb'"),
    (["train", "--task", "mnist", "--model", "gpt"], "invalid choice: 'gpt'"),
    (["train", "--task", "mnist", "--model", "tcn", "--profile", "huge"], "invalid choice: 'huge'"),
    (["train", "--task", "mnist", "--model", "tcn", "--lr", "-0.1"], "lr=-0.1 must be > 0"),
    (["train", "--task", "mnist", "--model", "tcn", "--epochs", "0"], "epochs=0 must be > 0"),
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

"""scripts/first_steps_loss.py: the window losses its hook reads from the engine's state, and
its refusal of a run too short for two windows."""
import importlib.util
from types import SimpleNamespace

import pytest

from rtlib.paths import REPO

spec = importlib.util.spec_from_file_location("first_steps_loss", REPO / "scripts" / "first_steps_loss.py")
first_steps_loss = importlib.util.module_from_spec(spec)
spec.loader.exec_module(first_steps_loss)


def test_each_window_is_read_one_checkpoint_late_from_the_sums_the_engine_wrote():
    hook = first_steps_loss.WindowLosses(every=25)
    state = SimpleNamespace(global_step=24, train_loss_sum=0.0, train_count=0.0)
    assert hook.step_end(state) is False  # between windows: no checkpoint asked
    state.global_step = 25
    assert hook.step_end(state) is True and hook.windows == []  # the sums are still empty
    state.train_loss_sum, state.train_count = 250.0, 100.0  # written by the checkpoint at step 25
    state.global_step = 50
    assert hook.step_end(state) is True
    state.train_loss_sum, state.train_count = 550.0, 200.0
    state.global_step = 75
    hook.step_end(state)
    assert hook.windows == [dict(steps=[1, 25], train_loss=2.5), dict(steps=[26, 50], train_loss=3.0)]


def test_a_run_shorter_than_two_windows_is_refused_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "losses.jsonl"
    with pytest.raises(SystemExit) as stopped:
        first_steps_loss.main(["--task", "ptb-word", "--model", "gru", "--lrs", "4", "--steps", "30",
                               "--out", str(out)])
    assert stopped.value.code == 2 and "--steps 30 is fewer than two windows of --every 25" in capsys.readouterr().err
    assert not out.exists()
